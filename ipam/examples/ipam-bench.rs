//! IPAM benchmark, everything side by side in one run (see docs/benchmarks.md):
//!
//! - tortie over gRPC on its unix socket, with a long-lived client (as the agent's callers keep
//!   a channel), on SQLite and on etcd;
//! - tortie with one process exec per call (`ipam-client`, as a CNI plugin binary is exec'd);
//! - Debian's `host-local` IPAM plugin exec'd per call exactly as a runtime does (CNI_* env, the
//!   network config on stdin), with its state in a temporary directory.
//!
//! `cargo run --release -p tortie-ipam --example ipam-bench -- [N]` (N allocate+release pairs
//! per in-process mode; exec modes do N/5). Needs root only for nothing; needs `etcd` and
//! `/usr/lib/cni/host-local` (Debian: etcd-server, containernetworking-plugins).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tortie_datastore::Datastore;
use tortie_datastore::testing::EtcdServer;
use tortie_ipam::Ipam;
use tortie_ipam::server::{IpamService, SocketConfig};
use tortie_proto::ipam::v1 as pb;
use tortie_proto::ipam::v1::ipam_client::IpamClient;

struct Row {
    mode: String,
    pairs: usize,
    elapsed: Duration,
    alloc: Vec<Duration>,
    release: Vec<Duration>,
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort();
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i].as_secs_f64() * 1e3
}

impl Row {
    fn print(&self) {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.mode,
            self.pairs,
            self.pairs as f64 / self.elapsed.as_secs_f64(),
            pct(&self.alloc, 0.5),
            pct(&self.alloc, 0.99),
            pct(&self.release, 0.5),
            pct(&self.release, 0.99),
        );
    }
}

async fn grpc_mode(name: &str, url: &str, n: usize, exec_client: Option<&Path>, dir: &Path) -> Row {
    let ds = Datastore::open(url).await.expect("datastore");
    let mut spec = tortie_api::IPPoolSpec::new("10.244.0.0/16".parse().unwrap());
    spec.block_size = Some(26);
    let _ = ds
        .create(tortie_api::Object::new("default-ipv4", spec))
        .await;
    let socket = SocketConfig::root_only(dir.join(format!("{name}.sock")));
    let service = IpamService::new(
        Ipam::new(ds),
        "bench-node",
        [0, own_uid()].into_iter().collect(),
    );
    let sock = socket.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        tortie_ipam::server::serve_unix(service, &sock, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    while !socket.path.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let channel = tortie_proto::connect_unix(&socket.path, Duration::from_secs(10))
        .await
        .unwrap();
    let mut client = IpamClient::new(channel);
    let (mut alloc, mut release) = (Vec::new(), Vec::new());
    // Warm-up: claims the first block, fills caches.
    for i in 0..20 {
        let h = format!("warm.{i}");
        client
            .allocate(pb::AllocateRequest {
                handle_id: h.clone(),
                num_ipv4: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        client
            .release(pb::ReleaseRequest { handle_id: h })
            .await
            .unwrap();
    }
    let start = Instant::now();
    for i in 0..n {
        let h = format!("k8s-pod-network.{i:064x}");
        let t = Instant::now();
        match exec_client {
            None => {
                client
                    .allocate(pb::AllocateRequest {
                        handle_id: h.clone(),
                        num_ipv4: 1,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            Some(bin) => run(Command::new(bin).arg(&socket.path).args(["allocate", &h])),
        }
        alloc.push(t.elapsed());
        let t = Instant::now();
        match exec_client {
            None => {
                client
                    .release(pb::ReleaseRequest { handle_id: h })
                    .await
                    .unwrap();
            }
            Some(bin) => run(Command::new(bin).arg(&socket.path).args(["release", &h])),
        }
        release.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    let _ = stop.send(());
    server.await.unwrap();
    Row {
        mode: name.to_string(),
        pairs: n,
        elapsed,
        alloc,
        release,
    }
}

/// Our uid, so the benchmark also runs unprivileged.
fn own_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stdout)
    );
}

fn host_local(n: usize, dir: &Path) -> Option<Row> {
    let plugin = PathBuf::from("/usr/lib/cni/host-local");
    if !plugin.exists() {
        eprintln!("host-local not found (apt-get install containernetworking-plugins): skipped");
        return None;
    }
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.245.0.0/16"}}]]}}}}"#,
        dir.join("host-local").display()
    );
    let invoke = |verb: &str, id: &str| {
        let mut child = Command::new(&plugin)
            .env_clear()
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", "/var/run/netns/bench")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn host-local");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "host-local {verb}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    let (mut alloc, mut release) = (Vec::new(), Vec::new());
    let start = Instant::now();
    for i in 0..n {
        let id = format!("{i:064x}");
        let t = Instant::now();
        invoke("ADD", &id);
        alloc.push(t.elapsed());
        let t = Instant::now();
        invoke("DEL", &id);
        release.push(t.elapsed());
    }
    Some(Row {
        mode: "host-local (Debian), exec per call".into(),
        pairs: n,
        elapsed: start.elapsed(),
        alloc,
        release,
    })
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("N"))
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let client_bin = std::env::current_exe()
        .unwrap()
        .with_file_name("ipam-client");
    let etcd = EtcdServer::start().expect("etcd");
    let sqlite_url = format!("sqlite://{}", dir.path().join("store.db").display());
    let sqlite_exec_url = format!("sqlite://{}", dir.path().join("store-exec.db").display());

    let mut rows = Vec::new();
    rows.push(grpc_mode("tortie gRPC, SQLite", &sqlite_url, n, None, dir.path()).await);
    rows.push(grpc_mode("tortie gRPC, etcd", &etcd.url(), n, None, dir.path()).await);
    if client_bin.exists() {
        rows.push(
            grpc_mode(
                "tortie, exec per call (ipam-client), SQLite",
                &sqlite_exec_url,
                n / 5,
                Some(&client_bin),
                dir.path(),
            )
            .await,
        );
    } else {
        eprintln!(
            "{} missing (cargo build --release --examples): exec mode skipped",
            client_bin.display()
        );
    }
    rows.extend(host_local(n / 5, dir.path()));

    println!(
        "| mode | pairs | allocate+release pairs/s | Allocate p50 ms | Allocate p99 ms | Release p50 ms | Release p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        r.print();
    }
}
