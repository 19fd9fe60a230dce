//! `manifests/tortie.yaml`, checked without a cluster:
//!
//! - every document is YAML with `apiVersion`, `kind` and `metadata.name`, and reads the same
//!   under YAML 1.2 (our parser) and YAML 1.1 (PyYAML, as kubectl's go-yaml), when python3 has
//!   PyYAML;
//! - the generated-CRD region is delimited by its two marker lines; whatever the generator puts
//!   there is one `tortie.io` CRD per kind, plus the Kubernetes backend's internal kind (empty
//!   is fine);
//! - the DaemonSet: host network, `system-node-critical`, the `install-cni` init container, the
//!   agent's flags and environment (checked against the agent's source), probes on `/livez` and
//!   `/readyz`, host paths;
//! - the ConfigMap's conflist is JSON, `tortie` (with `tortie-ipam`) first, and the plugin's own
//!   parser accepts it;
//! - RBAC: the CNI role is `get` on pods and nothing else; the agent's covers every tortie.io
//!   kind (and the backend's internal one) and no wildcard;
//! - the Kubernetes JSON schemas (strict: unknown fields are errors) accept every document, with
//!   `kubernetes-validate` (PyPI; it bundles the schemas, so it runs offline). Without the tool
//!   this check is skipped, except under CI=true, where it fails. It is looked for in
//!   `$TORTIE_KUBERNETES_VALIDATE`, `/opt/tortie-ci/kubernetes-validate/bin/`, `$PATH`, then as
//!   `python3 -m kubernetes_validate`. (kubectl cannot do this offline: `apply --dry-run=client`
//!   needs the API server's discovery and OpenAPI documents.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const BEGIN_CRDS: &str = "# BEGIN GENERATED CRDS (tortie-crdgen)";
const END_CRDS: &str = "# END GENERATED CRDS";
/// Kubernetes versions the schemas are checked against: the oldest the binaries support (their
/// k8s-openapi `v1_33` is served by API servers 1.32 and later; ctl/Cargo.toml) and 1.33.
const KUBERNETES_VERSIONS: &[&str] = &["1.32.0", "1.33.0"];
/// Plurals of the Kubernetes backend's internal kinds (datastore/src/kubernetes.rs,
/// `INTERNAL_PLURAL`): they get a CRD and agent access like the API's kinds.
const INTERNAL_PLURALS: &[&str] = &["datastorekeys"];
/// Where CI installs the schema checker (a venv; see the module comment).
const VALIDATOR_VENV_BIN: &str = "/opt/tortie-ci/kubernetes-validate/bin/kubernetes-validate";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits in the workspace")
        .to_path_buf()
}

fn manifest_path() -> PathBuf {
    repo().join("manifests/tortie.yaml")
}

