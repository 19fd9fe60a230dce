//! The Kubernetes backend: every `tortie.io/v1` kind is a cluster-scoped custom resource, so
//! `kubectl get ippools` shows what `tortiectl` shows, and the API server's etcd does the
//! storing.
//!
//! # Mapping the revisioned key-value contract onto the Kubernetes API
//!
//! - **Keys**: `/tortie/v1/<plural>/<name>` is the custom resource `<plural>.tortie.io` named
//!   `<name>`. Its `spec` is the resource's spec and its labels and annotations are the
//!   resource's; our own identity fields (uid, creation time) ride in the annotation
//!   `tortie.io/metadata`, since Kubernetes keeps its own. Collection guards and the
//!   transaction lock are objects of the internal kind `DatastoreKey`.
//! - **Revisions** are resourceVersions read as numbers. Kubernetes calls them opaque, but the
//!   API server hands out etcd's store-wide revision, which is exactly the contract's revision
//!   (Calico's Kubernetes datastore relies on the same).
//! - **Transactions**: Kubernetes has no multi-object transaction, and IPAM writes a block and
//!   its handle together. Every transaction therefore goes through one lock object
//!   (`datastorekeys/txn-lock`): the writer reads it (it must carry no pending work), checks
//!   its compares, then writes its operations *into the lock object* with a compare-and-swap
//!   on the lock's resourceVersion — that write is the commit point — applies them, and clears
//!   them. Because every transaction rewrites the lock, a transaction that committed between
//!   our compare check and our lock write makes our lock write fail, and we start over. A
//!   writer that dies after committing leaves its operations in the lock; the next writer
//!   applies them (they are idempotent: whole-value puts and deletes) once the dead writer's
//!   lease has run out. Readers never take the lock; like etcd reads outside a transaction
//!   they may see a transaction half applied, and any decision they base on it fails its
//!   compare.
//! - **Deletes** are done safely in two steps: a soft-delete marker (annotation
//!   `tortie.io/deleted`) written with a compare-and-swap, then a delete with the object's
//!   uid and the marker's resourceVersion as preconditions. A marked object reads as absent,
//!   and watches report its deletion once, at the marker.
//! - **Watches**: one API watch per kind from the requested revision, with bookmarks; `410
//!   Gone` becomes `ResyncNeeded`; a dropped connection, `429 Too Many Requests` (a CRD just
//!   created answers so for a while) or a 5xx is retried with exponential back-off from the
//!   last revision seen, so no event is lost or repeated. kube's `watcher` is not used here:
//!   it starts every (re)connection with a full list, which fits a reflector but not a
//!   contract that resumes from a revision.
//! - **Compaction** is the API server's business: [`Backend::compact`] is refused.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions,
    WatchEvent as KubeEvent, WatchParams,
};
use kube::{Client, Config};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tortie_api::Kind;

use crate::Error;
use crate::backend::{
    Backend, Compare, KEY_ROOT, Op, RawEvent, RawEventStream, Record, Revision, Txn, TxnOutcome,
};

/// The API group of every tortie kind.
pub const GROUP: &str = "tortie.io";
/// The internal kind holding collection guards and the transaction lock.
pub const INTERNAL_KIND: &str = "DatastoreKey";
/// Its plural.
pub const INTERNAL_PLURAL: &str = "datastorekeys";
static POST: PostParams = PostParams {
    dry_run: false,
    field_manager: None,
};
static LIST: std::sync::LazyLock<ListParams> = std::sync::LazyLock::new(ListParams::default);
const LOCK_NAME: &str = "txn-lock";
const SOFT_DELETED: &str = "tortie.io/deleted";
const META_ANNOTATION: &str = "tortie.io/metadata";
/// How long a committed but unapplied transaction is left to its writer before another
/// writer finishes it.
const LEASE: Duration = Duration::from_secs(30);
/// How long a writer waits for the lock before giving up.
const LOCK_PATIENCE: Duration = Duration::from_secs(60);

/// Kubernetes-backed store.
pub struct KubernetesBackend {
    client: Client,
    server: String,
    /// Who we are in the lock object (for messages and lease ownership).
    holder: String,
    lease: Duration,
}

fn kube_err(e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) => Error::Unavailable(format!(
            "Kubernetes API: {} ({} {})",
            s.message, s.code, s.reason
        )),
        other => Error::Unavailable(format!("Kubernetes API: {other}")),
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Worth retrying: throttled, server trouble, or no answer at all.
fn transient(e: &kube::Error) -> bool {
    match status_code(e) {
        Some(code) => code == 429 || code >= 500,
        None => !matches!(e, kube::Error::SerdeError(_) | kube::Error::BuildRequest(_)),
    }
}

