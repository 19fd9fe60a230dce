//! RIB behaviour: decision process, ECMP, split horizon, reflection, eBGP rules, graceful
//! restart, limits.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use tortie_bgpd::policy::{MatchOp, Policy, Rule};
use tortie_bgpd::rib::{NextHopMode, PeerConfig, PeerId, Rib, RibInput, RibOutput};
use tortie_bgpd::{Afi, AsSegment, Nlri, Origin, PathAttrs, Update};

const LOCAL_AS: u32 = 64512;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn cfg(addr: &str, asn: u32) -> PeerConfig {
    PeerConfig {
        address: ip(addr),
        remote_as: asn,
        rr_client: false,
        next_hop: NextHopMode::Auto,
        import: Policy::accept_all(),
        export: Policy::accept_all(),
        max_prefixes: None,
    }
}

fn up(rib: &mut Rib, peer: PeerId, config: PeerConfig, id: &str) -> Vec<RibOutput> {
    rib.step(RibInput::PeerUp {
        peer,
        config,
        bgp_id: id.parse().unwrap(),
        local_address: ip("198.18.0.1"),
        families: BTreeSet::from([Afi::Ipv4, Afi::Ipv6]),
    })
}

fn attrs(path: &[u32], nh: &str) -> PathAttrs {
    PathAttrs {
        origin: Origin::Igp,
        as_path: if path.is_empty() {
            vec![]
        } else {
            vec![AsSegment::Sequence(path.to_vec())]
        },
        next_hop: Some(ip(nh)),
        ..Default::default()
    }
}

fn announce(rib: &mut Rib, peer: PeerId, prefixes: &[&str], a: PathAttrs) -> Vec<RibOutput> {
    rib.step(RibInput::Update {
        peer,
        update: Update {
            attrs: Some(a),
            announced: prefixes.iter().map(|p| Nlri::new(net(p))).collect(),
            ..Default::default()
        },
    })
}

fn sent_to(out: &[RibOutput], peer: PeerId) -> Vec<&Update> {
    out.iter()
        .filter_map(|o| match o {
            RibOutput::Send { peer: p, update } if *p == peer => Some(update),
            _ => None,
        })
        .collect()
}

fn best_hops(out: &[RibOutput], prefix: &str) -> Option<Vec<IpAddr>> {
    out.iter().rev().find_map(|o| match o {
        RibOutput::BestChanged(v) => v
            .iter()
            .find(|c| c.prefix == net(prefix))
            .map(|c| c.next_hops.to_vec()),
        _ => None,
    })
}

#[test]
fn decision_process_order() {
    let mut rib = Rib::new(LOCAL_AS, "198.18.0.1".parse().unwrap(), None);
    up(&mut rib, 1, cfg("198.18.0.2", 65001), "1.1.1.1");
    up(&mut rib, 2, cfg("198.18.0.3", 65002), "2.2.2.2");
    // Shorter AS path wins.
    announce(
        &mut rib,
        1,
        &["10.0.0.0/26"],
        attrs(&[65001, 65100], "198.18.0.2"),
    );
    let out = announce(&mut rib, 2, &["10.0.0.0/26"], attrs(&[65002], "198.18.0.3"));
    assert_eq!(best_hops(&out, "10.0.0.0/26"), Some(vec![ip("198.18.0.3")]));
    // Lower origin wins at equal length.
    let mut a = attrs(&[65001], "198.18.0.2");
    a.origin = Origin::Igp;
    let mut b = attrs(&[65002], "198.18.0.3");
    b.origin = Origin::Incomplete;
    announce(&mut rib, 1, &["10.0.1.0/26"], a);
    announce(&mut rib, 2, &["10.0.1.0/26"], b);
    assert_eq!(
        rib.paths(&net("10.0.1.0/26"))[0].attrs.next_hop,
        Some(ip("198.18.0.2"))
    );
    // MED compared only within one neighbour AS: here different ASes, so both stay ECMP.
    let mut a = attrs(&[65001], "198.18.0.2");
    a.med = Some(50);
    let mut b = attrs(&[65002], "198.18.0.3");
    b.med = Some(10);
    announce(&mut rib, 1, &["10.0.2.0/26"], a);
    let out = announce(&mut rib, 2, &["10.0.2.0/26"], b);
    assert_eq!(
        best_hops(&out, "10.0.2.0/26"),
        Some(vec![ip("198.18.0.2"), ip("198.18.0.3")]),
        "ECMP across equal paths"
    );
}

