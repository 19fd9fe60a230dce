//! `tortie-lab`: a multi-node tortie lab in network namespaces, containerlab-style.
//!
//! ```text
//!              ToR (tortie-bgpd, AS 65000) 198.18.0.254 ── bridge "rack" (in the ToR's namespace)
//!          ┌──────────────┬──────────────┐
//!   node-1 198.18.0.1  node-2 .2   node-3 .3      (AS 64512, full iBGP mesh, tortie-agent each)
//!    pods (namespaces, real CNI ADD, a TCP echo server each)
//! ```
//!
//! Everything lives in namespaces named `tl-…` and in the state directory (`--dir`, default
//! `/run/tortie-lab`): one SQLite datastore shared by the agents, logs, configuration, and
//! `state.json` listing every namespace and process the lab made, which `down` removes — by
//! name and by PID — and nothing else. The machine's root namespace is never changed.
//!
//! Commands: `up`, `down`, `status`, `check` (the pod-to-pod TCP matrix; exit 1 if any cell
//! fails), `exec NODE -- CMD…`, `pod add|del NODE NAME`; and two helpers the lab runs inside
//! pods: `serve-echo PORT`, `probe IP:PORT`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Names of everything the lab makes start with this: `tl-` (or `tl<name>-` with `--name`).
static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn prefix() -> &'static str {
    PREFIX.get().map_or("tl-", String::as_str)
}
const ECHO_PORT: u16 = 8080;
const NODE_AS: u32 = 64512;
const TOR_AS: u32 = 65000;
const TOR_IP: &str = "198.18.0.254";
const POOL: &str = "10.244.0.0/16";
const POOL6: &str = "fd00:10:244::/48";
const ETCD_IP: &str = "198.18.0.250";

