//! The datastore conformance suite: every test runs against every backend (an SQLite file, a
//! throw-away etcd from Debian's `etcd-server`, and the Kubernetes backend against a fake API
//! server), so that the backends behave the same.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tortie_api::values::{Cidr, LabelSelector};
use tortie_api::{
    IPAMConfigurationSpec, IPPool, IPPoolSpec, Kind, Node, NodeSpec, Object, ObjectMeta,
};
use tortie_datastore::testing::{
    EtcdServer, FakeApiServer, REAL_API_SERVER, real_kubeconfig, wipe_kubernetes,
};
use tortie_datastore::{Change, Datastore, Error, WatchEvent, WatchStream};

/// A backend under test; keeps its server or directory alive.
struct Fixture {
    url: String,
    name: &'static str,
    _sqlite_dir: Option<tempfile::TempDir>,
    _etcd: Option<EtcdServer>,
    fake_api: Option<FakeApiServer>,
}

impl Fixture {
    fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        Fixture {
            url,
            name: "sqlite",
            _sqlite_dir: Some(dir),
            _etcd: None,
            fake_api: None,
        }
    }
    fn etcd() -> Fixture {
        let etcd = EtcdServer::start().expect("start etcd (apt-get install etcd-server)");
        Fixture {
            url: etcd.url(),
            name: "etcd",
            _sqlite_dir: None,
            _etcd: Some(etcd),
            fake_api: None,
        }
    }
    /// The fake API server, or the real one `TORTIE_TEST_KUBECONFIG` names (wiped first;
    /// the caller holds [`REAL_API_SERVER`] for the test's length).
    async fn kubernetes() -> Fixture {
        if let Some(kubeconfig) = real_kubeconfig() {
            let url = format!("kubernetes://{kubeconfig}");
            wipe_kubernetes(&url)
                .await
                .expect("wipe the real API server");
            return Fixture {
                url,
                name: "kubernetes (real API server)",
                _sqlite_dir: None,
                _etcd: None,
                fake_api: None,
            };
        }
        let api = FakeApiServer::start().expect("start the fake API server (python3)");
        Fixture {
            url: api.url(),
            name: "kubernetes",
            _sqlite_dir: None,
            _etcd: None,
            fake_api: Some(api),
        }
    }
    /// Whether history can be compacted on demand (not on a real API server).
    fn can_compact(&self) -> bool {
        self.fake_api.is_some() || !self.name.starts_with("kubernetes")
    }
    /// Forgets history up to `revision` (the API server compacts on its own; the fake one
    /// has a hook for it).
    async fn compact(&self, ds: &Datastore, revision: i64) {
        match &self.fake_api {
            Some(api) => {
                api.hook("compact", "{}").unwrap();
            }
            None => ds.backend().compact(revision).await.unwrap(),
        }
    }
    /// How many contended increments each process makes: every Kubernetes transaction is
    /// half a dozen HTTP requests to a Python server.
    fn increments(&self) -> u32 {
        if self.name.starts_with("kubernetes") {
            100
        } else {
            2_500
        }
    }
    async fn open(&self) -> Datastore {
        Datastore::open(&self.url).await.unwrap()
    }
}

/// Runs one scenario against every backend.
macro_rules! conformance {
    ($name:ident, $scenario:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let f = super::Fixture::sqlite();
                super::$scenario(&f).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                let f = super::Fixture::etcd();
                super::$scenario(&f).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kubernetes() {
                let _one_at_a_time = super::REAL_API_SERVER.lock().await;
                let f = super::Fixture::kubernetes().await;
                super::$scenario(&f).await;
            }
        }
    };
}

fn pool(name: &str, cidr: &str) -> IPPool {
    Object::new(name, IPPoolSpec::new(cidr.parse::<Cidr>().unwrap()))
}

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    let mut n = Object::new(name, NodeSpec::default());
    n.metadata.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    n
}

async fn next_event<T>(w: &mut WatchStream<T>) -> WatchEvent<T> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("watch event within 10 s")
            .expect("watch stream open")
            .expect("watch event ok");
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            return ev;
        }
    }
}

// ===== create-if-absent =====

