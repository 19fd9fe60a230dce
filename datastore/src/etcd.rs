//! The etcd v3 backend: the same key layout as every backend, compare-and-swap through etcd
//! transactions on `mod_revision`, and etcd's own revisioned watch.
//!
//! etcd already *is* the model of [`Backend`], so this module only translates: `Compare`
//! becomes `mod_revision ==` (0 meaning "absent", which etcd reports for a missing key), a
//! watch starts at `after + 1` with previous values so that deletions carry the last object,
//! and a watch on compacted history becomes [`RawEvent::ResyncNeeded`].

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions,
    Txn as EtcdTxn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::Error;
use crate::backend::{
    Backend, Compare, Op, RawEvent, RawEventStream, Record, Revision, Txn, TxnOutcome,
};

/// etcd-backed store.
pub struct EtcdBackend {
    endpoints: Vec<String>,
    client: Client,
}

fn etcd_err(e: etcd_client::Error) -> Error {
    Error::Unavailable(format!("etcd: {e}"))
}

fn record(kv: &etcd_client::KeyValue) -> Result<Record, Error> {
    Ok(Record {
        key: kv
            .key_str()
            .map_err(|e| Error::Corrupt(format!("non-UTF-8 key in etcd: {e}")))?
            .to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

impl EtcdBackend {
    /// Connects to the given endpoints (`127.0.0.1:2379` or `http://…`).
    pub async fn connect(endpoints: Vec<String>) -> Result<Self, Error> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_timeout(std::time::Duration::from_secs(10));
        let client = Client::connect(&endpoints, Some(opts))
            .await
            .map_err(etcd_err)?;
        Ok(EtcdBackend { endpoints, client })
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    async fn get(&self, key: &str) -> Result<Option<Record>, Error> {
        let resp = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(etcd_err)?;
        resp.kvs().first().map(record).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Record>, Revision), Error> {
        let resp = self
            .client
            .kv_client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd_err)?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let records = resp.kvs().iter().map(record).collect::<Result<_, _>>()?;
        Ok((records, rev))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, Error> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|Compare::ModRevision(key, rev)| {
                EtcdCompare::mod_revision(key.as_str(), CompareOp::Equal, *rev)
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put(key, value) => TxnOp::put(key.as_str(), value.clone(), None),
                Op::Delete(key) => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let resp = self
            .client
            .kv_client()
            .txn(EtcdTxn::new().when(compares).and_then(ops))
            .await
            .map_err(etcd_err)?;
        if !resp.succeeded() {
            return Ok(TxnOutcome::Conflict);
        }
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(TxnOutcome::Committed(rev))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<RawEventStream, Error> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_progress_notify()
            .with_start_revision(after + 1);
        let mut stream = self
            .client
            .watch_client()
            .watch(prefix, Some(opts))
            .await
            .map_err(etcd_err)?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let resp = match stream.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(Error::Unavailable("etcd closed the watch".into())))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(etcd_err(e))).await;
                        return;
                    }
                };
                if resp.compact_revision() > 0 || resp.canceled() {
                    let ev = if resp.compact_revision() > 0 {
                        Ok(RawEvent::ResyncNeeded)
                    } else {
                        Err(Error::Unavailable(format!(
                            "etcd cancelled the watch: {}",
                            resp.cancel_reason()
                        )))
                    };
                    let _ = tx.send(ev).await;
                    return;
                }
                if resp.events().is_empty() {
                    if let Some(h) = resp.header()
                        && !resp.created()
                        && tx.send(Ok(RawEvent::Bookmark(h.revision()))).await.is_err()
                    {
                        return;
                    }
                    continue;
                }
                for ev in resp.events() {
                    let out = match (ev.event_type(), ev.kv()) {
                        (EventType::Put, Some(kv)) => record(kv).map(RawEvent::Put),
                        (EventType::Delete, Some(kv)) => Ok(RawEvent::Deleted {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            revision: kv.mod_revision(),
                            prev: ev.prev_kv().map(|p| p.value().to_vec()).unwrap_or_default(),
                        }),
                        _ => continue,
                    };
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), Error> {
        self.client
            .kv_client()
            .compact(revision, None)
            .await
            .map_err(etcd_err)?;
        Ok(())
    }

    fn describe(&self) -> String {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }
}
