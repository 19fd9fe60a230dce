//! Two nodes, each running `tortie-agent` (IPAM, BGP, kernel routes) and the CNI plugin, and
//! BIRD as the top-of-rack router between them, all in throw-away network namespaces:
//!
//! ```text
//!   pod a ─ node-1 (AS 64512) 198.18.1.1 ── 198.18.1.254 tor (BIRD, AS 65000) 198.18.2.254 ── 198.18.2.1 node-2 (AS 64513) ─ pod b
//! ```
//!
//! Proves: a node's block reaches BIRD and the other node's kernel soon after its first pod;
//! pod-to-pod traffic across nodes; the reconciler restores a deleted route, removes a stray one
//! of our protocol and leaves other protocols alone; a block emptied and released by IPAM GC is
//! withdrawn everywhere; and an agent restart under continuous traffic loses nothing.
//!
//! Needs root, `bird2` and the workspace's binaries (`cargo test --workspace` builds them).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tortie_e2e::testkit::{must, sh, wait_for, workspace_bin};

static NEXT_LAB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

struct Lab {
    prefix: String,
    dir: tempfile::TempDir,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            // One per lab in this process: tests run side by side.
            prefix: format!(
                "tg{}n{}",
                std::process::id() % 100_000,
                NEXT_LAB.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            ),
            dir: tempfile::Builder::new()
                .prefix("tortie-agent-lab-")
                .tempdir()
                .unwrap(),
            namespaces: Vec::new(),
            children: Vec::new(),
        }
    }

    fn ns(&mut self, short: &str) -> String {
        let name = format!("{}{short}", self.prefix);
        must(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        must(&format!(
            "ip netns exec {name} sysctl -qw net.ipv4.ip_forward=1"
        ));
        self.namespaces.push(name.clone());
        name
    }

    fn link(&self, a: &str, a_addr: &str, b: &str, b_addr: &str, name: &str) {
        must(&format!(
            "ip link add {name}a netns {a} type veth peer name {name}b netns {b} && \
             ip -n {a} addr add {a_addr} dev {name}a && ip -n {b} addr add {b_addr} dev {name}b && \
             ip -n {a} link set {name}a up && ip -n {b} link set {name}b up"
        ));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self, ns: &str, argv: &[&str], log: &str) -> u32 {
        let log_file = std::fs::File::create(self.path(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push((log.to_string(), child));
        pid
    }

    fn stop(&mut self, log: &str) {
        if let Some(i) = self.children.iter().position(|(l, _)| l == log) {
            let (_, mut c) = self.children.remove(i);
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for log in [
                "bird.log",
                "agent-node-1.log",
                "agent-node-2.log",
                "cni.log",
            ] {
                let text = self.log(log);
                let tail = &text[text.len().saturating_sub(4000)..];
                eprintln!("----- {log} -----\n{tail}");
            }
        }
        for ns in &self.namespaces {
            let _ = sh(&format!("ip netns del {ns}"));
        }
    }
}

/// Fast loops for the test: kernel resync every 2 s, GC every second. The poll stays long
/// (5 s): changes must reach the kernel through datastore watches and BGP best-path events.
const AGENT_ARGS: &[&str] = &[
    "--poll-ms",
    "5000",
    "--resync-s",
    "2",
    "--gc-interval-s",
    "1",
    "--gc-grace-s",
    "1",
    "--pod-route-grace-s",
    "1",
];

struct Cluster {
    lab: Lab,
    tor: String,
    nodes: Vec<String>,
    /// Each node's address and AS.
    addrs: Vec<(String, String)>,
    ds: String,
}

impl Cluster {
    async fn new() -> Cluster {
        let mut lab = Lab::new();
        let tor = lab.ns("tor");
        let n1 = lab.ns("n1");
        let n2 = lab.ns("n2");
        lab.link(
            &n1,
            "198.18.1.1/24",
            &tor,
            "198.18.1.254/24",
            &format!("{}x1", lab.prefix),
        );
        lab.link(
            &n2,
            "198.18.2.1/24",
            &tor,
            "198.18.2.254/24",
            &format!("{}x2", lab.prefix),
        );
        must(&format!("ip -n {n1} route add default via 198.18.1.254"));
        must(&format!("ip -n {n2} route add default via 198.18.2.254"));
        // The datastore both agents share (SQLite is multi-process safe), with a small block
        // size so that a few pods fill a block.
        let (ds, store) = seed(
            &lab,
            json!({"cidr": "10.244.0.0/16", "blockSize": 30}),
            Some(json!({
                "nodeToNodeMeshEnabled": false, "asNumber": 64512
            })),
        )
        .await;
        for (node, peer) in [("node-1", "198.18.1.254"), ("node-2", "198.18.2.254")] {
            let spec: tortie_api::BGPPeerSpec = serde_json::from_value(json!({
                "node": node, "peerIP": peer, "asNumber": 65000
            }))
            .unwrap();
            store
                .create(tortie_api::Object::new(format!("tor-{node}"), spec))
                .await
                .unwrap();
        }
        // BIRD on the ToR: eBGP to both nodes, routes into its own kernel (it forwards).
        let bird = "router id 198.18.1.254;\nlog \"/dev/stderr\" all; debug protocols { states, events };\nprotocol device { }\n\
             protocol kernel { ipv4 { export all; }; merge paths on; }\n\
             protocol bgp node1 { local 198.18.1.254 as 65000; neighbor 198.18.1.1 as 64512; graceful restart on; ipv4 { import all; export all; }; }\n\
             protocol bgp node2 { local 198.18.2.254 as 65000; neighbor 198.18.2.1 as 64513; graceful restart on; ipv4 { import all; export all; }; }\n";
        std::fs::write(lab.path("bird.conf"), bird).unwrap();
        let conf = lab.path("bird.conf");
        let ctl = lab.path("bird.ctl");
        lab.spawn(
            &tor,
            &[
                "bird",
                "-f",
                "-c",
                conf.to_str().unwrap(),
                "-s",
                ctl.to_str().unwrap(),
            ],
            "bird.log",
        );
        let mut c = Cluster {
            lab,
            tor,
            nodes: vec![n1, n2],
            addrs: vec![
                ("198.18.1.1/24".into(), "64512".into()),
                ("198.18.2.1/24".into(), "64513".into()),
            ],
            ds,
        };
        c.start_agent(0);
        c.start_agent(1);
        c
    }

    fn start_agent(&mut self, i: usize) {
        let (ip, asn) = self.addrs[i].clone();
        let node = format!("node-{}", i + 1);
        let agent = workspace_bin("tortie-agent");
        let sock = self.lab.path(&format!("{node}.sock"));
        let data = self.lab.path(&format!("{node}-cni"));
        let _ = std::fs::remove_file(&sock);
        let mut argv: Vec<String> = vec![
            agent.display().to_string(),
            "--datastore".into(),
            self.ds.clone(),
            "--node".into(),
            node.clone(),
            // "auto:METHOD": let the agent find its address.
            match ip.strip_prefix("auto:") {
                Some(_) => "--ip-autodetection-method".into(),
                None => "--ip".into(),
            },
            ip.strip_prefix("auto:").map_or(ip.clone(), str::to_string),
            "--as".into(),
            asn,
            "--socket".into(),
            sock.display().to_string(),
            "--cni-data-dir".into(),
            data.display().to_string(),
        ];
        argv.extend(AGENT_ARGS.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let ns = self.nodes[i].clone();
        self.lab.spawn(&ns, &refs, &format!("agent-{node}.log"));
        wait_for(Duration::from_secs(15), "agent socket", || {
            sock.exists().then_some(())
        });
    }

    fn stop_agent(&mut self, i: usize) {
        self.lab.stop(&format!("agent-node-{}.log", i + 1));
    }

    fn birdc(&self, cmd: &str) -> String {
        sh(&format!(
            "birdc -s {} {cmd}",
            self.lab.path("bird.ctl").display()
        ))
        .1
    }

    fn conf(&self, i: usize) -> Value {
        let node = format!("node-{}", i + 1);
        json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tortie",
            "agentSocket": self.lab.path(&format!("{node}.sock")),
            "dataDir": self.lab.path(&format!("{node}-cni")),
            "logFile": self.lab.path("cni.log"),
            "ipam": {"type": "tortie-ipam"},
        })
    }

    /// Runs the CNI plugin on node `i`.
    fn cni(&self, i: usize, cmd: &str, pod: &str, netns: &str) -> Value {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i]])
            .arg(workspace_bin("tortie"))
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", pod)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.conf(i).to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{cmd} {pod}: {text}");
        serde_json::from_str(text.trim()).unwrap_or(Value::Null)
    }

    fn pod(&mut self, i: usize, name: &str) -> (String, String) {
        let ns = self.lab.ns(name);
        let r = self.cni(i, "ADD", name, &format!("/run/netns/{ns}"));
        let ip = r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        (ns, ip)
    }

    fn kernel_route(&self, i: usize, prefix: &str) -> String {
        sh(&format!("ip -n {} route show {prefix}", self.nodes[i])).1
    }
}

