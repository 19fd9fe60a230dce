//! `tortie-bgpd`'s TOML configuration, and the difference between two configurations (for a
//! SIGHUP reload that touches only the sessions that changed).
//!
//! ```toml
//! [speaker]
//! asn = 64512
//! router_id = "198.18.0.1"
//! listen = ["0.0.0.0:179", "[::]:179"]
//! cluster_id = "244.0.0.1"        # optional: act as a route reflector
//! graceful_restart_time = 120     # 0: do not advertise graceful restart
//!
//! [[peer]]
//! address = "198.18.0.2"
//! asn = 65001
//! passive = false                 # optional
//! hold_time = 90                  # optional
//! rr_client = false               # optional
//! next_hop = "auto"               # auto | self | keep
//! max_prefixes = 200000           # optional
//! password = "s3cret"             # optional: TCP-MD5 (RFC 2385)
//! ttl_security = 1                # optional: GTSM (RFC 5082), max hops to the peer
//! families = ["ipv4", "ipv6"]     # optional
//! local_address = "198.18.0.1"    # optional
//! port = 179                      # optional
//! import = [{ cidr = "10.0.0.0/8", match = "in", min = 24, max = 32, action = "accept" }]
//! import_default = "accept"       # accept | reject
//! export = []
//! export_communities = ["65000:100"]
//! export_large_communities = ["65000:1:2"]
//!
//! [[originate]]
//! prefix = "10.244.1.0/26"
//! next_hop = "198.18.0.1"         # optional
//! communities = ["65000:1"]       # optional
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::policy::{MatchOp, Policy, Rule};
use crate::rib::NextHopMode;
use crate::speaker::{PeerSpec, SpeakerConfig};
use crate::types::{Afi, PathAttrs};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Speaker settings.
    pub speaker: SpeakerSection,
    /// Peers.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerSection>,
    /// Prefixes to originate.
    #[serde(default, rename = "originate")]
    pub originate: Vec<OriginateSection>,
}

/// `[speaker]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerSection {
    /// Our AS.
    pub asn: u32,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Listen addresses.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Route-reflector cluster ID.
    pub cluster_id: Option<Ipv4Addr>,
    /// Advertised restart time.
    #[serde(default = "default_restart_time")]
    pub graceful_restart_time: u16,
}

fn default_restart_time() -> u16 {
    120
}

/// One filter rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// Prefix to compare with.
    pub cidr: Option<IpNet>,
    /// `equal`, `not-equal`, `in`, `not-in`.
    #[serde(rename = "match")]
    pub op: Option<String>,
    /// Minimum prefix length.
    pub min: Option<u8>,
    /// Maximum prefix length.
    pub max: Option<u8>,
    /// `accept` or `reject`.
    pub action: String,
}

/// `[[peer]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// Address.
    pub address: IpAddr,
    /// Remote AS.
    pub asn: u32,
    /// TCP port.
    pub port: Option<u16>,
    /// Wait for the peer to connect.
    #[serde(default)]
    pub passive: bool,
    /// Proposed hold time.
    pub hold_time: Option<u16>,
    /// RR client.
    #[serde(default)]
    pub rr_client: bool,
    /// `auto`, `self`, `keep`.
    pub next_hop: Option<String>,
    /// Prefix limit.
    pub max_prefixes: Option<u32>,
    /// TCP-MD5 key (RFC 2385), at most 80 bytes.
    pub password: Option<String>,
    /// GTSM (RFC 5082): the peer is at most this many hops away (1 for a direct neighbour).
    pub ttl_security: Option<u8>,
    /// `ipv4`, `ipv6`.
    pub families: Option<Vec<String>>,
    /// Local address.
    pub local_address: Option<IpAddr>,
    /// Import rules.
    #[serde(default)]
    pub import: Vec<RuleSection>,
    /// Import default.
    pub import_default: Option<String>,
    /// Export rules.
    #[serde(default)]
    pub export: Vec<RuleSection>,
    /// Export default.
    pub export_default: Option<String>,
    /// Communities added on export (`aa:nn`).
    #[serde(default)]
    pub export_communities: Vec<String>,
    /// Large communities added on export (`a:b:c`).
    #[serde(default)]
    pub export_large_communities: Vec<String>,
}

