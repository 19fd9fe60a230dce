//! The embedded backend: one SQLite file shared safely by several processes on one machine.
//!
//! - WAL journal, so readers never block the writer; `BEGIN IMMEDIATE` for every transaction, so
//!   writers queue on the file lock (with a busy timeout) instead of failing on upgrade.
//! - `kv` holds the current value of each key; `events` holds the change history, one row per
//!   changed key, numbered by `(rev, seq)`. A transaction allocates its revision *inside* the
//!   write lock, so revisions commit in order and a reader never sees `n+1` before `n`.
//! - Watches poll `events` (every [`POLL_INTERVAL`]) with their own read connection, which is
//!   what lets a process see another process's writes; history older than [`HISTORY_REVISIONS`]
//!   revisions is compacted away, and a watch from before that answers `ResyncNeeded`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::Error;
use crate::backend::{
    Backend, Compare, Op, RawEvent, RawEventStream, Record, Revision, Txn, TxnOutcome, prefix_end,
};

/// How often a watch looks for new events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How many revisions of history a watch can resume from.
pub const HISTORY_REVISIONS: i64 = 100_000;
/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite-file backend.
pub struct SqliteBackend {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::Unavailable(format!("sqlite: {e}"))
}

fn open_connection(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)
        .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err)?;
    // In WAL mode NORMAL is still durable against application crashes; only a power loss can
    // drop the last transactions, which a datastore of this size can accept.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_err)?;
    Ok(conn)
}

impl SqliteBackend {
    /// Opens (creating if needed) the database file and its parent directory.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let mut conn = open_connection(&path)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY, value BLOB NOT NULL,
                 create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS events (
                 rev INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL,
                 deleted INTEGER NOT NULL, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
                 PRIMARY KEY (rev, seq)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);",
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(SqliteBackend {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("sqlite worker failed: {e}")))?
    }
}

fn meta(conn: &Connection, name: &str) -> Result<i64, Error> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .map_err(db_err)
}