#[derive(Parser)]
#[command(
    version,
    about = "A tortie lab: a ToR, nodes and pods in network namespaces"
)]
struct Args {
    /// Where the lab keeps its datastore, logs and state.
    #[arg(long, global = true, default_value = "/run/tortie-lab")]
    dir: PathBuf,
    /// A name for running several labs side by side: namespaces `tl<name>-…` (keep it short:
    /// interface names are at most 15 characters).
    #[arg(long = "name", id = "lab_name", global = true, default_value = "")]
    lab_name: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab (replacing a previous one) and print sessions, ToR routes and the matrix.
    Up {
        /// Nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Pods per node.
        #[arg(long, default_value_t = 3)]
        pods_per_node: u32,
        /// The ToR router: tortie (tortie-bgpd), bird, frr or gobgp.
        #[arg(long, default_value = "tortie")]
        tor: String,
        /// The datastore: sqlite (one embedded file) or etcd (Debian's, in a namespace).
        #[arg(long, default_value = "sqlite")]
        datastore: String,
        /// Dual stack: IPv6 underlay, an IPv6 pool, pods with both families.
        #[arg(long)]
        ipv6: bool,
        /// Racks: subnets behind the ToR; with more than one the pool is VXLAN CrossSubnet.
        #[arg(long, default_value_t = 1)]
        racks: u32,
        /// Node-to-node BGP: `mesh` (full iBGP mesh) or `rr` (node-1 a route reflector).
        #[arg(long, default_value = "mesh")]
        topology: String,
    },
    /// Stop or start the lab's etcd (a datastore outage).
    Datastore {
        /// `stop` or `start`.
        action: String,
    },
    /// Run tortiectl against the lab's datastore.
    Ctl {
        /// Its arguments.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Remove everything the lab made.
    Down,
    /// BGP sessions per node and the ToR's routes.
    Status,
    /// The pod-to-pod TCP matrix; exit status 1 if any cell fails.
    Check {
        /// Only pods on these nodes (comma-separated; default: all).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
    },
    /// Cut a node off the rack (its uplink goes down), or with --agent stop its agent.
    Fail {
        /// Node.
        node: String,
        /// Stop the node's agent (SIGTERM: a graceful-restart departure) instead.
        #[arg(long)]
        agent: bool,
    },
    /// Reconnect a failed node, or with --agent start its agent again.
    Recover {
        /// Node.
        node: String,
        /// Start the node's agent again.
        #[arg(long)]
        agent: bool,
    },
    /// Run a command in a node's namespace.
    Exec {
        /// Node (`node-1`, …).
        node: String,
        /// The command.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Add or delete a pod.
    Pod {
        /// `add` or `del`.
        action: String,
        /// Node.
        node: String,
        /// Pod name.
        name: String,
    },
    /// (inside a pod) a TCP echo server.
    #[command(hide = true)]
    ServeEcho {
        /// Port.
        port: u16,
    },
    /// (inside a pod) connect, send a line, expect it back.
    #[command(hide = true)]
    Probe {
        /// Address.
        addr: SocketAddr,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct State {
    namespaces: Vec<String>,
    pids: Vec<u32>,
    nodes: Vec<String>,
    /// The ToR's implementation.
    tor: String,
    /// `sqlite` or `etcd`.
    datastore: String,
    /// etcd's PID while it runs.
    etcd_pid: Option<u32>,
    /// Dual stack.
    ipv6: bool,
    /// Racks (subnets); more than one means VXLAN CrossSubnet between them.
    racks: u32,
    /// `mesh` or `rr`.
    topology: String,
    /// Node → (agent command line, PID), for `fail --agent` / `recover --agent`.
    agents: std::collections::BTreeMap<String, (Vec<String>, u32)>,
    /// Pod namespace → IPv6 address (dual stack).
    pods6: std::collections::BTreeMap<String, String>,
    /// (node, pod, namespace, address)
    pods: Vec<(String, String, String, String)>,
}

type Res<T> = Result<T, String>;

fn sh(cmd: &str) -> Res<String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn bin(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn step(msg: &str) {
    println!("\x1b[1m==>\x1b[0m {msg}");
}

struct Lab {
    dir: PathBuf,
    state: State,
}

impl Lab {
    fn load(dir: &Path) -> Lab {
        let state = std::fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Lab {
            dir: dir.to_path_buf(),
            state,
        }
    }

    fn save(&self) -> Res<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        std::fs::write(
            self.dir.join("state.json"),
            serde_json::to_vec_pretty(&self.state).unwrap(),
        )
        .map_err(|e| e.to_string())
    }

    fn netns(&mut self, name: &str) -> Res<String> {
        let pfx = prefix();
        let ns = format!("{pfx}{name}");
        sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"))?;
        self.state.namespaces.push(ns.clone());
        self.save()?;
        Ok(ns)
    }

    /// Starts a process in a namespace, detached, its output in `log`.
    fn spawn(&mut self, ns: &str, argv: &[String], log: &str) -> Res<u32> {
        let log = std::fs::File::create(self.dir.join(log)).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", argv[0]))?;
        // `ip netns exec` execs the program: this PID is the program's.
        self.state.pids.push(child.id());
        self.save()?;
        Ok(child.id())
    }

    fn node_ns(node: &str) -> String {
        format!("{}{node}", prefix())
    }

    fn cni(&self, node: &str, cmd: &str, pod: &str, netns: &str) -> Res<serde_json::Value> {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tortie",
            "agentSocket": self.dir.join(format!("{node}.sock")),
            "dataDir": self.dir.join(format!("{node}-cni")),
            "logFile": self.dir.join("cni.log"),
            "timeoutSeconds": 5,
            "ipam": {"type": "tortie-ipam", "assign_ipv6": if self.state.ipv6 { "true" } else { "false" }},
        });
        let mut child = Command::new("ip")
            .args(["netns", "exec", &Lab::node_ns(node)])
            .arg(bin("tortie"))
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("{node}-{pod}"))
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE=lab;K8S_POD_NAME={node}-{pod}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            return Err(format!("CNI {cmd} {node}/{pod}: {text}"));
        }
        Ok(serde_json::from_str(text.trim()).unwrap_or(serde_json::Value::Null))
    }

