//! Two agents as two nodes of a Kubernetes cluster, sharing IPAM through the CRDs of the
//! Kubernetes datastore — against a real kube-apiserver when `TORTIE_TEST_KUBECONFIG` names
//! one (the CRDs are applied, every tortie object and the test's pods and nodes are deleted
//! first), else against the fake API server (datastore/testdata/fake-apiserver.py), which
//! keeps kube-apiserver's REST, resourceVersion, precondition and watch semantics but is not
//! one. The agents run with `--no-bgp` (IPAM, GC and the pod
//! annotations only): they touch no kernel state.
//!
//! Shown: the default pool comes from kubeadm's `podSubnet`; 2 × 200 concurrent allocations
//! get 400 distinct addresses; each pod gets its addresses as the `tortie.io/podIPs`
//! annotation; GC releases the addresses of deleted Pod objects after the grace period and
//! never those of live pods; a deleted Kubernetes Node's allocations go too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tortie_cni::agent::Agent;
use tortie_datastore::testing::{FakeApiServer, real_kubeconfig, wipe_kubernetes};
use tortie_e2e::testkit::{wait_for, workspace_bin};

/// The API server under test: the fake one, or the real one `TORTIE_TEST_KUBECONFIG` names
/// (spoken to with kubectl).
enum Api {
    Fake(FakeApiServer),
    Real(String),
}

impl Api {
    async fn start() -> Api {
        let Some(kubeconfig) = real_kubeconfig() else {
            return Api::Fake(FakeApiServer::start().unwrap());
        };
        let api = Api::Real(kubeconfig);
        let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
        api.kubectl(&["apply", "-f", crds.to_str().unwrap()], "");
        api.kubectl(&["wait", "--for=condition=Established", "crd", "--all"], "");
        wipe_kubernetes(&api.url()).await.unwrap();
        // What kube-controller-manager would have made, and what an earlier run left.
        api.kubectl(
            &["create", "serviceaccount", "default", "-n", "default"],
            "",
        );
        for what in [
            "pods --all -n default --grace-period=0 --force",
            "nodes k1 k2",
            "configmap kubeadm-config -n kube-system",
        ] {
            let mut args = vec!["delete", "--ignore-not-found"];
            args.extend(what.split(' '));
            api.kubectl(&args, "");
        }
        api
    }

    fn kubectl(&self, args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let Api::Real(kubeconfig) = self else {
            unreachable!("kubectl is for the real API server")
        };
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn url(&self) -> String {
        match self {
            Api::Fake(f) => f.url(),
            Api::Real(k) => format!("kubernetes://{k}"),
        }
    }

    fn request(&self, method: &str, path: &str, body: &str) -> String {
        match self {
            Api::Fake(f) => f.request(method, path, body).unwrap(),
            Api::Real(_) => match method {
                "GET" => self.kubectl(&["get", "--raw", path], ""),
                "POST" => self.kubectl(&["create", "--raw", path, "-f", "-"], body),
                "DELETE" => self.kubectl(&["delete", "--raw", path], ""),
                other => panic!("{other}"),
            },
        }
    }

    fn get(&self, path: &str) -> String {
        self.request("GET", path, "")
    }
}

struct Agents {
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Agents {
    fn socket(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.sock"))
    }
    fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{node}.log"))).unwrap_or_default()
    }
}

fn start_agents(api: &Api, nodes: &[&str]) -> Agents {
    // On a real API server the agents may run as the manifest's service account
    // (`TORTIE_TEST_AGENT_KUBECONFIG`: a kubeconfig with its token), which shows its RBAC is
    // enough.
    let agent_url = match (api, std::env::var("TORTIE_TEST_AGENT_KUBECONFIG")) {
        (Api::Real(_), Ok(k)) if !k.is_empty() => format!("kubernetes://{k}"),
        _ => api.url(),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    for node in nodes {
        let log = std::fs::File::create(dir.path().join(format!("{node}.log"))).unwrap();
        children.push(
            Command::new(workspace_bin("tortie-agent"))
                .args(["--datastore", &agent_url, "--node", node, "--no-bgp"])
                .arg("--socket")
                .arg(dir.path().join(format!("{node}.sock")))
                .arg("--cni-data-dir")
                .arg(dir.path().join(node))
                .args(["--gc-interval-s", "1", "--gc-grace-s", "3"])
                .args(["--health-listen", ""])
                .env("RUST_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    Agents { children, dir }
}

fn post(api: &Api, path: &str, body: serde_json::Value) {
    let out = api.request("POST", path, &body.to_string());
    assert!(out.contains("resourceVersion"), "{path}: {out}");
}

fn k8s_node(name: &str, ip: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"rack": format!("rack-of-{name}")}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
    })
}

fn k8s_pod(name: &str, node: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]}
    })
}