fn manifest_text() -> String {
    let p = manifest_path();
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The documents (comment-only ones, like the empty CRD region, are left out).
fn documents() -> Vec<Value> {
    tortie_api::documents::parse_documents(&manifest_text())
        .unwrap_or_else(|e| panic!("manifests/tortie.yaml is not valid YAML: {e}"))
}

fn describe(doc: &Value) -> String {
    format!(
        "{} {}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} {name}");
    found[0]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn set<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    items.into_iter().collect()
}

/// Every plural of group tortie.io: the API's kinds and the backend's internal ones.
fn tortie_plurals() -> BTreeSet<&'static str> {
    let backend = repo().join("datastore/src/kubernetes.rs");
    if let Ok(src) = std::fs::read_to_string(&backend) {
        for p in INTERNAL_PLURALS {
            assert!(
                src.contains(&format!("\"{p}\"")),
                "{}: no internal plural {p:?} any more; update INTERNAL_PLURALS and the RBAC",
                backend.display()
            );
        }
    }
    tortie_api::Kind::ALL
        .iter()
        .map(|k| k.plural())
        .chain(INTERNAL_PLURALS.iter().copied())
        .collect()
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

#[test]
fn every_document_is_a_named_kubernetes_object() {
    let docs = documents();
    assert!(docs.len() >= 10, "only {} documents", docs.len());
    let mut seen = BTreeSet::new();
    for (i, d) in docs.iter().enumerate() {
        assert!(d.is_object(), "document {i} is not a mapping: {d}");
        for field in ["apiVersion", "kind"] {
            let v = d[field].as_str().unwrap_or("");
            assert!(!v.is_empty(), "document {i}: {field} missing: {d}");
        }
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        assert!(!name.is_empty(), "document {i}: metadata.name missing: {d}");
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
        if !ns.is_empty() {
            assert!(
                ns == "tortie-system" || ns == "kube-system",
                "{}: namespace {ns}: ours are in tortie-system (kube-system only for kubeadm-config)",
                describe(d)
            );
        }
        assert!(
            seen.insert((d["kind"].to_string(), ns.to_string(), name.to_string())),
            "{} (namespace {ns:?}) appears twice",
            describe(d)
        );
    }
    for (kind, name) in [
        ("Namespace", "tortie-system"),
        ("ServiceAccount", "tortie-agent"),
        ("ServiceAccount", "tortie-cni"),
        ("ClusterRole", "tortie-agent"),
        ("ClusterRole", "tortie-cni"),
        ("ConfigMap", "tortie-config"),
        ("DaemonSet", "tortie-node"),
    ] {
        find(&docs, kind, name);
    }
    // The namespace comes first: everything after it may live in it.
    assert_eq!(describe(&docs[0]), "Namespace tortie-system");
}

/// The documents in the generated region, if any.
fn crd_region() -> Vec<Value> {
    let text = manifest_text();
    let lines: Vec<&str> = text.lines().collect();
    let at = |marker: &str| {
        let hits: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == marker).collect();
        assert_eq!(
            hits.len(),
            1,
            "the line {marker:?} must appear exactly once, alone on its line"
        );
        hits[0]
    };
    let (begin, end) = (at(BEGIN_CRDS), at(END_CRDS));
    assert!(begin < end, "{BEGIN_CRDS:?} must come before {END_CRDS:?}");
    // Document separators around the region keep generated documents apart from ours.
    assert_eq!(
        lines[begin - 1],
        "---",
        "a `---` line must precede {BEGIN_CRDS:?}"
    );
    assert_eq!(
        lines[end + 1],
        "---",
        "a `---` line must follow {END_CRDS:?}"
    );
    let inner = lines[begin + 1..end].join("\n");
    tortie_api::documents::parse_documents(&inner)
        .unwrap_or_else(|e| panic!("the generated CRD region is not valid YAML: {e}"))
}

#[test]
fn crd_region_holds_one_tortie_crd_per_kind_or_nothing() {
    let crds = crd_region();
    if crds.is_empty() {
        eprintln!("the generated CRD region is empty (tortie-crdgen has not filled it)");
        return;
    }
    let mut plurals = BTreeSet::new();
    for c in &crds {
        assert_eq!(
            c["apiVersion"],
            "apiextensions.k8s.io/v1",
            "{}",
            describe(c)
        );
        assert_eq!(c["kind"], "CustomResourceDefinition", "{}", describe(c));
        assert_eq!(c["spec"]["group"], "tortie.io", "{}", describe(c));
        assert_eq!(c["spec"]["scope"], "Cluster", "{}", describe(c));
        let plural = c["spec"]["names"]["plural"].as_str().unwrap_or("");
        assert_eq!(
            c["metadata"]["name"].as_str(),
            Some(format!("{plural}.tortie.io").as_str()),
            "a CRD's name is <plural>.<group>"
        );
        let versions: Vec<&str> = c["spec"]["versions"]
            .as_array()
            .map(|vs| vs.iter().filter_map(|v| v["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(versions.contains(&"v1"), "{}: no v1 version", describe(c));
        assert!(plurals.insert(plural.to_string()), "{plural} twice");
    }
    let kinds: BTreeSet<String> = tortie_plurals().into_iter().map(str::to_string).collect();
    assert_eq!(
        plurals, kinds,
        "one CRD per tortie.io kind (and per internal kind)"
    );
}

fn daemonset(docs: &[Value]) -> &Value {
    let ds = find(docs, "DaemonSet", "tortie-node");
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["metadata"]["namespace"], "tortie-system");
    ds
}

fn container<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// hostPath of the volume that `c` mounts at `mount_path`.
fn host_path_at<'a>(pod: &'a Value, c: &Value, mount_path: &str) -> &'a str {
    let m = c["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["mountPath"] == mount_path))
        .unwrap_or_else(|| panic!("{} mounts nothing at {mount_path}", c["name"]));
    let vol = pod["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == m["name"]))
        .unwrap_or_else(|| panic!("volume {} is not declared", m["name"]));
    vol["hostPath"]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("volume {} is not a hostPath", m["name"]))
}

fn env_of<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["env"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("{}: no env {name}", c["name"]))
}

