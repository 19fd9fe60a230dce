//! The CNI protocol as runtimes really speak it (spec 1.1.0, and what Debian's podman 4.3 and
//! containerd 1.6 send): environment, network configuration, results in each supported version,
//! and error JSON. Pure: no I/O beyond what the caller hands in.
//!
//! Tolerance rules learned from real clients: unknown keys are ignored (libcni leaves the
//! `capabilities` key in), capability arguments come with either capitalisation (`HostPort` from
//! containerd, `hostPort` from podman), VERSION arrives with junk in every variable, and DEL may
//! come without a netns or a `prevResult`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Value, json};

/// Versions we answer in; the configuration's `cniVersion` picks one.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// CNI error codes (spec §"Error"), plus ours from 100 up.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available (its agent is unreachable).
    pub const NOT_AVAILABLE: u32 = 50;
    /// Ours: the IPAM service refused or failed the request (detail in `details`).
    pub const IPAM: u32 = 100;
    /// Ours: no address left in the pools this pod may use.
    pub const ADDRESSES_EXHAUSTED: u32 = 101;
    /// Ours: the kernel refused a change (netlink error in `details`).
    pub const KERNEL: u32 = 102;
    /// Ours: the interface name is already taken in the container.
    pub const INTERFACE_EXISTS: u32 = 103;
    /// Ours: CHECK found a discrepancy (which one in `msg`).
    pub const CHECK_FAILED: u32 = 104;
}

/// An error as the runtime sees it: JSON on stdout and a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// Code (see [`code`]).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation.
    pub details: String,
}

impl CniError {
    /// A new error.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON the runtime reads, in `version`.
    pub fn to_json(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {}): {}", self.msg, self.code, self.details)
    }
}

impl std::error::Error for CniError {}

/// The verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK.
    Check,
    /// VERSION.
    Version,
    /// STATUS (1.1.0).
    Status,
    /// GC (1.1.0).
    Gc,
}

/// The `CNI_*` environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Option<Command>,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` as key → value.
    pub args: BTreeMap<String, String>,
    /// `CNI_PATH`.
    pub path: String,
}

impl Env {
    /// Reads the environment through `get` (so tests need not touch the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some(other) => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    "unknown CNI_COMMAND",
                    format!(
                        "CNI_COMMAND={other:?}: expected ADD, DEL, CHECK, VERSION, STATUS or GC"
                    ),
                ));
            }
            None => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    "CNI_COMMAND is not set",
                    "this program is a CNI plugin; a container runtime runs it",
                ));
            }
        };
        let args = get("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Env {
            command: Some(command),
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args,
            path: get("CNI_PATH").unwrap_or_default(),
        })
    }

    /// Checks what ADD/CHECK need (`need_netns`) or DEL needs.
    pub fn require(&self, need_netns: bool) -> Result<(), CniError> {
        let mut missing = Vec::new();
        if self.container_id.is_empty() {
            missing.push("CNI_CONTAINERID");
        }
        if self.ifname.is_empty() {
            missing.push("CNI_IFNAME");
        }
        if need_netns && self.netns.is_empty() {
            missing.push("CNI_NETNS");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                code::INVALID_ENV,
                "required environment variables missing",
                missing.join(", "),
            ))
        }
    }

    /// The workload's ID: `<namespace>.<pod>` for Kubernetes pods, else the container ID.
    pub fn workload_id(&self) -> String {
        match (
            self.args.get("K8S_POD_NAMESPACE"),
            self.args.get("K8S_POD_NAME"),
        ) {
            (Some(ns), Some(pod)) if !ns.is_empty() && !pod.is_empty() => format!("{ns}.{pod}"),
            _ => self.container_id.clone(),
        }
    }
}

/// Host-side veth name: `cali` + the first 11 hex digits of SHA-1 of the workload ID (as
/// Calico), so it is stable across restarts and fits IFNAMSIZ (15).
pub fn host_veth_name(workload_id: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(workload_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}

/// Our `ipam` section.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    /// `tortie-ipam` for our own IPAM over gRPC.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Allocate an IPv4 address (default true).
    #[serde(default, alias = "assign_ipv4", deserialize_with = "bool_or_string")]
    pub assign_ipv4: Option<bool>,
    /// Allocate an IPv6 address (default false).
    #[serde(default, alias = "assign_ipv6", deserialize_with = "bool_or_string")]
    pub assign_ipv6: Option<bool>,
    /// IPv4 pools to allocate from (names or CIDRs; default: any pool that selects the node).
    #[serde(default, alias = "ipv4_pools")]
    pub ipv4_pools: Vec<String>,
    /// IPv6 pools.
    #[serde(default, alias = "ipv6_pools")]
    pub ipv6_pools: Vec<String>,
}

