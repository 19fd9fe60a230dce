//! # tortie-datastore: typed resources over pluggable, revisioned storage
//!
//! ```text
//!   tortiectl · agent · ipam · cni
//!            │   typed calls: get / list / create / update / delete / watch / write_all
//!            ▼
//!   ┌──────────────────────────────┐  defaults, validation, immutable fields, pool overlap,
//!   │ Datastore (this module)      │  uid/creationTimestamp — the same rules for every backend,
//!   └──────────────┬───────────────┘  enforced atomically in one backend transaction
//!                  │ Backend: get / list / txn(compare mod_revision, put, delete) / watch
//!        ┌─────────┴─────────┐
//!   SqliteBackend        EtcdBackend          KubernetesBackend (feature `kubernetes`)
//!   sqlite:///path       etcd://h:2379[,h2:2379]   kubernetes:[///kubeconfig]
//! ```
//!
//! Resource versions are strings (the backends' revisions, printed) so that a Kubernetes backend
//! fits unchanged; watches deliver `Added`/`Modified`/`Deleted` in revision order, `Bookmark`s
//! while idle, and `ResyncNeeded` when the requested history is gone.
//!
//! Writes that must see a whole kind at once (an `IPPool` must not overlap any other) also
//! compare-and-swap that kind's *collection guard* key in the same transaction, so two
//! concurrent overlapping creates can never both commit.

pub mod backend;
mod error;
pub mod etcd;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod sqlite;
#[cfg(feature = "test-support")]
pub mod testing;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tortie_api::values::LabelSelector;
use tortie_api::{AnyResource, IPPool, Kind, Object, Spec, ValidationError};

pub use backend::{Backend, Revision};
use backend::{Compare, KEY_ROOT, Op, RawEvent, Txn, TxnOutcome};
pub use error::Error;

/// Where the embedded datastore lives unless told otherwise.
pub const DEFAULT_SQLITE_PATH: &str = "/var/lib/tortie/store.db";
/// How many times a write is re-planned when other writers keep winning the race.
pub const MAX_WRITE_ATTEMPTS: u32 = 64;

/// The storage key of an object.
pub fn object_key(kind: Kind, name: &str) -> String {
    format!("{KEY_ROOT}{}/{name}", kind.plural())
}

/// The key prefix of a kind.
pub fn kind_prefix(kind: Kind) -> String {
    format!("{KEY_ROOT}{}/", kind.plural())
}

/// The collection-guard key of a kind.
pub fn guard_key(kind: Kind) -> String {
    format!("{KEY_ROOT}_guards/{}", kind.plural())
}

/// Objects of one kind and the revision the list was taken at (watch from there).
#[derive(Debug, Clone)]
pub struct ObjectList<T> {
    /// The objects, in name order.
    pub items: Vec<T>,
    /// The list's revision.
    pub resource_version: String,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    /// A new object.
    Added(T),
    /// A changed object.
    Modified(T),
    /// A removed object (its last state).
    Deleted(T),
    /// Nothing changed up to this resource version.
    Bookmark(String),
    /// History is gone: list again and watch from the list's resource version.
    ResyncNeeded,
}

impl<T> WatchEvent<T> {
    /// The object, for Added/Modified/Deleted.
    pub fn object(&self) -> Option<&T> {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => Some(o),
            _ => None,
        }
    }
}

/// A stream of typed watch events.
pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<WatchEvent<T>, Error>> + Send>>;

/// What to do with one object of a batch (see [`Datastore::write_all`]).
#[derive(Debug, Clone)]
pub enum Change {
    /// Create; fails if it exists.
    Create(AnyResource),
    /// Update; fails if absent. With `metadata.resourceVersion`, a compare-and-swap on it.
    Replace(AnyResource),
    /// Create or update; a no-op when nothing would change. With `metadata.resourceVersion`, a
    /// compare-and-swap on it.
    Apply(AnyResource),
    /// Delete; fails if absent. With `precondition`, only at that resource version.
    Delete {
        /// Kind.
        kind: Kind,
        /// Name.
        name: String,
        /// Required current resource version.
        precondition: Option<String>,
    },
}