/// Runs `f` again on transient errors, backing off from 50 ms to 2 s, for up to ~15 s.
async fn retrying<T, F, Fut>(mut f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    loop {
        match f().await {
            Err(e) if transient(&e) && waited < Duration::from_secs(15) => {
                tracing::debug!(error = %e, ?delay, "Kubernetes API busy; retrying");
                tokio::time::sleep(delay).await;
                waited += delay;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Object(Kind, String),
    Internal(String),
}

fn target(key: &str) -> Result<Target, Error> {
    let bad = || {
        Error::Unavailable(format!(
            "key {key:?} has no place in the Kubernetes datastore"
        ))
    };
    let rest = key.strip_prefix(KEY_ROOT).ok_or_else(bad)?;
    if let Some(plural) = rest.strip_prefix("_guards/") {
        return Ok(Target::Internal(format!("guard.{plural}")));
    }
    let (plural, name) = rest.split_once('/').ok_or_else(bad)?;
    let kind = Kind::ALL
        .iter()
        .copied()
        .find(|k| k.plural() == plural)
        .ok_or_else(bad)?;
    Ok(Target::Object(kind, name.to_string()))
}

fn key_of(t: &Target) -> String {
    match t {
        Target::Object(kind, name) => format!("{KEY_ROOT}{}/{name}", kind.plural()),
        Target::Internal(name) => format!(
            "{KEY_ROOT}_guards/{}",
            name.strip_prefix("guard.").unwrap_or(name)
        ),
    }
}

fn api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn revision_of(obj: &DynamicObject) -> Result<Revision, Error> {
    let rv = obj.metadata.resource_version.as_deref().unwrap_or("");
    rv.parse().map_err(|_| {
        Error::Corrupt(format!(
            "resourceVersion {rv:?} is not a number: this API server's storage is not etcd-like"
        ))
    })
}

fn soft_deleted(obj: &DynamicObject) -> bool {
    obj.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SOFT_DELETED))
}

/// The custom resource for a stored value.
fn to_resource(t: &Target, value: &[u8]) -> Result<DynamicObject, Error> {
    let mut obj = match t {
        Target::Object(kind, name) => {
            let mut v: Value = serde_json::from_slice(value)
                .map_err(|e| Error::Corrupt(format!("{kind} {name}: {e}")))?;
            let mut meta = v
                .get_mut("metadata")
                .and_then(Value::as_object_mut)
                .map(std::mem::take)
                .unwrap_or_default();
            let labels = meta.remove("labels");
            let mut annotations: BTreeMap<String, String> = meta
                .remove("annotations")
                .and_then(|a| serde_json::from_value(a).ok())
                .unwrap_or_default();
            meta.remove("name");
            meta.remove("resourceVersion");
            if !meta.is_empty() {
                annotations.insert(META_ANNOTATION.into(), Value::Object(meta).to_string());
            }
            let mut obj =
                DynamicObject::new(name, &api_resource(kind.name(), kind.plural())).data(json!({
                    "spec": v.get("spec").cloned().unwrap_or(json!({})),
                }));
            obj.metadata.labels = labels.and_then(|l| serde_json::from_value(l).ok());
            obj.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
            obj
        }
        Target::Internal(name) => {
            let text = String::from_utf8(value.to_vec())
                .map_err(|e| Error::Corrupt(format!("internal key {name}: {e}")))?;
            DynamicObject::new(name, &api_resource(INTERNAL_KIND, INTERNAL_PLURAL))
                .data(json!({ "spec": { "value": text } }))
        }
    };
    obj.metadata.resource_version = None;
    Ok(obj)
}

/// The stored value of a custom resource (without any soft-delete marker).
fn from_resource(t: &Target, obj: &DynamicObject) -> Result<Vec<u8>, Error> {
    match t {
        Target::Object(kind, name) => {
            let mut meta = serde_json::Map::new();
            let mut annotations = obj.metadata.annotations.clone().unwrap_or_default();
            if let Some(ours) = annotations.remove(META_ANNOTATION) {
                let v: Value = serde_json::from_str(&ours).map_err(|e| {
                    Error::Corrupt(format!("{kind} {name}: annotation {META_ANNOTATION}: {e}"))
                })?;
                if let Value::Object(m) = v {
                    meta.extend(m);
                }
            }
            annotations.remove(SOFT_DELETED);
            meta.insert("name".into(), json!(name));
            if let Some(l) = obj.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
                meta.insert("labels".into(), json!(l));
            }
            if !annotations.is_empty() {
                meta.insert("annotations".into(), json!(annotations));
            }
            let v = json!({
                "apiVersion": tortie_api::API_VERSION,
                "kind": kind.name(),
                "metadata": meta,
                "spec": obj.data.get("spec").cloned().unwrap_or(json!({})),
            });
            Ok(serde_json::to_vec(&v).expect("JSON values serialize"))
        }
        Target::Internal(name) => obj
            .data
            .pointer("/spec/value")
            .and_then(Value::as_str)
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| Error::Corrupt(format!("internal key {name} has no value"))),
    }
}

