//! BGP resources: `BGPConfiguration`, `BGPPeer`, `BGPFilter`.

use serde::{Deserialize, Serialize};

use crate::error::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Kind, Spec};
use crate::values::{AsNumber, Cidr, Duration, LabelSelector, PeerAddress};

/// The cluster-wide AS number when none is configured.
pub const DEFAULT_AS_NUMBER: u32 = 64512;
/// The BGP port (RFC 4271 §8.2.1).
pub const DEFAULT_BGP_PORT: u16 = 179;

/// Log level of the BGP speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum LogSeverity {
    /// Everything.
    Debug,
    /// Normal.
    Info,
    /// Problems only.
    Warning,
    /// Errors only.
    Error,
    /// Fatal errors only.
    Fatal,
    /// Nothing.
    None,
}

/// Where a TCP-MD5 password comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordSource {
    /// A key in a Kubernetes secret in the agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// A file on the node holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl PasswordSource {
    fn validate(&self, path: &str, errs: &mut FieldErrors) {
        match (&self.secret_key_ref, &self.file) {
            (Some(_), Some(_)) | (None, None) => {
                errs.push(path, "set exactly one of secretKeyRef and file")
            }
            (None, Some(f)) if !f.starts_with('/') => errs.push(
                format!("{path}.file"),
                format!("{f:?} must be an absolute path"),
            ),
            _ => {}
        }
    }
}

/// A key of a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the secret.
    pub key: String,
}

/// A service range to advertise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRange {
    /// The range.
    pub cidr: Cidr,
}

/// A named community value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Community {
    /// Name that `prefixAdvertisements` refer to.
    pub name: String,
    /// `aa:nn` (RFC 1997) or `aa:nn:mm` (RFC 8092 large).
    pub value: String,
}

/// Communities attached to a prefix on export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixAdvertisement {
    /// The prefix.
    pub cidr: Cidr,
    /// Community names from `communities`, or literal values.
    #[serde(default)]
    pub communities: Vec<String>,
}

/// True for `aa:nn` with 16-bit parts or `aa:nn:mm` with 32-bit parts.
pub fn is_community_value(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    match parts.as_slice() {
        [a, b] => a.parse::<u16>().is_ok() && b.parse::<u16>().is_ok(),
        [a, b, c] => [a, b, c].iter().all(|p| p.parse::<u32>().is_ok()),
        _ => false,
    }
}

/// `BGPConfiguration.spec`: `default` (cluster-wide) or `node.<name>` (per-node override).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPConfigurationSpec {
    /// Cluster AS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// Full iBGP mesh between all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// TCP port the speaker listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Log level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<LogSeverity>,
    /// TCP-MD5 password of mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<PasswordSource>,
    /// Graceful-restart time of mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<Duration>,
    /// Service cluster IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<ServiceRange>,
    /// Service external IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<ServiceRange>,
    /// Service load-balancer IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<ServiceRange>,
    /// Named communities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    /// Communities per advertised prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
}

impl Spec for BGPConfigurationSpec {
    const KIND: Kind = Kind::BGPConfiguration;

    fn apply_defaults(&mut self, meta: &ObjectMeta) {
        // Only the cluster-wide object carries defaults; a per-node override inherits what it
        // leaves unset.
        if meta.name == "default" {
            self.as_number.get_or_insert(AsNumber(DEFAULT_AS_NUMBER));
            self.node_to_node_mesh_enabled.get_or_insert(true);
            self.listen_port.get_or_insert(DEFAULT_BGP_PORT);
            self.log_severity_screen.get_or_insert(LogSeverity::Info);
        }
    }