async fn create_if_absent(f: &Fixture) {
    let ds = f.open().await;
    let created = ds.create(pool("p1", "10.10.0.0/16")).await.unwrap();
    let rv = created
        .metadata
        .resource_version
        .clone()
        .expect("resourceVersion set");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.spec.block_size,
        Some(26),
        "defaults applied on write"
    );

    let again = ds.create(pool("p1", "10.10.0.0/16")).await.unwrap_err();
    assert!(
        matches!(
            again,
            Error::AlreadyExists {
                kind: Kind::IPPool,
                ..
            }
        ),
        "{again}"
    );

    let read = ds.get::<IPPoolSpec>("p1").await.unwrap().unwrap();
    assert_eq!(read.metadata.resource_version.as_deref(), Some(rv.as_str()));
    assert_eq!(read.metadata.uid, created.metadata.uid);
    assert!(ds.get::<IPPoolSpec>("nope").await.unwrap().is_none());
}
conformance!(create_if_absent_on, create_if_absent);

// ===== compare-and-swap =====

async fn cas_conflict_detection(f: &Fixture) {
    let ds = f.open().await;
    let v1 = ds.create(pool("p1", "10.10.0.0/16")).await.unwrap();

    let mut a = v1.clone();
    a.spec.nat_outgoing = true;
    let v2 = ds.update(a).await.unwrap();
    assert_ne!(v2.metadata.resource_version, v1.metadata.resource_version);

    // A writer still holding v1 loses, and its change is not applied.
    let mut stale = v1.clone();
    stale.spec.disabled = true;
    let err = ds.update(stale).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let now = ds.get::<IPPoolSpec>("p1").await.unwrap().unwrap();
    assert!(now.spec.nat_outgoing && !now.spec.disabled);

    // An update must say which version it replaces.
    let mut blind = now.clone();
    blind.metadata.resource_version = None;
    assert!(matches!(
        ds.update(blind).await.unwrap_err(),
        Error::Invalid { .. }
    ));

    // Updating what does not exist is NotFound, not an implicit create.
    let mut ghost = pool("ghost", "10.20.0.0/16");
    ghost.metadata.resource_version = Some("1".into());
    assert!(matches!(
        ds.update(ghost).await.unwrap_err(),
        Error::NotFound { .. }
    ));
}
conformance!(cas_conflict_detection_on, cas_conflict_detection);

// ===== no lost update: 4 processes × 2,500 contended increments =====

fn contend_binary() -> PathBuf {
    // Integration tests live in target/<profile>/deps; `cargo test` builds examples next door.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join("contend")
}

async fn no_lost_update(f: &Fixture) {
    const PROCESSES: u32 = 4;
    let each = f.increments();
    let ds = f.open().await;
    ds.create(Object::new("default", IPAMConfigurationSpec::default()))
        .await
        .unwrap();
    let bin = contend_binary();
    assert!(
        bin.exists(),
        "{} missing: run through `cargo test`",
        bin.display()
    );
    let started = Instant::now();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            tokio::process::Command::new(&bin)
                .arg(&f.url)
                .arg(each.to_string())
                .kill_on_drop(true)
                .output()
        })
        .collect();
    let mut conflicts = Vec::new();
    for out in futures::future::join_all(children).await {
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "contender failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        conflicts.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let cfg = ds
        .get::<IPAMConfigurationSpec>("default")
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "{}: {} increments from {PROCESSES} processes in {:?}; {conflicts:?}",
        f.name,
        PROCESSES * each,
        started.elapsed()
    );
    assert_eq!(
        cfg.spec.max_blocks_per_host,
        PROCESSES * each,
        "an update was lost"
    );
}
conformance!(no_lost_update_on, no_lost_update);

// ===== watch: every change exactly once, in order =====

/// What a watcher should see, as (event kind, name, natOutgoing).
fn summarize(ev: &WatchEvent<IPPool>) -> (&'static str, String, bool) {
    match ev {
        WatchEvent::Added(p) => ("added", p.metadata.name.clone(), p.spec.nat_outgoing),
        WatchEvent::Modified(p) => ("modified", p.metadata.name.clone(), p.spec.nat_outgoing),
        WatchEvent::Deleted(p) => ("deleted", p.metadata.name.clone(), p.spec.nat_outgoing),
        other => panic!("unexpected {other:?}"),
    }
}