fn record(t: &Target, obj: &DynamicObject) -> Result<Record, Error> {
    let rev = revision_of(obj)?;
    Ok(Record {
        key: key_of(t),
        value: from_resource(t, obj)?,
        create_revision: rev,
        mod_revision: rev,
    })
}

/// The lock object's content.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct LockState {
    #[serde(default)]
    holder: String,
    /// Unix seconds after which another writer may finish `pending`.
    #[serde(default)]
    expires: u64,
    #[serde(default)]
    pending: Vec<PendingOp>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
enum PendingOp {
    Put { key: String, value: String },
    Delete { key: String },
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl KubernetesBackend {
    /// Connects with `config` (see [`KubernetesBackend::open`] for the URL forms).
    pub async fn connect(config: Config) -> Result<Self, Error> {
        // kube's TLS needs a process-wide crypto provider; ring is the one in our tree. An
        // error only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config)
            .map_err(|e| Error::Unavailable(format!("Kubernetes client: {e}")))?;
        let holder = format!(
            "{}/{}",
            std::env::var("TORTIE_NODENAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "tortie".into()),
            std::process::id()
        );
        Ok(KubernetesBackend {
            client,
            server,
            holder,
            lease: LEASE,
        })
    }

    /// Sets how long our committed transactions are ours to finish (tests shorten it to
    /// watch another writer finish a transaction we left).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// `kubernetes:` (in-cluster service account, else `$KUBECONFIG` / `~/.kube/config`),
    /// `kubernetes:///path/to/kubeconfig`, or `kubernetes+http://host:port` (no TLS, no auth:
    /// for the tests' fake API server and `kubectl proxy`).
    pub async fn open(url: &str) -> Result<Self, Error> {
        KubernetesBackend::connect(config_for(url).await?).await
    }

    fn api(&self, t: &Target) -> Api<DynamicObject> {
        match t {
            Target::Object(kind, _) => Api::all_with(
                self.client.clone(),
                &api_resource(kind.name(), kind.plural()),
            ),
            Target::Internal(_) => Api::all_with(
                self.client.clone(),
                &api_resource(INTERNAL_KIND, INTERNAL_PLURAL),
            ),
        }
    }

    fn name(t: &Target) -> &str {
        match t {
            Target::Object(_, n) | Target::Internal(n) => n,
        }
    }

    /// The object, soft-deleted or not.
    async fn get_raw(&self, t: &Target) -> Result<Option<DynamicObject>, Error> {
        let api = self.api(t);
        retrying(|| api.get_opt(Self::name(t)))
            .await
            .map_err(kube_err)
    }

    async fn current_revision(&self, key: &str) -> Result<Revision, Error> {
        let t = target(key)?;
        match self.get_raw(&t).await? {
            Some(o) if !soft_deleted(&o) => revision_of(&o),
            _ => Ok(0),
        }
    }

    /// Writes `value` at `t` whatever is there (the lock is held). Returns the new revision.
    async fn put(&self, t: &Target, value: &[u8]) -> Result<Revision, Error> {
        let api = self.api(t);
        let name = Self::name(t);
        for _ in 0..8 {
            let mut obj = to_resource(t, value)?;
            let written = match self.get_raw(t).await? {
                Some(existing) => {
                    obj.metadata.resource_version = existing.metadata.resource_version.clone();
                    retrying(|| api.replace(name, &POST, &obj)).await
                }
                None => retrying(|| api.create(&POST, &obj)).await,
            };
            match written {
                Ok(o) => return revision_of(&o),
                // Somebody outside the protocol (kubectl) wrote in between: read again.
                Err(e) if matches!(status_code(&e), Some(409 | 404)) => continue,
                Err(e) => return Err(kube_err(e)),
            }
        }
        Err(Error::Unavailable(format!(
            "{name}: kept changing under a locked write"
        )))
    }

    /// Soft delete, then delete with preconditions. Returns the revision of the marker.
    async fn delete(&self, t: &Target) -> Result<Option<Revision>, Error> {
        let api = self.api(t);
        let name = Self::name(t);
        for _ in 0..8 {
            let Some(mut obj) = self.get_raw(t).await? else {
                return Ok(None);
            };
            if !soft_deleted(&obj) {
                obj.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(SOFT_DELETED.into(), "true".into());
                obj = match retrying(|| api.replace(name, &POST, &obj)).await {
                    Ok(o) => o,
                    Err(e) if matches!(status_code(&e), Some(409 | 404)) => continue,
                    Err(e) => return Err(kube_err(e)),
                };
            }
            let marked_at = revision_of(&obj)?;
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: obj.metadata.uid.clone(),
                    resource_version: obj.metadata.resource_version.clone(),
                }),
                ..Default::default()
            };
            match retrying(|| api.delete(name, &dp)).await {
                Ok(_) => return Ok(Some(marked_at)),
                Err(e) if status_code(&e) == Some(404) => return Ok(Some(marked_at)),
                Err(e) if status_code(&e) == Some(409) => continue,
                Err(e) => return Err(kube_err(e)),
            }
        }
        Err(Error::Unavailable(format!(
            "{name}: kept changing under a locked delete"
        )))
    }

    /// Applies committed operations in order; the revision each left (0 for a delete of
    /// something already gone).
    async fn apply_ops(&self, ops: &[PendingOp]) -> Result<Vec<Revision>, Error> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match op {
                PendingOp::Put { key, value } => self.put(&target(key)?, value.as_bytes()).await?,
                PendingOp::Delete { key } => self.delete(&target(key)?).await?.unwrap_or(0),
            });
        }
        Ok(out)
    }

    fn lock_target() -> Target {
        Target::Internal(LOCK_NAME.into())
    }

    fn lock_object(state: &LockState, rv: Option<String>) -> DynamicObject {
        let mut obj = DynamicObject::new(LOCK_NAME, &api_resource(INTERNAL_KIND, INTERNAL_PLURAL))
            .data(
                json!({ "spec": { "value": serde_json::to_string(state).expect("serializes") } }),
            );
        obj.metadata.resource_version = rv;
        obj
    }

    /// Reads the lock, creating it when absent: (state, resourceVersion).
    async fn read_lock(&self) -> Result<(LockState, String), Error> {
        let t = Self::lock_target();
        let api = self.api(&t);
        loop {
            match self.get_raw(&t).await? {
                Some(o) => {
                    let text = o
                        .data
                        .pointer("/spec/value")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let state: LockState = serde_json::from_str(text)
                        .map_err(|e| Error::Corrupt(format!("transaction lock: {e}")))?;
                    return Ok((state, o.metadata.resource_version.unwrap_or_default()));
                }
                None => {
                    let obj = Self::lock_object(&LockState::default(), None);
                    match retrying(|| api.create(&POST, &obj)).await {
                        Ok(_) => {}
                        Err(e) if status_code(&e) == Some(409) => {}
                        Err(e) => return Err(kube_err(e)),
                    }
                }
            }
        }
    }

    /// Compare-and-swaps the lock; `Ok(None)` when somebody else wrote it first.
    async fn write_lock(&self, state: &LockState, rv: &str) -> Result<Option<String>, Error> {
        let t = Self::lock_target();
        let api = self.api(&t);
        let obj = Self::lock_object(state, Some(rv.to_string()));
        match retrying(|| api.replace(LOCK_NAME, &POST, &obj)).await {
            Ok(o) => Ok(Some(o.metadata.resource_version.unwrap_or_default())),
            Err(e) if status_code(&e) == Some(409) => Ok(None),
            Err(e) => Err(kube_err(e)),
        }
    }
}

