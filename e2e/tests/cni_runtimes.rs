//! The CNI plugin (`tortie`, `tortie-ipam`) driven by real CNI clients, chained with Debian's
//! `portmap` and `bandwidth`, against a real `tortie-agent`:
//!
//! * cnitool (libcni 1.1.2, built from Debian's source package): ADD, CHECK, DEL, DEL again;
//! * podman 4.3 with the CNI backend, containers from a local busybox root filesystem;
//! * containerd 1.6's CRI (RunPodSandbox / StopPodSandbox / RemovePodSandbox), as a kubelet calls it.
//!
//! Each test has its own throw-away "host" network namespace (the host side of CNI, with an
//! underlay address from 198.18.0.0/15 and a default route so proxy ARP answers for 169.254.1.1),
//! a "client" namespace on the other end of the underlay link (an outside peer that routes the
//! pool to the node, as a BGP peer would: pod → client traffic and a hostPort reached from outside
//! the node), its own work dir, datastore and agent. The runtime runs under
//! `e2e/cni/cnihost-exec.sh` (the host namespace plus a private mount namespace), so the machine's
//! root namespace is not changed: a snapshot of it (`e2e/cni/rootns-snapshot.sh`) must be the
//! same before and after. The runtime steps and the in-namespace checks are the shell scripts in
//! `e2e/cni/`; this file sets up, runs them, checks what they report plus the datastore, and
//! cleans up (processes by PID, namespaces even on failure).
//!
//! Needs root and the packages `scripts/install-deps` installs; the built binaries come from
//! `target/<profile>/` (`cargo test --workspace` builds them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tortie_e2e::testkit::{must, sh, target_profile_dir, workspace_bin};

const POOL: &str = "10.244.0.0/16";
const POOL6: &str = "fd00:10:244::/48";
const NET: &str = "k8s-pod-network";
const HOST_IP: &str = "198.18.100.1";
const CLIENT_IP: &str = "198.18.100.254";
const HOSTPORT: &str = "18080";

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cni")
}

fn snapshot(prefix: &str) -> String {
    must(&format!(
        "{} {prefix}",
        scripts().join("rootns-snapshot.sh").display()
    ))
}

/// How the bandwidth plugin gets its rates.
enum Bandwidth {
    /// From the runtime (`runtimeConfig.bandwidth`, capability `bandwidth`).
    Runtime,
    /// Static rates in the plugin's configuration (podman sends no bandwidth).
    Static,
}

/// What a runtime script reported (`E2E key=value` lines) and printed.
struct Report {
    values: BTreeMap<String, String>,
    output: String,
    took: Duration,
}

impl Report {
    fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("the script reported no {key}:\n{}", self.output))
    }
}

/// One test's node: host and client namespaces, a work dir, a datastore with a pool, an agent.
struct Node {
    prefix: String,
    host: String,
    client: String,
    dir: tempfile::TempDir,
    agent: Option<Child>,
    before: String,
    finished: bool,
    v6: bool,
}

