//! Real messages from gobgpd 3.10, BIRD 2.0.12 and FRR 8.4 (captured by
//! `tests/vectors/capture.sh`, see `tests/vectors/README.md`): each is framed, decoded with the
//! context of its session, checked field by field, compared with what netgauze-bgp-pkt reads in
//! it, and encoded again. Where our encoding makes a different legitimate choice than the
//! implementation did, the vector is decode-only and the table says why; it must still survive
//! decode → encode → decode unchanged.

#[path = "wire_support.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use support::{dcx, encode_cx_for, netgauze_routes, routes_of, vector, vectors_dir};
use tortie_bgpd::wire::{self, DecodeCxt, FrameDecoder};
use tortie_bgpd::{
    AddPathMode, Afi, AsSegment, Message, Nlri, Notification, Open, Origin, PathAttrs, Update,
};

// ===== helpers =====

fn open(m: &Message) -> &Open {
    match m {
        Message::Open(o) => o,
        other => panic!("not an OPEN: {other:?}"),
    }
}

fn update(m: &Message) -> &Update {
    match m {
        Message::Update(u) => u,
        other => panic!("not an UPDATE: {other:?}"),
    }
}

fn attrs(m: &Message) -> &PathAttrs {
    update(m).attrs.as_ref().expect("attributes")
}

fn nlri(prefixes: &[&str]) -> Vec<Nlri> {
    prefixes
        .iter()
        .map(|p| Nlri::new(p.parse().unwrap()))
        .collect()
}

fn with_id(id: u32, prefixes: &[&str]) -> Vec<Nlri> {
    prefixes
        .iter()
        .map(|p| Nlri {
            path_id: Some(id),
            prefix: p.parse().unwrap(),
        })
        .collect()
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}

fn eor(m: &Message, afi: Afi) {
    assert_eq!(
        update(m),
        &Update {
            end_of_rib: Some(afi),
            ..Default::default()
        }
    );
}

fn shutdown(m: &Message, text: &str) {
    let Message::Notification(n) = m else {
        panic!("not a NOTIFICATION: {m:?}")
    };
    assert_eq!((n.code, n.subcode), (6, 2));
    assert_eq!(n.shutdown_communication().as_deref(), Some(text));
    assert_eq!(n, &Notification::admin_shutdown(text));
}

fn only_withdrawn(m: &Message, routes: Vec<Nlri>) {
    assert_eq!(
        update(m),
        &Update {
            withdrawn: routes,
            ..Default::default()
        }
    );
}

/// One vector: file, session context, whether our encoding must give back the same bytes
/// (`Err(why not)` otherwise), and the checks of its decoded fields.
struct Case {
    file: &'static str,
    cx: DecodeCxt,
    exact: Result<(), &'static str>,
    check: fn(&Message),
}

const MP_NOT_FIRST: &str =
    "the implementation puts MP_REACH_NLRI in type-code order; we put it first (RFC 7606 §5.1)";
const EXT_LEN: &str = "the implementation sets the extended-length flag on a short attribute; we use it only above 255 octets";
const CAP_ORDER: &str = "capability order differs from ours (type-code order)";

fn ebgp4() -> DecodeCxt {
    dcx(true, &[], false)
}