#[async_trait]
impl Backend for KubernetesBackend {
    async fn get(&self, key: &str) -> Result<Option<Record>, Error> {
        let t = target(key)?;
        match self.get_raw(&t).await? {
            Some(o) if !soft_deleted(&o) => Ok(Some(record(&t, &o)?)),
            _ => Ok(None),
        }
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Record>, Revision), Error> {
        // A kind (`/tortie/v1/ippools/`) or guard keys (`/tortie/v1/_guards/…`).
        let (api, make): (
            Api<DynamicObject>,
            Box<dyn Fn(&str) -> Target + Send + Sync>,
        ) = if prefix.starts_with(&format!("{KEY_ROOT}_guards/")) {
            (
                self.api(&Target::Internal(String::new())),
                Box::new(|n: &str| Target::Internal(n.to_string())),
            )
        } else {
            let plural = prefix
                .strip_prefix(KEY_ROOT)
                .and_then(|r| r.strip_suffix('/'))
                .ok_or_else(|| {
                    Error::Unavailable(format!(
                        "prefix {prefix:?} cannot be listed in the Kubernetes datastore"
                    ))
                })?;
            let kind = Kind::ALL
                .iter()
                .copied()
                .find(|k| k.plural() == plural)
                .ok_or_else(|| Error::Unavailable(format!("no kind {plural:?}")))?;
            (
                self.api(&Target::Object(kind, String::new())),
                Box::new(move |n: &str| Target::Object(kind, n.to_string())),
            )
        };
        let list = retrying(|| api.list(&LIST)).await.map_err(kube_err)?;
        let rev: Revision = list
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or("0")
            .parse()
            .map_err(|_| Error::Corrupt("list resourceVersion is not a number".into()))?;
        let mut records = Vec::new();
        for o in &list.items {
            if soft_deleted(o) {
                continue;
            }
            let t = make(o.metadata.name.as_deref().unwrap_or_default());
            if matches!(&t, Target::Internal(n) if !n.starts_with("guard.")) {
                continue;
            }
            let r = record(&t, o)?;
            if r.key.starts_with(prefix) {
                records.push(r);
            }
        }
        records.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((records, rev))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, Error> {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(5);
        let ops: Vec<PendingOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put(key, value) => PendingOp::Put {
                    key: key.clone(),
                    value: String::from_utf8_lossy(value).into_owned(),
                },
                Op::Delete(key) => PendingOp::Delete { key: key.clone() },
            })
            .collect();
        loop {
            if started.elapsed() > LOCK_PATIENCE {
                return Err(Error::Unavailable(
                    "Kubernetes datastore: the transaction lock stayed busy for a minute".into(),
                ));
            }
            let (state, rv) = self.read_lock().await?;
            if !state.pending.is_empty() {
                if state.expires > unix_now() {
                    // Another writer is applying its committed transaction.
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                    continue;
                }
                // Its writer is gone: finish its work, then clear it.
                tracing::warn!(holder = %state.holder, ops = state.pending.len(), "finishing a transaction its writer left half applied");
                self.apply_ops(&state.pending).await?;
                self.write_lock(&LockState::default(), &rv).await?;
                continue;
            }
            for Compare::ModRevision(key, want) in &txn.compares {
                if self.current_revision(key).await? != *want {
                    return Ok(TxnOutcome::Conflict);
                }
            }
            let mine = LockState {
                holder: self.holder.clone(),
                expires: unix_now() + self.lease.as_secs(),
                pending: ops.clone(),
            };
            // The commit point: our operations are in the lock, or somebody else's write
            // came first and we look again.
            let Some(locked_rv) = self.write_lock(&mine, &rv).await? else {
                continue;
            };
            // A failure from here on leaves the operations committed in the lock: the next
            // writer finishes them once our lease has run out (like an etcd request whose
            // answer was lost, the caller cannot tell whether it happened).
            let revisions = self.apply_ops(&ops).await?;
            self.write_lock(&LockState::default(), &locked_rv).await?;
            return Ok(TxnOutcome::CommittedEach(revisions));
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<RawEventStream, Error> {
        let plural = prefix
            .strip_prefix(KEY_ROOT)
            .and_then(|r| r.strip_suffix('/'))
            .unwrap_or_default();
        let kind = Kind::ALL
            .iter()
            .copied()
            .find(|k| k.plural() == plural)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "prefix {prefix:?} cannot be watched in the Kubernetes datastore (one kind at a time)"
                ))
            })?;
        let api = self.api(&Target::Object(kind, String::new()));
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut from = after.to_string();
            let mut delay = Duration::from_millis(100);
            loop {
                let wp = WatchParams::default().timeout(290);
                let stream = match api.watch(&wp, &from).await {
                    Ok(s) => s,
                    Err(e) if status_code(&e) == Some(410) => {
                        let _ = tx.send(Ok(RawEvent::ResyncNeeded)).await;
                        return;
                    }
                    Err(e) if transient(&e) => {
                        tracing::debug!(error = %e, ?delay, "watch refused; backing off");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                        continue;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(kube_err(e))).await;
                        return;
                    }
                };
                delay = Duration::from_millis(100);
                let mut stream = std::pin::pin!(stream);
                while let Some(ev) = stream.next().await {
                    let out = match ev {
                        Ok(KubeEvent::Added(o)) => Some(event(kind, &o, Change::Added)),
                        Ok(KubeEvent::Modified(o)) => Some(event(kind, &o, Change::Modified)),
                        Ok(KubeEvent::Deleted(o)) => Some(event(kind, &o, Change::Deleted)),
                        Ok(KubeEvent::Bookmark(b)) => {
                            b.metadata.resource_version.parse().ok().map(|r| {
                                Ok((
                                    b.metadata.resource_version.clone(),
                                    Some(RawEvent::Bookmark(r)),
                                ))
                            })
                        }
                        Ok(KubeEvent::Error(s)) if s.code == 410 => {
                            let _ = tx.send(Ok(RawEvent::ResyncNeeded)).await;
                            return;
                        }
                        Ok(KubeEvent::Error(s)) => {
                            tracing::debug!(status = ?s, "watch error event; reconnecting");
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "watch stream broke; reconnecting");
                            break;
                        }
                    };
                    match out {
                        Some(Ok((rv, ev))) => {
                            from = rv;
                            if let Some(ev) = ev
                                && tx.send(Ok(ev)).await.is_err()
                            {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        None => {}
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn compact(&self, _revision: Revision) -> Result<(), Error> {
        Err(Error::Unavailable(
            "the Kubernetes API server compacts its own history".into(),
        ))
    }

    fn describe(&self) -> String {
        format!("kubernetes ({})", self.server.trim_end_matches('/'))
    }
}

/// The client configuration a `kubernetes…` datastore URL names (see
/// [`KubernetesBackend::open`]); the agent uses it for its own Kubernetes calls too.
pub async fn config_for(url: &str) -> Result<Config, Error> {
    let bad = |why: String| Error::BadUrl {
        url: url.to_string(),
        why,
    };
    let config = if let Some(plain) = url.strip_prefix("kubernetes+") {
        Config::new(plain.parse().map_err(|e| bad(format!("{e}")))?)
    } else {
        match url.strip_prefix("kubernetes:").unwrap_or("") {
            "" | "//" | "///" => Config::infer()
                .await
                .map_err(|e| bad(format!("no in-cluster or kubeconfig configuration: {e}")))?,
            path => {
                let path = path.trim_start_matches("//");
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| bad(format!("reading {path}: {e}")))?;
                Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| bad(format!("{path}: {e}")))?
            }
        }
    };
    Ok(config)
}

