//! The storage contract every backend implements: a revisioned key-value store with
//! multi-key compare-and-swap transactions and ordered, resumable watches — the shape of etcd v3.
//!
//! The typed [`crate::Datastore`] layer sits on top and owns everything about resources
//! (encoding, defaults, validation, pool overlap), so that each backend stays small and every
//! backend enforces the same rules.
//!
//! Key layout, shared by all backends (and visible as-is in etcd):
//!
//! ```text
//! /tortie/v1/<plural>/<name>      one resource, JSON      e.g. /tortie/v1/ippools/default-ipv4
//! /tortie/v1/_guards/<plural>     collection guard         bumped by writes that need a
//!                                                          consistent view of the whole kind
//! ```
//!
//! A revision is a cluster-wide, strictly increasing number; every committed transaction gets a
//! new one and every key written by it carries it as `mod_revision`. Resource versions handed to
//! users are these numbers as strings.

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

use crate::Error;

/// A store-wide revision number. 0 means "before anything".
pub type Revision = i64;

/// Root of every key.
pub const KEY_ROOT: &str = "/tortie/v1/";

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Full key.
    pub key: String,
    /// JSON bytes.
    pub value: Vec<u8>,
    /// Revision that created the key (reset when a key is deleted and created again).
    pub create_revision: Revision,
    /// Revision of the last change.
    pub mod_revision: Revision,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this; 0 means the key must not exist.
    ModRevision(String, Revision),
}

/// A change made by a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite.
    Put(String, Vec<u8>),
    /// Remove (a missing key is not an error here: compares guard it).
    Delete(String),
}

/// An all-or-nothing change: if every compare holds, every op is applied at one new revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions.
    pub compares: Vec<Compare>,
    /// Changes.
    pub ops: Vec<Op>,
}

/// Result of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Applied at this revision.
    Committed(Revision),
    /// Applied, each op at its own revision (in op order): a backend without multi-key
    /// transactions at one revision (Kubernetes).
    CommittedEach(Vec<Revision>),
    /// A compare failed; nothing was written.
    Conflict,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvent {
    /// A key was written; `create_revision == mod_revision` means it is new.
    Put(Record),
    /// A key was removed; `prev` is its last value.
    Deleted {
        /// The key.
        key: String,
        /// Revision of the deletion.
        revision: Revision,
        /// The value before deletion.
        prev: Vec<u8>,
    },
    /// Nothing changed up to this revision (lets a client resume later without replay).
    Bookmark(Revision),
    /// History from the requested revision is gone: list again and watch from the list's
    /// revision. No further events follow on this stream.
    ResyncNeeded,
}

/// A stream of watch events; ends on error or after [`RawEvent::ResyncNeeded`].
pub type RawEventStream = Pin<Box<dyn Stream<Item = Result<RawEvent, Error>> + Send>>;

/// A revisioned key-value store (see the module docs).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// One key.
    async fn get(&self, key: &str) -> Result<Option<Record>, Error>;

    /// Every key starting with `prefix`, in key order, with the revision the snapshot was taken at.
    async fn list(&self, prefix: &str) -> Result<(Vec<Record>, Revision), Error>;

    /// Applies a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, Error>;

    /// Every change under `prefix` with a revision greater than `after`, in revision order, each
    /// exactly once.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<RawEventStream, Error>;

    /// Forgets history before `revision` (as etcd's compaction does): a watch that would need
    /// an earlier event answers `ResyncNeeded`; `revision` itself stays watchable.
    async fn compact(&self, revision: Revision) -> Result<(), Error>;

    /// For messages: `sqlite:///path` or `etcd://…`.
    fn describe(&self) -> String;
}

/// The smallest key greater than every key starting with `prefix`. Keys are ASCII (kind
/// plurals and DNS names), so the result is text too.
pub fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0x7f {
            end.push(last + 1);
            return String::from_utf8(end).expect("ASCII stays UTF-8");
        }
    }
    "\u{7f}".to_string()
}