/// Makes 3 × 20 changes (creates, updates, deletes, and batches) and returns what a watch must
/// report, in order.
async fn make_changes(ds: &Datastore, round: usize) -> Vec<(&'static str, String, bool)> {
    let mut expected = Vec::new();
    for i in 0..20 {
        let name = format!("r{round}-p{i}");
        let p = ds
            .create(pool(&name, &format!("10.{}.{i}.0/24", 100 + round)))
            .await
            .unwrap();
        expected.push(("added", name.clone(), false));
        let mut m = p.clone();
        m.spec.nat_outgoing = true;
        ds.update(m).await.unwrap();
        expected.push(("modified", name.clone(), true));
        if i % 2 == 0 {
            ds.delete::<IPPoolSpec>(&name, None).await.unwrap();
            expected.push(("deleted", name, true));
        }
    }
    // A batch commits at one revision but still yields one event per object, in batch order.
    let names = [format!("r{round}-b1"), format!("r{round}-b2")];
    ds.write_all(vec![
        Change::Create(pool(&names[0], &format!("10.{}.200.0/24", 100 + round)).into()),
        Change::Create(pool(&names[1], &format!("10.{}.201.0/24", 100 + round)).into()),
    ])
    .await
    .unwrap();
    expected.push(("added", names[0].clone(), false));
    expected.push(("added", names[1].clone(), false));
    expected
}

async fn watch_in_order_exactly_once(f: &Fixture) {
    let ds = f.open().await;
    // Something before the watch's starting point that must *not* be replayed.
    ds.create(pool("before", "10.99.0.0/16")).await.unwrap();
    let start = ds.list::<IPPoolSpec>(None).await.unwrap().resource_version;
    let mut w = ds.watch::<IPPoolSpec>(Some(&start)).await.unwrap();
    // Unrelated kinds do not leak into this watch.
    ds.create(node("n1", &[])).await.unwrap();
    let expected = make_changes(&ds, 0).await;
    let mut last_rv = start.parse::<i64>().unwrap();
    for want in &expected {
        let ev = next_event(&mut w).await;
        let rv: i64 = ev
            .object()
            .unwrap()
            .metadata
            .resource_version
            .as_ref()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rv >= last_rv,
            "revisions go backwards: {rv} after {last_rv}"
        );
        last_rv = rv;
        assert_eq!(&summarize(&ev), want);
    }
    // Nothing more: no duplicates trail behind.
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match w.next().await {
                Some(Ok(WatchEvent::Bookmark(_))) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(extra.is_err(), "unexpected extra event: {extra:?}");
}
conformance!(watch_in_order_exactly_once_on, watch_in_order_exactly_once);

// ===== watch: resume after a restart from the last seen revision =====

async fn watch_resumes_after_restart(f: &Fixture) {
    let ds = f.open().await;
    let start = ds.list::<IPPoolSpec>(None).await.unwrap().resource_version;
    let mut w = ds.watch::<IPPoolSpec>(Some(&start)).await.unwrap();
    let expected = make_changes(&ds, 1).await;
    let half = expected.len() / 2;
    let mut last_seen = String::new();
    for want in &expected[..half] {
        let ev = next_event(&mut w).await;
        assert_eq!(&summarize(&ev), want);
        last_seen = ev
            .object()
            .unwrap()
            .metadata
            .resource_version
            .clone()
            .unwrap();
    }
    // "Restart": drop the watch and the client, then come back with only `last_seen`, while
    // more changes happen in between.
    drop(w);
    drop(ds);
    let ds = f.open().await;
    let mut expected_rest: Vec<_> = expected[half..].to_vec();
    // Events after `last_seen` that share its revision (a batch) were already delivered.
    let seen_rev: i64 = last_seen.parse().unwrap();
    let mut w = ds.watch::<IPPoolSpec>(Some(&last_seen)).await.unwrap();
    expected_rest.extend(make_changes(&ds, 2).await);
    for want in &expected_rest {
        let ev = next_event(&mut w).await;
        let rv: i64 = ev
            .object()
            .unwrap()
            .metadata
            .resource_version
            .as_ref()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv > seen_rev);
        assert_eq!(&summarize(&ev), want);
    }
}
conformance!(watch_resumes_after_restart_on, watch_resumes_after_restart);