    fn validate(&self, meta: &ObjectMeta, errs: &mut FieldErrors) {
        let per_node = meta.name.strip_prefix("node.");
        if meta.name != "default" && per_node.is_none_or(str::is_empty) {
            errs.push(
                "metadata.name",
                format!(
                    "{:?}: must be \"default\" or \"node.<nodename>\"",
                    meta.name
                ),
            );
        }
        if per_node.is_some() && self.node_to_node_mesh_enabled.is_some() {
            errs.push(
                "spec.nodeToNodeMeshEnabled",
                "may only be set on the \"default\" BGPConfiguration",
            );
        }
        if self.listen_port == Some(0) {
            errs.push("spec.listenPort", "0 is not a valid port");
        }
        if let Some(p) = &self.node_mesh_password {
            p.validate("spec.nodeMeshPassword", errs);
        }
        for (i, c) in self.communities.iter().enumerate() {
            if !is_community_value(&c.value) {
                errs.push(
                    format!("spec.communities[{i}].value"),
                    format!("{:?} is not a community (aa:nn or aa:nn:mm)", c.value),
                );
            }
        }
        for (i, adv) in self.prefix_advertisements.iter().enumerate() {
            for (j, c) in adv.communities.iter().enumerate() {
                let known = self.communities.iter().any(|k| &k.name == c);
                if !known && !is_community_value(c) {
                    errs.push(
                        format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                        format!("{c:?} is neither a community name from spec.communities nor a value aa:nn or aa:nn:mm"),
                    );
                }
            }
        }
    }
}

/// Next-hop handling towards a peer.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum NextHopMode {
    /// Self for eBGP, unchanged for iBGP.
    #[default]
    Auto,
    /// Always set our own address.
    #[serde(rename = "Self")]
    SelfAddress,
    /// Never change the next hop.
    Keep,
}

/// Source address of the TCP session.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SourceAddress {
    /// Bind to the node's address.
    #[default]
    #[serde(rename = "UseNodeIP")]
    UseNodeIp,
    /// Let the kernel choose.
    None,
}

/// BFD settings (RFC 5880).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdSettings {
    /// Run BFD on the session.
    #[serde(default)]
    pub enabled: bool,
    /// Desired minimum transmit interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx_interval: Option<Duration>,
    /// Required minimum receive interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rx_interval: Option<Duration>,
    /// Detection multiplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u8>,
}

/// `BGPPeer.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPPeerSpec {
    /// Only this node peers (empty with no `nodeSelector`: every node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The nodes that peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// The remote address.
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<PeerAddress>,
    /// The remote AS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// Peer with the tortie nodes matching this selector instead of `peerIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<LabelSelector>,
    /// TCP-MD5 password (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSource>,
    /// Session source address.
    #[serde(default)]
    pub source_address: SourceAddress,
    /// Proposed hold time (RFC 4271 §4.2: 0 or at least 3 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<Duration>,
    /// Keepalive interval (usually a third of the hold time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<Duration>,
    /// Graceful-restart time (RFC 4724).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<Duration>,
    /// Next-hop handling.
    #[serde(default)]
    pub next_hop_mode: NextHopMode,
    /// GTSM hop count (RFC 5082).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    /// BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSettings>,
    /// Tear the session down above this many received prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefixes: Option<u32>,
    /// `BGPFilter` names, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
}

impl Spec for BGPPeerSpec {
    const KIND: Kind = Kind::BGPPeer;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut FieldErrors) {
        if self.node.is_some() && self.node_selector.is_some() {
            errs.push(
                "spec.nodeSelector",
                "may not be set together with spec.node",
            );
        }
        match (&self.peer_ip, &self.peer_selector) {
            (Some(_), Some(_)) => errs.push(
                "spec.peerSelector",
                "may not be set together with spec.peerIP",
            ),
            (None, None) => errs.push("spec.peerIP", "set spec.peerIP or spec.peerSelector"),
            (Some(_), None) if self.as_number.is_none() => {
                errs.push("spec.asNumber", "is required with spec.peerIP")
            }
            _ => {}
        }
        if let Some(p) = &self.password {
            p.validate("spec.password", errs);
        }
        if let Some(hold) = self.hold_time {
            let s = hold.0.as_secs_f64();
            if s != 0.0 && s < 3.0 || s > 65535.0 {
                errs.push(
                    "spec.holdTime",
                    format!("\"{hold}\" must be 0 or between 3s and 65535s (RFC 4271 §4.2)"),
                );
            }
            if let Some(ka) = self.keepalive_time
                && s != 0.0
                && ka.0 >= hold.0
            {
                errs.push(
                    "spec.keepaliveTime",
                    format!("\"{ka}\" must be shorter than the hold time \"{hold}\""),
                );
            }
        }
        if self.ttl_security == Some(0) {
            errs.push("spec.ttlSecurity", "0 is not a hop count (1 to 255)");
        }
        if let Some(b) = &self.bfd
            && b.multiplier == Some(0)
        {
            errs.push("spec.bfd.multiplier", "0 is not valid (1 to 255)");
        }
        for (i, f) in self.filters.iter().enumerate() {
            if f.is_empty() {
                errs.push(format!("spec.filters[{i}]"), "empty filter name");
            }
        }
    }
}

