//! Scenarios of the Kubernetes backend against the fake API server
//! (`testdata/fake-apiserver.py`), with faults injected where the real API server would
//! produce them: a stale resourceVersion, a writer dying between the soft-delete marker and
//! the delete, `429 Too Many Requests`, and watches cut off. The conformance suite
//! (tests/conformance.rs) runs every common scenario against this backend too.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tortie_api::values::Cidr;
use tortie_api::{IPPool, IPPoolSpec, Object};
use tortie_datastore::kubernetes::KubernetesBackend;
use tortie_datastore::testing::FakeApiServer;
use tortie_datastore::{Datastore, Error, WatchEvent};

fn pool(name: &str, cidr: &str) -> IPPool {
    Object::new(name, IPPoolSpec::new(cidr.parse::<Cidr>().unwrap()))
}

async fn open(api: &FakeApiServer) -> Datastore {
    Datastore::open(&api.url()).await.unwrap()
}

async fn next<T: std::fmt::Debug>(w: &mut tortie_datastore::WatchStream<T>) -> WatchEvent<T> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("a watch event within 10 s")
            .expect("the watch goes on")
            .expect("no watch error");
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            return ev;
        }
    }
}

const POOLS: &str = "/apis/tortie.io/v1/ippools";

/// A change made behind our back (kubectl edit) between our read and our write: the write
/// is refused as a conflict, never applied over the other one.
#[tokio::test]
async fn a_stale_resource_version_is_a_conflict() {
    let api = FakeApiServer::start().unwrap();
    let ds = open(&api).await;
    let p = ds.create(pool("p1", "10.1.0.0/16")).await.unwrap();
    // kubectl-style edit straight on the API: a new label.
    let raw = api.get(&format!("{POOLS}/p1")).unwrap();
    let mut obj: serde_json::Value = serde_json::from_str(&raw).unwrap();
    obj["metadata"]["labels"] = serde_json::json!({"edited": "by-kubectl"});
    let port = api.base().rsplit(':').next().unwrap().to_string();
    let put = std::process::Command::new("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request as u, sys; r = u.Request('http://127.0.0.1:{port}{POOLS}/p1', data=sys.argv[1].encode(), method='PUT', headers={{'Content-Type': 'application/json'}}); print(u.urlopen(r).status)"
            ),
            &obj.to_string(),
        ])
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    let mut stale = p.clone();
    stale.spec.nat_outgoing = true;
    let err = ds.update(stale).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let now = ds.get::<IPPoolSpec>("p1").await.unwrap().unwrap();
    assert_eq!(
        now.metadata.labels.get("edited").map(String::as_str),
        Some("by-kubectl")
    );
    assert!(!now.spec.nat_outgoing, "the stale write was not applied");
}

/// A writer that dies after the soft-delete marker: the object reads as gone at once, a
/// watcher sees one deletion, and the next writer finishes the delete (its lease over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_cut_short_after_the_marker_is_finished_by_the_next_writer() {
    let api = FakeApiServer::start().unwrap();
    let backend = KubernetesBackend::open(&api.url())
        .await
        .unwrap()
        .with_lease(Duration::ZERO);
    let ds = Datastore::new(Arc::new(backend));
    ds.create(pool("p1", "10.1.0.0/16")).await.unwrap();
    let list = ds.list::<IPPoolSpec>(None).await.unwrap();
    let mut w = ds
        .watch::<IPPoolSpec>(Some(&list.resource_version))
        .await
        .unwrap();
    // The API refuses the real DELETE once (a non-retryable answer), after our marker.
    api.hook(
        "fail",
        r#"{"method": "DELETE", "path": "/ippools/p1$", "status": 400, "count": 1}"#,
    )
    .unwrap();
    assert!(ds.delete::<IPPoolSpec>("p1", None).await.is_err());
    // Still on the server, marked; absent to every reader.
    let raw = api.get(&format!("{POOLS}/p1")).unwrap();
    assert!(raw.contains("tortie.io/deleted"), "{raw}");
    assert!(ds.get::<IPPoolSpec>("p1").await.unwrap().is_none());
    assert!(ds.list::<IPPoolSpec>(None).await.unwrap().items.is_empty());
    assert!(matches!(next(&mut w).await, WatchEvent::Deleted(p) if p.metadata.name == "p1"));
    // The next write finds the committed transaction in the lock and finishes it first.
    ds.create(pool("p2", "10.2.0.0/16")).await.unwrap();
    let raw = api.get(&format!("{POOLS}/p1")).unwrap();
    assert!(raw.contains("NotFound"), "{raw}");
    // The watcher sees p2 next: p1's real delete is not reported twice.
    assert!(matches!(next(&mut w).await, WatchEvent::Added(p) if p.metadata.name == "p2"));
    // A transaction left this way never loses its other half: a pool and its guard.
    assert!(ds.get::<IPPoolSpec>("p2").await.unwrap().is_some());
}

