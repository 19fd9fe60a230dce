//! A throw-away node for CNI tests: a network namespace as the CNI "host" side (with a default
//! route, so proxy ARP answers for 169.254.1.1), pod namespaces, a SQLite datastore with a pool,
//! and a real `tortie-agent` serving IPAM in the host namespace. Everything is removed on drop,
//! and every process is ended by the PID we started.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub const POOL: &str = "10.244.0.0/16";
pub const POOL6: &str = "fd00:10:244::/48";

pub fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn must(cmd: &str) -> String {
    let (ok, out) = sh(cmd);
    assert!(ok, "{cmd}: {out}");
    out
}

/// A built binary of the workspace (`cargo test --workspace` builds every package's binaries).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo build -p tortie-agent` (or cargo test --workspace)",
        p.display()
    );
    p
}

pub struct Node {
    pub prefix: String,
    pub host: String,
    pub dir: tempfile::TempDir,
    pods: Vec<String>,
    agent: Option<Child>,
    pub v6: bool,
    /// Extra `tortie-agent` arguments.
    pub agent_args: Vec<String>,
}

/// What one plugin run returned.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub json: Value,
    pub stdout: String,
}

impl Node {
    pub async fn new(v6: bool) -> Node {
        let prefix = format!(
            "tc{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let host = format!("{prefix}h");
        must(&format!("ip netns add {host}"));
        let node = Node {
            prefix,
            host: host.clone(),
            dir: tempfile::Builder::new()
                .prefix("tortie-cni-")
                .tempdir()
                .unwrap(),
            pods: Vec::new(),
            agent: None,
            v6,
            agent_args: Vec::new(),
        };
        must(&format!(
            "ip -n {host} link set lo up && ip -n {host} link add up0 type veth peer name up1 && ip -n {host} link set up1 up && ip -n {host} link set up0 up \
             && ip -n {host} addr add 198.18.100.1/24 dev up0 && ip -n {host} route add default via 198.18.100.254 dev up0 onlink \
             && ip netns exec {host} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"
        ));
        // The pools, straight into the datastore the agent will open.
        let ds = tortie_datastore::Datastore::open(&node.datastore_url())
            .await
            .unwrap();
        let mut spec = tortie_api::IPPoolSpec::new(POOL.parse().unwrap());
        spec.block_size = Some(26);
        ds.create(tortie_api::Object::new("default-ipv4", spec))
            .await
            .unwrap();
        if v6 {
            let mut spec = tortie_api::IPPoolSpec::new(POOL6.parse().unwrap());
            spec.block_size = Some(122);
            ds.create(tortie_api::Object::new("default-ipv6", spec))
                .await
                .unwrap();
        }
        node
    }

    pub fn datastore_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("ds.db").display())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/agent.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("cni")
    }

    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none());
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.host])
            .arg(workspace_bin("tortie-agent"))
            .args(["--datastore", &self.datastore_url(), "--node", "node-1"])
            .arg("--socket")
            .arg(self.socket())
            .arg("--cni-data-dir")
            .arg(self.data_dir())
            .args(["--sweep-interval-ms", "200"])
            // The plugin's tests: IPAM only, no BGP or kernel routes of the agent's own.
            .arg("--no-bgp")
            .args(&self.agent_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "agent did not start: {}",
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            // `ip netns exec` execs the agent, so this PID is the agent's.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// A new pod namespace; returns its path.
    pub fn pod(&mut self, short: &str) -> String {
        let name = format!("{}{short}", self.prefix);
        must(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        self.pods.push(name.clone());
        format!("/run/netns/{name}")
    }

    pub fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "tortie",
            "agentSocket": self.socket(),
            "timeoutSeconds": 5,
            "dataDir": self.data_dir(),
            "logFile": self.dir.path().join("cni.log"),
            "ipam": {"type": "tortie-ipam", "assign_ipv4": "true", "assign_ipv6": if self.v6 { "true" } else { "false" }},
        })
    }

    /// Runs a plugin binary in the host namespace.
    pub fn run(&self, bin: &Path, env: &[(&str, &str)], stdin: &Value) -> Outcome {
        use std::io::Write;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host])
            .arg(bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Outcome {
            ok: out.status.success(),
            json: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
            stdout,
        }
    }

    pub fn cni(&self, command: &str, cid: &str, netns: &str, stdin: &Value) -> Outcome {
        self.run(
            Path::new(env!("CARGO_BIN_EXE_tortie")),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
                (
                    "CNI_ARGS",
                    &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}"),
                ),
            ],
            stdin,
        )
    }

    pub fn in_host(&self, cmd: &str) -> (bool, String) {
        sh(&format!("ip netns exec {} sh -c '{cmd}'", self.host))
    }

    /// `cali*` links in the host namespace.
    pub fn cali_links(&self) -> Vec<String> {
        must(&format!("ip -n {} -o link show", self.host))
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("cali"))
            .collect()
    }

    /// Host routes to pods (through `cali` veths), both families.
    pub fn pod_routes(&self) -> Vec<String> {
        must(&format!(
            "ip -n {} route show; ip -n {} -6 route show",
            self.host, self.host
        ))
        .lines()
        .filter(|l| l.contains(" dev cali"))
        .map(str::to_string)
        .collect()
    }

    /// Addresses allocated in the datastore.
    pub async fn allocated(&self, handle: &str) -> Vec<std::net::IpAddr> {
        let ds = tortie_datastore::Datastore::open(&self.datastore_url())
            .await
            .unwrap();
        tortie_ipam::Ipam::new(ds)
            .get(handle)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.ip)
            .collect()
    }

    pub fn pending_releases(&self) -> usize {
        std::fs::read_dir(self.data_dir().join("pending-releases"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_agent();
        for p in &self.pods {
            let _ = sh(&format!("ip netns del {p}"));
        }
        let _ = sh(&format!("ip netns del {}", self.host));
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("cni.log")).unwrap_or_default();
            eprintln!(
                "----- cni.log -----\n{log}\n----- agent.log -----\n{}",
                self.agent_log()
            );
        }
    }
}

/// Ping from a namespace.
pub fn ping(ns_path: &str, ip: &str) -> bool {
    let ns = ns_path.rsplit('/').next().unwrap();
    sh(&format!("ip netns exec {ns} ping -c1 -W2 {ip}")).0
}

pub fn ip_of(result: &Value, i: usize) -> String {
    result["ips"][i]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}