/// The shared datastore of a test lab, with its pool and (optionally) the cluster's BGP
/// configuration.
async fn seed(lab: &Lab, pool: Value, bgp: Option<Value>) -> (String, tortie_datastore::Datastore) {
    let url = format!("sqlite://{}", lab.path("ds.db").display());
    let store = tortie_datastore::Datastore::open(&url).await.unwrap();
    let pool: tortie_api::IPPoolSpec = serde_json::from_value(pool).unwrap();
    store
        .create(tortie_api::Object::new("pool", pool))
        .await
        .unwrap();
    if let Some(bgp) = bgp {
        let cfg: tortie_api::BGPConfigurationSpec = serde_json::from_value(bgp).unwrap();
        store
            .create(tortie_api::Object::new("default", cfg))
            .await
            .unwrap();
    }
    (url, store)
}

fn block_of(ip: &str) -> String {
    let a: std::net::Ipv4Addr = ip.parse().unwrap();
    let b = u32::from(a) & !3;
    format!("{}/30", std::net::Ipv4Addr::from(b))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_and_a_bird_tor() {
    if !std::path::Path::new("/usr/sbin/bird").exists() {
        panic!("bird2 is not installed (scripts/install-deps)");
    }
    let mut c = Cluster::new().await;
    wait_for(
        Duration::from_secs(30),
        "BIRD sessions to both nodes",
        || {
            let p = c.birdc("show protocols");
            (p.lines()
                .filter(|l| l.starts_with("node") && l.contains("Established"))
                .count()
                == 2)
                .then_some(())
        },
    );

    // The first pod on node-1: its block reaches BIRD and node-2's kernel quickly.
    let (pod_a, ip_a) = c.pod(0, "pa");
    let added = Instant::now();
    let block_a = block_of(&ip_a);
    wait_for(
        Duration::from_secs(5),
        "node-2 kernel route to node-1's block",
        || {
            c.kernel_route(1, &block_a)
                .contains("via 198.18.2.254")
                .then_some(())
        },
    );
    let propagation = added.elapsed();
    assert!(c.birdc(&format!("show route {block_a}")).contains(&block_a));
    // …and BIRD forwards towards node-1 (its kernel has the route).
    assert!(
        must(&format!("ip -n {} route show {block_a}", c.tor)).contains("via 198.18.1.1"),
        "ToR kernel route"
    );
    assert!(
        propagation < Duration::from_secs(1),
        "block route reached the other node after {propagation:?}"
    );
    // node-1 has a blackhole for its own block, with our protocol.
    assert!(
        c.kernel_route(0, &block_a).contains("blackhole"),
        "{}",
        c.kernel_route(0, &block_a)
    );

    let (pod_b, ip_b) = c.pod(1, "pb");
    let block_b = block_of(&ip_b);
    wait_for(
        Duration::from_secs(5),
        "node-1 kernel route to node-2's block",
        || {
            c.kernel_route(0, &block_b)
                .contains("via 198.18.1.254")
                .then_some(())
        },
    );
    // Remote blocks go through a nexthop object per BGP next hop, with our protocol.
    assert!(
        c.kernel_route(0, &block_b).contains("nhid"),
        "{}",
        c.kernel_route(0, &block_b)
    );
    let nexthops = must(&format!("ip -n {} nexthop show", c.nodes[0]));
    assert!(
        nexthops.contains("via 198.18.1.254") && nexthops.contains("proto 80"),
        "{nexthops}"
    );
    // Pod to pod across nodes, both ways.
    assert!(
        sh(&format!("ip netns exec {pod_a} ping -c2 -W2 {ip_b}")).0,
        "pod a → pod b"
    );
    assert!(
        sh(&format!("ip netns exec {pod_b} ping -c2 -W2 {ip_a}")).0,
        "pod b → pod a"
    );

    // What the operator sees: `tortiectl node status` and `node routes` over the agent's socket.
    let ctl = |cmd: &str| {
        must(&format!(
            "{} node {cmd} --socket {}",
            workspace_bin("tortiectl").display(),
            c.lab.path("node-1.sock").display()
        ))
    };
    let status = ctl("status");
    let peer_line = status
        .lines()
        .find(|l| l.starts_with("198.18.1.254"))
        .unwrap_or_else(|| panic!("{status}"));
    for word in ["node specific", "up", "Established"] {
        assert!(peer_line.contains(word), "{status}");
    }
    assert!(status.contains(&block_a), "{status}");
    let routes = ctl("routes");
    let line = routes
        .lines()
        .find(|l| l.starts_with(&block_b))
        .unwrap_or_else(|| panic!("{routes}"));
    assert!(
        line.contains("198.18.1.254") && line.contains("via 198.18.1.254"),
        "{routes}"
    );
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with(&block_a) && l.contains("blackhole")),
        "{routes}"
    );

    // Health and metrics on the node's localhost.
    let http = |path: &str| {
        sh(&format!(
            "ip netns exec {} python3 -c \"import urllib.request as u; r = u.urlopen('http://127.0.0.1:9099{path}'); print(r.status); print(r.read().decode())\"",
            c.nodes[0]
        ))
    };
    let (ok, live) = http("/livez");
    assert!(ok && live.starts_with("200"), "{live}");
    let (ok, ready) = http("/readyz");
    assert!(ok && ready.starts_with("200"), "{ready}");
    let (ok, metrics) = http("/metrics");
    assert!(ok, "{metrics}");
    for want in [
        "tortie_bgp_peers{state=\"Established\"} 1",
        "tortie_routes_programmed 2",
        "tortie_blocks_owned 1",
        "tortie_reconcile_seconds_count",
        "tortie_grpc_seconds_count{method=\"/tortie.ipam.v1.Ipam/Allocate\"} 1",
        "tortie_grpc_seconds_count{method=\"/tortie.agent.v1.Agent/Status\"}",
        "tortie_bgp_prefixes_accepted{peer=\"198.18.1.254\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} not in {metrics}");
    }

    // IPAM utilisation per pool (refreshed each resync): both pods' addresses, of 65,536.
    wait_for(
        Duration::from_secs(6),
        "IPAM utilisation in /metrics",
        || {
            let (_, m) = http("/metrics");
            (m.contains("tortie_ipam_addresses_in_use{pool=\"pool\"} 2")
                && m.contains("tortie_ipam_pool_size{pool=\"pool\"} 65536"))
            .then_some(())
        },
    );

    // Reconcile: a route of ours deleted by hand comes back; a stray route with our protocol
    // goes; a route of another protocol stays.
    let n1 = c.nodes[0].clone();
    must(&format!("ip -n {n1} route del {block_b}"));
    must(&format!(
        "ip -n {n1} route add 10.99.0.0/24 via 198.18.1.254 proto 80"
    ));
    must(&format!(
        "ip -n {n1} route add 10.98.0.0/24 via 198.18.1.254 proto static"
    ));
    // Nexthop objects: ours for a next hop nobody uses goes; another protocol's stays.
    let uplink = must(&format!("ip -n {n1} -o route get 198.18.1.254"))
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .expect("uplink")
        .to_string();
    must(&format!(
        "ip -n {n1} nexthop add id 999 via 198.18.1.77 dev {uplink} proto 80"
    ));
    must(&format!(
        "ip -n {n1} nexthop add id 998 via 198.18.1.78 dev {uplink} proto static"
    ));
    // Within one resync (2 s here, 90 s by default).
    let changed = Instant::now();
    wait_for(Duration::from_secs(5), "deleted route restored", || {
        c.kernel_route(0, &block_b)
            .contains("via 198.18.1.254")
            .then_some(())
    });
    wait_for(Duration::from_secs(5), "stray route removed", || {
        (!c.kernel_route(0, "10.99.0.0/24").contains("10.99.0.0")).then_some(())
    });
    wait_for(
        Duration::from_secs(5),
        "unused nexthop object removed",
        || (!must(&format!("ip -n {n1} nexthop show")).contains("id 999 ")).then_some(()),
    );
    assert!(
        changed.elapsed() < Duration::from_secs(4),
        "more than one resync"
    );
    assert!(
        must(&format!("ip -n {n1} nexthop show")).contains("id 998 "),
        "another protocol's nexthop object must stay"
    );
    // A pod's own route deleted by hand: the agent puts it back (the CNI plugin made it, the
    // pod is past its set-up grace period).
    let pod_route = c.kernel_route(0, &ip_a);
    assert!(pod_route.contains("dev cali"), "{pod_route}");
    must(&format!("ip -n {n1} route del {ip_a}/32"));
    wait_for(Duration::from_secs(5), "pod route restored", || {
        c.kernel_route(0, &ip_a).contains("dev cali").then_some(())
    });
    assert!(
        c.kernel_route(0, "10.98.0.0/24").contains("10.98.0.0"),
        "another protocol's route must stay"
    );
    // Agent restart under continuous pod-to-pod traffic (100 packets/s): nothing is lost. The
    // kernel routes stay while the agent is away; BIRD keeps node-1's routes as stale (graceful
    // restart) and node-2 never sees a withdrawal.
    let pinger = Command::new("ip")
        .args([
            "netns", "exec", &pod_b, "ping", "-q", "-i", "0.01", "-c", "500", "-W", "1", &ip_a,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    c.stop_agent(0);
    std::thread::sleep(Duration::from_millis(500));
    c.start_agent(0);
    wait_for(Duration::from_secs(30), "node-1 back with BIRD", || {
        c.birdc("show protocols node1")
            .contains("Established")
            .then_some(())
    });
    let out = pinger.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        summary.contains("500 packets transmitted, 500 received"),
        "packets lost across the agent restart: {summary}"
    );
    assert!(c.lab.log("agent-node-1.log").contains("restarting=true"));

    // A block emptied on node-1 is released by IPAM GC and withdrawn everywhere. Fill node-1's
    // first block (4 addresses) so the next pod opens a second one, then remove that pod.
    let mut extra = None;
    for k in 0..4 {
        let (ns, ip) = c.pod(0, &format!("f{k}"));
        if block_of(&ip) != block_a {
            extra = Some((ns, ip, format!("f{k}")));
            break;
        }
    }
    let (extra_ns, extra_ip, extra_pod) = extra.expect("a pod in a second block");
    let block_x = block_of(&extra_ip);
    wait_for(Duration::from_secs(5), "second block on node-2", || {
        c.kernel_route(1, &block_x).contains("via").then_some(())
    });
    c.cni(0, "DEL", &extra_pod, &format!("/run/netns/{extra_ns}"));
    wait_for(
        Duration::from_secs(20),
        "the empty block withdrawn from node-2",
        || (!c.kernel_route(1, &block_x).contains("via")).then_some(()),
    );
    wait_for(Duration::from_secs(5), "and from BIRD", || {
        (!c.birdc(&format!("show route {block_x}")).contains(&block_x)).then_some(())
    });
    wait_for(
        Duration::from_secs(5),
        "node-1's blackhole for it gone",
        || c.kernel_route(0, &block_x).trim().is_empty().then_some(()),
    );
    // The node's other block (with pods) stays.
    assert!(c.kernel_route(1, &block_a).contains("via"));
}