#[test]
fn med_within_one_as_and_ebgp_over_ibgp() {
    let mut rib = Rib::new(LOCAL_AS, "198.18.0.1".parse().unwrap(), None);
    up(&mut rib, 1, cfg("198.18.0.2", 65001), "1.1.1.1");
    up(&mut rib, 2, cfg("198.18.0.3", 65001), "2.2.2.2");
    up(&mut rib, 3, cfg("198.18.0.4", LOCAL_AS), "3.3.3.3");
    let mut a = attrs(&[65001], "198.18.0.2");
    a.med = Some(50);
    let mut b = attrs(&[65001], "198.18.0.3");
    b.med = Some(10);
    announce(&mut rib, 1, &["10.0.0.0/26"], a);
    let out = announce(&mut rib, 2, &["10.0.0.0/26"], b);
    assert_eq!(best_hops(&out, "10.0.0.0/26"), Some(vec![ip("198.18.0.3")]));
    // iBGP path with the same attributes loses to eBGP (step d).
    let mut i = attrs(&[65001], "198.18.0.9");
    i.med = Some(10);
    i.local_pref = Some(100);
    announce(&mut rib, 3, &["10.0.0.0/26"], i);
    assert_eq!(
        rib.paths(&net("10.0.0.0/26"))[0].attrs.next_hop,
        Some(ip("198.18.0.3"))
    );
    // Higher LOCAL_PREF beats everything from iBGP.
    let mut i = attrs(&[65001, 65001, 65001], "198.18.0.9");
    i.local_pref = Some(200);
    let out = announce(&mut rib, 3, &["10.0.0.0/26"], i);
    assert_eq!(best_hops(&out, "10.0.0.0/26"), Some(vec![ip("198.18.0.9")]));
}

#[test]
fn ebgp_export_prepends_and_sets_next_hop_ibgp_split_horizon() {
    let mut rib = Rib::new(LOCAL_AS, "198.18.0.1".parse().unwrap(), None);
    up(&mut rib, 1, cfg("198.18.0.2", 65001), "1.1.1.1");
    up(&mut rib, 2, cfg("198.18.0.3", LOCAL_AS), "2.2.2.2");
    up(&mut rib, 3, cfg("198.18.0.4", LOCAL_AS), "3.3.3.3");
    up(&mut rib, 4, cfg("198.18.0.5", 65004), "4.4.4.4");
    // From eBGP peer 1: to iBGP peers with LOCAL_PREF and next hop kept; to eBGP peer 4 prepended.
    let out = announce(
        &mut rib,
        1,
        &["10.1.0.0/26", "10.1.0.64/26"],
        attrs(&[65001], "198.18.0.2"),
    );
    assert!(sent_to(&out, 1).is_empty(), "never back to the sender");
    let to2 = sent_to(&out, 2);
    assert_eq!(to2.len(), 1, "both prefixes in one update");
    assert_eq!(to2[0].announced.len(), 2);
    let a = to2[0].attrs.as_ref().unwrap();
    assert_eq!(
        (a.local_pref, a.next_hop),
        (Some(100), Some(ip("198.18.0.2")))
    );
    let a4 = sent_to(&out, 4)[0].attrs.as_ref().unwrap();
    assert_eq!(a4.as_path, vec![AsSegment::Sequence(vec![LOCAL_AS, 65001])]);
    assert_eq!((a4.local_pref, a4.next_hop), (None, Some(ip("198.18.0.1"))));
    // From iBGP peer 2: not to iBGP peer 3 (split horizon), yes to eBGP peers.
    let mut i = attrs(&[], "198.18.0.3");
    i.local_pref = Some(100);
    let out = announce(&mut rib, 2, &["10.2.0.0/26"], i);
    assert!(sent_to(&out, 3).is_empty());
    assert_eq!(sent_to(&out, 4).len(), 1);
    // AS loop: a path with our AS is dropped.
    let out = announce(
        &mut rib,
        4,
        &["10.3.0.0/26"],
        attrs(&[65004, LOCAL_AS], "198.18.0.5"),
    );
    assert!(rib.paths(&net("10.3.0.0/26")).is_empty());
    assert!(out.iter().all(|o| !matches!(o, RibOutput::Send { .. })));
}