/// Every `--flag[=value]` of the agent's command line, as (flag, value).
fn agent_flags(agent: &Value) -> Vec<(String, String)> {
    let argv: Vec<&str> = strings(&agent["command"])
        .into_iter()
        .chain(strings(&agent["args"]))
        .collect();
    assert_eq!(
        argv.first(),
        Some(&"tortie-agent"),
        "the agent runs tortie-agent"
    );
    let mut flags = Vec::new();
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i];
        assert!(a.starts_with("--"), "unexpected agent argument {a:?}");
        if let Some((f, v)) = a.split_once('=') {
            flags.push((f.to_string(), v.to_string()));
            i += 1;
        } else {
            let v = argv.get(i + 1).copied().unwrap_or("");
            flags.push((a.to_string(), v.to_string()));
            i += 2;
        }
    }
    flags
}

fn flag<'a>(flags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn daemonset_runs_the_agent_on_every_node() {
    let docs = documents();
    let ds = daemonset(&docs);
    let spec = &ds["spec"];
    let pod = &spec["template"]["spec"];

    // Selector matches the template.
    let sel = spec["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(!sel.is_empty());
    for (k, v) in sel {
        assert_eq!(
            &spec["template"]["metadata"]["labels"][k], v,
            "selector {k}"
        );
    }
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);

    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["serviceAccountName"], "tortie-agent");
    let tolerations = pod["tolerations"].as_array().expect("tolerations");
    let tolerates = |t: Value| tolerations.contains(&t);
    assert!(tolerates(
        json!({"effect": "NoSchedule", "operator": "Exists"})
    ));
    assert!(tolerates(
        json!({"effect": "NoExecute", "operator": "Exists"})
    ));
    assert!(tolerates(
        json!({"key": "CriticalAddonsOnly", "operator": "Exists"})
    ));

    // Every mount names a declared volume; the host paths the node needs are there.
    let volumes: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let containers: Vec<&Value> = pod["initContainers"]
        .as_array()
        .into_iter()
        .chain(pod["containers"].as_array())
        .flatten()
        .collect();
    for c in &containers {
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let n = m["name"].as_str().unwrap_or("");
            assert!(volumes.contains(n), "{}: mounts undeclared {n}", c["name"]);
        }
    }
    let host_paths: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    for p in [
        "/var/run/tortie",
        "/var/lib/tortie",
        "/var/log/tortie",
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/lib/modules",
        "/run/xtables.lock",
    ] {
        assert!(host_paths.contains(p), "no hostPath volume {p}");
    }

    // install-cni: same image, copies both plugins and the conflist onto the node.
    let agent = container(&pod["containers"], "tortie-agent");
    let install = container(&pod["initContainers"], "install-cni");
    assert_eq!(install["image"], agent["image"], "one image for both");
    let script = strings(&install["command"]).join(" ");
    for needle in [
        "/usr/local/bin/$b",
        "tortie tortie-ipam",
        "/host/opt/cni/bin",
        "/host/etc/cni/net.d/10-tortie.conflist",
        "/etc/tortie/cni/10-tortie.conflist",
    ] {
        assert!(
            script.contains(needle),
            "install-cni script lacks {needle:?}"
        );
    }
    assert_eq!(
        host_path_at(pod, install, "/host/opt/cni/bin"),
        "/opt/cni/bin"
    );
    assert_eq!(
        host_path_at(pod, install, "/host/etc/cni/net.d"),
        "/etc/cni/net.d"
    );
    let config_mount = install["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["mountPath"] == "/etc/tortie/cni"))
        .expect("install-cni mounts the ConfigMap at /etc/tortie/cni");
    let config_vol = pod["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == config_mount["name"]))
        .expect("declared");
    assert_eq!(config_vol["configMap"]["name"], "tortie-config");

    // The agent.
    assert_eq!(agent["securityContext"]["privileged"], true);
    assert_eq!(env_of(agent, "TORTIE_DATASTORE")["value"], "kubernetes:");
    assert_eq!(
        env_of(agent, "TORTIE_NODENAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        env_of(agent, "TORTIE_IP_AUTODETECTION_METHOD")["value"],
        "kubernetes-internal-ip"
    );
    let flags = agent_flags(agent);
    assert_eq!(flag(&flags, "--health-listen"), Some("127.0.0.1:9099"));
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        let get = &agent[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], 9099, "{probe}");
        assert_eq!(
            get["host"], "127.0.0.1",
            "{probe}: the agent listens on loopback"
        );
    }
    // The agent's socket and the CNI data directory are on the node (the plugin runs there).
    let socket = flag(&flags, "--socket").unwrap_or("/var/run/tortie/agent.sock");
    let socket_dir = Path::new(socket).parent().unwrap().to_str().unwrap();
    assert_eq!(host_path_at(pod, agent, socket_dir), socket_dir);
    let cni_data = flag(&flags, "--cni-data-dir").unwrap_or("/var/lib/tortie/cni");
    assert!(cni_data.starts_with("/var/lib/tortie/"));
    assert_eq!(
        host_path_at(pod, agent, "/var/lib/tortie"),
        "/var/lib/tortie"
    );
}