    fn add_pod(&mut self, node: &str, pod: &str) -> Res<String> {
        let ns = self.netns(&format!("{node}-{pod}"))?;
        let r = self.cni(node, "ADD", pod, &format!("/run/netns/{ns}"))?;
        let ip = r["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .ok_or_else(|| format!("no address in {r}"))?
            .to_string();
        if let Some(ip6) = r["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str())
            .find(|a| a.contains(':'))
        {
            let ip6 = ip6.split('/').next().unwrap_or_default().to_string();
            self.state.pods6.insert(ns.clone(), ip6);
        }
        let argv = vec![
            bin("tortie-lab").display().to_string(),
            "serve-echo".into(),
            ECHO_PORT.to_string(),
        ];
        self.spawn(&ns, &argv, &format!("echo-{node}-{pod}.log"))?;
        self.state
            .pods
            .push((node.into(), pod.into(), ns, ip.clone()));
        self.save()?;
        Ok(ip)
    }

    fn del_pod(&mut self, node: &str, pod: &str) -> Res<()> {
        let Some(i) = self
            .state
            .pods
            .iter()
            .position(|p| p.0 == node && p.1 == pod)
        else {
            return Err(format!("no pod {pod} on {node}"));
        };
        let (_, _, ns, _) = self.state.pods.remove(i);
        self.cni(node, "DEL", pod, &format!("/run/netns/{ns}"))?;
        // The pod's echo server: ours (recorded), found by its namespace, ended by PID.
        let in_pod: Vec<u32> = sh(&format!("ip netns pids {ns}"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for pid in in_pod.iter().filter(|p| self.state.pids.contains(p)) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        self.state.pids.retain(|p| !in_pod.contains(p));
        let _ = sh(&format!("ip netns del {ns}"));
        self.state.namespaces.retain(|n| *n != ns);
        self.save()
    }

    fn down(&mut self) {
        for pid in self.state.pids.drain(..) {
            // Only processes the lab started, by PID, and only if still ours (in a lab netns).
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        std::thread::sleep(Duration::from_millis(200));
        for ns in self.state.namespaces.drain(..).rev() {
            let _ = sh(&format!("ip netns del {ns}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.state = State::default();
    }

    /// Builds the lab described by `shape` (its ToR, datastore, ipv6, racks and topology
    /// fields), with `nodes` nodes of `pods` pods each.
    fn up(&mut self, nodes: u32, pods: u32, shape: State) -> Res<()> {
        if self.dir.join("state.json").exists() {
            step("an earlier lab exists: taking it down first");
            self.down();
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        self.state = shape;
        self.save()?;
        step(&format!(
            "underlay: a rack (bridge) in the ToR's namespace, {TOR_IP}/24"
        ));
        let tor = self.netns("tor")?;
        let racks = self.state.racks.max(1);
        for r in 1..=racks {
            // Rack 1's bridge is `rack`; the ToR routes between racks.
            let br = if r == 1 {
                "rack".to_string()
            } else {
                format!("rack{r}")
            };
            sh(&format!(
                "ip -n {tor} link add {br} type bridge && ip -n {tor} addr add 198.18.{}.254/24 dev {br} && ip -n {tor} link set {br} up",
                r - 1
            ))?;
        }
        sh(&format!(
            "ip netns exec {tor} sysctl -qw net.ipv4.ip_forward=1"
        ))?;
        let pfx = prefix();
        for i in 1..=nodes {
            let node = format!("node-{i}");
            let ns = self.netns(&node)?;
            let (nip, gw) = (node_ip(i, racks), tor_ip_of(i, racks));
            let rack = (i - 1) % racks + 1;
            let br = if rack == 1 {
                "rack".to_string()
            } else {
                format!("rack{rack}")
            };
            sh(&format!(
                "ip link add {pfx}u{i} netns {ns} type veth peer name {pfx}r{i} netns {tor} && \
                 ip -n {ns} link set {pfx}u{i} name eth0 && ip -n {ns} addr add {nip}/24 dev eth0 && \
                 ip -n {ns} link set eth0 up && ip -n {ns} route add default via {gw} && \
                 ip -n {tor} link set {pfx}r{i} master {br} && ip -n {tor} link set {pfx}r{i} up"
            ))?;
            if self.state.ipv6 {
                sh(&format!(
                    "ip -n {ns} addr add fd00:198:18::{i}/64 dev eth0 nodad"
                ))?;
            }
            self.state.nodes.push(node);
        }
        self.save()?;
        step("resources: default pool, BGP configuration, ToR peer (tortiectl apply)");
        let ds = self.start_datastore(&tor)?;
        let vxlan = if racks > 1 {
            ", vxlanMode: CrossSubnet"
        } else {
            ""
        };
        let mesh = self.state.topology != "rr";
        let mut resources = format!(
            "apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {{name: default-ipv4}}\nspec: {{cidr: {POOL}, blockSize: 26{vxlan}}}\n---\n\
             apiVersion: tortie.io/v1\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{asNumber: {NODE_AS}, nodeToNodeMeshEnabled: {mesh}}}\n"
        );
        if self.state.topology == "rr" {
            // node-1 reflects; one BGPPeer makes every node peer with the reflectors.
            resources.push_str(
                "---\napiVersion: tortie.io/v1\nkind: Node\nmetadata: {name: node-1, labels: {route-reflector: \"true\"}}\nspec: {bgp: {routeReflectorClusterID: 244.0.0.1}}\n\
                 ---\napiVersion: tortie.io/v1\nkind: BGPPeer\nmetadata: {name: peer-with-reflectors}\nspec: {nodeSelector: all(), peerSelector: \"route-reflector == 'true'\"}\n",
            );
        }
        if racks == 1 {
            resources.push_str(&format!(
                "---\napiVersion: tortie.io/v1\nkind: BGPPeer\nmetadata: {{name: tor}}\nspec: {{peerIP: {TOR_IP}, asNumber: {TOR_AS}}}\n"
            ));
        } else {
            // Each node peers with the ToR's address on its own rack.
            for i in 1..=nodes {
                resources.push_str(&format!(
                    "---\napiVersion: tortie.io/v1\nkind: BGPPeer\nmetadata: {{name: tor-node-{i}}}\nspec: {{node: node-{i}, peerIP: {}, asNumber: {TOR_AS}}}\n",
                    tor_ip_of(i, racks)
                ));
            }
        }
        let resources = if self.state.ipv6 {
            format!(
                "{resources}---\napiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {{name: default-ipv6}}\nspec: {{cidr: \"{POOL6}\", blockSize: 122}}\n"
            )
        } else {
            resources
        };
        let file = self.dir.join("resources.yaml");
        std::fs::write(&file, resources).map_err(|e| e.to_string())?;
        self.tortiectl(&format!("apply -f {}", file.display()))?;
        self.start_tor(&tor, nodes)?;
        for i in 1..=nodes {
            let node = format!("node-{i}");
            step(&format!(
                "{node}: tortie-agent (IPAM, BGP mesh + ToR, kernel routes)"
            ));
            let argv: Vec<String> = [
                bin("tortie-agent").display().to_string(),
                "--datastore".into(),
                ds.clone(),
                "--node".into(),
                node.clone(),
                "--ip".into(),
                format!("{}/24", node_ip(i, racks)),
                "--socket".into(),
                self.dir.join(format!("{node}.sock")).display().to_string(),
                "--cni-data-dir".into(),
                self.dir.join(format!("{node}-cni")).display().to_string(),
                // Status on the node's address, so `tortiectl node status --all` reaches it.
                "--health-listen".into(),
                "0.0.0.0:9099".into(),
            ]
            .to_vec();
            let mut argv = argv;
            if self.state.ipv6 {
                // Found, not given: the node's address in the rack's IPv6 subnet.
                argv.extend([
                    "--ip6-autodetection-method".to_string(),
                    "cidr=fd00:198:18::/64".to_string(),
                ]);
            }
            let ns = Lab::node_ns(&node);
            let pid = self.spawn(&ns, &argv, &format!("agent-{node}.log"))?;
            self.state.agents.insert(node.clone(), (argv, pid));
            self.save()?;
        }
        for i in 1..=nodes {
            let sock = self.dir.join(format!("node-{i}.sock"));
            wait(Duration::from_secs(30), || sock.exists()).map_err(|_| {
                format!(
                    "node-{i}'s agent did not start (see {})",
                    self.dir.join(format!("agent-node-{i}.log")).display()
                )
            })?;
        }
        for i in 1..=nodes {
            let node = format!("node-{i}");
            let mut ips = Vec::new();
            for j in 1..=pods {
                ips.push(self.add_pod(&node, &format!("pod-{j}"))?);
            }
            step(&format!(
                "{node}: {pods} pods via the CNI plugin: {}",
                ips.join(", ")
            ));
        }
        step("waiting for BGP: every node's block on the ToR and in every other node");
        let n = nodes as usize;
        wait(Duration::from_secs(60), || self.tor_routes().len() >= n)
            .map_err(|_| "the ToR did not learn every node's block".to_string())?;
        wait(Duration::from_secs(60), || self.matrix(false).1 == 0)
            .map_err(|_| "pods cannot reach each other yet".to_string())?;
        Ok(())
    }

    /// The ToR: collects every node's routes and sends none (the nodes reach each other
    /// directly on the rack). Hold time 9 s, so a failed node is noticed quickly.
    fn start_tor(&mut self, tor: &str, nodes: u32) -> Res<()> {
        let kind = self.state.tor.clone();
        let racks = self.state.racks.max(1);
        step(&format!(
            "ToR: {kind} (AS {TOR_AS}) peering with every node; it collects routes and sends none"
        ));
        let d = self.dir.display().to_string();
        let argv: Vec<String> = match kind.as_str() {
            "tortie" => {
                let mut conf = format!(
                    "[speaker]\nasn = {TOR_AS}\nrouter_id = \"{TOR_IP}\"\nlisten = [\"0.0.0.0:179\"]\ngraceful_restart_time = 120\n"
                );
                for i in 1..=nodes {
                    let nip = node_ip(i, racks);
                    conf.push_str(&format!(
                        "\n[[peer]]\naddress = \"{nip}\"\nasn = {NODE_AS}\nfamilies = [\"ipv4\"]\nexport_default = \"reject\"\nhold_time = 9\n"
                    ));
                }
                std::fs::write(self.dir.join("tor.toml"), conf).map_err(|e| e.to_string())?;
                vec![
                    bin("tortie-bgpd").display().to_string(),
                    "--config".into(),
                    format!("{d}/tor.toml"),
                    "--control".into(),
                    format!("{d}/tor.sock"),
                ]
            }
            "bird" => {
                let mut conf = format!("router id {TOR_IP};\nprotocol device {{ }}\n");
                for i in 1..=nodes {
                    let (nip, local) = (node_ip(i, racks), tor_ip_of(i, racks));
                    conf.push_str(&format!(
                        "protocol bgp node{i} {{ local {local} as {TOR_AS}; neighbor {nip} as {NODE_AS}; hold time 9; graceful restart on; ipv4 {{ import all; export none; }}; }}\n"
                    ));
                }
                std::fs::write(self.dir.join("bird.conf"), conf).map_err(|e| e.to_string())?;
                [
                    "bird",
                    "-f",
                    "-c",
                    &format!("{d}/bird.conf"),
                    "-s",
                    &format!("{d}/bird.ctl"),
                ]
                .map(String::from)
                .to_vec()
            }
            "gobgp" => {
                let mut conf = format!(
                    "[global.config]\n  as = {TOR_AS}\n  router-id = \"{TOR_IP}\"\n  port = 179\n"
                );
                for i in 1..=nodes {
                    let nip = node_ip(i, racks);
                    conf.push_str(&format!(
                        "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{nip}\"\n    peer-as = {NODE_AS}\n  [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n"
                    ));
                }
                std::fs::write(self.dir.join("gobgpd.toml"), conf).map_err(|e| e.to_string())?;
                [
                    "gobgpd",
                    "-f",
                    &format!("{d}/gobgpd.toml"),
                    "--api-hosts",
                    "127.0.0.1:50051",
                ]
                .map(String::from)
                .to_vec()
            }
            "frr" => {
                // FRR's daemons run as user frr: they must reach their files.
                sh(&format!("chown frr:frr {d} && chmod 755 {d}"))?;
                let mut conf = format!(
                    "hostname tor\nrouter bgp {TOR_AS}\n bgp router-id {TOR_IP}\n no bgp ebgp-requires-policy\n"
                );
                for i in 1..=nodes {
                    let nip = node_ip(i, racks);
                    conf.push_str(&format!(
                        " neighbor {nip} remote-as {NODE_AS}\n neighbor {nip} timers 3 9\n"
                    ));
                }
                conf.push_str(" address-family ipv4 unicast\n");
                for i in 1..=nodes {
                    let nip = node_ip(i, racks);
                    conf.push_str(&format!("  neighbor {nip} route-map NONE out\n"));
                }
                conf.push_str(" exit-address-family\nroute-map NONE deny 10\n");
                std::fs::write(self.dir.join("bgpd.conf"), conf).map_err(|e| e.to_string())?;
                std::fs::write(self.dir.join("zebra.conf"), "hostname tor\n")
                    .map_err(|e| e.to_string())?;
                let f = format!("-z {d}/zserv.api --vty_socket {d} -u frr -g frr");
                let zebra =
                    format!("exec /usr/lib/frr/zebra {f} -i {d}/zebra.pid -f {d}/zebra.conf");
                self.spawn(tor, &["sh".into(), "-c".into(), zebra], "zebra.log")?;
                std::thread::sleep(Duration::from_secs(1));
                let bgpd =
                    format!("exec /usr/lib/frr/bgpd {f} -n -i {d}/bgpd.pid -f {d}/bgpd.conf");
                vec!["sh".into(), "-c".into(), bgpd]
            }
            other => {
                return Err(format!(
                    "--tor {other}: expected tortie, bird, frr or gobgp"
                ));
            }
        };
        self.spawn(tor, &argv, "tor.log")?;
        Ok(())
    }

    /// The datastore URL; with etcd, Debian's etcd runs in a management namespace on the rack
    /// (198.18.0.250), reachable from every node.
    fn start_datastore(&mut self, tor: &str) -> Res<String> {
        if self.state.datastore != "etcd" {
            step("datastore: an embedded SQLite file shared by the nodes");
            return Ok(format!(
                "sqlite://{}",
                self.dir.join("datastore.db").display()
            ));
        }
        step("datastore: Debian's etcd in the management namespace, 198.18.0.250:2379");
        let pfx = prefix();
        let mgmt = self.netns("mgmt")?;
        sh(&format!(
            "ip link add {pfx}m netns {mgmt} type veth peer name {pfx}mr netns {tor} && \
             ip -n {mgmt} addr add {ETCD_IP}/24 dev {pfx}m && ip -n {mgmt} link set {pfx}m up && \
             ip -n {tor} link set {pfx}mr master rack && ip -n {tor} link set {pfx}mr up"
        ))?;
        self.start_etcd()?;
        Ok(format!("etcd://{ETCD_IP}:2379"))
    }

    fn start_etcd(&mut self) -> Res<()> {
        let d = self.dir.display().to_string();
        let argv: Vec<String> = [
            "etcd",
            "--name",
            "lab",
            "--data-dir",
            &format!("{d}/etcd"),
            "--listen-client-urls",
            &format!("http://{ETCD_IP}:2379"),
            "--advertise-client-urls",
            &format!("http://{ETCD_IP}:2379"),
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "lab=http://127.0.0.1:2380",
            "--log-level",
            "warn",
        ]
        .map(String::from)
        .to_vec();
        let mgmt = format!("{}mgmt", prefix());
        let pid = self.spawn(&mgmt, &argv, "etcd.log")?;
        self.state.etcd_pid = Some(pid);
        self.save()?;
        wait(Duration::from_secs(30), || {
            self.tortiectl("get ippools").is_ok()
        })
        .map_err(|_| "etcd did not come up (see etcd.log)".to_string())
    }

    /// Runs tortiectl against the lab's datastore (from the management namespace for etcd).
    fn tortiectl(&self, args: &str) -> Res<String> {
        let ctl = bin("tortiectl").display().to_string();
        if self.state.datastore == "etcd" {
            sh(&format!(
                "ip netns exec {}mgmt {ctl} --datastore etcd://{ETCD_IP}:2379 {args}",
                prefix()
            ))
        } else {
            sh(&format!(
                "{ctl} --datastore sqlite://{} {args}",
                self.dir.join("datastore.db").display()
            ))
        }
    }

    /// (prefix, next hops) as the ToR reports them, whichever implementation it is.
    fn tor_routes(&self) -> Vec<(String, String)> {
        let d = self.dir.display().to_string();
        let ns = format!("{}tor", prefix());
        let text = match self.state.tor.as_str() {
            "bird" => sh(&format!(
                "ip netns exec {ns} birdc -s {d}/bird.ctl show route"
            )),
            "gobgp" => sh(&format!(
                "ip netns exec {ns} gobgp -p 50051 global rib -a ipv4"
            )),
            "frr" => sh(&format!(
                "ip netns exec {ns} vtysh --vty_socket {d} -c 'show ip bgp'"
            )),
            _ => return self.tortie_tor_routes(),
        }
        .unwrap_or_default();
        // Every line (or pair of lines, BIRD) names a prefix and then its next hop.
        let mut out: Vec<(String, String)> = Vec::new();
        let mut pending: Option<String> = None;
        for line in text.lines() {
            let words: Vec<&str> = line
                .split_whitespace()
                .map(|w| w.trim_start_matches("*>").trim_start_matches('*'))
                .filter(|w| !w.is_empty())
                .collect();
            let prefix = words
                .iter()
                .find(|w| w.contains('/') && w.parse::<ipnet::IpNet>().is_ok());
            let hop = words
                .iter()
                .skip_while(|w| Some(*w) != prefix)
                .find(|w| w.parse::<std::net::IpAddr>().is_ok());
            match (prefix, hop, pending.take()) {
                (Some(p), Some(h), _) => out.push((p.to_string(), h.to_string())),
                (Some(p), None, _) => pending = Some(p.to_string()),
                (None, _, Some(p)) => {
                    if let Some(h) = words.iter().find(|w| w.parse::<std::net::IpAddr>().is_ok()) {
                        out.push((p, h.to_string()));
                    } else {
                        pending = Some(p);
                    }
                }
                _ => {}
            }
        }
        out.retain(|(p, _)| p.starts_with("10.244."));
        out
    }

    fn tortie_tor_routes(&self) -> Vec<(String, String)> {
        let out = sh(&format!(
            "{} query {} routes",
            bin("tortie-bgpd").display(),
            self.dir.join("tor.sock").display()
        ))
        .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["prefix"].as_str().unwrap_or("").to_string(),
                            r["nextHops"]
                                .as_array()
                                .map(|h| {
                                    h.iter()
                                        .filter_map(|x| x.as_str())
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn status(&self) {
        for node in &self.state.nodes {
            println!("\n\x1b[1m{node}\x1b[0m");
            match sh(&format!(
                "{} node status --socket {}",
                bin("tortiectl").display(),
                self.dir.join(format!("{node}.sock")).display()
            )) {
                Ok(s) => print!("{s}"),
                Err(e) => println!("  agent unreachable: {e}"),
            }
        }
        println!("\n\x1b[1mToR routes ({})\x1b[0m", self.state.tor);
        for (p, h) in self.tor_routes() {
            println!("  {p:<18} via {h}");
        }
    }

    /// Runs every pod → pod TCP probe; returns (cells, failures), printing the matrix if asked.
    fn matrix(&self, print: bool) -> (usize, usize) {
        self.matrix_of(&[], print)
    }

    fn matrix_of(&self, nodes: &[String], print: bool) -> (usize, usize) {
        let pods: Vec<_> = self
            .state
            .pods
            .iter()
            .filter(|p| nodes.is_empty() || nodes.contains(&p.0))
            .cloned()
            .collect();
        let mut families = vec![("IPv4", pods.iter().map(|p| p.3.clone()).collect::<Vec<_>>())];
        if self.state.ipv6 {
            families.push((
                "IPv6",
                pods.iter()
                    .map(|p| self.state.pods6.get(&p.2).cloned().unwrap_or_default())
                    .collect(),
            ));
        }
        let (mut cells, mut failures) = (0, 0);
        for (family, addrs) in families {
            let mut rows = Vec::new();
            for src in &pods {
                let mut row = Vec::new();
                for dst in &addrs {
                    let target = match dst.parse::<std::net::IpAddr>() {
                        Ok(ip) => SocketAddr::new(ip, ECHO_PORT).to_string(),
                        Err(_) => String::new(),
                    };
                    let ok = !target.is_empty()
                        && Command::new("ip")
                            .args(["netns", "exec", &src.2])
                            .arg(bin("tortie-lab"))
                            .args(["probe", &target])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .is_ok_and(|s| s.success());
                    row.push(ok);
                }
                rows.push(row);
            }
            let failed = rows.iter().flatten().filter(|ok| !**ok).count();
            cells += pods.len() * pods.len();
            failures += failed;
            if print {
                let label = |p: &(String, String, String, String)| {
                    format!(
                        "{}/{}",
                        p.0.trim_start_matches("node-"),
                        p.1.trim_start_matches("pod-")
                    )
                };
                print!(
                    "\n\x1b[1mpod → pod TCP over {family} (node/pod)\x1b[0m\n{:>6}",
                    ""
                );
                for p in &pods {
                    print!(" {:>4}", label(p));
                }
                println!();
                for (src, row) in pods.iter().zip(&rows) {
                    print!("{:>6}", label(src));
                    for ok in row {
                        print!(
                            " {:>4}",
                            if *ok {
                                "\x1b[32m ok\x1b[0m"
                            } else {
                                "\x1b[31mFAIL\x1b[0m"
                            }
                        );
                    }
                    println!();
                }
                println!(
                    "{} of {} connections ok",
                    pods.len() * pods.len() - failed,
                    pods.len() * pods.len()
                );
            }
        }
        (cells, failures)
    }
}

/// Node `i`'s underlay address: racks are subnets 198.18.<rack-1>.0/24, nodes spread over them.
fn node_ip(i: u32, racks: u32) -> String {
    format!("198.18.{}.{i}", (i - 1) % racks.max(1))
}

/// The ToR's address on node `i`'s rack.
fn tor_ip_of(i: u32, racks: u32) -> String {
    format!("198.18.{}.254", (i - 1) % racks.max(1))
}

fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(())
}

fn serve_echo(port: u16) -> Res<()> {
    // [::] with IPV6_V6ONLY off (Linux's default) takes IPv4 too; fall back to IPv4 only.
    let l = TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .map_err(|e| e.to_string())?;
    for conn in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut r = BufReader::new(&conn);
            let mut line = String::new();
            if r.read_line(&mut line).is_ok() {
                let _ = (&conn).write_all(line.as_bytes());
            }
        });
    }
    Ok(())
}

fn probe(addr: SocketAddr) -> Res<()> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"tortie\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).map_err(|e| e.to_string())?;
    if &buf == b"tortie\n" {
        Ok(())
    } else {
        Err("wrong echo".into())
    }
}

fn run(args: Args) -> Res<ExitCode> {
    if args.lab_name.len() > 6 || !args.lab_name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "--name {:?}: at most 6 letters or digits",
            args.lab_name
        ));
    }
    let _ = PREFIX.set(format!("tl{}-", args.lab_name));
    match args.command {
        Cmd::ServeEcho { port } => serve_echo(port).map(|()| ExitCode::SUCCESS),
        Cmd::Probe { addr } => probe(addr).map(|()| ExitCode::SUCCESS),
        Cmd::Up {
            nodes,
            pods_per_node,
            tor,
            datastore,
            ipv6,
            racks,
            topology,
        } => {
            if topology != "mesh" && topology != "rr" {
                return Err(format!("--topology {topology}: expected mesh or rr"));
            }
            if !(1..=9).contains(&racks) {
                return Err(format!("--racks {racks}: 1 to 9"));
            }
            if datastore != "sqlite" && datastore != "etcd" {
                return Err(format!("--datastore {datastore}: expected sqlite or etcd"));
            }
            let mut lab = Lab::load(&args.dir);
            let shape = State {
                tor,
                datastore,
                ipv6,
                racks,
                topology,
                ..State::default()
            };
            if let Err(e) = lab.up(nodes, pods_per_node, shape) {
                eprintln!(
                    "error: {e}\n(the lab is left up for inspection: `tortie-lab status`, `tortie-lab down`; logs in {})",
                    args.dir.display()
                );
                return Ok(ExitCode::FAILURE);
            }
            lab.status();
            let (_, failed) = lab.matrix(true);
            println!(
                "\nThe lab is up: `tortie-lab status`, `tortie-lab check`, `tortie-lab exec node-1 -- ip route`, `tortie-lab down`."
            );
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Down => {
            let mut lab = Lab::load(&args.dir);
            lab.down();
            step("lab removed");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Datastore { action } => {
            let mut lab = Lab::load(&args.dir);
            if lab.state.datastore != "etcd" {
                return Err("only an etcd datastore can be stopped (up --datastore etcd)".into());
            }
            match action.as_str() {
                "stop" => {
                    if let Some(pid) = lab.state.etcd_pid.take() {
                        let _ = Command::new("kill").arg(pid.to_string()).status();
                        lab.state.pids.retain(|p| *p != pid);
                        lab.save()?;
                        // Wait until it is really gone (the port closes).
                        let _ = wait(Duration::from_secs(10), || {
                            !Path::new(&format!("/proc/{pid}")).exists()
                        });
                    }
                    step("etcd stopped");
                }
                "start" => {
                    lab.start_etcd()?;
                    step("etcd started");
                }
                other => return Err(format!("datastore {other}: expected stop or start")),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ctl { args: ctl_args } => {
            let lab = Lab::load(&args.dir);
            let out = lab.tortiectl(&ctl_args.join(" "));
            match out {
                Ok(o) => {
                    print!("{o}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Status => {
            Lab::load(&args.dir).status();
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fail { node, .. } | Cmd::Recover { node, .. }
            if node.strip_prefix("node-").is_none() =>
        {
            Err(format!("{node}: nodes are node-1, node-2, …"))
        }
        Cmd::Fail { node, agent: true } => {
            let mut lab = Lab::load(&args.dir);
            let (_, pid) = lab
                .state
                .agents
                .get(&node)
                .cloned()
                .ok_or_else(|| format!("no agent on {node}"))?;
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let _ = wait(Duration::from_secs(10), || {
                !Path::new(&format!("/proc/{pid}")).exists()
            });
            lab.state.pids.retain(|p| *p != pid);
            lab.save()?;
            step(&format!("{node}: agent stopped"));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Recover { node, agent: true } => {
            let mut lab = Lab::load(&args.dir);
            let (argv, _) = lab
                .state
                .agents
                .get(&node)
                .cloned()
                .ok_or_else(|| format!("no agent on {node}"))?;
            let ns = Lab::node_ns(&node);
            let pid = lab.spawn(&ns, &argv, &format!("agent-{node}.log"))?;
            lab.state.agents.insert(node.clone(), (argv, pid));
            lab.save()?;
            step(&format!("{node}: agent started"));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fail { node, .. } => {
            let (i, pfx) = (node.trim_start_matches("node-"), prefix());
            sh(&format!("ip -n {pfx}tor link set {pfx}r{i} down"))?;
            step(&format!("{node} cut off the rack"));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Recover { node, .. } => {
            let (i, pfx) = (node.trim_start_matches("node-"), prefix());
            sh(&format!("ip -n {pfx}tor link set {pfx}r{i} up"))?;
            step(&format!("{node} back on the rack"));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { nodes } => {
            let (_, failed) = Lab::load(&args.dir).matrix_of(&nodes, true);
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Exec { node, cmd } => {
            let st = Command::new("ip")
                .args(["netns", "exec", &Lab::node_ns(&node)])
                .args(&cmd)
                .status()
                .map_err(|e| e.to_string())?;
            Ok(if st.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Pod { action, node, name } => {
            let mut lab = Lab::load(&args.dir);
            match action.as_str() {
                "add" => println!("{}", lab.add_pod(&node, &name)?),
                "del" => lab.del_pod(&node, &name)?,
                other => return Err(format!("pod {other}: expected add or del")),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
