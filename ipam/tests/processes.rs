//! IPAM acceptance tests that need separate processes: concurrent nodes, crashes (kill -9), and
//! the gRPC service over its unix socket. Every test runs on SQLite and on etcd.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tortie_datastore::Datastore;
use tortie_ipam::Ipam;
use tortie_ipam::gc::{AllocationInfo, GcState, Liveness, OwnerCheck};
use tortie_ipam::server::{IpamService, SocketConfig};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        bin.exists(),
        "{} missing: run through `cargo test`",
        bin.display()
    );
    bin
}

/// Owners for GC: handles in `live` exist; nodes do not (the test's processes have exited).
struct Live(BTreeSet<String>);

impl OwnerCheck for Live {
    fn allocation(&self, a: &AllocationInfo) -> Liveness {
        if self.0.contains(&a.handle_id) {
            Liveness::Alive
        } else {
            Liveness::Gone
        }
    }
    fn node_exists(&self, _node: &str) -> bool {
        false
    }
}

async fn setup(url: &str) -> Datastore {
    let ds = Datastore::open(url).await.unwrap();
    common::add_pool(&ds, "default-ipv4", "10.244.0.0/16", 26).await;
    ds
}

macro_rules! on_both_backends {
    ($name:ident, $scenario:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let b = super::common::Backend::sqlite();
                super::$scenario(&b.url()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                let b = super::common::Backend::etcd();
                super::$scenario(&b.url()).await;
            }
        }
    };
}

// ===== 3 nodes × 300 concurrent allocations =====

async fn three_nodes_contend(url: &str) {
    const PER_NODE: usize = 300;
    let ds = setup(url).await;
    let bin = example("ipam-stress");
    let children: Vec<_> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|node| {
            tokio::process::Command::new(&bin)
                .args(["burst", url, node, &PER_NODE.to_string()])
                .kill_on_drop(true)
                .output()
        })
        .collect();
    let mut by_ip: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut handles = BTreeSet::new();
    for out in futures::future::join_all(children).await {
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let ip: IpAddr = v["ip"].as_str().unwrap().parse().unwrap();
            let handle = v["handle"].as_str().unwrap().to_string();
            if let Some(other) = by_ip.insert(ip, handle.clone()) {
                panic!("{ip} handed out twice: {other} and {handle}");
            }
            handles.insert(handle);
        }
    }
    assert_eq!(by_ip.len(), 3 * PER_NODE, "every allocation got an address");
    let ipam = Ipam::new(ds.clone());
    assert!(ipam.check(Some(&handles)).await.unwrap().is_empty());

    // Release every handle; check is clean; GC gives the blocks back.
    for h in &handles {
        assert_eq!(ipam.release(h).await.unwrap().len(), 1);
    }
    assert_eq!(ipam.check(Some(&BTreeSet::new())).await.unwrap(), vec![]);
    // (`tortiectl ipam check` on the same state: ctl/tests/ipam.rs.)
    let mut gc = GcState::default();
    let owners = Live(BTreeSet::new());
    ipam.gc_pass(&mut gc, &owners, Duration::ZERO)
        .await
        .unwrap();
    let report = ipam
        .gc_pass(&mut gc, &owners, Duration::ZERO)
        .await
        .unwrap();
    assert!(!report.released_blocks.is_empty());
    let left = ds
        .list::<tortie_api::IPAMBlockSpec>(None)
        .await
        .unwrap()
        .items;
    assert!(
        left.is_empty(),
        "blocks not returned: {:?}",
        left.iter().map(|b| b.spec.cidr).collect::<Vec<_>>()
    );
    assert!(
        ds.list::<tortie_api::BlockAffinitySpec>(None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
on_both_backends!(three_nodes_300_concurrent_allocations, three_nodes_contend);

// ===== kill -9 at random points, 50 times =====

async fn crash_and_recover(url: &str) {
    let ds = setup(url).await;
    let dir = tempfile::tempdir().unwrap();
    let live_file = dir.path().join("live");
    let bin = example("ipam-stress");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..50 {
        let mut child = tokio::process::Command::new(&bin)
            .args(["churn", url, "node-1", live_file.to_str().unwrap()])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // xorshift: kill somewhere between 30 and 330 ms into the run.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(30 + rng % 300)).await;
        if let Ok(Some(status)) = child.try_wait() {
            panic!("churn exited early: {status}");
        }
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
    }
    // "Restart": finish half-done claims, then one GC pass.
    let ipam = Ipam::new(ds.clone());
    ipam.recover_node("node-1").await.unwrap();
    let live: BTreeSet<String> = std::fs::read_to_string(&live_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        live.len() > 10,
        "the churn made progress ({} live handles)",
        live.len()
    );
    let before = ipam.allocations().await.unwrap();
    let mut gc = GcState::default();
    let report = ipam
        .gc_pass(&mut gc, &Live(live.clone()), Duration::ZERO)
        .await
        .unwrap();
    let after = ipam.allocations().await.unwrap();
    eprintln!(
        "{url}: {} live handles, {} allocations before GC, GC released {:?}",
        live.len(),
        before.len(),
        report.released_handles
    );

    // No live allocation freed, no leak, no duplicate, no dangling affinity.
    for h in &live {
        assert_eq!(
            ipam.get(h).await.unwrap().len(),
            1,
            "live handle {h} lost its address"
        );
    }
    let mut seen = BTreeSet::new();
    for a in &after {
        assert!(seen.insert(a.ip), "{} twice", a.ip);
        assert!(
            live.contains(&a.handle_id),
            "leaked: {} held by {}",
            a.ip,
            a.handle_id
        );
    }
    assert_eq!(ipam.check(Some(&live)).await.unwrap(), vec![]);
}
on_both_backends!(kill_9_fifty_times, crash_and_recover);

// ===== gRPC over the unix socket; non-root refused =====

async fn grpc_round_trip(url: &str) {
    let ds = setup(url).await;
    let dir = tempfile::tempdir().unwrap();
    // Let an unprivileged user reach the socket, so that the credentials check — not the file
    // mode — is what refuses it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut socket = SocketConfig::root_only(dir.path().join("agent.sock"));
    socket.mode = 0o666;
    let service = IpamService::new(Ipam::new(ds), "node-1", socket.allowed_uids.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sock = socket.clone();
    let server = tokio::spawn(async move {
        tortie_ipam::server::serve_unix(service, &sock, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    for _ in 0..100 {
        if socket.path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = example("ipam-client");
    let run = |args: &[&str], as_nobody: bool| {
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&client);
            c
        } else {
            Command::new(&client)
        };
        let out = cmd.arg(&socket.path).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let (code, allocated) = run(&["allocate", "net.c1"], false);
    assert_eq!(code, Some(0), "{allocated}");
    let ip: IpAddr = allocated.parse().unwrap();
    assert!(ip.to_string().starts_with("10.244."));
    assert_eq!(run(&["get", "net.c1"], false), (Some(0), ip.to_string()));

    // The client's binary must be readable by nobody (it lives under target/, usually 0755).
    let (code, out) = run(&["get", "net.c1"], true);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("PermissionDenied") && out.contains("uid 65534"),
        "{out}"
    );

    assert_eq!(
        run(&["release", "net.c1"], false),
        (Some(0), ip.to_string())
    );
    assert_eq!(
        run(&["release", "net.c1"], false),
        (Some(0), String::new()),
        "idempotent"
    );
    let _ = stop.send(());
    server.await.unwrap();
}
on_both_backends!(grpc_over_unix_socket, grpc_round_trip);