/// Four nodes on one switch (a bridge in its own namespace: the underlay, not the pod network),
/// node-to-node mesh off, node-1 a route reflector selected by label, one `BGPPeer` making every
/// node peer with it (Calico's pattern). Every node ends up with every other node's block, via
/// that node's own address (the reflector keeps next hops), and pods talk across nodes.
#[tokio::test(flavor = "multi_thread")]
async fn four_nodes_one_route_reflector() {
    let mut lab = Lab::new();
    lab.prefix = format!("{}r", lab.prefix);
    let sw = lab.ns("sw");
    must(&format!(
        "ip -n {sw} link add br0 type bridge && ip -n {sw} link set br0 up"
    ));
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 1..=4 {
        let n = lab.ns(&format!("n{i}"));
        let link = format!("{}v{i}", lab.prefix);
        must(&format!(
            "ip link add {link}a netns {n} type veth peer name {link}b netns {sw} && \
             ip -n {n} addr add 198.18.10.{i}/24 dev {link}a && ip -n {n} link set {link}a up && \
             ip -n {sw} link set {link}b master br0 && ip -n {sw} link set {link}b up && \
             ip -n {n} route add default via 198.18.10.254 dev {link}a onlink"
        ));
        nodes.push(n);
        addrs.push((format!("198.18.10.{i}/24"), "64512".to_string()));
    }
    let (ds, store) = seed(
        &lab,
        json!({"cidr": "10.244.0.0/16", "blockSize": 30}),
        Some(json!({"nodeToNodeMeshEnabled": false, "asNumber": 64512})),
    )
    .await;
    let rr: tortie_api::NodeSpec =
        serde_json::from_value(json!({"bgp": {"routeReflectorClusterID": "244.0.0.1"}})).unwrap();
    let mut rr = tortie_api::Object::new("node-1", rr);
    rr.metadata
        .labels
        .insert("route-reflector".into(), "true".into());
    store.create(rr).await.unwrap();
    let peering: tortie_api::BGPPeerSpec = serde_json::from_value(json!({
        "nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"
    }))
    .unwrap();
    store
        .create(tortie_api::Object::new("peer-with-reflectors", peering))
        .await
        .unwrap();
    let mut c = Cluster {
        lab,
        tor: sw,
        nodes,
        addrs,
        ds,
    };
    for i in 0..4 {
        c.start_agent(i);
    }
    let mut pods = Vec::new();
    for i in 0..4 {
        pods.push(c.pod(i, &format!("p{i}")));
    }
    for (i, (_, ip)) in pods.iter().enumerate() {
        let block = block_of(ip);
        let owner = format!("198.18.10.{}", i + 1);
        for j in 0..4 {
            if j == i {
                continue;
            }
            wait_for(
                Duration::from_secs(10),
                &format!("node-{} has node-{}'s block", j + 1, i + 1),
                || {
                    c.kernel_route(j, &block)
                        .contains(&format!("via {owner}"))
                        .then_some(())
                },
            );
        }
    }
    // Clients peer only with the reflector: node-2's agent configured exactly one peer.
    let log = c.lab.log("agent-node-2.log");
    assert_eq!(log.matches("peer configured").count(), 1, "{log}");
    assert!(log.contains("peer=198.18.10.1"), "{log}");
    let (pod2, _) = &pods[1];
    let (_, ip3) = &pods[2];
    assert!(
        sh(&format!("ip netns exec {pod2} ping -c2 -W2 {ip3}")).0,
        "pod on node-2 → pod on node-3"
    );
}