/// `429 Too Many Requests` (a CRD just created answers so for a while) and 5xx are retried
/// with back-off, for reads, writes and the first watch alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_requests_and_watches_are_retried() {
    let api = FakeApiServer::start().unwrap();
    let ds = open(&api).await;
    api.hook(
        "fail",
        r#"{"method": "*", "path": "/ippools", "status": 429, "count": 4, "retryAfter": 1}"#,
    )
    .unwrap();
    // The watch is refused four times, then established.
    let mut w = ds.watch::<IPPoolSpec>(Some("1")).await.unwrap();
    api.hook(
        "fail",
        r#"{"method": "*", "path": "/ippools", "status": 503, "count": 2}"#,
    )
    .unwrap();
    ds.create(pool("p1", "10.1.0.0/16")).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Added(p) if p.metadata.name == "p1"));
    assert!(ds.get::<IPPoolSpec>("p1").await.unwrap().is_some());
    // Every injected failure was met (and survived).
    let stats: serde_json::Value = serde_json::from_str(&api.get("/_fake/stats").unwrap()).unwrap();
    assert_eq!(stats["injected"], 6, "{stats}");
}

/// A watch cut off (API server restart, load balancer timeout) resumes from the last
/// revision it delivered: changes made meanwhile arrive once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_watch_resumes_without_loss_or_repeat() {
    let api = FakeApiServer::start().unwrap();
    let ds = open(&api).await;
    let list = ds.list::<IPPoolSpec>(None).await.unwrap();
    let mut w = ds
        .watch::<IPPoolSpec>(Some(&list.resource_version))
        .await
        .unwrap();
    ds.create(pool("p1", "10.1.0.0/16")).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Added(p) if p.metadata.name == "p1"));
    for round in 0..3 {
        api.hook("drop-watches", "{}").unwrap();
        let name = format!("q{round}");
        ds.create(pool(&name, &format!("10.{}.0.0/16", 10 + round)))
            .await
            .unwrap();
        let mut p = ds.get::<IPPoolSpec>("p1").await.unwrap().unwrap();
        p.spec.disabled = round % 2 == 0;
        ds.update(p).await.unwrap();
        assert!(
            matches!(next(&mut w).await, WatchEvent::Added(p) if p.metadata.name == name),
            "round {round}"
        );
        assert!(
            matches!(next(&mut w).await, WatchEvent::Modified(p) if p.metadata.name == "p1"),
            "round {round}"
        );
    }
    // Nothing more: no event was delivered twice.
    let extra = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            match w.next().await {
                Some(Ok(WatchEvent::Bookmark(_))) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(extra.is_err(), "unexpected event {extra:?}");
}

/// History older than the API server keeps answers 410 Gone: the watcher is told to list
/// again.
#[tokio::test]
async fn gone_history_asks_for_a_new_list() {
    let api = FakeApiServer::start().unwrap();
    let ds = open(&api).await;
    let p = ds.create(pool("p1", "10.1.0.0/16")).await.unwrap();
    ds.delete::<IPPoolSpec>("p1", None).await.unwrap();
    api.hook("compact", "{}").unwrap();
    let mut w = ds
        .watch::<IPPoolSpec>(p.metadata.resource_version.as_deref())
        .await
        .unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::ResyncNeeded);
}