fn uid_of(api: &Api, pod: &str) -> String {
    let raw = api.get(&format!("/api/v1/namespaces/default/pods/{pod}"));
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    v["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_share_ipam_through_crds_and_gc_follows_pods() {
    const PER_NODE: usize = 200;
    let api = Api::start().await;
    post(&api, "/api/v1/nodes", k8s_node("k1", "198.18.0.1"));
    post(&api, "/api/v1/nodes", k8s_node("k2", "198.18.0.2"));
    // kubeadm init --pod-network-cidr=10.244.0.0/16 leaves this behind.
    post(
        &api,
        "/api/v1/namespaces/kube-system/configmaps",
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: 10.244.0.0/16\n  serviceSubnet: 10.96.0.0/12\n"}
        }),
    );
    let mut uids = HashMap::new();
    for node in ["k1", "k2"] {
        for i in 0..PER_NODE {
            let pod = format!("p-{node}-{i}");
            post(&api, "/api/v1/namespaces/default/pods", k8s_pod(&pod, node));
            uids.insert(pod.clone(), uid_of(&api, &pod));
        }
    }
    // k1's tortie Node exists (as a BGP-running agent would have written it), with a label
    // set through tortiectl.
    let ds = tortie_datastore::Datastore::open(&api.url()).await.unwrap();
    let mut k1 = tortie_api::Object::new("k1", tortie_api::NodeSpec::default());
    k1.metadata
        .labels
        .insert("route-reflector".into(), "true".into());
    ds.create(k1).await.unwrap();
    let agents = start_agents(&api, &["k1", "k2"]);
    let mut clients = HashMap::new();
    for node in ["k1", "k2"] {
        let socket = agents.socket(node);
        wait_for(Duration::from_secs(30), "agent socket", || {
            socket.exists().then_some(())
        });
        clients.insert(
            node,
            Agent::connect(&socket, Duration::from_secs(120))
                .await
                .unwrap_or_else(|e| panic!("{node}: {e:?}\n{}", agents.log(node))),
        );
    }

    // 2 × 200 allocations, all in flight at once.
    let started = Instant::now();
    let mut calls = Vec::new();
    for node in ["k1", "k2"] {
        for i in 0..PER_NODE {
            let pod = format!("p-{node}-{i}");
            let mut client = clients[node].clone();
            let attrs = HashMap::from([
                ("containerID".to_string(), format!("c-{pod}")),
                ("namespace".to_string(), "default".to_string()),
                ("pod".to_string(), pod.clone()),
                ("podUID".to_string(), uids[&pod].clone()),
            ]);
            calls.push(tokio::spawn(async move {
                let ips = client
                    .allocate(
                        &format!("k8s-pod-network.c-{pod}"),
                        attrs,
                        true,
                        false,
                        Vec::new(),
                    )
                    .await;
                (pod, ips)
            }));
        }
    }
    let mut by_pod: BTreeMap<String, IpAddr> = BTreeMap::new();
    for c in calls {
        let (pod, ips) = c.await.unwrap();
        let ips = ips.unwrap_or_else(|e| panic!("{pod}: {e:?}"));
        assert_eq!(ips.len(), 1, "{pod}: {ips:?}");
        by_pod.insert(pod, ips[0]);
    }
    eprintln!(
        "{} allocations through the Kubernetes datastore in {:?}",
        by_pod.len(),
        started.elapsed()
    );
    let mut seen: HashMap<IpAddr, &str> = HashMap::new();
    for (pod, ip) in &by_pod {
        if let Some(other) = seen.insert(*ip, pod) {
            eprintln!("DUP {ip}: {other} and {pod}");
        }
    }
    let distinct: HashSet<IpAddr> = by_pod.values().copied().collect();
    if distinct.len() != by_pod.len() {
        eprintln!("k1 log:\n{}", agents.log("k1"));
    }
    assert_eq!(distinct.len(), 2 * PER_NODE, "a duplicate address");
    let pool: ipnet::IpNet = "10.244.0.0/16".parse().unwrap();
    assert!(
        by_pod.values().all(|ip| pool.contains(ip)),
        "the default pool is kubeadm's podSubnet"
    );
    // The CRDs hold it all: blocks are ipamblocks.tortie.io objects with affinities per node.
    let blocks = api.get("/apis/tortie.io/v1/ipamblocks");
    assert!(
        blocks.contains("host:k1") && blocks.contains("host:k2"),
        "{blocks}"
    );

    // Each pod gets its address as an annotation.
    for pod in ["p-k1-0", "p-k2-7"] {
        let want = by_pod[pod].to_string();
        wait_for(
            Duration::from_secs(15),
            "tortie.io/podIPs annotation",
            || {
                let raw = api.get(&format!("/api/v1/namespaces/default/pods/{pod}"));
                let v: serde_json::Value = serde_json::from_str(&raw).ok()?;
                (v["metadata"]["annotations"]["tortie.io/podIPs"] == want.as_str()).then_some(())
            },
        );
    }

    // The Kubernetes Node's labels reach the tortie Node (BGPPeer nodeSelectors match them);
    // the tortiectl label stays.
    wait_for(
        Duration::from_secs(15),
        "k1's labels copied from Kubernetes",
        || {
            let rt = tokio::runtime::Handle::current();
            let ds = ds.clone();
            let n = std::thread::spawn(move || {
                rt.block_on(async move { ds.get::<tortie_api::NodeSpec>("k1").await })
            })
            .join()
            .unwrap()
            .unwrap()?;
            (n.metadata.labels.get("rack").map(String::as_str) == Some("rack-of-k1")
                && n.metadata.labels.get("route-reflector").map(String::as_str) == Some("true"))
            .then_some(())
        },
    );

    // Ten Pod objects deleted: their addresses are released after the grace period; the
    // other 390 stay.
    let deleted: Vec<String> = (0..5)
        .flat_map(|i| [format!("p-k1-{i}"), format!("p-k2-{i}")])
        .collect();
    let gone_at = Instant::now();
    for pod in &deleted {
        // Without a kubelet, only an immediate delete removes a pod bound to a node.
        api.request(
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/{pod}?gracePeriodSeconds=0"),
            "",
        );
    }
    let handle = |pod: &str| format!("k8s-pod-network.c-{pod}");
    let mut k1 = clients["k1"].clone();
    for pod in &deleted {
        loop {
            if k1.get(&handle(pod)).await.unwrap().is_empty() {
                break;
            }
            assert!(
                gone_at.elapsed() < Duration::from_secs(40),
                "{pod} not released\n{}",
                agents.log("k1")
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let released_after = gone_at.elapsed();
    assert!(
        released_after >= Duration::from_secs(3),
        "released within the grace period: {released_after:?}"
    );
    // Two more GC passes: every live pod keeps its address.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (pod, ip) in &by_pod {
        if deleted.contains(pod) {
            continue;
        }
        let held = k1.get(&handle(pod)).await.unwrap();
        assert_eq!(held, vec![*ip], "live pod {pod} lost its address");
    }

    // A deleted Kubernetes Node: its allocations go (its pods went with it).
    api.request("DELETE", "/api/v1/nodes/k2", "");
    let k2_pod = "p-k2-100";
    wait_for(
        Duration::from_secs(40),
        "node k2's allocations released",
        || {
            let rt = tokio::runtime::Handle::current();
            let mut c = k1.clone();
            let h = handle(k2_pod);
            let held = std::thread::spawn(move || rt.block_on(async move { c.get(&h).await }))
                .join()
                .unwrap()
                .unwrap();
            held.is_empty().then_some(())
        },
    );
    let live_k1 = k1.get(&handle("p-k1-100")).await.unwrap();
    assert_eq!(live_k1, vec![by_pod["p-k1-100"]]);
}

/// `tortiectl` as the kubectl plugin `kubectl-tortie`: `kubectl tortie …` uses the
/// Kubernetes datastore of the current kubeconfig without being told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tortiectl_works_as_a_kubectl_plugin() {
    if real_kubeconfig().is_some() {
        eprintln!("skipped against a real API server: it would share its pools");
        return;
    }
    let api = FakeApiServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        workspace_bin("tortiectl"),
        dir.path().join("kubectl-tortie"),
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: nobody}}\ncurrent-context: fake\n",
            api.base()
        ),
    )
    .unwrap();
    let pool = dir.path().join("pool.yaml");
    std::fs::write(
        &pool,
        "apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: rack-1}\nspec: {cidr: 10.90.0.0/16, natOutgoing: true}\n",
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("TORTIE_DATASTORE")
            .output()
            .expect("kubectl (apt-get install kubernetes-client)");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = kubectl(&["tortie", "apply", "-f", pool.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&["tortie", "get", "ippools"]);
    assert!(
        ok && out.contains("rack-1") && out.contains("10.90.0.0/16"),
        "{out}"
    );
    // It is a custom resource in the cluster, for kubectl itself too.
    let (ok, out) = kubectl(&["get", "--raw", "/apis/tortie.io/v1/ippools/rack-1"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert!(ok && v["spec"]["natOutgoing"] == true, "{out}");
    // A bad document is refused with the field named, and nothing is written.
    std::fs::write(
        &pool,
        "apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: bad}\nspec: {cidr: 10.91.0.0/33}\n",
    )
    .unwrap();
    let (ok, out) = kubectl(&["tortie", "apply", "-f", pool.to_str().unwrap()]);
    assert!(!ok && out.contains("spec.cidr"), "{out}");
    let (_, out) = kubectl(&["get", "--raw", "/apis/tortie.io/v1/ippools"]);
    assert!(!out.contains("\"bad\""), "{out}");
}