/// How a filter rule compares a route's prefix with its `cidr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum MatchOperator {
    /// Exactly the CIDR.
    Equal,
    /// Anything but the CIDR.
    NotEqual,
    /// Within the CIDR (inclusive).
    In,
    /// Outside the CIDR.
    NotIn,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum FilterAction {
    /// Let the route through.
    Accept,
    /// Drop the route.
    Reject,
}

/// Bounds on a route's prefix length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixLengthRange {
    /// Shortest length matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u8>,
    /// Longest length matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u8>,
}

/// One rule of a `BGPFilter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPFilterRule {
    /// Prefix to compare with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Cidr>,
    /// How to compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<MatchOperator>,
    /// Prefix-length bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLengthRange>,
    /// Accept or reject.
    pub action: FilterAction,
}

/// `BGPFilter.spec`: ordered rules per direction and family; the first match wins and a
/// route no rule matches is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPFilterSpec {
    /// IPv4 routes we advertise.
    #[serde(default, rename = "exportV4", skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BGPFilterRule>,
    /// IPv4 routes we accept.
    #[serde(default, rename = "importV4", skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BGPFilterRule>,
    /// IPv6 routes we advertise.
    #[serde(default, rename = "exportV6", skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BGPFilterRule>,
    /// IPv6 routes we accept.
    #[serde(default, rename = "importV6", skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BGPFilterRule>,
}

fn validate_rules(field: &str, v4: bool, rules: &[BGPFilterRule], errs: &mut FieldErrors) {
    let max_len = if v4 { 32 } else { 128 };
    for (i, r) in rules.iter().enumerate() {
        let path = format!("spec.{field}[{i}]");
        match (&r.cidr, &r.match_operator) {
            (Some(c), Some(_)) if c.is_ipv4() != v4 => errs.push(
                format!("{path}.cidr"),
                format!("\"{c}\" is not an IPv{} CIDR", if v4 { 4 } else { 6 }),
            ),
            (Some(_), None) => errs.push(format!("{path}.matchOperator"), "is required with cidr"),
            (None, Some(_)) => errs.push(format!("{path}.cidr"), "is required with matchOperator"),
            _ => {}
        }
        if let Some(pl) = &r.prefix_length {
            for (name, v) in [("min", pl.min), ("max", pl.max)] {
                if let Some(v) = v
                    && v > max_len
                {
                    errs.push(
                        format!("{path}.prefixLength.{name}"),
                        format!("{v} is out of range (0 to {max_len})"),
                    );
                }
            }
            if let (Some(lo), Some(hi)) = (pl.min, pl.max)
                && lo > hi
            {
                errs.push(
                    format!("{path}.prefixLength"),
                    format!("min {lo} is greater than max {hi}"),
                );
            }
        }
    }
}

impl Spec for BGPFilterSpec {
    const KIND: Kind = Kind::BGPFilter;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut FieldErrors) {
        validate_rules("exportV4", true, &self.export_v4, errs);
        validate_rules("importV4", true, &self.import_v4, errs);
        validate_rules("exportV6", false, &self.export_v6, errs);
        validate_rules("importV6", false, &self.import_v6, errs);
    }
}
