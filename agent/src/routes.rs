//! The route reconciler's core, pure: the routes the node should have (blackholes for its own
//! blocks, remote blocks via their BGP next hops) against what the kernel has with our
//! protocol number, as a list of operations. Replacements come first, deletions last, so a
//! prefix that moves is never absent in between (`replace` is atomic in the kernel).
//!
//! Routes of other protocols never enter `actual`; pod routes (our protocol, through a `cali`
//! veth) belong to the CNI plugin and are filtered out by the driver before they get here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Where a prefix goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Dropped: a block this node owns (its pods have /32s that are more specific).
    Blackhole,
    /// Via these next hops (ECMP when more than one), sorted.
    Via(Vec<IpAddr>),
    /// Via a next hop on this interface, taken as directly reachable (`onlink`): a remote
    /// node's VXLAN tunnel address on our VXLAN device.
    Onlink(IpAddr, u32),
    /// Straight out of this interface (`scope link`): a pod's /32 or /128 to its veth.
    Device(u32),
}

impl Target {
    /// ECMP set in canonical (sorted, deduplicated) order.
    pub fn via(mut hops: Vec<IpAddr>) -> Target {
        hops.sort();
        hops.dedup();
        Target::Via(hops)
    }
}

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Install or replace.
    Replace(IpNet, Target),
    /// Remove.
    Delete(IpNet, Target),
}

/// The operations that turn `actual` into `desired`.
pub fn plan(desired: &BTreeMap<IpNet, Target>, actual: &BTreeMap<IpNet, Target>) -> Vec<Op> {
    let mut ops: Vec<Op> = desired
        .iter()
        .filter(|(p, t)| actual.get(p) != Some(t))
        .map(|(p, t)| Op::Replace(*p, t.clone()))
        .collect();
    ops.extend(
        actual
            .iter()
            .filter(|(p, _)| !desired.contains_key(p))
            .map(|(p, t)| Op::Delete(*p, t.clone())),
    );
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn replaces_what_differs_then_deletes_what_is_stale() {
        let desired = BTreeMap::from([
            (p("10.244.1.0/26"), Target::Blackhole),
            (
                p("10.244.2.0/26"),
                Target::via(vec![ip("198.18.0.3"), ip("198.18.0.2")]),
            ),
            (p("10.244.3.0/26"), Target::via(vec![ip("198.18.0.4")])),
        ]);
        let actual = BTreeMap::from([
            (p("10.244.1.0/26"), Target::Blackhole),
            (p("10.244.2.0/26"), Target::via(vec![ip("198.18.0.2")])),
            (p("10.244.9.0/26"), Target::via(vec![ip("198.18.0.9")])),
        ]);
        assert_eq!(
            plan(&desired, &actual),
            vec![
                Op::Replace(
                    p("10.244.2.0/26"),
                    Target::Via(vec![ip("198.18.0.2"), ip("198.18.0.3")])
                ),
                Op::Replace(p("10.244.3.0/26"), Target::Via(vec![ip("198.18.0.4")])),
                Op::Delete(p("10.244.9.0/26"), Target::Via(vec![ip("198.18.0.9")])),
            ]
        );
        assert!(
            plan(&desired, &desired).is_empty(),
            "converged: nothing to do"
        );
    }

    #[test]
    fn ecmp_sets_compare_in_canonical_order() {
        assert_eq!(
            Target::via(vec![ip("198.18.0.3"), ip("198.18.0.2"), ip("198.18.0.3")]),
            Target::via(vec![ip("198.18.0.2"), ip("198.18.0.3")])
        );
    }
}