fn cases() -> Vec<Case> {
    vec![
        // ---- gobgpd 3.10, eBGP, AS 4200000001, session with 4-octet AS ----
        Case {
            file: "gobgp/open.hex",
            cx: DecodeCxt::before_open(),
            exact: Err(CAP_ORDER),
            check: |m| {
                let o = open(m);
                assert_eq!(
                    (o.version, o.my_as, o.hold_time, o.bgp_id),
                    (4, 23456, 90, Ipv4Addr::new(198, 18, 0, 1))
                );
                assert_eq!(o.asn(), 4_200_000_001);
                let c = &o.capabilities;
                assert_eq!(c.multiprotocol, [Afi::Ipv4, Afi::Ipv6].into());
                assert!(c.route_refresh);
                assert_eq!(c.extended_next_hop, vec![(Afi::Ipv4, Afi::Ipv6)]);
                let gr = c.graceful_restart.as_ref().unwrap();
                assert_eq!((gr.restarting, gr.restart_time), (false, 120));
                assert_eq!(gr.families, [(Afi::Ipv4, false), (Afi::Ipv6, false)].into());
                assert!(c.add_path.is_empty());
                // FQDN (73): hostname "vm", empty domain.
                assert_eq!(c.unknown, vec![(73, vec![2, b'v', b'm', 0])]);
            },
        },
        Case {
            file: "gobgp/addpath_open.hex",
            cx: DecodeCxt::before_open(),
            exact: Err(CAP_ORDER),
            check: |m| {
                assert_eq!(
                    open(m).capabilities.add_path,
                    [(Afi::Ipv4, AddPathMode::Send)].into()
                )
            },
        },
        Case {
            file: "gobgp/keepalive.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| assert_eq!(m, &Message::Keepalive),
        },
        Case {
            file: "gobgp/update_v4.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| {
                let u = update(m);
                assert_eq!(
                    u.announced,
                    nlri(&[
                        "10.10.0.0/26",
                        "10.10.0.64/26",
                        "10.10.0.128/26",
                        "10.10.0.192/26"
                    ])
                );
                let a = attrs(m);
                assert_eq!(a.origin, Origin::Igp);
                assert_eq!(a.as_path, vec![AsSegment::Sequence(vec![4_200_000_001])]);
                assert_eq!(a.next_hop, Some(v4("198.18.0.1")));
                assert_eq!(a.med, Some(10));
                assert_eq!(a.local_pref, None);
                assert_eq!(a.communities, vec![(65000 << 16) | 100]);
                assert_eq!(a.large_communities, vec![(4_200_000_001, 1, 2)]);
            },
        },
        Case {
            file: "gobgp/update_v6.hex",
            cx: ebgp4(),
            exact: Err(MP_NOT_FIRST),
            check: |m| {
                assert_eq!(update(m).announced, nlri(&["2001:db8:100::/64"]));
                assert_eq!(attrs(m).next_hop, Some(v6("2001:db8:18::1")));
                assert_eq!(attrs(m).link_local_next_hop, None);
            },
        },
        Case {
            file: "gobgp/update_v6_2.hex",
            cx: ebgp4(),
            exact: Err(MP_NOT_FIRST),
            check: |m| assert_eq!(update(m).announced, nlri(&["2001:db8:101::/64"])),
        },
        Case {
            file: "gobgp/eor_v4.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| eor(m, Afi::Ipv4),
        },
        Case {
            file: "gobgp/eor_v6.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| eor(m, Afi::Ipv6),
        },
        Case {
            file: "gobgp/withdraw_v4.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| only_withdrawn(m, nlri(&["10.10.0.192/26"])),
        },
        Case {
            file: "gobgp/withdraw_v6.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| only_withdrawn(m, nlri(&["2001:db8:101::/64"])),
        },
        Case {
            file: "gobgp/notification.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| shutdown(m, "tortie vectors: gobgp admin shutdown"),
        },
        // ---- gobgpd, same routes to a peer without the 4-octet AS capability ----
        Case {
            file: "gobgp/as2_update_v4.hex",
            cx: dcx(false, &[], false),
            exact: Err(
                "gobgp puts AS4_PATH after LARGE_COMMUNITY; we write attributes in type-code order",
            ),
            check: |m| {
                // AS_PATH [AS_TRANS] + AS4_PATH [4200000001] → merged (RFC 6793 §4.2.3).
                assert_eq!(
                    attrs(m).as_path,
                    vec![AsSegment::Sequence(vec![4_200_000_001])]
                );
                assert!(attrs(m).unknown.is_empty());
                assert_eq!(update(m).announced.len(), 4);
            },
        },
        Case {
            file: "gobgp/as2_update_v6.hex",
            cx: dcx(false, &[], false),
            exact: Err(MP_NOT_FIRST),
            check: |m| {
                assert_eq!(
                    attrs(m).as_path,
                    vec![AsSegment::Sequence(vec![4_200_000_001])]
                );
                assert_eq!(update(m).announced, nlri(&["2001:db8:100::/64"]));
            },
        },
        Case {
            file: "gobgp/as2_update_v6_2.hex",
            cx: dcx(false, &[], false),
            exact: Err(MP_NOT_FIRST),
            check: |m| assert_eq!(update(m).announced, nlri(&["2001:db8:101::/64"])),
        },
        // ---- gobgpd with ADD-PATH send for IPv4 ----
        Case {
            file: "gobgp/addpath_update_v4.hex",
            cx: dcx(true, &[Afi::Ipv4], false),
            exact: Ok(()),
            check: |m| {
                assert_eq!(update(m).announced, with_id(2, &["10.10.0.0/26"]));
                assert_eq!(attrs(m).origin, Origin::Egp);
                assert_eq!(attrs(m).next_hop, Some(v4("198.18.0.3")));
            },
        },
        Case {
            file: "gobgp/addpath_update_v4_2.hex",
            cx: dcx(true, &[Afi::Ipv4], false),
            exact: Ok(()),
            check: |m| {
                let ids: BTreeSet<_> = update(m).announced.iter().map(|n| n.path_id).collect();
                assert_eq!(ids, [Some(1)].into());
                assert_eq!(update(m).announced.len(), 4);
            },
        },
        Case {
            file: "gobgp/addpath_withdraw_v4.hex",
            cx: dcx(true, &[Afi::Ipv4], false),
            exact: Ok(()),
            check: |m| only_withdrawn(m, with_id(1, &["10.10.0.192/26"])),
        },
        // ---- BIRD 2.0.12, iBGP, AS 65020 ----
        Case {
            file: "bird/open.hex",
            cx: DecodeCxt::before_open(),
            exact: Ok(()),
            check: |m| {
                let o = open(m);
                assert_eq!((o.my_as, o.hold_time, o.asn()), (65020, 240, 65020));
                let c = &o.capabilities;
                assert_eq!(c.multiprotocol, [Afi::Ipv4, Afi::Ipv6].into());
                assert!(c.route_refresh);
                assert_eq!(c.graceful_restart.as_ref().unwrap().restart_time, 120);
                // Enhanced route refresh (70) and long-lived graceful restart (71), kept raw.
                assert_eq!(c.unknown, vec![(70, vec![]), (71, vec![])]);
            },
        },
        Case {
            file: "bird/keepalive.hex",
            cx: dcx(true, &[], true),
            exact: Ok(()),
            check: |m| assert_eq!(m, &Message::Keepalive),
        },
        Case {
            file: "bird/update_v4.hex",
            cx: dcx(true, &[], true),
            exact: Ok(()),
            check: |m| {
                let mut got = update(m).announced.clone();
                got.sort();
                assert_eq!(
                    got,
                    nlri(&[
                        "10.20.0.0/26",
                        "10.20.0.64/26",
                        "10.20.0.128/26",
                        "10.20.0.192/26"
                    ])
                );
                let a = attrs(m);
                assert_eq!(a.as_path, vec![]); // iBGP, originated
                assert_eq!(a.local_pref, Some(200));
                assert_eq!(a.next_hop, Some(v4("198.18.0.1")));
                assert_eq!(a.communities, vec![(65000 << 16) | 200]);
                assert_eq!(a.large_communities, vec![(65020, 1, 2)]);
            },
        },
        Case {
            file: "bird/update_v6.hex",
            cx: dcx(true, &[], true),
            exact: Err(EXT_LEN),
            check: |m| {
                assert_eq!(
                    update(m).announced,
                    nlri(&["2001:db8:201::/64", "2001:db8:200::/64"])
                );
                assert_eq!(attrs(m).next_hop, Some(v6("2001:db8:18::1")));
                assert_eq!(attrs(m).local_pref, Some(200));
            },
        },
        Case {
            file: "bird/eor_v4.hex",
            cx: dcx(true, &[], true),
            exact: Ok(()),
            check: |m| eor(m, Afi::Ipv4),
        },
        Case {
            file: "bird/eor_v6.hex",
            cx: dcx(true, &[], true),
            exact: Ok(()),
            check: |m| eor(m, Afi::Ipv6),
        },
        Case {
            file: "bird/withdraw_v4.hex",
            cx: dcx(true, &[], true),
            exact: Ok(()),
            check: |m| only_withdrawn(m, nlri(&["10.20.0.192/26"])),
        },
        Case {
            file: "bird/withdraw_v6.hex",
            cx: dcx(true, &[], true),
            exact: Err(EXT_LEN),
            check: |m| only_withdrawn(m, nlri(&["2001:db8:201::/64"])),
        },
        Case {
            file: "bird/route_refresh_v4.hex",
            cx: dcx(true, &[], true),
            exact: Ok(()),
            check: |m| {
                assert_eq!(
                    m,
                    &Message::RouteRefresh {
                        afi: Afi::Ipv4,
                        subtype: 0
                    }
                )
            },
        },
        Case {
            file: "bird/route_refresh_v6.hex",
            cx: dcx(true, &[], true),
            exact: Ok(()),
            check: |m| {
                assert_eq!(
                    m,
                    &Message::RouteRefresh {
                        afi: Afi::Ipv6,
                        subtype: 0
                    }
                )
            },
        },
        Case {
            file: "bird/notification.hex",
            cx: dcx(true, &[], true),
            exact: Ok(()),
            check: |m| shutdown(m, "tortie vectors: bird admin shutdown"),
        },
        // ---- FRR 8.4, eBGP, AS 65030 ----
        Case {
            file: "frr/open.hex",
            cx: DecodeCxt::before_open(),
            exact: Err(
                "FRR sends one capability per optional parameter and the GR notification (N) bit of RFC 8538",
            ),
            check: |m| {
                let o = open(m);
                assert_eq!((o.my_as, o.hold_time, o.asn()), (65030, 180, 65030));
                let c = &o.capabilities;
                assert_eq!(c.multiprotocol, [Afi::Ipv4, Afi::Ipv6].into());
                assert!(c.route_refresh);
                assert_eq!(
                    c.add_path,
                    [
                        (Afi::Ipv4, AddPathMode::Receive),
                        (Afi::Ipv6, AddPathMode::Receive)
                    ]
                    .into()
                );
                let gr = c.graceful_restart.as_ref().unwrap();
                assert_eq!((gr.restarting, gr.restart_time), (true, 120));
                assert_eq!(gr.families, [(Afi::Ipv4, false), (Afi::Ipv6, false)].into());
                let codes: Vec<u8> = c.unknown.iter().map(|(code, _)| *code).collect();
                // Cisco route refresh, enhanced route refresh, extended message, FQDN, LLGR.
                assert_eq!(codes, vec![128, 70, 6, 73, 71]);
            },
        },
        Case {
            file: "frr/enh_open.hex",
            cx: DecodeCxt::before_open(),
            exact: Err(
                "FRR sends one capability per optional parameter and the GR notification (N) bit of RFC 8538",
            ),
            check: |m| {
                let c = &open(m).capabilities;
                assert_eq!(c.multiprotocol, [Afi::Ipv4].into());
                assert_eq!(c.extended_next_hop, vec![(Afi::Ipv4, Afi::Ipv6)]);
                assert!(c.graceful_restart.as_ref().unwrap().families.is_empty());
            },
        },
        Case {
            file: "frr/keepalive.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| assert_eq!(m, &Message::Keepalive),
        },
        Case {
            file: "frr/update_v4.hex",
            cx: ebgp4(),
            exact: Err("FRR sets the extended-length flag on AS_PATH"),
            check: |m| {
                assert_eq!(update(m).announced.len(), 4);
                let a = attrs(m);
                assert_eq!(a.as_path, vec![AsSegment::Sequence(vec![65030])]);
                assert_eq!(a.med, Some(30));
                assert_eq!(a.communities, vec![(65000 << 16) | 300]);
                assert_eq!(a.large_communities, vec![(65030, 1, 2)]);
            },
        },
        Case {
            file: "frr/update_v6.hex",
            cx: ebgp4(),
            exact: Err(EXT_LEN),
            check: |m| {
                assert_eq!(
                    update(m).announced,
                    nlri(&["2001:db8:300::/64", "2001:db8:301::/64"])
                );
                let a = attrs(m);
                // 32-octet next hop: global + link-local (RFC 2545 §3).
                assert_eq!(a.next_hop, Some(v6("2001:db8:18::1")));
                assert!(
                    a.link_local_next_hop
                        .is_some_and(|ll: Ipv6Addr| ll.is_unicast_link_local())
                );
            },
        },
        Case {
            file: "frr/enh_update_v4_mp.hex",
            cx: ebgp4(),
            exact: Err(EXT_LEN),
            check: |m| {
                // RFC 8950: IPv4 NLRI in MP_REACH_NLRI with an IPv6 next hop.
                assert_eq!(
                    update(m).announced,
                    nlri(&["10.31.0.0/26", "10.31.0.64/26"])
                );
                assert_eq!(attrs(m).next_hop, Some(v6("2001:db8:18::1")));
                assert!(attrs(m).link_local_next_hop.is_some());
            },
        },
        Case {
            file: "frr/eor_v4.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| eor(m, Afi::Ipv4),
        },
        Case {
            file: "frr/eor_v6.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| eor(m, Afi::Ipv6),
        },
        Case {
            file: "frr/withdraw_v4.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| only_withdrawn(m, nlri(&["10.30.0.192/26"])),
        },
        Case {
            file: "frr/withdraw_v6.hex",
            cx: ebgp4(),
            exact: Err(EXT_LEN),
            check: |m| only_withdrawn(m, nlri(&["2001:db8:301::/64"])),
        },
        Case {
            file: "frr/route_refresh_v6.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| {
                assert_eq!(
                    m,
                    &Message::RouteRefresh {
                        afi: Afi::Ipv6,
                        subtype: 0
                    }
                )
            },
        },
        Case {
            file: "frr/notification.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| shutdown(m, "tortie vectors: frr admin shutdown"),
        },
        Case {
            file: "frr/enh_notification.hex",
            cx: ebgp4(),
            exact: Ok(()),
            check: |m| assert_eq!(m, &Message::Notification(Notification::new(6, 2))),
        },
    ]
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ===== tests =====