// ===== watch: explicit resync when history is gone =====

async fn watch_resync_when_history_gone(f: &Fixture) {
    if !f.can_compact() {
        eprintln!(
            "{}: skipped, the API server compacts on its own schedule",
            f.name
        );
        return;
    }
    let ds = f.open().await;
    let old = ds.create(pool("p1", "10.10.0.0/16")).await.unwrap();
    let old_rv = old.metadata.resource_version.clone().unwrap();
    let mut m = old.clone();
    m.spec.nat_outgoing = true;
    let newer = ds.update(m).await.unwrap();
    let mut m = newer.clone();
    m.spec.disabled = true;
    let newest = ds.update(m).await.unwrap();
    let newest_rv: i64 = newest
        .metadata
        .resource_version
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    // History before `newest` is gone; the change at `newer` cannot be replayed.
    f.compact(&ds, newest_rv).await;
    let mut w = ds.watch::<IPPoolSpec>(Some(&old_rv)).await.unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::ResyncNeeded);
    // A fresh list + watch from its revision works again.
    let list = ds.list::<IPPoolSpec>(None).await.unwrap();
    let mut w = ds
        .watch::<IPPoolSpec>(Some(&list.resource_version))
        .await
        .unwrap();
    ds.delete::<IPPoolSpec>("p1", None).await.unwrap();
    assert!(matches!(next_event(&mut w).await, WatchEvent::Deleted(p) if p.metadata.name == "p1"));
}
conformance!(
    watch_resync_when_history_gone_on,
    watch_resync_when_history_gone
);

// ===== another client's writes reach a watch quickly =====

async fn other_clients_writes_visible(f: &Fixture) {
    let watcher = f.open().await;
    let writer = f.open().await; // its own connection, as another process has
    let mut w = watcher.watch::<IPPoolSpec>(None).await.unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        writer
            .create(pool(&format!("v{i}"), &format!("10.50.{i}.0/24")))
            .await
            .unwrap();
        let ev = next_event(&mut w).await;
        worst = worst.max(t.elapsed());
        assert!(matches!(ev, WatchEvent::Added(p) if p.metadata.name == format!("v{i}")));
    }
    eprintln!("{}: worst write-to-watch latency {worst:?}", f.name);
    assert!(worst < Duration::from_millis(200), "{worst:?}");
}
conformance!(
    other_clients_writes_visible_on,
    other_clients_writes_visible
);

// ===== delete with a revision precondition =====

async fn delete_precondition(f: &Fixture) {
    let ds = f.open().await;
    let v1 = ds.create(pool("p1", "10.10.0.0/16")).await.unwrap();
    let mut m = v1.clone();
    m.spec.nat_outgoing = true;
    let v2 = ds.update(m).await.unwrap();
    let stale = v1.metadata.resource_version.as_deref();
    let err = ds.delete::<IPPoolSpec>("p1", stale).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(
        ds.get::<IPPoolSpec>("p1").await.unwrap().is_some(),
        "stale delete removed it"
    );
    let gone = ds
        .delete::<IPPoolSpec>("p1", v2.metadata.resource_version.as_deref())
        .await
        .unwrap();
    assert!(gone.spec.nat_outgoing, "delete returns the last state");
    assert!(ds.get::<IPPoolSpec>("p1").await.unwrap().is_none());
    let err = ds.delete::<IPPoolSpec>("p1", None).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}
conformance!(delete_precondition_on, delete_precondition);

// ===== list by label selector =====