/// The agent's flags and environment variables exist in its source (a renamed flag would make
/// every pod crash-loop on a real cluster).
#[test]
fn agent_flags_and_environment_are_the_agents() {
    let docs = documents();
    let agent = container(
        &daemonset(&docs)["spec"]["template"]["spec"]["containers"],
        "tortie-agent",
    );
    // The agent's and the datastore's sources (the datastore opens the `kubernetes:` URL).
    fn read_rs(dir: &Path, into: &mut String) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                read_rs(&p, into);
            } else if p.extension().is_some_and(|x| x == "rs") {
                into.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut sources = String::new();
    read_rs(&repo().join("agent/src"), &mut sources);
    for (f, _) in agent_flags(agent) {
        // clap's derive: field `health_listen` is `--health-listen`, unless `long = "…"`.
        let long = f.trim_start_matches('-');
        let field = format!("{}:", long.replace('-', "_"));
        let explicit = format!("long = \"{long}\"");
        assert!(
            sources.contains(&field) || sources.contains(&explicit),
            "tortie-agent has no flag {f} (no field `{field}` or `{explicit}` in agent/src)"
        );
    }
    read_rs(&repo().join("datastore/src"), &mut sources);
    let mut names: Vec<String> = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect();
    // The commented examples in the manifest, too.
    for line in manifest_text().lines() {
        if let Some(n) = line.trim().strip_prefix("# - name: ") {
            names.push(n.trim().to_string());
        }
    }
    for n in names.iter().filter(|n| n.starts_with("TORTIE_")) {
        // Pool variables are built as TORTIE_{family}POOL_*.
        let generic =
            n.replacen("IPV4POOL", "{family}POOL", 1)
                .replacen("IPV6POOL", "{family}POOL", 1);
        assert!(
            sources.contains(n.as_str()) || sources.contains(&generic),
            "the agent does not read {n}"
        );
    }
}