enum Change {
    Added,
    Modified,
    Deleted,
}

/// One API watch event as a contract event: (its resourceVersion, the event to pass on, if
/// any). A soft-delete marker is the deletion; the real delete that follows is not repeated.
fn event(
    kind: Kind,
    obj: &DynamicObject,
    change: Change,
) -> Result<(String, Option<RawEvent>), Error> {
    let t = Target::Object(kind, obj.metadata.name.clone().unwrap_or_default());
    let rv = obj.metadata.resource_version.clone().unwrap_or_default();
    let rec = record(&t, obj)?;
    let marked = soft_deleted(obj);
    let ev = match change {
        Change::Added => Some(RawEvent::Put(rec)),
        Change::Modified if !marked => Some(RawEvent::Put(Record {
            create_revision: 0,
            ..rec
        })),
        // Reported at the marker already.
        Change::Deleted if marked => None,
        Change::Modified | Change::Deleted => Some(RawEvent::Deleted {
            key: rec.key,
            revision: rec.mod_revision,
            prev: rec.value,
        }),
    };
    Ok((rv, ev))
}

/// Short names for `kubectl get` (unique, and clear of the built-in kinds' short names).
pub fn short_names(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::IPPool => &["ipp"],
        Kind::BGPConfiguration => &["bgpconfig"],
        Kind::BGPPeer => &["bgpp"],
        Kind::BGPFilter => &["bgpf"],
        Kind::Node => &["tnode"],
        Kind::IPAMConfiguration => &["ipamconfig"],
        Kind::IPReservation => &["ipres"],
        Kind::IPAMBlock => &["ipb"],
        Kind::BlockAffinity => &["ba"],
        Kind::IPAMHandle => &["iph"],
    }
}