fn apply_txn(conn: &mut Connection, txn: &Txn) -> Result<TxnOutcome, Error> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    for Compare::ModRevision(key, want) in &txn.compares {
        let have: Option<i64> = tx
            .query_row("SELECT mod_rev FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        if have.unwrap_or(0) != *want {
            return Ok(TxnOutcome::Conflict); // dropping `tx` rolls back
        }
    }
    let rev = meta(&tx, "revision")? + 1;
    for (seq, op) in txn.ops.iter().enumerate() {
        match op {
            Op::Put(key, value) => {
                let create_rev: i64 = tx
                    .query_row("SELECT create_rev FROM kv WHERE key = ?1", [key], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(db_err)?
                    .unwrap_or(rev);
                tx.execute(
                    "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(key) DO UPDATE SET value = ?2, mod_rev = ?4",
                    params![key, value, create_rev, rev],
                )
                .map_err(db_err)?;
                tx.execute(
                    "INSERT INTO events VALUES (?1, ?2, ?3, 0, ?4, ?5)",
                    params![rev, seq as i64, key, value, create_rev],
                )
                .map_err(db_err)?;
            }
            Op::Delete(key) => {
                let prev: Option<(Vec<u8>, i64)> = tx
                    .query_row(
                        "SELECT value, create_rev FROM kv WHERE key = ?1",
                        [key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(db_err)?;
                if let Some((value, create_rev)) = prev {
                    tx.execute("DELETE FROM kv WHERE key = ?1", [key])
                        .map_err(db_err)?;
                    tx.execute(
                        "INSERT INTO events VALUES (?1, ?2, ?3, 1, ?4, ?5)",
                        params![rev, seq as i64, key, value, create_rev],
                    )
                    .map_err(db_err)?;
                }
            }
        }
    }
    tx.execute("UPDATE meta SET value = ?1 WHERE name = 'revision'", [rev])
        .map_err(db_err)?;
    // Compact in steps of 1000 revisions so that the cost is spread thin.
    if rev % 1000 == 0 && rev > HISTORY_REVISIONS {
        compact_history(&tx, rev - HISTORY_REVISIONS)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(TxnOutcome::Committed(rev))
}

/// Drops events before `first_kept`; `meta.compacted` records that revision.
fn compact_history(conn: &Connection, first_kept: Revision) -> Result<(), Error> {
    conn.execute("DELETE FROM events WHERE rev < ?1", [first_kept])
        .map_err(db_err)?;
    conn.execute(
        "UPDATE meta SET value = max(value, ?1) WHERE name = 'compacted'",
        [first_kept],
    )
    .map_err(db_err)?;
    Ok(())
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        key: r.get(0)?,
        value: r.get(1)?,
        create_revision: r.get(2)?,
        mod_revision: r.get(3)?,
    })
}

/// One batch of events after `after`; `None` when history from there is gone.
fn poll_events(
    conn: &Connection,
    prefix: &str,
    end: &str,
    after: Revision,
) -> Result<Option<Vec<RawEvent>>, Error> {
    // Events from `after + 1` on are needed; the oldest one kept is `compacted`.
    if after + 1 < meta(conn, "compacted")? {
        return Ok(None);
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT key, value, create_rev, rev, deleted FROM events
             WHERE rev > ?1 AND key >= ?2 AND key < ?3 ORDER BY rev, seq LIMIT 1000",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![after, prefix, end], |r| {
            let deleted: bool = r.get(4)?;
            let key: String = r.get(0)?;
            let value: Vec<u8> = r.get(1)?;
            let rev: i64 = r.get(3)?;
            Ok(if deleted {
                RawEvent::Deleted {
                    key,
                    revision: rev,
                    prev: value,
                }
            } else {
                RawEvent::Put(Record {
                    key,
                    value,
                    create_revision: r.get(2)?,
                    mod_revision: rev,
                })
            })
        })
        .map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(db_err)
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str) -> Result<Option<Record>, Error> {
        let key = key.to_string();
        self.blocking(move |c| {
            c.query_row(
                "SELECT key, value, create_rev, mod_rev FROM kv WHERE key = ?1",
                [key],
                row_to_record,
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Record>, Revision), Error> {
        let prefix = prefix.to_string();
        self.blocking(move |c| {
            // One read transaction, so the records and the revision are one snapshot.
            let tx = c.transaction().map_err(db_err)?;
            let rev = meta(&tx, "revision")?;
            let records = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT key, value, create_rev, mod_rev FROM kv
                         WHERE key >= ?1 AND key < ?2 ORDER BY key",
                    )
                    .map_err(db_err)?;
                stmt.query_map(params![prefix, prefix_end(&prefix)], row_to_record)
                    .map_err(db_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db_err)?
            };
            tx.commit().map_err(db_err)?;
            Ok((records, rev))
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, Error> {
        self.blocking(move |c| apply_txn(c, &txn)).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<RawEventStream, Error> {
        let conn = open_connection(&self.path)?;
        let prefix = prefix.to_string();
        let end = prefix_end(&prefix);
        let (tx, rx) = mpsc::channel(1024);
        tokio::task::spawn_blocking(move || {
            let mut last = after;
            loop {
                let batch = match poll_events(&conn, &prefix, &end, last) {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        let _ = tx.blocking_send(Ok(RawEvent::ResyncNeeded));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                let idle = batch.is_empty();
                for ev in batch {
                    last = match &ev {
                        RawEvent::Put(r) => r.mod_revision,
                        RawEvent::Deleted { revision, .. } => *revision,
                        _ => last,
                    };
                    if tx.blocking_send(Ok(ev)).is_err() {
                        return; // the watcher went away
                    }
                }
                if idle {
                    if tx.is_closed() {
                        return;
                    }
                    std::thread::sleep(POLL_INTERVAL);
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), Error> {
        self.blocking(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            compact_history(&tx, revision)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}