impl Change {
    fn target(&self) -> (Kind, &str) {
        match self {
            Change::Create(r) | Change::Replace(r) | Change::Apply(r) => {
                (r.kind(), r.meta().name.as_str())
            }
            Change::Delete { kind, name, .. } => (*kind, name.as_str()),
        }
    }
}

/// What happened to one object of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Created; the stored object.
    Created(AnyResource),
    /// Updated; the stored object.
    Updated(AnyResource),
    /// Already as asked; nothing written.
    Unchanged(AnyResource),
    /// Deleted; its last state.
    Deleted(AnyResource),
}

impl Outcome {
    /// The object.
    pub fn resource(&self) -> &AnyResource {
        match self {
            Outcome::Created(r)
            | Outcome::Updated(r)
            | Outcome::Unchanged(r)
            | Outcome::Deleted(r) => r,
        }
    }
}

/// Typed access to resources; cheap to clone.
#[derive(Clone)]
pub struct Datastore {
    backend: Arc<dyn Backend>,
}

fn parse_revision(kind: Kind, name: &str, rv: &str) -> Result<Revision, Error> {
    rv.parse::<Revision>().map_err(|_| Error::Invalid {
        kind,
        name: name.to_string(),
        error: ValidationError::single(
            "metadata.resourceVersion",
            format!("{rv:?} is not a resource version of this datastore"),
        ),
    })
}

fn decode_stored(kind: Kind, value: &[u8], mod_revision: Revision) -> Result<AnyResource, Error> {
    let json: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| Error::Corrupt(format!("{kind}: {e}")))?;
    let mut r = AnyResource::from_json_as(kind, json)
        .map_err(|e| Error::Corrupt(format!("{kind}: {e}")))?;
    r.apply_defaults();
    r.meta_mut().resource_version = Some(mod_revision.to_string());
    Ok(r)
}

fn encode_for_storage(r: &AnyResource) -> Vec<u8> {
    let mut stored = r.clone();
    // The version is the key's revision, never part of the value.
    stored.meta_mut().resource_version = None;
    serde_json::to_vec(&stored.to_json()).expect("resources serialize")
}

fn kind_of_key(key: &str) -> Option<(Kind, &str)> {
    let rest = key.strip_prefix(KEY_ROOT)?;
    let (plural, name) = rest.split_once('/')?;
    let kind = Kind::ALL.iter().copied().find(|k| k.plural() == plural)?;
    Some((kind, name))
}