#[test]
fn route_reflection_between_clients() {
    let cluster: Ipv4Addr = "244.0.0.1".parse().unwrap();
    let mut rib = Rib::new(LOCAL_AS, "198.18.0.1".parse().unwrap(), Some(cluster));
    let client = |a: &str| PeerConfig {
        rr_client: true,
        ..cfg(a, LOCAL_AS)
    };
    up(&mut rib, 1, client("198.18.0.2"), "1.1.1.1");
    up(&mut rib, 2, client("198.18.0.3"), "2.2.2.2");
    up(&mut rib, 3, cfg("198.18.0.4", LOCAL_AS), "3.3.3.3"); // non-client
    let mut a = attrs(&[], "198.18.0.2");
    a.local_pref = Some(100);
    let out = announce(&mut rib, 1, &["10.9.0.0/26"], a.clone());
    let r = sent_to(&out, 2)[0].attrs.as_ref().unwrap();
    assert_eq!(r.originator_id, Some("1.1.1.1".parse().unwrap()));
    assert_eq!(r.cluster_list, vec![cluster]);
    assert_eq!(
        r.next_hop,
        Some(ip("198.18.0.2")),
        "reflection keeps the next hop"
    );
    assert_eq!(
        sent_to(&out, 3).len(),
        1,
        "client routes go to non-clients too"
    );
    // Non-client routes go to clients only.
    let out = announce(&mut rib, 3, &["10.9.1.0/26"], a.clone());
    assert_eq!(sent_to(&out, 1).len() + sent_to(&out, 2).len(), 2);
    // Our own cluster ID in CLUSTER_LIST: loop, dropped.
    let mut looped = a;
    looped.cluster_list = vec![cluster];
    announce(&mut rib, 2, &["10.9.2.0/26"], looped);
    assert!(rib.paths(&net("10.9.2.0/26")).is_empty());
}

#[test]
fn graceful_restart_keeps_stale_until_end_of_rib() {
    let mut rib = Rib::new(LOCAL_AS, "198.18.0.1".parse().unwrap(), None);
    up(&mut rib, 1, cfg("198.18.0.2", 65001), "1.1.1.1");
    up(&mut rib, 2, cfg("198.18.0.3", 65002), "2.2.2.2");
    announce(
        &mut rib,
        1,
        &["10.1.0.0/26", "10.1.0.64/26"],
        attrs(&[65001], "198.18.0.2"),
    );
    let out = rib.step(RibInput::PeerDown {
        peer: 1,
        stale_for: Some(Duration::from_secs(120)),
    });
    assert!(out.contains(&RibOutput::StartStaleTimer {
        peer: 1,
        after: Duration::from_secs(120)
    }));
    assert!(
        sent_to(&out, 2).iter().all(|u| u.withdrawn.is_empty()),
        "no withdrawal during GR"
    );
    assert_eq!(rib.counters(1).stale, 2);
    // The peer comes back and re-announces one prefix; End-of-RIB sweeps the other.
    up(&mut rib, 1, cfg("198.18.0.2", 65001), "1.1.1.1");
    announce(&mut rib, 1, &["10.1.0.0/26"], attrs(&[65001], "198.18.0.2"));
    assert_eq!(rib.counters(1).stale, 1);
    let out = rib.step(RibInput::Update {
        peer: 1,
        update: Update {
            end_of_rib: Some(Afi::Ipv4),
            ..Default::default()
        },
    });
    assert_eq!(best_hops(&out, "10.1.0.64/26"), Some(vec![]));
    assert_eq!(
        sent_to(&out, 2)[0].withdrawn,
        vec![Nlri::new(net("10.1.0.64/26"))]
    );
    assert_eq!(rib.counters(1).stale, 0);
    // Without GR, routes go at once.
    let out = rib.step(RibInput::PeerDown {
        peer: 1,
        stale_for: None,
    });
    assert_eq!(best_hops(&out, "10.1.0.0/26"), Some(vec![]));
}