#[test]
fn cni_conflist_is_the_tortie_chain() {
    let docs = documents();
    let cm = find(&docs, "ConfigMap", "tortie-config");
    assert_eq!(cm["metadata"]["namespace"], "tortie-system");
    let text = cm["data"]["10-tortie.conflist"]
        .as_str()
        .expect("data.10-tortie.conflist");
    let list: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("the conflist is not JSON: {e}"));
    let name = list["name"].as_str().unwrap_or("");
    let version = list["cniVersion"].as_str().unwrap_or("");
    assert!(!name.is_empty(), "conflist name");
    assert!(
        tortie_cni::spec::SUPPORTED_VERSIONS.contains(&version),
        "cniVersion {version:?}"
    );
    let plugins = list["plugins"].as_array().expect("plugins");
    let types: Vec<&str> = plugins.iter().filter_map(|p| p["type"].as_str()).collect();
    assert_eq!(types, ["tortie", "portmap", "bandwidth"]);
    let first = &plugins[0];
    assert_eq!(first["ipam"]["type"], "tortie-ipam");
    assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
    assert_eq!(plugins[2]["capabilities"]["bandwidth"], true);

    // What libcni hands the plugin: its own object plus the list's name and cniVersion.
    let mut conf = first.clone();
    conf["name"] = json!(name);
    conf["cniVersion"] = json!(version);
    let parsed = tortie_cni::spec::NetConf::parse(conf.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("the tortie plugin rejects its configuration: {e}"));
    let ipam = parsed.ipam();
    assert!(ipam.want_v4(), "IPv4 is assigned");
    assert!(!ipam.want_v6(), "IPv6 is off by default");

    // The plugin's paths are the agent's.
    let ds = daemonset(&docs);
    let agent = container(
        &ds["spec"]["template"]["spec"]["containers"],
        "tortie-agent",
    );
    let flags = agent_flags(agent);
    assert_eq!(
        parsed.agent_socket,
        flag(&flags, "--socket").unwrap_or("/var/run/tortie/agent.sock")
    );
    assert_eq!(
        parsed.data_dir,
        flag(&flags, "--cni-data-dir").unwrap_or("/var/lib/tortie/cni")
    );
    assert!(parsed.log_file.starts_with("/var/log/tortie/"));
}

fn rules(role: &Value) -> &Vec<Value> {
    role["rules"].as_array().expect("rules")
}