/// VXLAN in CrossSubnet mode: nodes 1 and 2 share a subnet, node 3 is behind a router. Blocks
/// of the same subnet route straight to the node (no encapsulation: the VXLAN device's counters
/// do not move); across subnets through the tunnel. No BGP at all: VXLAN routes come from the
/// datastore (blocks, and each node's tunnel address and MAC).
#[tokio::test(flavor = "multi_thread")]
async fn vxlan_cross_subnet() {
    let mut lab = Lab::new();
    lab.prefix = format!("{}v", lab.prefix);
    let sw = lab.ns("sw");
    let router = lab.ns("rt");
    must(&format!(
        "ip -n {sw} link add br20 type bridge && ip -n {sw} link set br20 up && \
         ip -n {sw} link add br21 type bridge && ip -n {sw} link set br21 up"
    ));
    let plug = |ns: &str, addr: &str, bridge: &str, link: &str| {
        must(&format!(
            "ip link add {link}a netns {ns} type veth peer name {link}b netns {sw} && \
             ip -n {ns} addr add {addr} dev {link}a && ip -n {ns} link set {link}a up && \
             ip -n {sw} link set {link}b master {bridge} && ip -n {sw} link set {link}b up"
        ));
    };
    let p = lab.prefix.clone();
    plug(&router, "198.18.20.254/24", "br20", &format!("{p}ra"));
    plug(&router, "198.18.21.254/24", "br21", &format!("{p}rb"));
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for (i, (addr, bridge, gw)) in [
        ("198.18.20.1/24", "br20", "198.18.20.254"),
        ("198.18.20.2/24", "br20", "198.18.20.254"),
        ("198.18.21.1/24", "br21", "198.18.21.254"),
    ]
    .iter()
    .enumerate()
    {
        let n = lab.ns(&format!("n{}", i + 1));
        plug(&n, addr, bridge, &format!("{p}n{i}"));
        must(&format!("ip -n {n} route add default via {gw}"));
        nodes.push(n);
        addrs.push((addr.to_string(), "64512".to_string()));
    }
    let (ds, _) = seed(
        &lab,
        json!({
            "cidr": "10.244.0.0/16", "blockSize": 30, "vxlanMode": "CrossSubnet"
        }),
        Some(json!({"nodeToNodeMeshEnabled": false})),
    )
    .await;
    let mut c = Cluster {
        lab,
        tor: router,
        nodes,
        addrs,
        ds,
    };
    for i in 0..3 {
        c.start_agent(i);
    }
    let pods: Vec<(String, String)> = (0..3).map(|i| c.pod(i, &format!("q{i}"))).collect();
    let (b2, b3) = (block_of(&pods[1].1), block_of(&pods[2].1));
    wait_for(
        Duration::from_secs(10),
        "node-1: node-2's block direct",
        || {
            c.kernel_route(0, &b2)
                .contains("via 198.18.20.2 dev")
                .then_some(())
        },
    );
    let r = wait_for(
        Duration::from_secs(10),
        "node-1: node-3's block through VXLAN",
        || {
            let r = c.kernel_route(0, &b3);
            r.contains("dev vxlan.tortie").then_some(r)
        },
    );
    assert!(r.contains("onlink"), "{r}");
    let tx = |c: &Cluster| -> u64 {
        let out = must(&format!(
            "ip -n {} -s -j link show vxlan.tortie",
            c.nodes[0]
        ));
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0]["stats64"]["tx"]["packets"].as_u64().unwrap()
    };
    let before = tx(&c);
    assert!(
        sh(&format!(
            "ip netns exec {} ping -c3 -W2 {}",
            pods[0].0, pods[1].1
        ))
        .0,
        "same subnet: pod 1 → pod 2"
    );
    assert_eq!(
        tx(&c),
        before,
        "same-subnet traffic went through the tunnel"
    );
    assert!(
        sh(&format!(
            "ip netns exec {} ping -c3 -W2 {}",
            pods[0].0, pods[2].1
        ))
        .0,
        "across subnets: pod 1 → pod 3"
    );
    assert!(
        tx(&c) >= before + 3,
        "cross-subnet traffic was not encapsulated"
    );
    assert!(
        sh(&format!(
            "ip netns exec {} ping -c2 -W2 {}",
            pods[2].0, pods[1].1
        ))
        .0,
        "across subnets: pod 3 → pod 2"
    );
}