/// `kubectl get` columns: (name, JSON path under the object, type). Only those whose path
/// exists in the kind's schema are written (checked by [`crd`]).
fn printer_columns(kind: Kind) -> &'static [(&'static str, &'static str, &'static str)] {
    match kind {
        Kind::IPPool => &[
            ("CIDR", ".spec.cidr", "string"),
            ("Block", ".spec.blockSize", "integer"),
            ("VXLAN", ".spec.vxlanMode", "string"),
            ("NAT", ".spec.natOutgoing", "boolean"),
            ("Disabled", ".spec.disabled", "boolean"),
        ],
        Kind::BGPConfiguration => &[
            ("AS", ".spec.asNumber", "string"),
            ("Mesh", ".spec.nodeToNodeMeshEnabled", "boolean"),
        ],
        Kind::BGPPeer => &[
            ("Peer IP", ".spec.peerIP", "string"),
            ("AS", ".spec.asNumber", "string"),
            ("Node", ".spec.node", "string"),
            ("Node selector", ".spec.nodeSelector", "string"),
        ],
        Kind::Node => &[
            ("IPv4", ".spec.bgp.ipv4Address", "string"),
            ("IPv6", ".spec.bgp.ipv6Address", "string"),
            ("AS", ".spec.bgp.asNumber", "string"),
        ],
        Kind::IPAMBlock => &[
            ("CIDR", ".spec.cidr", "string"),
            ("Affinity", ".spec.affinity", "string"),
        ],
        Kind::BlockAffinity => &[
            ("Node", ".spec.node", "string"),
            ("CIDR", ".spec.cidr", "string"),
            ("State", ".spec.state", "string"),
        ],
        Kind::IPReservation => &[],
        Kind::BGPFilter => &[],
        Kind::IPAMConfiguration => &[
            ("Strict affinity", ".spec.strictAffinity", "boolean"),
            ("Max blocks", ".spec.maxBlocksPerHost", "integer"),
        ],
        Kind::IPAMHandle => &[("Handle", ".spec.handleID", "string")],
    }
}

