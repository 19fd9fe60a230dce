//! Import/export policy: ordered prefix rules (first match wins, like `BGPFilter`), then
//! communities added on export.

use ipnet::IpNet;

use crate::types::PathAttrs;

/// How a rule's CIDR is compared with a route's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// Exactly the CIDR.
    Equal,
    /// Anything but the CIDR.
    NotEqual,
    /// Within the CIDR (inclusive).
    In,
    /// Outside the CIDR.
    NotIn,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Prefix match, when present.
    pub cidr: Option<(IpNet, MatchOp)>,
    /// Prefix length range (inclusive), when present.
    pub length: Option<(u8, u8)>,
    /// Accept (true) or reject.
    pub accept: bool,
}

impl Rule {
    fn matches(&self, prefix: &IpNet) -> bool {
        if let Some((cidr, op)) = &self.cidr {
            let same_family = matches!(
                (cidr, prefix),
                (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
            );
            // A rule speaks only for its CIDR's family: "not in 10.0.0.0/8" says nothing
            // about IPv6 routes (as Calico's BGPFilter rules, which are per family).
            let ok = same_family
                && match op {
                    MatchOp::Equal => cidr == prefix,
                    MatchOp::NotEqual => cidr != prefix,
                    MatchOp::In => cidr.contains(prefix),
                    MatchOp::NotIn => !cidr.contains(prefix),
                };
            if !ok {
                return false;
            }
        }
        if let Some((lo, hi)) = self.length {
            let l = prefix.prefix_len();
            if l < lo || l > hi {
                return false;
            }
        }
        true
    }
}

/// A policy for one direction of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Rules in order; the first match decides.
    pub rules: Vec<Rule>,
    /// Decision when no rule matches.
    pub default_accept: bool,
    /// Standard communities (RFC 1997) added to accepted routes (export).
    pub add_communities: Vec<u32>,
    /// Large communities (RFC 8092) added to accepted routes (export).
    pub add_large_communities: Vec<(u32, u32, u32)>,
    /// Export only the routes we originate (a node towards its ToR: its own blocks, not what
    /// it learned from other nodes, so the ToR's next hop for a block is the block's owner).
    pub local_only: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::accept_all()
    }
}

impl Policy {
    /// Accepts everything, changes nothing.
    pub fn accept_all() -> Self {
        Policy {
            rules: Vec::new(),
            default_accept: true,
            add_communities: Vec::new(),
            add_large_communities: Vec::new(),
            local_only: false,
        }
    }

    /// Rejects everything (RFC 8212 default for eBGP without configured policy).
    pub fn reject_all() -> Self {
        Policy {
            default_accept: false,
            ..Policy::accept_all()
        }
    }

    /// Whether `prefix` passes.
    pub fn accepts(&self, prefix: &IpNet) -> bool {
        self.rules
            .iter()
            .find(|r| r.matches(prefix))
            .map_or(self.default_accept, |r| r.accept)
    }

    /// True when the policy changes attributes of accepted routes.
    pub fn modifies(&self) -> bool {
        !self.add_communities.is_empty() || !self.add_large_communities.is_empty()
    }

    /// Adds the configured communities (no duplicates).
    pub fn apply(&self, attrs: &mut PathAttrs) {
        for c in &self.add_communities {
            if !attrs.communities.contains(c) {
                attrs.communities.push(*c);
            }
        }
        for c in &self.add_large_communities {
            if !attrs.large_communities.contains(c) {
                attrs.large_communities.push(*c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn first_match_wins_then_default() {
        let p = Policy {
            rules: vec![
                Rule {
                    cidr: Some((net("10.0.0.0/8"), MatchOp::In)),
                    length: Some((26, 32)),
                    accept: true,
                },
                Rule {
                    cidr: Some((net("10.0.0.0/8"), MatchOp::In)),
                    length: None,
                    accept: false,
                },
            ],
            default_accept: true,
            ..Policy::accept_all()
        };
        assert!(p.accepts(&net("10.1.2.64/26")));
        assert!(!p.accepts(&net("10.1.0.0/16")));
        assert!(p.accepts(&net("192.0.2.0/24")));
        assert!(
            p.accepts(&net("fd00::/64")),
            "other family: no rule matches"
        );
        let ne = Rule {
            cidr: Some((net("10.0.0.0/8"), MatchOp::NotIn)),
            length: None,
            accept: false,
        };
        assert!(ne.matches(&net("192.0.2.0/24")) && !ne.matches(&net("10.1.0.0/16")));
        // Per family: an IPv4 rule says nothing about IPv6 routes.
        assert!(!ne.matches(&net("fd00::/64")));
        assert!(!Policy::reject_all().accepts(&net("10.0.0.0/8")));
    }
}