/// natOutgoing: a pod reaches an address outside every pool through its node's address. The
/// outside host has no route back to the pool, so a reply proves the masquerade; turning
/// `natOutgoing` off removes it (and the ping fails).
#[tokio::test(flavor = "multi_thread")]
async fn nat_outgoing_masquerades_pod_traffic_leaving_the_pools() {
    let mut lab = Lab::new();
    lab.prefix = format!("{}o", lab.prefix);
    let outside = lab.ns("out");
    let n1 = lab.ns("n1");
    let link = format!("{}l", lab.prefix);
    lab.link(&n1, "198.18.40.1/24", &outside, "198.18.40.254/24", &link);
    must(&format!("ip -n {n1} route add default via 198.18.40.254"));
    let (ds, store) = seed(
        &lab,
        json!({
            "cidr": "10.244.0.0/16", "natOutgoing": true
        }),
        None,
    )
    .await;
    let mut c = Cluster {
        lab,
        tor: outside.clone(),
        nodes: vec![n1.clone()],
        // The address is found, not given: the source towards the outside host.
        addrs: vec![("auto:can-reach=198.18.40.254".into(), "64512".into())],
        ds,
    };
    c.start_agent(0);
    let (pod, _) = c.pod(0, "nat");
    let log = c.lab.log("agent-node-1.log");
    assert!(
        log.contains("node address autodetected address=198.18.40.1/24"),
        "{log}"
    );
    wait_for(Duration::from_secs(10), "masquerade rule", || {
        sh(&format!("ip netns exec {n1} nft list table ip tortie-nat"))
            .1
            .contains("masquerade")
            .then_some(())
    });
    assert!(
        sh(&format!("ip netns exec {pod} ping -c2 -W2 198.18.40.254")).0,
        "pod → outside with natOutgoing"
    );
    // Off: the rule goes, and the outside host cannot answer the pod any more.
    let mut p = store
        .get::<tortie_api::IPPoolSpec>("pool")
        .await
        .unwrap()
        .unwrap();
    p.spec.nat_outgoing = false;
    store.update(p).await.unwrap();
    wait_for(Duration::from_secs(10), "masquerade rule removed", || {
        (!sh(&format!("ip netns exec {n1} nft list table ip tortie-nat"))
            .1
            .contains("masquerade"))
        .then_some(())
    });
    // Conntrack would keep the old mapping for the same flow; a new ping ID is a new flow.
    assert!(
        !sh(&format!("ip netns exec {pod} ping -c2 -W1 198.18.40.254")).0,
        "no NAT: the outside host has no route back"
    );
}