async fn list_by_selector(f: &Fixture) {
    let ds = f.open().await;
    ds.create(node("a1", &[("rack", "a"), ("role", "worker")]))
        .await
        .unwrap();
    ds.create(node("a2", &[("rack", "a")])).await.unwrap();
    ds.create(node("b1", &[("rack", "b"), ("role", "worker")]))
        .await
        .unwrap();
    ds.create(node("c1", &[])).await.unwrap();
    let names = |sel: &str| {
        let ds = ds.clone();
        let sel: LabelSelector = sel.parse().unwrap();
        async move {
            ds.list::<NodeSpec>(Some(&sel))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|n| n.metadata.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("rack == 'a'").await, ["a1", "a2"]);
    assert_eq!(names("rack != 'a'").await, ["b1", "c1"]);
    assert_eq!(names("has(role) && rack in {'a', 'b'}").await, ["a1", "b1"]);
    assert_eq!(
        names("!has(rack) || role == 'worker'").await,
        ["a1", "b1", "c1"]
    );
    assert_eq!(names("all()").await.len(), 4);
    assert_eq!(ds.list::<NodeSpec>(None).await.unwrap().items.len(), 4);
}
conformance!(list_by_selector_on, list_by_selector);

// ===== shared write rules: pool overlap (atomic) and immutable fields =====

async fn pool_rules(f: &Fixture) {
    let ds = f.open().await;
    ds.create(pool("p1", "10.10.0.0/16")).await.unwrap();
    let err = ds.create(pool("p2", "10.10.128.0/17")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("spec.cidr") && text.contains("overlaps IPPool \"p1\""),
        "{text}"
    );

    let mut changed = ds.get::<IPPoolSpec>("p1").await.unwrap().unwrap();
    changed.spec.block_size = Some(28);
    let err = ds.update(changed).await.unwrap_err().to_string();
    assert!(err.contains("spec.blockSize"), "{err}");
    assert_eq!(
        ds.get::<IPPoolSpec>("p1")
            .await
            .unwrap()
            .unwrap()
            .spec
            .block_size,
        Some(26)
    );

    // A batch with one bad object writes nothing.
    let err = ds
        .write_all(vec![
            Change::Create(node("fine", &[]).into()),
            Change::Create(pool("p3", "10.10.1.0/24").into()),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.batch_index(), Some(1));
    assert!(ds.get::<NodeSpec>("fine").await.unwrap().is_none());
}
conformance!(pool_rules_on, pool_rules);

async fn concurrent_overlapping_creates(f: &Fixture) {
    // Eight clients race to create pools that all overlap 10.30.0.0/16: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let ds = f.open().await;
        tasks.push(tokio::spawn(async move {
            let cidr = if i == 0 {
                "10.30.0.0/16".to_string()
            } else {
                format!("10.30.{i}.0/24")
            };
            ds.create(pool(&format!("race{i}"), &cidr)).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert!(e.to_string().contains("overlaps"), "{e}"),
        }
    }
    // Non-overlapping /24s could all win only if 10.30.0.0/16 lost; either way the stored set
    // must be overlap-free.
    let pools = f.open().await.list::<IPPoolSpec>(None).await.unwrap().items;
    for a in &pools {
        for b in &pools {
            assert!(a.metadata.name == b.metadata.name || !a.spec.cidr.overlaps(&b.spec.cidr));
        }
    }
    assert!(wins >= 1 && wins == pools.len());
}
conformance!(
    concurrent_overlapping_creates_on,
    concurrent_overlapping_creates
);

#[test]
fn stored_objects_gain_defaults_on_read() {
    // Written without blockSize by an older version: reading fills it in.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let f = Fixture::sqlite();
        let ds = f.open().await;
        let raw = br#"{"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"old"},"spec":{"cidr":"fd00:1::/48"}}"#;
        let key = tortie_datastore::object_key(Kind::IPPool, "old");
        let txn = tortie_datastore::backend::Txn {
            compares: vec![],
            ops: vec![tortie_datastore::backend::Op::Put(key, raw.to_vec())],
        };
        ds.backend().txn(txn).await.unwrap();
        let p = ds.get::<IPPoolSpec>("old").await.unwrap().unwrap();
        assert_eq!(p.spec.block_size, Some(122));
        assert_eq!(p.spec.node_selector.as_str(), "all()");
        let _ = ObjectMeta::default();
        let _ = BTreeMap::<String, String>::new();
    });
}