/// Schema-level rules the API server enforces itself (CEL): the same immutable fields the
/// datastore checks (`Spec::validate_update`), so `kubectl edit` cannot get round them.
fn validations(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::IPPool => vec![
            json!({"rule": "self.cidr == oldSelf.cidr", "message": "spec.cidr may not change: create a new pool instead"}),
            json!({"rule": "!has(oldSelf.blockSize) || (has(self.blockSize) && self.blockSize == oldSelf.blockSize)", "message": "spec.blockSize may not change: existing blocks are never re-sliced"}),
        ],
        _ => Vec::new(),
    }
}

fn schema_has(schema: &Value, path: &str) -> bool {
    let mut at = schema;
    for part in path.trim_start_matches(".spec.").split('.') {
        match at.pointer(&format!("/properties/{part}")) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

/// The JSON schema of `kind`'s spec in the structural form the API server requires.
pub fn spec_schema(kind: Kind) -> Value {
    let settings = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString);
    let mut schema = serde_json::to_value(kind.spec_schema(settings)).expect("schemas serialize");
    if let Some(o) = schema.as_object_mut() {
        o.remove("title");
    }
    without_pattern_properties(&mut schema);
    schema
}

/// Maps keyed by numbers (an IPAM block's allocations by ordinal) come out of schemars as
/// `patternProperties`, which the API server refuses in a CRD ("patternProperties is not
/// supported", seen on kube-apiserver 1.32): the value schema becomes `additionalProperties`
/// instead, and the key pattern is left to the datastore's own decoding.
fn without_pattern_properties(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(patterns)) = o.remove("patternProperties")
                && let Some((_, value_schema)) = patterns.into_iter().next()
            {
                o.insert("additionalProperties".into(), value_schema);
            }
            o.values_mut().for_each(without_pattern_properties);
        }
        Value::Array(a) => a.iter_mut().for_each(without_pattern_properties),
        _ => {}
    }
}

fn crd_document(
    kind: &str,
    plural: &str,
    short: &[&str],
    spec: Value,
    columns: Vec<Value>,
    rules: Vec<Value>,
) -> Value {
    let mut spec = spec;
    if !rules.is_empty() {
        spec["x-kubernetes-validations"] = json!(rules);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{plural}.{GROUP}") },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_ascii_lowercase(),
                "shortNames": short,
                "categories": ["tortie"],
            },
            "scope": "Cluster",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "description": format!("tortie {kind} (see tortiectl and docs/)"),
                    "properties": {
                        "apiVersion": { "type": "string" },
                        "kind": { "type": "string" },
                        "metadata": { "type": "object" },
                        "spec": spec,
                    },
                    "required": ["spec"],
                }},
                "additionalPrinterColumns": columns,
            }],
        },
    })
}