/// Borrowed addresses: with one block per host, a node whose block is full takes an address
/// from another node's block and announces it as a /32, more specific than the owner's block;
/// traffic to that pod reaches the borrowing node.
#[tokio::test(flavor = "multi_thread")]
async fn borrowed_addresses_are_announced_as_host_routes() {
    let mut c = Cluster::new().await;
    let store = tortie_datastore::Datastore::open(&c.ds).await.unwrap();
    let cfg: tortie_api::IPAMConfigurationSpec =
        serde_json::from_value(json!({"maxBlocksPerHost": 1})).unwrap();
    store
        .create(tortie_api::Object::new("default", cfg))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "BIRD sessions", || {
        (c.birdc("show protocols")
            .lines()
            .filter(|l| l.starts_with("node") && l.contains("Established"))
            .count()
            == 2)
            .then_some(())
    });
    // node-2's block has room left; node-1 fills its one block and borrows the fifth address.
    let (pod_b, _) = c.pod(1, "b0");
    let mut first_block = None;
    let mut borrowed = None;
    for k in 0..5 {
        let (ns, ip) = c.pod(0, &format!("a{k}"));
        let block = block_of(&ip);
        match &first_block {
            None => first_block = Some(block),
            Some(b) if *b != block => borrowed = Some((ns, ip)),
            _ => {}
        }
    }
    let (pod_x, ip_x) = borrowed.expect("the fifth pod borrowed from node-2's block");
    let _ = pod_x;
    wait_for(
        Duration::from_secs(10),
        "node-2 routes the borrowed /32 away",
        || {
            c.kernel_route(1, &format!("{ip_x}/32"))
                .contains("via 198.18.2.254")
                .then_some(())
        },
    );
    assert!(
        sh(&format!("ip netns exec {pod_b} ping -c2 -W2 {ip_x}")).0,
        "pod on node-2 → the borrowed address on node-1"
    );
}