#[test]
fn every_vector_file_has_a_case() {
    let mut files = BTreeSet::new();
    for dir in std::fs::read_dir(vectors_dir()).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "hex") {
                    files.insert(format!(
                        "{}/{}",
                        dir.file_name().unwrap().to_str().unwrap(),
                        f.file_name().unwrap().to_str().unwrap()
                    ));
                }
            }
        }
    }
    let covered: BTreeSet<String> = cases().iter().map(|c| c.file.to_string()).collect();
    assert_eq!(files, covered, "vector files and test cases differ");
}

#[test]
fn vectors_decode_check_and_reencode() {
    let mut exact = 0;
    for case in cases() {
        let bytes = vector(case.file);
        let ctx = |what: &str| format!("{}: {what}", case.file);

        // Framing: one whole message.
        let mut fd = FrameDecoder::new();
        fd.extend(&bytes);
        assert_eq!(
            fd.next_frame()
                .unwrap_or_else(|n| panic!("{}: {n}", case.file))
                .as_deref(),
            Some(&bytes[..]),
            "{}",
            ctx("frame")
        );
        assert_eq!(fd.next_frame(), Ok(None));

        let msg = wire::decode(&bytes, &case.cx).unwrap_or_else(|n| panic!("{}: {n}", case.file));
        (case.check)(&msg);

        // netgauze finds the same routes.
        if let Message::Update(u) = &msg {
            assert_eq!(u.treat_as_withdraw, None, "{}", ctx("treat-as-withdraw"));
            let theirs = netgauze_routes(&bytes, case.cx.four_octet_as, &case.cx.add_path)
                .unwrap_or_else(|e| panic!("{}: netgauze: {e}", case.file));
            assert_eq!(routes_of(u), theirs, "{}", ctx("netgauze disagrees"));
        }

        // Encoding: the same message again, and the same bytes where our choices match.
        let ecx = encode_cx_for(&case.cx);
        let again =
            wire::encode(&msg, &ecx).unwrap_or_else(|e| panic!("{}: encode: {e}", case.file));
        assert_eq!(
            wire::decode(&again, &case.cx).as_ref(),
            Ok(&msg),
            "{}",
            ctx("decode(encode(m))")
        );
        match case.exact {
            Ok(()) => {
                assert_eq!(
                    hex_of(&again),
                    hex_of(&bytes),
                    "{}",
                    ctx("re-encoded bytes")
                );
                exact += 1;
            }
            Err(why) => assert_ne!(
                again, bytes,
                "{}: now byte-exact, drop the note {why:?}",
                case.file
            ),
        }
    }
    assert!(exact >= 25, "only {exact} byte-exact vectors");
}