#[test]
fn peer_up_dumps_table_then_end_of_rib_and_originate() {
    let mut rib = Rib::new(LOCAL_AS, "198.18.0.1".parse().unwrap(), None);
    rib.step(RibInput::Originate {
        routes: vec![
            (net("10.244.1.0/26"), attrs(&[], "0.0.0.0")),
            (net("fd00::/122"), PathAttrs::default()),
        ],
    });
    let out = up(&mut rib, 1, cfg("198.18.0.2", LOCAL_AS), "1.1.1.1");
    let sent = sent_to(&out, 1);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(sent[0].announced, vec![Nlri::new(net("10.244.1.0/26"))]);
    assert_eq!(
        sent[0].attrs.as_ref().unwrap().next_hop,
        Some(ip("198.18.0.1")),
        "0.0.0.0 means unset: ours"
    );
    assert_eq!(
        sent[1].attrs.as_ref().unwrap().next_hop,
        Some(ip("::ffff:198.18.0.1")),
        "unset next hop becomes ours, in the prefix's family"
    );
    assert_eq!(
        (sent[2].end_of_rib, sent[3].end_of_rib),
        (Some(Afi::Ipv4), Some(Afi::Ipv6))
    );
    let out = rib.step(RibInput::WithdrawLocal {
        prefixes: vec![net("10.244.1.0/26")],
    });
    assert_eq!(
        sent_to(&out, 1)[0].withdrawn,
        vec![Nlri::new(net("10.244.1.0/26"))]
    );
}

#[test]
fn policy_limits_and_interning() {
    let mut rib = Rib::new(LOCAL_AS, "198.18.0.1".parse().unwrap(), None);
    let mut c = cfg("198.18.0.2", 65001);
    c.import = Policy {
        rules: vec![Rule {
            cidr: Some((net("10.0.0.0/8"), MatchOp::In)),
            length: Some((26, 26)),
            accept: true,
        }],
        ..Policy::reject_all()
    };
    c.max_prefixes = Some(1000);
    up(&mut rib, 1, c, "1.1.1.1");
    let prefixes: Vec<String> = (0..1200u32)
        .map(|i| format!("10.{}.{}.{}/26", i >> 10, (i >> 2) & 255, (i & 3) * 64))
        .collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    let out = announce(&mut rib, 1, &refs[..900], attrs(&[65001], "198.18.0.2"));
    assert!(
        !out.iter()
            .any(|o| matches!(o, RibOutput::MaxPrefixesExceeded { .. }))
    );
    announce(
        &mut rib,
        1,
        &["192.0.2.0/24", "10.0.0.0/16"],
        attrs(&[65001], "198.18.0.2"),
    );
    assert_eq!(rib.len(), 900, "policy rejected the /24 and the /16");
    assert_eq!(rib.interned(), 1, "900 routes share one attribute set");
    let out = announce(&mut rib, 1, &refs[900..], attrs(&[65001], "198.18.0.2"));
    assert!(out.contains(&RibOutput::MaxPrefixesExceeded {
        peer: 1,
        limit: 1000
    }));
}

#[test]
fn local_only_export_sends_our_routes_and_nothing_learned() {
    let mut rib = Rib::new(LOCAL_AS, "198.18.0.1".parse().unwrap(), None);
    // An iBGP mesh peer that gives us another node's block, and a ToR that must get only ours.
    up(&mut rib, 1, cfg("198.18.0.2", LOCAL_AS), "2.2.2.2");
    let mut tor = cfg("198.18.0.254", 65000);
    tor.export.local_only = true;
    up(&mut rib, 2, tor, "3.3.3.3");
    let out = announce(&mut rib, 1, &["10.244.2.0/26"], attrs(&[], "198.18.0.2"));
    assert!(
        sent_to(&out, 2).iter().all(|u| u.announced.is_empty()),
        "a learned route went to the ToR: {out:?}"
    );
    let out = rib.step(RibInput::Originate {
        routes: vec![(net("10.244.1.0/26"), attrs(&[], "198.18.0.1"))],
    });
    let to_tor: Vec<IpNet> = sent_to(&out, 2)
        .iter()
        .flat_map(|u| u.announced.iter().map(|n| n.prefix))
        .collect();
    assert_eq!(to_tor, vec![net("10.244.1.0/26")]);
}