/// Calico writes booleans as strings (`"assign_ipv4": "true"`); accept both.
fn bool_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "{other} is not true or false"
        ))),
    }
}

/// The plugin's configuration (what libcni puts on stdin for one plugin of a list).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Version to answer in.
    #[serde(default)]
    pub cni_version: String,
    /// Network name; part of the IPAM handle (`<name>.<containerID>`).
    #[serde(default)]
    pub name: String,
    /// Plugin type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The agent's unix socket.
    #[serde(default = "default_socket", alias = "agent_socket")]
    pub agent_socket: String,
    /// Seconds to wait for the agent.
    #[serde(default = "default_timeout", alias = "timeout_seconds")]
    pub timeout_seconds: f64,
    /// MTU of both veth ends (0: the agent's value from `node.json`, else 1500).
    #[serde(default)]
    pub mtu: u32,
    /// Route protocol number of host routes to pods (absent: the agent's value, else 80, the
    /// number Calico's Felix uses).
    #[serde(default, alias = "route_protocol")]
    pub route_protocol: Option<u8>,
    /// Where the plugin keeps its per-attachment records and pending releases.
    #[serde(default = "default_data_dir", alias = "data_dir")]
    pub data_dir: String,
    /// Log file (empty: no log).
    #[serde(default = "default_log_file", alias = "log_file_path")]
    pub log_file: String,
    /// IPAM.
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    /// The previous plugin's result (chaining, CHECK, DEL).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC's list of attachments that must be kept (1.1.0).
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID", alias = "containerId", alias = "ContainerID")]
    pub container_id: String,
    /// Interface name.
    #[serde(default, alias = "IfName")]
    pub ifname: String,
}

fn default_socket() -> String {
    "/var/run/tortie/agent.sock".into()
}
fn default_timeout() -> f64 {
    10.0
}
fn default_data_dir() -> String {
    "/var/lib/tortie/cni".into()
}
fn default_log_file() -> String {
    "/var/log/tortie/cni.log".into()
}

/// What the agent publishes for the plugin in `<dataDir>/node.json` (as Calico's node writes
/// `/var/lib/calico/mtu`): read with one small file read instead of an RPC per ADD.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSettings {
    /// Pod MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Protocol number of pod host routes (the agent's reconciler owns routes with it).
    #[serde(default)]
    pub route_protocol: Option<u8>,
}

impl NodeSettings {
    /// File name under the plugin's `dataDir`.
    pub const FILE: &'static str = "node.json";

    /// Reads `<data_dir>/node.json`; absent or unreadable means no settings.
    pub fn load(data_dir: &std::path::Path) -> NodeSettings {
        std::fs::read(data_dir.join(Self::FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// Just the version, for VERSION and for answering errors in the right version.
pub fn config_version(stdin: &[u8]) -> String {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion", default)]
        v: Option<String>,
    }
    serde_json::from_slice::<V>(stdin)
        .ok()
        .and_then(|v| v.v)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "1.0.0".into())
}

impl NetConf {
    /// Parses and checks the configuration.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {:?}; this plugin supports {}",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if conf.name.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "name: required (it is part of every IPAM handle)",
            ));
        }
        if !(0.0..=600.0).contains(&conf.timeout_seconds) || conf.timeout_seconds == 0.0 {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                format!(
                    "timeoutSeconds: {} must be above 0 and at most 600",
                    conf.timeout_seconds
                ),
            ));
        }
        if conf.mtu != 0 && !(576..=65535).contains(&conf.mtu) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                format!("mtu: {} must be between 576 and 65535", conf.mtu),
            ));
        }
        if conf.agent_socket.is_empty() || !conf.agent_socket.starts_with('/') {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                format!(
                    "agentSocket: {:?} must be an absolute path",
                    conf.agent_socket
                ),
            ));
        }
        if let Some(ipam) = &conf.ipam {
            if !ipam.kind.is_empty() && ipam.kind != "tortie-ipam" {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    format!(
                        "ipam.type: {:?} is not supported; use \"tortie-ipam\" (tortie allocates from its IP pools)",
                        ipam.kind
                    ),
                ));
            }
            if !ipam.want_v4() && !ipam.want_v6() {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    "ipam: assignIpv4 and assignIpv6 are both false; nothing to allocate",
                ));
            }
        }
        Ok(conf)
    }

    /// MTU to use: the configuration's, else the agent's, else 1500.
    pub fn mtu(&self, node: &NodeSettings) -> u32 {
        match (self.mtu, node.mtu) {
            (0, Some(m)) if m >= 576 => m,
            (0, _) => 1500,
            (m, _) => m,
        }
    }

    /// Route protocol of host routes: the configuration's, else the agent's, else 80.
    pub fn route_protocol(&self, node: &NodeSettings) -> u8 {
        self.route_protocol.or(node.route_protocol).unwrap_or(80)
    }

    /// IPAM settings (defaults when absent).
    pub fn ipam(&self) -> IpamConf {
        self.ipam.clone().unwrap_or_default()
    }

    /// The IPAM handle for this attachment, as Calico names it.
    pub fn handle_id(&self, container_id: &str) -> String {
        format!("{}.{}", self.name, container_id)
    }
}