#[test]
fn a_session_stream_splits_into_the_same_frames_whatever_the_chunking() {
    let files = [
        "bird/open.hex",
        "bird/keepalive.hex",
        "bird/update_v4.hex",
        "bird/update_v6.hex",
        "bird/eor_v4.hex",
        "bird/notification.hex",
    ];
    let frames: Vec<Vec<u8>> = files.iter().map(|f| vector(f)).collect();
    let stream: Vec<u8> = frames.concat();
    for chunk in [1, 2, 7, 19, 20, 64, 4096] {
        let mut fd = FrameDecoder::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            fd.extend(piece);
            while let Some(f) = fd.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames, "chunk {chunk}");
        assert_eq!(fd.pending(), 0);
    }
}

#[test]
fn our_encoding_of_the_captured_routes_is_read_the_same_by_netgauze() {
    // Every captured UPDATE, re-encoded by us, must be read by netgauze as the same routes.
    for case in cases() {
        let msg = wire::decode(&vector(case.file), &case.cx).unwrap();
        if let Message::Update(u) = &msg {
            let ours = wire::encode(&msg, &encode_cx_for(&case.cx)).unwrap();
            let theirs = netgauze_routes(&ours, case.cx.four_octet_as, &case.cx.add_path).unwrap();
            assert_eq!(routes_of(u), theirs, "{}", case.file);
        }
    }
}