/// The CustomResourceDefinition of `kind`.
pub fn crd(kind: Kind) -> Value {
    let spec = spec_schema(kind);
    let mut columns: Vec<Value> = printer_columns(kind)
        .iter()
        .filter(|(_, path, _)| schema_has(&spec, path))
        .map(|(name, path, ty)| json!({"name": name, "type": ty, "jsonPath": path}))
        .collect();
    columns.push(json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}));
    crd_document(
        kind.name(),
        kind.plural(),
        short_names(kind),
        spec,
        columns,
        validations(kind),
    )
}

/// The CRD of the internal kind (guards and the transaction lock).
pub fn internal_crd() -> Value {
    crd_document(
        INTERNAL_KIND,
        INTERNAL_PLURAL,
        &[],
        json!({
            "type": "object",
            "description": "Internal to tortie's Kubernetes datastore: collection guards and the transaction lock.",
            "properties": { "value": { "type": "string" } },
        }),
        vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})],
        Vec::new(),
    )
}

/// Every CRD, as (file name, YAML), in a stable order: what `tortie-crdgen` writes into
/// `manifests/crds/`.
pub fn crd_files() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Kind::ALL
        .iter()
        .map(|k| (format!("{}.{GROUP}.yaml", k.plural()), crd_yaml(&crd(*k))))
        .collect();
    out.push((
        format!("{INTERNAL_PLURAL}.{GROUP}.yaml"),
        crd_yaml(&internal_crd()),
    ));
    out.sort();
    out
}

fn crd_yaml(v: &Value) -> String {
    format!(
        "# Generated by tortie-crdgen from the Rust types in api/: do not edit.\n{}",
        serde_saphyr::to_string(v).expect("CRDs serialize as YAML")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_resources_map_both_ways() {
        for key in [
            "/tortie/v1/ippools/default-ipv4",
            "/tortie/v1/blockaffinities/node-1-10-0-0-0-26",
            "/tortie/v1/_guards/ippools",
        ] {
            assert_eq!(key_of(&target(key).unwrap()), key);
        }
        assert!(target("/tortie/v1/nonsense/x").is_err());
        assert!(target("/elsewhere/x").is_err());
    }

    #[test]
    fn a_stored_value_survives_the_round_trip_through_a_custom_resource() {
        let t = target("/tortie/v1/ippools/p1").unwrap();
        let value = json!({
            "apiVersion": "tortie.io/v1", "kind": "IPPool",
            "metadata": {"name": "p1", "uid": "u-1", "creationTimestamp": "2026-11-22T10:00:00Z",
                         "labels": {"a": "b"}, "annotations": {"note": "x"}},
            "spec": {"cidr": "10.0.0.0/16", "blockSize": 26}
        });
        let mut obj = to_resource(&t, &serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(obj.metadata.labels.as_ref().unwrap()["a"], "b");
        assert!(obj.metadata.annotations.as_ref().unwrap()[META_ANNOTATION].contains("u-1"));
        obj.metadata.resource_version = Some("42".into());
        let back: Value = serde_json::from_slice(&from_resource(&t, &obj).unwrap()).unwrap();
        assert_eq!(back, value);
        let r = record(&t, &obj).unwrap();
        assert_eq!(r.mod_revision, 42);
        // A soft-deleted object's marker never shows in its value.
        obj.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(SOFT_DELETED.into(), "true".into());
        assert!(soft_deleted(&obj));
        let back: Value = serde_json::from_slice(&from_resource(&t, &obj).unwrap()).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn crds_are_structural_and_their_columns_exist() {
        for kind in Kind::ALL {
            let crd = crd(*kind);
            let text = crd.to_string();
            assert!(!text.contains("\"$ref\""), "{kind}: $ref in a CRD schema");
            assert!(
                !text.contains("patternProperties"),
                "{kind}: refused by the API server"
            );
            assert!(!text.contains("\"anyOf\":[{\"type\""), "{kind}");
            let cols = crd
                .pointer("/spec/versions/0/additionalPrinterColumns")
                .unwrap()
                .as_array()
                .unwrap();
            assert!(
                cols.len() > 1 || matches!(kind, Kind::IPReservation | Kind::BGPFilter),
                "{kind}: {cols:?}"
            );
        }
        let pool = crd(Kind::IPPool);
        let spec = pool
            .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
            .unwrap();
        assert!(schema_has(spec, ".spec.cidr"));
        assert!(spec.get("x-kubernetes-validations").is_some());
    }
}