impl IpamConf {
    /// IPv4 wanted.
    pub fn want_v4(&self) -> bool {
        self.assign_ipv4.unwrap_or(true)
    }
    /// IPv6 wanted.
    pub fn want_v6(&self) -> bool {
        self.assign_ipv6.unwrap_or(false)
    }
}

/// One interface in a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC, `aa:bb:…`.
    pub mac: String,
    /// The container's netns path; empty for the host side.
    pub sandbox: String,
}

/// What ADD did, independent of the version it is written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    /// Host side first, then the container side.
    pub interfaces: Vec<Interface>,
    /// Addresses (host routes: /32 and /128), all on the container interface.
    pub addresses: Vec<IpAddr>,
    /// Index of the container interface in `interfaces`.
    pub container_interface: usize,
}

/// Link-local next hop of IPv6 pods: the host veth's address derived from ee:ee:ee:ee:ee:ee.
pub const IPV6_GATEWAY: &str = "fe80::ecee:eeff:feee:eeee";
/// Next hop of IPv4 pods, answered by proxy ARP on the host side.
pub const IPV4_GATEWAY: &str = "169.254.1.1";

impl AddResult {
    /// The result JSON in `version` (0.3.x/0.4.0 carry `ips[].version`; 1.x does not).
    /// `prev`, if given, is the previous plugin's result, whose entries come first.
    pub fn to_json(&self, version: &str, prev: Option<&Value>) -> Value {
        let legacy = version.starts_with("0.");
        let mut interfaces: Vec<Value> = prev
            .and_then(|p| p.get("interfaces"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let offset = interfaces.len();
        for i in &self.interfaces {
            let mut v = json!({"name": i.name, "mac": i.mac});
            if !i.sandbox.is_empty() {
                v["sandbox"] = json!(i.sandbox);
            }
            interfaces.push(v);
        }
        let mut ips: Vec<Value> = prev
            .and_then(|p| p.get("ips"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut routes: Vec<Value> = prev
            .and_then(|p| p.get("routes"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for a in &self.addresses {
            let (net, gw, default) = match a {
                IpAddr::V4(_) => (IpNet::new(*a, 32), IPV4_GATEWAY, "0.0.0.0/0"),
                IpAddr::V6(_) => (IpNet::new(*a, 128), IPV6_GATEWAY, "::/0"),
            };
            let mut ip = json!({
                "address": net.expect("host prefix").to_string(),
                "gateway": gw,
                "interface": offset + self.container_interface,
            });
            if legacy {
                ip["version"] = json!(if a.is_ipv4() { "4" } else { "6" });
            }
            ips.push(ip);
            routes.push(json!({"dst": default, "gw": gw}));
        }
        let dns = prev
            .and_then(|p| p.get("dns"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        json!({
            "cniVersion": version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": dns,
        })
    }
}

/// Addresses recorded in a `prevResult` on `ifname` (or on any interface when unattributed).
pub fn prev_addresses(prev: &Value) -> Vec<IpNet> {
    prev.get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("address")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// VERSION's answer.
pub fn version_json(config_version: &str) -> Value {
    json!({
        "cniVersion": if SUPPORTED_VERSIONS.contains(&config_version) { config_version } else { "1.0.0" },
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn veth_names_match_calico() {
        // Calico: "cali" + sha1("<namespace>.<pod>")[:11]. sha1("default.nginx") =
        // 6a3c4f2fd7a6d6c5d1b5e0f2b... is not assumed: computed independently below.
        let name = host_veth_name("default.nginx");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("cali"));
        // `printf %s default.nginx | sha1sum` → first 11 hex digits.
        let out = std::process::Command::new("sh")
            .args(["-c", "printf %s default.nginx | sha1sum"])
            .output()
            .unwrap();
        let want = String::from_utf8(out.stdout).unwrap();
        assert_eq!(&name[4..], &want[..11]);
    }

    #[test]
    fn workload_id_prefers_the_pod() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            (
                "CNI_ARGS",
                "K8S_POD_NAME=web;IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_UID=1",
            ),
        ])
        .unwrap();
        assert_eq!(e.workload_id(), "shop.web");
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
        ])
        .unwrap();
        assert_eq!(e.workload_id(), "abc", "podman passes only a pod name");
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let e = env(&[]).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        let e = env(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert!(e.details.contains("FROB"), "{e}");
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap();
        let err = e.require(true).unwrap_err();
        assert_eq!(err.details, "CNI_CONTAINERID, CNI_NETNS");
    }

    #[test]
    fn configuration_tolerates_unknown_keys_and_capabilities() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tortie",
                 "capabilities":{"portMappings":true},"somethingNew":1,
                 "runtimeConfig":{"portMappings":[{"HostPort":8080,"ContainerPort":80}]},
                 "ipam":{"type":"tortie-ipam","assign_ipv4":"true","assign_ipv6":"false"}}"#,
        )
        .unwrap();
        assert_eq!(c.handle_id("c1"), "k8s-pod-network.c1");
        assert!(c.ipam().want_v4() && !c.ipam().want_v6());
        assert_eq!(c.mtu(&NodeSettings::default()), 1500);
        assert_eq!(c.route_protocol(&NodeSettings::default()), 80);
        let agent = NodeSettings {
            mtu: Some(8950),
            route_protocol: Some(81),
        };
        assert_eq!(
            c.mtu(&agent),
            8950,
            "the agent's MTU when the config has none"
        );
        assert_eq!(c.route_protocol(&agent), 81);
        let mut pinned = c.clone();
        pinned.mtu = 1400;
        pinned.route_protocol = Some(90);
        assert_eq!(pinned.mtu(&agent), 1400, "the config wins");
        assert_eq!(pinned.route_protocol(&agent), 90);
    }

    #[test]
    fn bad_configurations_get_the_right_code_and_name_the_field() {
        for (conf, code, field) in [
            ("not json", code::DECODE, "expected"),
            (
                r#"{"cniVersion":"0.2.0","name":"n"}"#,
                code::INCOMPATIBLE_VERSION,
                "0.2.0",
            ),
            (r#"{"cniVersion":"1.0.0"}"#, code::INVALID_CONFIG, "name"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","mtu":100}"#,
                code::INVALID_CONFIG,
                "mtu",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","timeoutSeconds":0}"#,
                code::INVALID_CONFIG,
                "timeoutSeconds",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","agentSocket":"relative.sock"}"#,
                code::INVALID_CONFIG,
                "agentSocket",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#,
                code::INVALID_CONFIG,
                "ipam.type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"tortie-ipam","assignIpv4":false}}"#,
                code::INVALID_CONFIG,
                "assignIpv4",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"assign_ipv4":"yes"}}"#,
                code::DECODE,
                "yes",
            ),
        ] {
            let e = NetConf::parse(conf.as_bytes()).unwrap_err();
            assert_eq!(e.code, code, "{conf}: {e}");
            assert!(e.details.contains(field), "{conf}: {e}");
        }
    }

    #[test]
    fn results_follow_the_requested_version() {
        let r = AddResult {
            interfaces: vec![
                Interface {
                    name: "cali0123456789a".into(),
                    mac: "ee:ee:ee:ee:ee:ee".into(),
                    sandbox: String::new(),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: "/run/netns/x".into(),
                },
            ],
            addresses: vec!["10.244.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            container_interface: 1,
        };
        let v1 = r.to_json("1.0.0", None);
        assert_eq!(v1["ips"][0]["address"], "10.244.0.5/32");
        assert_eq!(v1["ips"][0]["interface"], 1);
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["ips"][1]["address"], "fd00::5/128");
        assert_eq!(v1["ips"][1]["gateway"], IPV6_GATEWAY);
        assert_eq!(v1["interfaces"][1]["sandbox"], "/run/netns/x");
        assert!(v1["interfaces"][0].get("sandbox").is_none());
        let old = r.to_json("0.3.1", None);
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        // Chained after another plugin: its entries first, our indexes shifted.
        let prev =
            json!({"interfaces":[{"name":"lo"}],"ips":[],"dns":{"nameservers":["10.0.0.10"]}});
        let chained = r.to_json("1.0.0", Some(&prev));
        assert_eq!(chained["ips"][0]["interface"], 2);
        assert_eq!(chained["dns"]["nameservers"][0], "10.0.0.10");
    }

    #[test]
    fn version_answers_even_with_junk() {
        assert_eq!(config_version(b"{\"cniVersion\":\"0.4.0\"}"), "0.4.0");
        assert_eq!(config_version(b"garbage"), "1.0.0");
        let v = version_json("9.9.9");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
    }
}
