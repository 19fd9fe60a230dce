//! Hand-built `(bytes, message)` pairs for the tricky encodings, checked both ways
//! (decode(bytes) == message and encode(message) == bytes), plus a few decode-only cases
//! where the wire form is not the one we would write.
//!
//! The bytes were laid out by hand from the RFCs (one attribute per line).

#[path = "wire_support.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr};

use support::{dcx, hex, netgauze_routes, routes_of};
use tortie_bgpd::wire::{self, DecodeCxt, EncodeCxt};
use tortie_bgpd::{
    AddPathMode, Afi, AsSegment, Capabilities, GracefulRestart, Message, Nlri, Notification, Open,
    Origin, PathAttrs, RawAttribute, Update,
};

const HEADER: &str = "ffffffffffffffffffffffffffffffff";

fn prefixes(list: &[&str]) -> Vec<Nlri> {
    list.iter().map(|p| Nlri::new(p.parse().unwrap())).collect()
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn announce(attrs: PathAttrs, announced: Vec<Nlri>) -> Message {
    Message::Update(Update {
        attrs: Some(attrs),
        announced,
        ..Default::default()
    })
}

fn seq(asns: &[u32]) -> Vec<AsSegment> {
    vec![AsSegment::Sequence(asns.to_vec())]
}

/// Checks a pair both ways, and that netgauze reads the same routes in the bytes.
fn both_ways(name: &str, bytes: &str, msg: &Message, d: &DecodeCxt, e: &EncodeCxt) {
    let bytes = hex(&format!("{HEADER}{bytes}"));
    assert_eq!(wire::decode(&bytes, d).as_ref(), Ok(msg), "{name}: decode");
    let ours = wire::encode(msg, e).unwrap_or_else(|err| panic!("{name}: encode: {err}"));
    assert_eq!(hexs(&ours), hexs(&bytes), "{name}: encode");
    if let Message::Update(u) = msg {
        let theirs = netgauze_routes(&bytes, d.four_octet_as, &d.add_path)
            .unwrap_or_else(|err| panic!("{name}: netgauze: {err}"));
        assert_eq!(routes_of(u), theirs, "{name}: netgauze");
    }
}

fn decode_only(name: &str, bytes: &str, msg: &Message, d: &DecodeCxt) {
    let bytes = hex(&format!("{HEADER}{bytes}"));
    assert_eq!(wire::decode(&bytes, d).as_ref(), Ok(msg), "{name}: decode");
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn as2() -> (DecodeCxt, EncodeCxt) {
    (dcx(false, &[], false), EncodeCxt::default())
}

fn as4() -> (DecodeCxt, EncodeCxt) {
    (
        dcx(true, &[], false),
        EncodeCxt {
            four_octet_as: true,
            ..Default::default()
        },
    )
}

fn base(as_path: Vec<AsSegment>) -> PathAttrs {
    PathAttrs {
        origin: Origin::Igp,
        as_path,
        next_hop: Some(v4("192.0.2.1")),
        ..Default::default()
    }
}

#[test]
fn as4_path_on_a_two_octet_session() {
    let (d, e) = as2();
    // RFC 6793 §4.2.2: AS 4200000001 becomes AS_TRANS in AS_PATH, the real path goes in AS4_PATH.
    both_ways(
        "AS_TRANS + AS4_PATH",
        "003c 02 0000 0021
         40 01 01 00                          # ORIGIN IGP
         40 02 06 02 02 fde9 5ba0             # AS_PATH SEQ [65001, 23456]
         40 03 04 c0000201                    # NEXT_HOP 192.0.2.1
         c0 11 0a 02 02 0000fde9 fa56ea01     # AS4_PATH SEQ [65001, 4200000001]
         18 cb0071                            # 203.0.113.0/24",
        &announce(
            base(seq(&[65001, 4_200_000_001])),
            prefixes(&["203.0.113.0/24"]),
        ),
        &d,
        &e,
    );
    // AGGREGATOR AS_TRANS + AS4_AGGREGATOR (RFC 6793 §4.2.3).
    let mut attrs = base(seq(&[4_200_000_009]));
    attrs.aggregator = Some((4_200_000_009, Ipv4Addr::new(10, 0, 0, 9)));
    both_ways(
        "AS4_AGGREGATOR",
        "004a 02 0000 002f
         40 01 01 00
         40 02 04 02 01 5ba0                  # AS_PATH SEQ [23456]
         40 03 04 c0000201
         c0 07 06 5ba0 0a000009               # AGGREGATOR 23456 10.0.0.9
         c0 11 06 02 01 fa56ea09              # AS4_PATH SEQ [4200000009]
         c0 12 08 fa56ea09 0a000009           # AS4_AGGREGATOR 4200000009 10.0.0.9
         18 cb0071",
        &announce(attrs, prefixes(&["203.0.113.0/24"])),
        &d,
        &e,
    );
}

#[test]
fn as4_path_merge_rules() {
    let (d, _) = as2();
    let net = prefixes(&["203.0.113.0/24"]);
    // A 2-octet speaker prepended 65002 after the AS4_PATH was built: the excess leading AS
    // numbers of AS_PATH are kept (RFC 6793 §4.2.3).
    decode_only(
        "old speaker prepended",
        "003e 02 0000 0023 40010100 400208 0203 fdea fde9 5ba0 400304c0000201
         c0110a 0202 0000fde9 fa56ea01 18cb0071",
        &announce(base(seq(&[65002, 65001, 4_200_000_001])), net.clone()),
        &d,
    );
    // AS4_PATH longer than AS_PATH: ignored.
    decode_only(
        "AS4_PATH too long",
        "003a 02 0000 001f 40010100 400204 0201 5ba0 400304c0000201 c0110a 0202 fa56ea01 fa56ea02 18cb0071",
        &announce(base(seq(&[23456])), net.clone()),
        &d,
    );
    // AGGREGATOR from a 2-octet speaker (not AS_TRANS) with AS4_AGGREGATOR: both AS4_ attributes
    // are ignored.
    let mut attrs = base(seq(&[65003, 23456]));
    attrs.aggregator = Some((65003, Ipv4Addr::new(10, 0, 0, 3)));
    decode_only(
        "aggregated by a 2-octet speaker",
        "004c 02 0000 0031 40010100 400206 0202 fdeb 5ba0 400304c0000201 c00706 fdeb 0a000003
         c01106 0201 fa56ea01 c01208 fa56ea09 0a000009 18cb0071",
        &announce(attrs, net),
        &d,
    );
}

#[test]
fn add_path_ids_in_both_fields_and_in_mp_reach() {
    let d = dcx(true, &[Afi::Ipv4, Afi::Ipv6], false);
    let e = EncodeCxt {
        four_octet_as: true,
        add_path: [Afi::Ipv4, Afi::Ipv6].into(),
        ..Default::default()
    };
    let id = |id, p: &str| Nlri {
        path_id: Some(id),
        prefix: p.parse().unwrap(),
    };
    both_ways(
        "ADD-PATH IPv4",
        "0046 02 0009 00000005 1a 0a000000        # withdrawn: path 5 10.0.0.0/26
         0014 40010100 400206 0201 0000fde9 400304c0000201
         00000001 1a 0a000040                      # path 1 10.0.0.64/26
         00000002 1a 0a000040                      # path 2 10.0.0.64/26",
        &Message::Update(Update {
            withdrawn: vec![id(5, "10.0.0.0/26")],
            attrs: Some(base(seq(&[65001]))),
            announced: vec![id(1, "10.0.0.64/26"), id(2, "10.0.0.64/26")],
            ..Default::default()
        }),
        &d,
        &e,
    );
    let attrs = PathAttrs {
        as_path: seq(&[65001]),
        next_hop: Some("2001:db8::1".parse().unwrap()),
        ..Default::default()
    };
    both_ways(
        "ADD-PATH IPv6",
        "0049 02 0000 0032
         80 0e 22 0002 01 10 20010db8000000000000000000000001 00   # MP_REACH, next hop 2001:db8::1
            00000009 40 20010db800010000                             # path 9 2001:db8:1::/64
         40010100 400206 0201 0000fde9",
        &announce(attrs, vec![id(9, "2001:db8:1::/64")]),
        &d,
        &e,
    );
}

#[test]
fn ipv6_next_hop_with_link_local() {
    let (d, e) = as4();
    let attrs = PathAttrs {
        as_path: seq(&[65001]),
        next_hop: Some("2001:db8::1".parse().unwrap()),
        link_local_next_hop: Some("fe80::1".parse().unwrap()),
        med: Some(7),
        ..Default::default()
    };
    both_ways(
        "32-octet next hop",
        "0064 02 0000 004d
         80 0e 36 0002 01 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00
            7a 20010db8000200000000000000000040                      # 2001:db8:2::40/122
         40010100 400206 0201 0000fde9
         80 04 04 00000007                                           # MED 7",
        &announce(attrs, prefixes(&["2001:db8:2::40/122"])),
        &d,
        &e,
    );
}

#[test]
fn ipv4_routes_in_mp_reach() {
    let (d, e) = as4();
    // RFC 8950: IPv4 NLRI, IPv6 next hop.
    let attrs = PathAttrs {
        as_path: seq(&[65001]),
        next_hop: Some("2001:db8::1".parse().unwrap()),
        ..Default::default()
    };
    both_ways(
        "RFC 8950",
        "0041 02 0000 002a
         80 0e 1a 0001 01 10 20010db8000000000000000000000001 00 1a 0a0102c0
         40010100 400206 0201 0000fde9",
        &announce(attrs.clone(), prefixes(&["10.1.2.192/26"])),
        &d,
        &EncodeCxt {
            ipv4_over_ipv6_next_hop: true,
            ..e.clone()
        },
    );
    // Without the capability negotiated, we refuse to send it.
    let msg = announce(attrs, prefixes(&["10.1.2.192/26"]));
    assert!(matches!(
        wire::encode(&msg, &e),
        Err(wire::EncodeError::NextHop(_))
    ));
    // IPv4 in MP_REACH with an IPv4 next hop, when the context asks for it.
    let mut attrs = base(seq(&[65001]));
    attrs.origin = Origin::Igp;
    both_ways(
        "IPv4 in MP_REACH",
        "0035 02 0000 001e 80 0e 0e 0001 01 04 c0000201 00 1a 0a0102c0 40010100 400206 0201 0000fde9",
        &announce(attrs, prefixes(&["10.1.2.192/26"])),
        &d,
        &EncodeCxt { mp_ipv4: true, ..e },
    );
}

#[test]
fn every_attribute_on_an_ibgp_session() {
    let d = dcx(true, &[], true);
    let e = EncodeCxt {
        four_octet_as: true,
        ..Default::default()
    };
    let attrs = PathAttrs {
        origin: Origin::Incomplete,
        as_path: vec![
            AsSegment::Sequence(vec![65001, 4_200_000_001]),
            AsSegment::Set(vec![65005, 65006]),
        ],
        next_hop: Some(v4("192.0.2.1")),
        link_local_next_hop: None,
        med: Some(100),
        local_pref: Some(300),
        atomic_aggregate: true,
        aggregator: Some((4_200_000_001, Ipv4Addr::new(192, 0, 2, 9))),
        communities: vec![0xfde8_0001, 0xffff_ff01],
        large_communities: vec![(4_200_000_001, 1, 2), (65001, 3, 4)],
        originator_id: Some(Ipv4Addr::new(192, 0, 2, 7)),
        cluster_list: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
        unknown: vec![RawAttribute {
            flags: 0xc0,
            code: 16,
            value: hex("0002fde900000064"),
        }],
    };
    both_ways(
        "iBGP, all attributes",
        "009d 02 0000 0081
         40 01 01 02                                  # ORIGIN INCOMPLETE
         40 02 14 02 02 0000fde9 fa56ea01 01 02 0000fded 0000fdee   # SEQ [65001 4200000001] SET {65005 65006}
         40 03 04 c0000201                            # NEXT_HOP
         80 04 04 00000064                            # MED 100
         40 05 04 0000012c                            # LOCAL_PREF 300
         40 06 00                                     # ATOMIC_AGGREGATE
         c0 07 08 fa56ea01 c0000209                   # AGGREGATOR 4200000001 192.0.2.9
         c0 08 08 fde80001 ffffff01                   # COMMUNITIES 65000:1 NO_EXPORT
         80 09 04 c0000207                            # ORIGINATOR_ID
         80 0a 08 0a000001 0a000002                   # CLUSTER_LIST
         c0 10 08 0002fde900000064                    # EXTENDED_COMMUNITIES (kept raw)
         c0 20 18 fa56ea01 00000001 00000002 0000fde9 00000003 00000004   # LARGE_COMMUNITY
         1a 0a020000",
        &announce(attrs, prefixes(&["10.2.0.0/26"])),
        &d,
        &e,
    );
}

#[test]
fn end_of_rib_markers() {
    let (d, e) = as4();
    let eor = |afi| {
        Message::Update(Update {
            end_of_rib: Some(afi),
            ..Default::default()
        })
    };
    both_ways("EoR IPv4", "0017 02 0000 0000", &eor(Afi::Ipv4), &d, &e);
    both_ways(
        "EoR IPv6",
        "001d 02 0000 0006 80 0f 03 0002 01",
        &eor(Afi::Ipv6),
        &d,
        &e,
    );
    both_ways(
        "EoR IPv4 in MP",
        "001d 02 0000 0006 80 0f 03 0001 01",
        &eor(Afi::Ipv4),
        &d,
        &EncodeCxt {
            mp_ipv4: true,
            ..e.clone()
        },
    );
    // An End-of-RIB carries nothing else.
    let bad = Message::Update(Update {
        end_of_rib: Some(Afi::Ipv4),
        withdrawn: prefixes(&["10.0.0.0/8"]),
        ..Default::default()
    });
    assert!(wire::encode(&bad, &e).is_err());
}

#[test]
fn open_with_every_capability() {
    let caps = Capabilities {
        multiprotocol: [Afi::Ipv4, Afi::Ipv6].into(),
        route_refresh: true,
        four_octet_as: Some(4_200_000_001),
        graceful_restart: Some(GracefulRestart {
            restarting: true,
            restart_time: 90,
            families: [(Afi::Ipv4, true), (Afi::Ipv6, false)].into(),
        }),
        add_path: [
            (Afi::Ipv4, AddPathMode::Both),
            (Afi::Ipv6, AddPathMode::Receive),
        ]
        .into(),
        extended_next_hop: vec![(Afi::Ipv4, Afi::Ipv6)],
        unknown: vec![(70, vec![])],
    };
    let open = Message::Open(Open {
        version: 4,
        my_as: 23456,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(198, 18, 0, 1),
        capabilities: caps,
    });
    both_ways(
        "OPEN",
        "0053 01 04 5ba0 005a c6120001 36 02 34
         01 04 0001 00 01        # MP IPv4 unicast
         01 04 0002 00 01        # MP IPv6 unicast
         02 00                   # route refresh
         05 06 0001 0001 0002    # extended next hop: IPv4 unicast over IPv6
         40 0a 805a 0001 01 80 0002 01 00   # graceful restart: R, 90 s, IPv4 F, IPv6
         41 04 fa56ea01          # 4-octet AS 4200000001
         45 08 0001 01 03 0002 01 01        # ADD-PATH IPv4 both, IPv6 receive
         46 00                   # enhanced route refresh (uninterpreted)",
        &open,
        &DecodeCxt::before_open(),
        &EncodeCxt::before_open(),
    );
}

#[test]
fn route_refresh_keepalive_notification() {
    let (d, e) = as4();
    both_ways(
        "ROUTE-REFRESH",
        "0017 05 0002 00 01",
        &Message::RouteRefresh {
            afi: Afi::Ipv6,
            subtype: 0,
        },
        &d,
        &e,
    );
    both_ways("KEEPALIVE", "0013 04", &Message::Keepalive, &d, &e);
    both_ways(
        "NOTIFICATION",
        "0015 03 03 01",
        &Message::Notification(Notification::new(3, 1)),
        &d,
        &e,
    );
    both_ways(
        "NOTIFICATION with data",
        "0017 03 02 01 0004",
        &Message::Notification(Notification {
            code: 2,
            subcode: 1,
            data: vec![0, 4],
        }),
        &d,
        &e,
    );
    // Codes we have never heard of are passed on as they are (RFC 4271 §6.4).
    both_ways(
        "unknown code",
        "0016 03 08 2a ff",
        &Message::Notification(Notification {
            code: 8,
            subcode: 42,
            data: vec![0xff],
        }),
        &d,
        &e,
    );
    // ROUTE-REFRESH for a family we do not carry: ignorable subtype (RFC 2918 §4).
    decode_only(
        "ROUTE-REFRESH VPNv4",
        "0017 05 0001 00 80",
        &Message::RouteRefresh {
            afi: Afi::Ipv4,
            subtype: wire::ROUTE_REFRESH_IGNORE,
        },
        &d,
    );
}

#[test]
fn unknown_optional_transitive_attributes_are_kept_with_partial_set() {
    let (d, e) = as4();
    let mut attrs = base(seq(&[65001]));
    attrs.unknown = vec![RawAttribute {
        flags: 0xe0,
        code: 99,
        value: vec![1, 2, 3],
    }];
    let msg = announce(attrs, prefixes(&["10.0.0.0/8"]));
    // Received without Partial: kept with Partial set (RFC 4271 §5) ...
    decode_only(
        "unknown transitive",
        "0033 02 0000 001a 40010100 400206 0201 0000fde9 400304c0000201 c0 63 03 010203 080a",
        &msg,
        &d,
    );
    // ... and sent on that way.
    both_ways(
        "unknown transitive, partial",
        "0033 02 0000 001a 40010100 400206 0201 0000fde9 400304c0000201 e0 63 03 010203 080a",
        &msg,
        &d,
        &e,
    );
    // Unknown optional non-transitive: dropped.
    let plain = announce(base(seq(&[65001])), prefixes(&["10.0.0.0/8"]));
    decode_only(
        "unknown non-transitive",
        "0033 02 0000 001a 40010100 400206 0201 0000fde9 400304c0000201 80 63 03 010203 080a",
        &plain,
        &d,
    );
}

#[test]
fn encode_updates_packs_and_splits_families() {
    let e = EncodeCxt {
        four_octet_as: true,
        ..Default::default()
    };
    let d = dcx(true, &[], false);
    let mut announced: Vec<Nlri> = (0..2000u32)
        .map(|i| Nlri::new(format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap()))
        .collect();
    announced
        .extend((0..300u32).map(|i| Nlri::new(format!("2001:db8:{i:x}::/48").parse().unwrap())));
    let withdrawn = prefixes(&["192.0.2.0/24", "2001:db8:ffff::/48"]);
    let mut attrs = base(seq(&[65001]));
    attrs.next_hop = Some(v4("192.0.2.1"));
    let u = Update {
        withdrawn: withdrawn.clone(),
        attrs: Some(attrs.clone()),
        announced: announced.clone(),
        end_of_rib: Some(Afi::Ipv6),
        ..Default::default()
    };
    // IPv6 routes need an IPv6 next hop: refused.
    assert!(matches!(
        wire::encode_updates(&u, &e),
        Err(wire::EncodeError::NextHop(_))
    ));
    // One family at a time.
    let v4_only = Update {
        announced: announced[..2000].to_vec(),
        ..u.clone()
    };
    let frames = wire::encode_updates(&v4_only, &e).unwrap();
    let mut got = Update::default();
    let mut eor = None;
    for f in &frames {
        assert!(f.len() <= 4096);
        let Message::Update(m) = wire::decode(f, &d).unwrap() else {
            panic!()
        };
        if m.end_of_rib.is_some() {
            eor = m.end_of_rib;
            continue;
        }
        if !m.announced.is_empty() {
            assert_eq!(m.attrs.as_ref(), Some(&attrs));
        }
        got.withdrawn.extend(m.withdrawn);
        got.announced.extend(m.announced);
    }
    assert_eq!(eor, Some(Afi::Ipv6));
    assert_eq!(got.withdrawn, withdrawn);
    assert_eq!(got.announced, announced[..2000]);
    // 2 withdrawals (one per family), 2000 × 4 octets of /24 at ~4050 per message → 2, EoR.
    assert_eq!(frames.len(), 2 + 2 + 1);
}