impl Datastore {
    /// Wraps a backend.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Datastore { backend }
    }

    /// Opens a datastore from a URL: `sqlite:///path/to/file.db` or
    /// `etcd://host:port[,host:port…]`.
    pub async fn open(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "the path must be absolute: sqlite:///var/lib/tortie/store.db",
                ));
            }
            let path = path.to_string();
            let backend = tokio::task::spawn_blocking(move || sqlite::SqliteBackend::open(path))
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))??;
            return Ok(Datastore::new(Arc::new(backend)));
        }
        if let Some(rest) = url.strip_prefix("etcd://") {
            let endpoints: Vec<String> = rest
                .trim_end_matches('/')
                .split(',')
                .filter(|e| !e.is_empty())
                .map(|e| format!("http://{e}"))
                .collect();
            if endpoints.is_empty() {
                return Err(bad("no endpoints: etcd://127.0.0.1:2379"));
            }
            let backend = etcd::EtcdBackend::connect(endpoints).await?;
            return Ok(Datastore::new(Arc::new(backend)));
        }
        if url.starts_with("kubernetes") {
            #[cfg(feature = "kubernetes")]
            {
                let backend = kubernetes::KubernetesBackend::open(url).await?;
                return Ok(Datastore::new(Arc::new(backend)));
            }
            #[cfg(not(feature = "kubernetes"))]
            return Err(bad(
                "this program was built without the Kubernetes datastore",
            ));
        }
        Err(bad(
            "expected sqlite:///path, etcd://host:port or kubernetes:[///path/to/kubeconfig]",
        ))
    }

    /// Like [`Datastore::open`], but an embedded store must already exist: for commands that
    /// only read or change existing objects, so that a mistyped path is an error instead of a
    /// new, empty store.
    pub async fn open_existing(url: &str) -> Result<Self, Error> {
        if let Some(path) = url.strip_prefix("sqlite://")
            && path.starts_with('/')
            && !std::path::Path::new(path).exists()
        {
            return Err(Error::Unavailable(format!(
                "no datastore at {path} (it is created by the first write, e.g. `tortiectl apply`)"
            )));
        }
        Datastore::open(url).await
    }

    /// Which backend this is, for messages.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// The underlying backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// One object of any kind.
    pub async fn get_any(&self, kind: Kind, name: &str) -> Result<Option<AnyResource>, Error> {
        match self.backend.get(&object_key(kind, name)).await? {
            Some(rec) => decode_stored(kind, &rec.value, rec.mod_revision).map(Some),
            None => Ok(None),
        }
    }

    /// Every object of a kind, optionally filtered by a label selector.
    pub async fn list_any(
        &self,
        kind: Kind,
        selector: Option<&LabelSelector>,
    ) -> Result<ObjectList<AnyResource>, Error> {
        let (records, rev) = self.backend.list(&kind_prefix(kind)).await?;
        let mut items = Vec::with_capacity(records.len());
        for rec in records {
            if kind_of_key(&rec.key).map(|(k, _)| k) != Some(kind) {
                continue; // not ours (a backend handing out a wider range must not confuse us)
            }
            let r = decode_stored(kind, &rec.value, rec.mod_revision)?;
            if selector.is_none_or(|s| s.matches(&r.meta().labels)) {
                items.push(r);
            }
        }
        Ok(ObjectList {
            items,
            resource_version: rev.to_string(),
        })
    }

    /// One object.
    pub async fn get<S: Spec>(&self, name: &str) -> Result<Option<Object<S>>, Error> {
        Ok(self.get_any(S::KIND, name).await?.map(typed))
    }

    /// Every object of a kind, optionally filtered by a label selector.
    pub async fn list<S: Spec>(
        &self,
        selector: Option<&LabelSelector>,
    ) -> Result<ObjectList<Object<S>>, Error> {
        let l = self.list_any(S::KIND, selector).await?;
        Ok(ObjectList {
            items: l.items.into_iter().map(typed).collect(),
            resource_version: l.resource_version,
        })
    }

    /// Creates an object; fails with [`Error::AlreadyExists`] if it exists.
    pub async fn create<S: Spec>(&self, obj: Object<S>) -> Result<Object<S>, Error> {
        self.write_one(Change::Create(obj.into())).await.map(typed)
    }

    /// Compare-and-swap update: `metadata.resourceVersion` must be the current one.
    pub async fn update<S: Spec>(&self, obj: Object<S>) -> Result<Object<S>, Error> {
        if obj.metadata.resource_version.is_none() {
            return Err(Error::Invalid {
                kind: S::KIND,
                name: obj.metadata.name.clone(),
                error: ValidationError::single(
                    "metadata.resourceVersion",
                    "is required for an update (compare-and-swap)",
                ),
            });
        }
        self.write_one(Change::Replace(obj.into())).await.map(typed)
    }

    /// Deletes an object, optionally only at a given resource version; returns its last state.
    pub async fn delete<S: Spec>(
        &self,
        name: &str,
        precondition: Option<&str>,
    ) -> Result<Object<S>, Error> {
        self.write_one(Change::Delete {
            kind: S::KIND,
            name: name.to_string(),
            precondition: precondition.map(str::to_string),
        })
        .await
        .map(typed)
    }

    async fn write_one(&self, change: Change) -> Result<AnyResource, Error> {
        let mut out = self.write_all(vec![change]).await.map_err(|e| match e {
            Error::InBatch { error, .. } => *error,
            e => e,
        })?;
        Ok(out.remove(0).resource().clone())
    }

    /// Applies a batch of changes **atomically**: all of them, or none (with an error naming
    /// the change, [`Error::InBatch`]). Each object is defaulted and validated, updates are
    /// checked against the stored object (immutable fields, resource versions), new pools are
    /// checked for overlap with every other pool, and the whole batch commits in one backend
    /// transaction that also guards against concurrent writers; on a lost race it is planned
    /// again from fresh reads.
    pub async fn write_all(&self, changes: Vec<Change>) -> Result<Vec<Outcome>, Error> {
        let at = |index: usize| {
            move |error: Error| Error::InBatch {
                index,
                error: Box::new(error),
            }
        };
        // Validation that needs no reads, once.
        let mut prepared = Vec::with_capacity(changes.len());
        let mut seen = HashMap::new();
        for (i, mut change) in changes.into_iter().enumerate() {
            let (kind, name) = change.target();
            if seen.insert((kind, name.to_string()), i).is_some() {
                return Err(at(i)(Error::Invalid {
                    kind,
                    name: name.to_string(),
                    error: ValidationError::single(
                        "metadata.name",
                        format!("{name:?} appears twice in one batch"),
                    ),
                }));
            }
            if let Change::Create(r) | Change::Replace(r) | Change::Apply(r) = &mut change {
                r.apply_defaults();
                r.validate().map_err(|error| {
                    at(i)(Error::Invalid {
                        kind: r.kind(),
                        name: r.meta().name.clone(),
                        error,
                    })
                })?;
            }
            prepared.push(change);
        }
        for _attempt in 0..MAX_WRITE_ATTEMPTS {
            let (txn, outcomes) = self.plan(&prepared).await?;
            if txn.ops.is_empty() {
                return Ok(outcomes);
            }
            let op_keys: Vec<String> = txn
                .ops
                .iter()
                .map(|op| match op {
                    Op::Put(k, _) | Op::Delete(k) => k.clone(),
                })
                .collect();
            let revision_of = |outcome: &AnyResource, at: &TxnOutcome| -> Option<Revision> {
                match at {
                    TxnOutcome::Committed(rev) => Some(*rev),
                    TxnOutcome::CommittedEach(revs) => {
                        let key = object_key(outcome.kind(), &outcome.meta().name);
                        op_keys
                            .iter()
                            .position(|k| *k == key)
                            .and_then(|i| revs.get(i).copied())
                    }
                    TxnOutcome::Conflict => None,
                }
            };
            match self.backend.txn(txn).await? {
                TxnOutcome::Conflict => continue,
                committed => {
                    return Ok(outcomes
                        .into_iter()
                        .map(|mut o| {
                            if let Outcome::Created(r) | Outcome::Updated(r) = &mut o {
                                let rev = revision_of(r, &committed);
                                r.meta_mut().resource_version = rev.map(|v| v.to_string());
                            }
                            o
                        })
                        .collect());
                }
            }
        }
        Err(Error::Contended {
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// Reads what the batch depends on and builds its transaction.
    async fn plan(&self, changes: &[Change]) -> Result<(Txn, Vec<Outcome>), Error> {
        let at = |index: usize| {
            move |error: Error| Error::InBatch {
                index,
                error: Box::new(error),
            }
        };
        let mut txn = Txn::default();
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut written_pools: Vec<(usize, IPPool)> = Vec::new();
        let mut removed_pools: Vec<String> = Vec::new();

        for (i, change) in changes.iter().enumerate() {
            let (kind, name) = change.target();
            let key = object_key(kind, name);
            let current = self.backend.get(&key).await?;
            let current_obj = current
                .as_ref()
                .map(|rec| decode_stored(kind, &rec.value, rec.mod_revision))
                .transpose()?;
            let current_rev = current.as_ref().map_or(0, |r| r.mod_revision);
            let check_precondition = |given: Option<&str>| -> Result<(), Error> {
                if let Some(given) = given
                    && parse_revision(kind, name, given)? != current_rev
                {
                    return Err(Error::Conflict {
                        kind,
                        name: name.to_string(),
                        given: given.to_string(),
                        current: current_rev.to_string(),
                    });
                }
                Ok(())
            };

            let desired = match change {
                Change::Delete { precondition, .. } => {
                    let Some(old) = current_obj else {
                        return Err(at(i)(Error::NotFound {
                            kind,
                            name: name.to_string(),
                        }));
                    };
                    check_precondition(precondition.as_deref()).map_err(at(i))?;
                    txn.compares
                        .push(Compare::ModRevision(key.clone(), current_rev));
                    txn.ops.push(Op::Delete(key));
                    if kind == Kind::IPPool {
                        removed_pools.push(name.to_string());
                    }
                    outcomes.push(Outcome::Deleted(old));
                    continue;
                }
                Change::Create(r) => {
                    if current_obj.is_some() {
                        return Err(at(i)(Error::AlreadyExists {
                            kind,
                            name: name.to_string(),
                        }));
                    }
                    r
                }
                Change::Replace(r) => {
                    if current_obj.is_none() {
                        return Err(at(i)(Error::NotFound {
                            kind,
                            name: name.to_string(),
                        }));
                    }
                    check_precondition(r.meta().resource_version.as_deref()).map_err(at(i))?;
                    r
                }
                Change::Apply(r) => {
                    if current_obj.is_some() {
                        check_precondition(r.meta().resource_version.as_deref()).map_err(at(i))?;
                    }
                    r
                }
            };

            let mut new = desired.clone();
            new.meta_mut().resource_version = None;
            match &current_obj {
                Some(old) => {
                    new.validate_update(old).map_err(|error| {
                        at(i)(Error::Invalid {
                            kind,
                            name: name.to_string(),
                            error,
                        })
                    })?;
                    if new.same_content(old) {
                        outcomes.push(Outcome::Unchanged(old.clone()));
                        continue;
                    }
                    // Identity fields are the server's.
                    new.meta_mut().uid = old.meta().uid.clone();
                    new.meta_mut().creation_timestamp = old.meta().creation_timestamp;
                }
                None => {
                    new.meta_mut().uid = Some(uuid::Uuid::new_v4().to_string());
                    new.meta_mut().creation_timestamp = Some(chrono::Utc::now());
                }
            }
            txn.compares
                .push(Compare::ModRevision(key.clone(), current_rev));
            txn.ops.push(Op::Put(key, encode_for_storage(&new)));
            if let AnyResource::IPPool(p) = &new {
                written_pools.push((i, p.clone()));
            }
            outcomes.push(if current_obj.is_some() {
                Outcome::Updated(new)
            } else {
                Outcome::Created(new)
            });
        }

        if !written_pools.is_empty() {
            self.check_pool_overlap(&mut txn, &written_pools, &removed_pools)
                .await?;
        }
        Ok((txn, outcomes))
    }

    /// Adds the pool collection guard to `txn` and rejects any written pool that overlaps
    /// another pool (stored, or written in the same batch).
    async fn check_pool_overlap(
        &self,
        txn: &mut Txn,
        written: &[(usize, IPPool)],
        removed: &[String],
    ) -> Result<(), Error> {
        // Read the guard *before* the list: any pool write after this read bumps the guard, so
        // our transaction fails and is re-planned on a fresh list.
        let guard = guard_key(Kind::IPPool);
        let guard_rev = self
            .backend
            .get(&guard)
            .await?
            .map_or(0, |r| r.mod_revision);
        let stored = self.list::<tortie_api::IPPoolSpec>(None).await?.items;
        let mut all: Vec<(Option<usize>, &IPPool)> = stored
            .iter()
            .filter(|p| {
                !removed.contains(&p.metadata.name)
                    && !written
                        .iter()
                        .any(|(_, w)| w.metadata.name == p.metadata.name)
            })
            .map(|p| (None, p))
            .collect();
        all.extend(written.iter().map(|(i, p)| (Some(*i), p)));
        // Each written pool against every stored pool and every *earlier* pool of the batch, so
        // that of two clashing new pools the later one is blamed.
        for (pos, (index, pool)) in written.iter().enumerate() {
            let clash = all.iter().find(|(other_index, other)| {
                let stored_or_earlier = match other_index {
                    None => true,
                    Some(j) => written[..pos].iter().any(|(i, _)| i == j),
                };
                stored_or_earlier
                    && other.metadata.name != pool.metadata.name
                    && other.spec.cidr.overlaps(&pool.spec.cidr)
            });
            if let Some((other_index, other)) = clash {
                let whence = if other_index.is_some() {
                    ", written in the same batch"
                } else {
                    ""
                };
                return Err(Error::InBatch {
                    index: *index,
                    error: Box::new(Error::Invalid {
                        kind: Kind::IPPool,
                        name: pool.metadata.name.clone(),
                        error: ValidationError::single(
                            "spec.cidr",
                            format!(
                                "\"{}\" overlaps IPPool {:?} ({}){whence}",
                                pool.spec.cidr, other.metadata.name, other.spec.cidr
                            ),
                        ),
                    }),
                });
            }
        }
        txn.compares
            .push(Compare::ModRevision(guard.clone(), guard_rev));
        txn.ops.push(Op::Put(guard, b"{}".to_vec()));
        Ok(())
    }

    /// Watches a kind from a resource version (`None`: from now). Events come in order, each
    /// exactly once; after `ResyncNeeded` the stream ends.
    pub async fn watch_any(
        &self,
        kind: Kind,
        from: Option<&str>,
    ) -> Result<WatchStream<AnyResource>, Error> {
        let after = match from {
            Some(rv) => parse_revision(kind, "", rv)?,
            None => self.backend.list(&guard_key(kind)).await?.1,
        };
        let raw = self.backend.watch(&kind_prefix(kind), after).await?;
        let stream = raw.filter_map(move |ev| async move {
            let out = match ev {
                Err(e) => Err(e),
                Ok(RawEvent::Put(rec)) => {
                    let (k, _) = kind_of_key(&rec.key)?;
                    decode_stored(k, &rec.value, rec.mod_revision).map(|r| {
                        if rec.create_revision == rec.mod_revision {
                            WatchEvent::Added(r)
                        } else {
                            WatchEvent::Modified(r)
                        }
                    })
                }
                Ok(RawEvent::Deleted {
                    key,
                    revision,
                    prev,
                }) => {
                    let (k, _) = kind_of_key(&key)?;
                    decode_stored(k, &prev, revision).map(WatchEvent::Deleted)
                }
                Ok(RawEvent::Bookmark(rev)) => Ok(WatchEvent::Bookmark(rev.to_string())),
                Ok(RawEvent::ResyncNeeded) => Ok(WatchEvent::ResyncNeeded),
            };
            Some(out)
        });
        Ok(Box::pin(stream))
    }

    /// Typed [`Datastore::watch_any`].
    pub async fn watch<S: Spec>(
        &self,
        from: Option<&str>,
    ) -> Result<WatchStream<Object<S>>, Error> {
        let s = self.watch_any(S::KIND, from).await?;
        Ok(Box::pin(s.map(|ev| {
            ev.map(|ev| match ev {
                WatchEvent::Added(r) => WatchEvent::Added(typed(r)),
                WatchEvent::Modified(r) => WatchEvent::Modified(typed(r)),
                WatchEvent::Deleted(r) => WatchEvent::Deleted(typed(r)),
                WatchEvent::Bookmark(v) => WatchEvent::Bookmark(v),
                WatchEvent::ResyncNeeded => WatchEvent::ResyncNeeded,
            })
        })))
    }
}

/// Converts a resource that is known to be of kind `S` (it was read under `S::KIND`).
fn typed<S: Spec>(r: AnyResource) -> Object<S> {
    let kind = r.kind();
    r.into_typed::<S>()
        .unwrap_or_else(|| unreachable!("read {kind} under kind {}", S::KIND))
}