/// (kind, namespace, name) of the role a binding grants, and the service accounts it binds.
fn binding_of<'a>(docs: &'a [Value], kind: &str, name: &str) -> (&'a Value, Vec<String>) {
    let b = find(docs, kind, name);
    let subjects = b["subjects"]
        .as_array()
        .expect("subjects")
        .iter()
        .map(|s| {
            assert_eq!(s["kind"], "ServiceAccount");
            format!(
                "{}/{}",
                s["namespace"].as_str().unwrap_or(""),
                s["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    (b, subjects)
}

#[test]
fn rbac_is_least_privilege() {
    let docs = documents();

    // No wildcards anywhere.
    for d in &docs {
        if let Some(rs) = d["rules"].as_array() {
            for r in rs {
                for key in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    assert!(
                        !strings(&r[key]).contains(&"*"),
                        "{}: wildcard in {key}",
                        describe(d)
                    );
                }
            }
        }
    }

    // Every binding points at a role and a service account of this file.
    for b in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        let role_kind = b["roleRef"]["kind"].as_str().unwrap();
        let role = find(&docs, role_kind, b["roleRef"]["name"].as_str().unwrap());
        if role_kind == "Role" {
            assert_eq!(role["metadata"]["namespace"], b["metadata"]["namespace"]);
        }
        for s in b["subjects"].as_array().unwrap() {
            let sa = find(&docs, "ServiceAccount", s["name"].as_str().unwrap());
            assert_eq!(sa["metadata"]["namespace"], s["namespace"]);
        }
    }

    // The CNI plugin: get pods, nothing else.
    let cni = find(&docs, "ClusterRole", "tortie-cni");
    assert_eq!(
        rules(cni),
        &vec![json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})],
        "the CNI ClusterRole is `get` on pods only"
    );
    let (_, subjects) = binding_of(&docs, "ClusterRoleBinding", "tortie-cni");
    assert_eq!(subjects, ["tortie-system/tortie-cni"]);
    let cni_bound_elsewhere = docs.iter().any(|d| {
        (d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
            && d["metadata"]["name"] != "tortie-cni"
            && d["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"] == "tortie-cni")
    });
    assert!(
        !cni_bound_elsewhere,
        "tortie-cni is bound only to its ClusterRole"
    );

    // The agent: every tortie.io kind, full verbs, and nothing cluster-wide beyond what it needs.
    let agent = find(&docs, "ClusterRole", "tortie-agent");
    let (_, subjects) = binding_of(&docs, "ClusterRoleBinding", "tortie-agent");
    assert_eq!(subjects, ["tortie-system/tortie-agent"]);
    let rule_for = |group: &str, resource: &str| -> BTreeSet<&str> {
        rules(agent)
            .iter()
            .filter(|r| strings(&r["apiGroups"]).contains(&group))
            .filter(|r| strings(&r["resources"]).contains(&resource))
            .flat_map(|r| strings(&r["verbs"]))
            .collect()
    };
    let full = set([
        "get", "list", "watch", "create", "update", "patch", "delete",
    ]);
    let tortie_rules: Vec<&Value> = rules(agent)
        .iter()
        .filter(|r| strings(&r["apiGroups"]).contains(&"tortie.io"))
        .collect();
    let granted: BTreeSet<&str> = tortie_rules
        .iter()
        .flat_map(|r| strings(&r["resources"]))
        .collect();
    let kinds = tortie_plurals();
    assert_eq!(
        granted, kinds,
        "the agent's tortie.io resources are exactly the kinds (and the internal ones)"
    );
    for k in &kinds {
        assert_eq!(rule_for("tortie.io", k), full, "verbs on {k}");
    }
    assert_eq!(rule_for("", "nodes"), set(["get", "list", "watch"]));
    assert_eq!(rule_for("", "pods"), set(["get", "list", "watch", "patch"]));
    assert!(rule_for("", "events").contains("create"));
    let resources: BTreeSet<&str> = rules(agent)
        .iter()
        .flat_map(|r| strings(&r["resources"]))
        .collect();
    assert!(
        resources.is_subset(
            &kinds
                .union(&set(["nodes", "pods", "events"]))
                .copied()
                .collect()
        ),
        "unexpected cluster-wide resources for the agent: {resources:?}"
    );

    // kubeadm-config: one ConfigMap, read only, in kube-system.
    let kubeadm = find(&docs, "Role", "tortie-agent-kubeadm-config");
    assert_eq!(kubeadm["metadata"]["namespace"], "kube-system");
    assert_eq!(
        rules(kubeadm),
        &vec![json!({"apiGroups": [""], "resources": ["configmaps"],
                     "resourceNames": ["kubeadm-config"], "verbs": ["get"]})]
    );
    let (b, subjects) = binding_of(&docs, "RoleBinding", "tortie-agent-kubeadm-config");
    assert_eq!(b["metadata"]["namespace"], "kube-system");
    assert_eq!(subjects, ["tortie-system/tortie-agent"]);

    // No Secret access at all (BGP passwords come from files on the node today).
    for d in &docs {
        if let Some(rs) = d["rules"].as_array() {
            for r in rs {
                assert!(
                    !strings(&r["resources"]).contains(&"secrets"),
                    "{}: secrets",
                    describe(d)
                );
            }
        }
    }
}