/// `[[originate]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginateSection {
    /// Prefix.
    pub prefix: IpNet,
    /// Next hop (default: our session address).
    pub next_hop: Option<IpAddr>,
    /// Communities.
    #[serde(default)]
    pub communities: Vec<String>,
    /// Large communities.
    #[serde(default)]
    pub large_communities: Vec<String>,
}

/// A configuration problem, naming where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn community(s: &str, at: &str) -> Result<u32, ConfigError> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| ConfigError(format!("{at}: {s:?} is not a community aa:nn")))?;
    let a: u16 = a
        .parse()
        .map_err(|_| ConfigError(format!("{at}: {s:?} is not a community aa:nn")))?;
    let b: u16 = b
        .parse()
        .map_err(|_| ConfigError(format!("{at}: {s:?} is not a community aa:nn")))?;
    Ok((u32::from(a) << 16) | u32::from(b))
}

fn large_community(s: &str, at: &str) -> Result<(u32, u32, u32), ConfigError> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || ConfigError(format!("{at}: {s:?} is not a large community a:b:c"));
    match parts.as_slice() {
        [a, b, c] => Ok((
            a.parse().map_err(|_| bad())?,
            b.parse().map_err(|_| bad())?,
            c.parse().map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

fn policy(rules: &[RuleSection], default: Option<&str>, at: &str) -> Result<Policy, ConfigError> {
    let accept = |a: &str, at: &str| match a {
        "accept" => Ok(true),
        "reject" => Ok(false),
        other => Err(ConfigError(format!(
            "{at}: action {other:?} is not accept or reject"
        ))),
    };
    let mut p = Policy::accept_all();
    p.default_accept = accept(default.unwrap_or("accept"), at)?;
    for (i, r) in rules.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let op = match r.op.as_deref() {
            None | Some("in") => MatchOp::In,
            Some("equal") => MatchOp::Equal,
            Some("not-equal") => MatchOp::NotEqual,
            Some("not-in") => MatchOp::NotIn,
            Some(other) => {
                return Err(ConfigError(format!(
                    "{at}.match: {other:?} is not equal, not-equal, in or not-in"
                )));
            }
        };
        let length = match (r.min, r.max) {
            (None, None) => None,
            (lo, hi) => Some((lo.unwrap_or(0), hi.unwrap_or(128))),
        };
        p.rules.push(Rule {
            cidr: r.cidr.map(|c| (c.trunc(), op)),
            length,
            accept: accept(&r.action, &at)?,
        });
    }
    Ok(p)
}

impl Config {
    /// Parses and checks a configuration file's text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        if cfg.speaker.asn == 0 {
            return Err(ConfigError("speaker.asn: 0 is reserved (RFC 7607)".into()));
        }
        if cfg.speaker.router_id.is_unspecified() {
            return Err(ConfigError(
                "speaker.router_id: 0.0.0.0 is not a BGP identifier".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in cfg.peers.iter().enumerate() {
            if !seen.insert(p.address) {
                return Err(ConfigError(format!(
                    "peer[{i}].address: {} appears twice",
                    p.address
                )));
            }
            cfg.peer_spec(i)?;
        }
        cfg.routes()?;
        Ok(cfg)
    }

    /// Speaker settings.
    pub fn speaker(&self) -> SpeakerConfig {
        SpeakerConfig {
            local_as: self.speaker.asn,
            router_id: self.speaker.router_id,
            listen: self.speaker.listen.clone(),
            cluster_id: self.speaker.cluster_id,
            graceful_restart_time: self.speaker.graceful_restart_time,
            restarting: false,
        }
    }

    /// The i-th peer as the speaker wants it.
    pub fn peer_spec(&self, i: usize) -> Result<PeerSpec, ConfigError> {
        let p = &self.peers[i];
        let at = format!("peer[{i}]");
        let mut spec = PeerSpec::new(p.address, p.asn);
        spec.port = p.port.unwrap_or(179);
        spec.passive = p.passive;
        if let Some(h) = p.hold_time {
            if h != 0 && h < 3 {
                return Err(ConfigError(format!(
                    "{at}.hold_time: {h} must be 0 or at least 3 (RFC 4271 §4.2)"
                )));
            }
            spec.hold_time = h;
        }
        spec.rr_client = p.rr_client;
        spec.next_hop = match p.next_hop.as_deref() {
            None | Some("auto") => NextHopMode::Auto,
            Some("self") => NextHopMode::SelfAddress,
            Some("keep") => NextHopMode::Keep,
            Some(other) => {
                return Err(ConfigError(format!(
                    "{at}.next_hop: {other:?} is not auto, self or keep"
                )));
            }
        };
        spec.max_prefixes = p.max_prefixes;
        if let Some(key) = &p.password {
            if key.is_empty() || key.len() > tortie_sys::TCP_MD5_MAX_KEY_LEN {
                return Err(ConfigError(format!(
                    "{at}.password: must be 1 to {} bytes (the kernel's TCP-MD5 key limit)",
                    tortie_sys::TCP_MD5_MAX_KEY_LEN
                )));
            }
            spec.password = Some(key.clone());
        }
        if let Some(hops) = p.ttl_security {
            if hops == 0 {
                return Err(ConfigError(format!(
                    "{at}.ttl_security: 0 hops is not a distance; use 1 for a direct neighbour"
                )));
            }
            spec.ttl_security_hops = Some(hops);
        }
        spec.local_address = p.local_address;
        if let Some(f) = &p.families {
            spec.families = f
                .iter()
                .map(|s| match s.as_str() {
                    "ipv4" => Ok(Afi::Ipv4),
                    "ipv6" => Ok(Afi::Ipv6),
                    other => Err(ConfigError(format!(
                        "{at}.families: {other:?} is not ipv4 or ipv6"
                    ))),
                })
                .collect::<Result<_, _>>()?;
        }
        spec.import = policy(
            &p.import,
            p.import_default.as_deref(),
            &format!("{at}.import"),
        )?;
        spec.export = policy(
            &p.export,
            p.export_default.as_deref(),
            &format!("{at}.export"),
        )?;
        spec.export.add_communities = p
            .export_communities
            .iter()
            .map(|c| community(c, &format!("{at}.export_communities")))
            .collect::<Result<_, _>>()?;
        spec.export.add_large_communities = p
            .export_large_communities
            .iter()
            .map(|c| large_community(c, &format!("{at}.export_large_communities")))
            .collect::<Result<_, _>>()?;
        Ok(spec)
    }

    /// Prefixes to originate with their attributes.
    pub fn routes(&self) -> Result<BTreeMap<IpNet, PathAttrs>, ConfigError> {
        let mut out = BTreeMap::new();
        for (i, o) in self.originate.iter().enumerate() {
            let at = format!("originate[{i}]");
            let attrs = PathAttrs {
                next_hop: o.next_hop,
                communities: o
                    .communities
                    .iter()
                    .map(|c| community(c, &at))
                    .collect::<Result<_, _>>()?,
                large_communities: o
                    .large_communities
                    .iter()
                    .map(|c| large_community(c, &at))
                    .collect::<Result<_, _>>()?,
                ..Default::default()
            };
            out.insert(o.prefix.trunc(), attrs);
        }
        Ok(out)
    }
}

/// What a reload must do.
#[derive(Debug, Default, PartialEq)]
pub struct Reload {
    /// Peers to remove (gone or changed).
    pub remove: Vec<IpAddr>,
    /// Peer indices (in the new configuration) to add (new or changed).
    pub add: Vec<usize>,
    /// Prefixes to stop originating.
    pub withdraw: Vec<IpNet>,
    /// Prefixes to originate (new or changed).
    pub originate: Vec<(IpNet, PathAttrs)>,
    /// Speaker settings changed: a restart is needed (logged, not applied).
    pub speaker_changed: bool,
}

/// The changes from `old` to `new`; unchanged peers are left alone.
pub fn diff(old: &Config, new: &Config) -> Result<Reload, ConfigError> {
    let mut r = Reload {
        speaker_changed: old.speaker != new.speaker,
        ..Default::default()
    };
    for p in &old.peers {
        match new.peers.iter().find(|n| n.address == p.address) {
            Some(n) if n == p => {}
            _ => r.remove.push(p.address),
        }
    }
    for (i, n) in new.peers.iter().enumerate() {
        if old.peers.iter().find(|p| p.address == n.address) != Some(n) {
            r.add.push(i);
        }
    }
    let (old_routes, new_routes) = (old.routes()?, new.routes()?);
    r.withdraw = old_routes
        .keys()
        .filter(|p| !new_routes.contains_key(p))
        .copied()
        .collect();
    r.originate = new_routes
        .into_iter()
        .filter(|(p, a)| old_routes.get(p) != Some(a))
        .collect();
    Ok(r)
}

/// Default hold time as a Duration, for messages.
pub fn hold(secs: u16) -> Duration {
    Duration::from_secs(u64::from(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[speaker]
asn = 64512
router_id = "198.18.0.1"
listen = ["127.0.0.1:1179"]

[[peer]]
address = "198.18.0.2"
asn = 65001

[[peer]]
address = "198.18.0.3"
asn = 64512
rr_client = true
import = [{ cidr = "10.0.0.0/8", match = "in", min = 24, max = 32, action = "accept" }]
import_default = "reject"

[[originate]]
prefix = "10.244.1.0/26"
communities = ["65000:1"]
"#;

    #[test]
    fn parses_and_diffs_only_what_changed() {
        let a = Config::parse(BASE).unwrap();
        assert_eq!(a.peers.len(), 2);
        let spec = a.peer_spec(1).unwrap();
        assert!(!spec.import.default_accept && spec.rr_client);
        let secured = Config::parse(&BASE.replace(
            "asn = 65001",
            "asn = 65001\npassword = \"s3cret\"\nttl_security = 2",
        ))
        .unwrap()
        .peer_spec(0)
        .unwrap();
        assert_eq!(secured.password.as_deref(), Some("s3cret"));
        assert_eq!(secured.ttl_security_hops, Some(2));
        let b = Config::parse(
            &BASE
                .replace("asn = 65001", "asn = 65002")
                .replace("10.244.1.0/26", "10.244.2.0/26"),
        )
        .unwrap();
        let d = diff(&a, &b).unwrap();
        assert_eq!(d.remove, vec!["198.18.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(d.add, vec![0]);
        assert_eq!(d.withdraw, vec!["10.244.1.0/26".parse::<IpNet>().unwrap()]);
        assert_eq!(d.originate.len(), 1);
        assert!(!d.speaker_changed);
        assert_eq!(diff(&a, &a).unwrap(), Reload::default());
    }

    #[test]
    fn errors_name_the_place() {
        for (bad, want) in [
            (
                BASE.replace("asn = 65001", "asn = 65001\nhold_time = 2"),
                "peer[0].hold_time",
            ),
            (BASE.replace("\"65000:1\"", "\"70000:1\""), "originate[0]"),
            (
                BASE.replace("action = \"accept\"", "action = \"maybe\""),
                "peer[1].import[0]",
            ),
            (
                BASE.replace("asn = 65001", "asn = 65001\ncolour = 1"),
                "unknown field `colour`",
            ),
            (BASE.replace("198.18.0.3", "198.18.0.2"), "appears twice"),
            (
                BASE.replace("asn = 65001", "asn = 65001\npassword = \"\""),
                "peer[0].password",
            ),
            (
                BASE.replace(
                    "asn = 65001",
                    &format!("asn = 65001\npassword = \"{}\"", "k".repeat(81)),
                ),
                "peer[0].password: must be 1 to 80 bytes",
            ),
            (
                BASE.replace("asn = 65001", "asn = 65001\nttl_security = 0"),
                "peer[0].ttl_security",
            ),
            (
                BASE.replace("asn = 65001", "asn = 65001\nttl_security = 256"),
                "ttl_security",
            ),
        ] {
            let e = Config::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