impl Node {
    /// `v6`: also an IPv6 pool, and pods get both families.
    async fn new(tag: &str, v6: bool) -> Node {
        for tool in [
            "ip", "tc", "iptables", "unshare", "nsenter", "busybox", "wget",
        ] {
            assert!(
                sh(&format!("command -v {tool}")).0,
                "{tool} not found: run scripts/install-deps as root"
            );
        }
        // The bandwidth plugin makes an ifb device in our host namespace. If the ifb module is not
        // loaded yet, that loads it, and loading it creates ifb0 and ifb1 in the *root* namespace
        // (numifbs defaults to 2): load it first with no device at all.
        if !Path::new("/sys/module/ifb").exists() && !Path::new("/sys/class/net/ifb0").exists() {
            let (ok, out) = sh("modprobe ifb numifbs=0");
            assert!(ok, "modprobe ifb numifbs=0: {out}");
        }
        // Unique per process and test; short, since it also names mounts under /run/netns.
        let prefix = format!("te{tag}{}x", std::process::id());
        let before = snapshot(&prefix);
        let mut node = Node {
            host: format!("{prefix}h"),
            client: format!("{prefix}c"),
            prefix,
            dir: tempfile::Builder::new()
                .prefix("tortie-e2e-")
                .tempdir()
                .unwrap(),
            agent: None,
            before,
            finished: false,
            v6,
        };
        let (h, c) = (&node.host, &node.client);
        must(&format!("ip netns add {h} && ip netns add {c}"));
        must(&format!(
            "ip -n {h} link set lo up && ip -n {c} link set lo up \
             && ip -n {h} link add up0 type veth peer name up1 netns {c} \
             && ip -n {h} addr add {HOST_IP}/24 dev up0 && ip -n {h} link set up0 up \
             && ip -n {c} addr add {CLIENT_IP}/24 dev up1 && ip -n {c} link set up1 up \
             && ip -n {h} route add default via {CLIENT_IP} dev up0 onlink \
             && ip -n {c} route add {POOL} via {HOST_IP} dev up1 \
             && ip netns exec {h} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"
        ));
        // The pool, straight into the datastore the agent will open.
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
        // The plugin directory: ours and Debian's.
        let bin = node.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["tortie", "tortie-ipam"] {
            std::fs::copy(workspace_bin(name), bin.join(name)).unwrap();
        }
        for name in ["portmap", "bandwidth", "loopback"] {
            let p = Path::new("/usr/lib/cni").join(name);
            assert!(
                p.exists(),
                "{} missing: install containernetworking-plugins (scripts/install-deps)",
                p.display()
            );
            std::fs::copy(&p, bin.join(name)).unwrap();
        }
        node.start_agent();
        node
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn datastore_url(&self) -> String {
        format!("sqlite://{}", self.path("ds.db").display())
    }

    fn start_agent(&mut self) {
        let socket = self.path("run/agent.sock");
        let log = std::fs::File::create(self.path("agent.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.host])
            .arg(workspace_bin("tortie-agent"))
            .args(["--datastore", &self.datastore_url(), "--node", "node-1"])
            .arg("--socket")
            .arg(&socket)
            .arg("--cni-data-dir")
            .arg(self.path("cni"))
            // The plugin's tests: IPAM only, no BGP or kernel routes of the agent's own.
            .arg("--no-bgp")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "agent did not start: {}",
                self.read("agent.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    /// The network: tortie, then portmap and bandwidth (Debian's), CNI 1.0.0.
    fn write_conflist(&self, bandwidth: Bandwidth) {
        let mut bw = json!({"type": "bandwidth", "capabilities": {"bandwidth": true}});
        if let Bandwidth::Static = bandwidth {
            // bit/s and bits; no capability, so the static rates are the ones used
            bw = json!({"type": "bandwidth", "ingressRate": 12_000_000, "ingressBurst": 120_000,
                        "egressRate": 24_000_000, "egressBurst": 240_000});
        }
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": NET,
            "plugins": [
                {
                    "type": "tortie",
                    "agentSocket": self.path("run/agent.sock"),
                    "dataDir": self.path("cni"),
                    "logFile": self.path("cni.log"),
                    "timeoutSeconds": 10,
                    "mtu": 1500,
                    "ipam": {"type": "tortie-ipam", "assign_ipv4": "true", "assign_ipv6": if self.v6 { "true" } else { "false" }},
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                bw,
            ],
        });
        let dir = self.path("net.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("10-tortie.conflist"),
            serde_json::to_string_pretty(&conf).unwrap(),
        )
        .unwrap();
    }

    /// Runs `e2e/cni/<script>`; panics (with its output and the logs) if it fails.
    fn run(&self, script: &str) -> Report {
        let cache = target_profile_dir().parent().unwrap().join("e2e-cache");
        let t0 = Instant::now();
        let out = Command::new("timeout")
            .args(["--kill-after=10", "300", "bash"])
            .arg(scripts().join(script))
            .env("W", self.dir.path())
            .env("HOSTNS", &self.host)
            .env("CLIENTNS", &self.client)
            .env("HOST_IP", HOST_IP)
            .env("CLIENT_IP", CLIENT_IP)
            .env("HOSTPORT", HOSTPORT)
            .env("NET", NET)
            .env("POOL_PREFIX", "10.244.")
            .env("CACHE", cache)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let took = t0.elapsed();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("----- {script} ({took:?}) -----\n{output}");
        assert!(
            out.status.success(),
            "{script} failed ({}):\n{output}\n----- cni.log -----\n{}\n----- agent.log -----\n{}",
            out.status,
            self.read("cni.log"),
            self.read("agent.log")
        );
        let values = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("E2E "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Report {
            values,
            output,
            took,
        }
    }

    /// Addresses still allocated to a handle.
    async fn allocated(&self, handle: &str) -> Vec<std::net::IpAddr> {
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

    /// Checks shared by every runtime, after the script: the IPAM handle is released, nothing is
    /// pending, and the plugin logged the verbs.
    async fn check_released(&self, r: &Report) {
        let cid = r.get("container_id");
        let handle = format!("{NET}.{cid}");
        let left = self.allocated(&handle).await;
        assert!(left.is_empty(), "{handle} still holds {left:?}");
        let pending = std::fs::read_dir(self.path("cni/pending-releases"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(pending, 0, "releases left pending");
        let log = self.read("cni.log");
        assert!(!log.contains("failed"), "a plugin call failed:\n{log}");
        assert!(
            self.plugin_calls(cid).iter().any(|l| l == "Add ok"),
            "cni.log has no successful ADD for {cid}:\n{log}"
        );
    }

    /// What the plugin logged for one container, in order (e.g. "Del ifname=eth0 netns=").
    fn plugin_calls(&self, cid: &str) -> Vec<String> {
        let tag = format!(" container={cid} ");
        self.read("cni.log")
            .lines()
            .filter_map(|l| l.split_once(&tag).map(|(_, m)| m.to_string()))
            .collect()
    }

    fn cleanup(&mut self) {
        if let Some(mut c) = self.agent.take() {
            // `ip netns exec` execs the agent, so this PID is the agent's.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
        // Anything still in our namespaces was started by this test (a conmon, a shim, ...).
        for ns in [&self.host, &self.client] {
            let (_, pids) = sh(&format!("ip netns pids {ns} 2>/dev/null"));
            for pid in pids.split_whitespace() {
                eprintln!("killing leftover process {pid} in {ns}");
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        for ns in [&self.host, &self.client] {
            let _ = sh(&format!("ip netns del {ns} 2>/dev/null"));
        }
    }

    /// Cleans up and checks that the root namespace is as it was.
    fn finish(mut self) {
        self.cleanup();
        self.finished = true;
        for ns in [&self.host, &self.client] {
            assert!(
                !Path::new("/run/netns").join(ns).exists(),
                "{ns} still exists"
            );
        }
        let after = snapshot(&self.prefix);
        if after != self.before {
            let b = self.path("before");
            let a = self.path("after");
            std::fs::write(&b, &self.before).unwrap();
            std::fs::write(&a, &after).unwrap();
            let (_, diff) = sh(&format!("diff {} {}", b.display(), a.display()));
            panic!("the root namespace changed:\n{diff}");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.finished {
            self.cleanup();
        }
    }
}

fn assert_pod_ip(r: &Report) -> std::net::Ipv4Addr {
    let ip: std::net::Ipv4Addr = r.get("pod_ip").parse().unwrap();
    assert_eq!(ip.octets()[..2], [10, 244], "{ip} outside {POOL}");
    ip
}

#[tokio::test(flavor = "multi_thread")]
async fn cnitool_add_check_del_with_portmap_and_bandwidth() {
    let node = Node::new("t", true).await;
    node.write_conflist(Bandwidth::Runtime);
    let r = node.run("cnitool.sh");
    let ip = assert_pod_ip(&r);
    // The result libcni handed back: host veth then eth0 (in the pod), the address on eth0,
    // and the chained plugins kept it.
    let result: Value = serde_json::from_str(r.get("result")).unwrap();
    let veth = tortie_cni::spec::host_veth_name("e2e.cnitool-pod");
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"][0]["name"], veth.as_str(), "{result}");
    assert_eq!(result["interfaces"][1]["name"], "eth0", "{result}");
    assert_eq!(result["ips"][0]["address"], format!("{ip}/32"), "{result}");
    assert_eq!(result["ips"][0]["interface"], 1, "{result}");
    let ip6 = r.get("pod_ip6");
    assert!(ip6.starts_with("fd00:10:244:"), "{ip6}");
    assert_eq!(
        result["ips"][1]["address"],
        format!("{ip6}/128"),
        "{result}"
    );
    assert_eq!(result["ips"][1]["interface"], 1, "{result}");
    assert_eq!(r.get("host_veth"), veth);
    assert_eq!(r.get("tbf_rate"), "8Mbit", "CAP_ARGS bandwidth.ingressRate");
    for k in [
        "connectivity",
        "hostport_http",
        "check",
        "del_twice",
        "teardown",
    ] {
        assert_eq!(r.get(k), "ok", "{k}");
    }
    node.check_released(&r).await;
    let calls = node.plugin_calls(r.get("container_id"));
    assert_eq!(
        calls.iter().filter(|c| *c == "Check ok").count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| *c == "Del ok").count(),
        2,
        "{calls:?}"
    );
    println!("cnitool test: script took {:?}", r.took);
    node.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_runs_containers_from_a_local_rootfs() {
    let node = Node::new("p", false).await;
    node.write_conflist(Bandwidth::Static);
    let r = node.run("podman.sh");
    assert_pod_ip(&r);
    // podman passes only K8S_POD_NAME, so the workload is the container ID.
    let cid = r.get("container_id");
    assert_eq!(r.get("host_veth"), tortie_cni::spec::host_veth_name(cid));
    assert_eq!(r.get("tbf_rate"), "12Mbit", "static ingressRate");
    for k in ["connectivity", "hostport_http", "teardown"] {
        assert_eq!(r.get(k), "ok", "{k}");
    }
    node.check_released(&r).await;
    let calls = node.plugin_calls(cid);
    assert!(calls.iter().any(|c| c == "Del ok"), "{calls:?}");
    println!("podman test: script took {:?}", r.took);
    node.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_cri_runs_stops_and_removes_a_pod_sandbox() {
    let node = Node::new("c", false).await;
    node.write_conflist(Bandwidth::Runtime);
    let r = node.run("cri.sh");
    let ip = assert_pod_ip(&r);
    // containerd took the pod IP from our result (the address on eth0).
    assert_eq!(r.get("cri_ip"), ip.to_string());
    assert_eq!(
        r.get("host_veth"),
        tortie_cni::spec::host_veth_name("e2e.web1")
    );
    assert_eq!(
        r.get("tbf_rate"),
        "10Mbit",
        "kubernetes.io/ingress-bandwidth=10M"
    );
    for k in ["connectivity", "hostport_http", "teardown"] {
        assert_eq!(r.get(k), "ok", "{k}");
    }
    assert_eq!(r.get("pods_left"), "0");
    node.check_released(&r).await;
    // StopPodSandbox: DEL with the netns; RemovePodSandbox: DEL again, without one.
    let calls = node.plugin_calls(r.get("container_id"));
    let dels: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("Del ifname="))
        .collect();
    assert_eq!(dels.len(), 2, "{calls:?}");
    assert!(dels[0].len() > "Del ifname=eth0 netns=".len(), "{calls:?}");
    assert_eq!(dels[1].as_str(), "Del ifname=eth0 netns=", "{calls:?}");
    assert_eq!(
        calls.iter().filter(|c| *c == "Del ok").count(),
        2,
        "{calls:?}"
    );
    println!("containerd CRI test: script took {:?}", r.took);
    node.finish();
}