/// The schema checker's command line, if it is installed.
fn kubernetes_validate() -> Option<Vec<String>> {
    let works = |argv: &[String]| {
        Command::new(&argv[0])
            .args(&argv[1..])
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Ok(explicit) = std::env::var("TORTIE_KUBERNETES_VALIDATE") {
        let argv = vec![explicit];
        assert!(
            works(&argv),
            "TORTIE_KUBERNETES_VALIDATE={:?} does not run",
            argv[0]
        );
        return Some(argv);
    }
    let candidates: [&[&str]; 3] = [
        &[VALIDATOR_VENV_BIN],
        &["kubernetes-validate"],
        &["python3", "-m", "kubernetes_validate"],
    ];
    candidates
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .find(|argv| works(argv))
}

fn run_validator(argv: &[String], version: &str, file: &Path) -> (bool, String) {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["--strict", "-k", version])
        .arg(file)
        .output()
        .expect("kubernetes-validate runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn kubernetes_schemas_accept_every_document() {
    let Some(validator) = kubernetes_validate() else {
        let how = "python3 -m venv /opt/tortie-ci/kubernetes-validate && \
                   /opt/tortie-ci/kubernetes-validate/bin/pip install kubernetes-validate==1.37.0";
        assert!(
            !ci(),
            "CI=true and kubernetes-validate is not installed (looked in \
             $TORTIE_KUBERNETES_VALIDATE, {VALIDATOR_VENV_BIN}, $PATH, python3 -m): {how}"
        );
        eprintln!("SKIPPED the schema check: kubernetes-validate is not installed ({how})");
        return;
    };

    // First, that it really checks: an unknown field in a DaemonSet must fail in strict mode.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {a: b}}\n  \
         template:\n    metadata: {labels: {a: b}}\n    spec:\n      hostNetwrok: true\n      containers: [{name: c, image: i}]\n",
    )
    .unwrap();
    let (ok, out) = run_validator(&validator, KUBERNETES_VERSIONS[0], &bad);
    assert!(
        !ok && out.contains("hostNetwrok"),
        "the schema checker let a misspelt field through: {out}"
    );

    let docs = documents();
    for version in KUBERNETES_VERSIONS {
        let (ok, out) = run_validator(&validator, version, &manifest_path());
        assert!(
            ok,
            "Kubernetes {version} schemas reject manifests/tortie.yaml:\n{out}"
        );
        // Each built-in object was checked (not just skipped); tortie.io objects have no
        // published schema, and this file has none outside the CRDs.
        for d in docs
            .iter()
            .filter(|d| d["apiVersion"] != tortie_api::API_VERSION)
        {
            let id = format!(
                "passed for resource {}/{}",
                d["kind"].as_str().unwrap().to_ascii_lowercase(),
                d["metadata"]["name"].as_str().unwrap()
            );
            assert!(
                out.contains(&id),
                "Kubernetes {version}: no {id:?} in:\n{out}"
            );
        }
        eprintln!(
            "Kubernetes {version}: {} documents pass the strict schemas",
            docs.len()
        );
    }
}

/// Kubernetes reads YAML as 1.1 (`yes`, `on`, `0644` mean other things there than in 1.2): the
/// file must mean the same either way. Needs python3 with PyYAML (Debian's python3-yaml, or the
/// schema checker's venv); skipped without.
#[test]
fn yaml_reads_the_same_under_yaml_1_1() {
    let pythons = [
        PathBuf::from(VALIDATOR_VENV_BIN).with_file_name("python3"),
        PathBuf::from("python3"),
    ];
    let script = "import json, sys, yaml\n\
                  docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
                  json.dump(docs, sys.stdout)\n";
    for py in pythons {
        let Ok(out) = Command::new(&py)
            .args(["-c", script])
            .arg(manifest_path())
            .output()
        else {
            continue;
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No module named") {
                continue;
            }
            panic!("PyYAML ({}) cannot read the manifest: {err}", py.display());
        }
        let v11: Value = serde_json::from_slice(&out.stdout).expect("json from python");
        assert_eq!(
            v11,
            Value::Array(documents()),
            "the manifest means something else under YAML 1.1 (Kubernetes) than under 1.2"
        );
        return;
    }
    eprintln!("SKIPPED: no python3 with PyYAML");
}
