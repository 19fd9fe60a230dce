//! Properties of the wire layer:
//! * no input panics `FrameDecoder` or `decode`, in any context: random bytes, and random
//!   mutations of the captured vectors (with the header length kept consistent half the time);
//! * whatever decodes and can be encoded again decodes to the same message;
//! * random valid UPDATEs (both families, ADD-PATH, 2- and 4-octet sessions, every attribute)
//!   survive `encode_updates` → `decode` with the same routes and attributes, in the fewest
//!   messages, and netgauze-bgp-pkt reads the same routes in every message.

#[path = "wire_support.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use support::{netgauze_routes, routes_of, vector, vectors_dir};
use tortie_bgpd::wire::{self, DecodeCxt, EncodeCxt, FrameDecoder};
use tortie_bgpd::{Afi, AsSegment, Message, Nlri, Origin, PathAttrs, RawAttribute, Update};

/// Every decode context worth distinguishing: AS width × ADD-PATH families × iBGP/eBGP.
fn all_contexts() -> Vec<DecodeCxt> {
    let mut out = Vec::new();
    for four_octet_as in [false, true] {
        for add_path in [
            vec![],
            vec![Afi::Ipv4],
            vec![Afi::Ipv6],
            vec![Afi::Ipv4, Afi::Ipv6],
        ] {
            for is_ibgp in [false, true] {
                out.push(DecodeCxt {
                    four_octet_as,
                    add_path: add_path.iter().copied().collect(),
                    local_as: 65000,
                    is_ibgp,
                });
            }
        }
    }
    out
}

fn all_vectors() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(vectors_dir()).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "hex") {
                    let rel = f
                        .strip_prefix(vectors_dir())
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string();
                    out.push(vector(&rel));
                }
            }
        }
    }
    out.sort();
    out
}

/// Feeds bytes through the frame splitter and decodes every frame in every context; checks that
/// re-encodable messages decode back to themselves. Panics are the failure being looked for.
fn exercise(bytes: &[u8], contexts: &[DecodeCxt]) {
    let mut fd = FrameDecoder::new();
    fd.extend(bytes);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = fd.next_frame() {
        frames.push(f);
    }
    frames.push(bytes.to_vec()); // decode also sees unframed input
    for frame in &frames {
        for cx in contexts {
            let Ok(msg) = wire::decode(frame, cx) else {
                continue;
            };
            let ecx = EncodeCxt {
                four_octet_as: cx.four_octet_as,
                add_path: cx.add_path.clone(),
                ipv4_over_ipv6_next_hop: true,
                mp_ipv4: false,
            };
            if let Ok(again) = wire::encode(&msg, &ecx) {
                assert!(again.len() <= wire::MAX_MESSAGE_LEN);
                let back = wire::decode(&again, cx)
                    .unwrap_or_else(|n| panic!("our own encoding rejected: {n}\n{msg:?}"));
                // A treat-as-withdraw outcome re-encodes as the plain withdrawal it stands for;
                // the order of routes is kept within a family, not across families.
                let normal = |mut m: Message| {
                    if let Message::Update(u) = &mut m {
                        u.treat_as_withdraw = None;
                        u.withdrawn.sort_by_key(|n| Afi::of(&n.prefix));
                        u.announced.sort_by_key(|n| Afi::of(&n.prefix));
                    }
                    m
                };
                assert_eq!(normal(back), normal(msg), "decode(encode(m)) != m");
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut b: Vec<u8>, muts: &[Mutation], fix_length: bool) -> Vec<u8> {
    for m in muts {
        let n = b.len().max(1);
        match m {
            Mutation::Set(i, v) => {
                if let Some(x) = b.get_mut(i % n) {
                    *x = *v;
                }
            }
            Mutation::Flip(i, bit) => {
                if let Some(x) = b.get_mut(i % n) {
                    *x ^= 1 << bit;
                }
            }
            Mutation::Insert(i, v) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            Mutation::Remove(i, k) => {
                let at = i % n;
                let end = (at + k).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
            Mutation::Truncate(i) => b.truncate(i % n),
        }
    }
    if fix_length && b.len() >= 19 {
        let len = u16::try_from(b.len()).unwrap_or(u16::MAX).to_be_bytes();
        b[16] = len[0];
        b[17] = len[1];
        b[..16].fill(0xff);
    }
    b
}

// ===== random valid UPDATEs =====

fn v4_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u32>(), prop_oneof![8 => Just(26u8), 1 => 0u8..=32])
        .prop_map(|(a, len)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc()))
        .prop_filter("unicast", |p| !p.network().is_multicast())
}

fn v6_prefix() -> impl Strategy<Value = IpNet> {
    (
        any::<u128>(),
        prop_oneof![4 => Just(122u8), 2 => Just(64u8), 1 => 0u8..=128],
    )
        .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc()))
        .prop_filter("unicast", |p| !p.network().is_multicast())
}

fn host_v4() -> impl Strategy<Value = Ipv4Addr> {
    (1u32..0xdfff_ffff).prop_map(Ipv4Addr::from)
}

fn global_v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(|a| Ipv6Addr::from((a & !(0b111u128 << 125)) | (1u128 << 125))) // 2000::/3
}

fn link_local() -> impl Strategy<Value = Ipv6Addr> {
    (1u64..).prop_map(|iid| Ipv6Addr::from((0xfe80u128 << 112) | u128::from(iid)))
}

fn asn() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..65535, 65536u32..=u32::MAX, Just(23456)]
}

fn as_path() -> impl Strategy<Value = Vec<AsSegment>> {
    // One segment up to the 255-AS limit, then a few short ones: at most ~1.7 kB of AS_PATH +
    // AS4_PATH, so that a message always has room for routes.
    let long = prop_oneof![4 => prop::collection::vec(asn(), 1..=20), 1 => prop::collection::vec(asn(), 200..=255)];
    let short = prop_oneof![
        3 => prop::collection::vec(asn(), 1..6).prop_map(AsSegment::Sequence),
        1 => prop::collection::vec(asn(), 1..6).prop_map(AsSegment::Set),
    ];
    (prop::option::of(long), prop::collection::vec(short, 0..3)).prop_map(|(first, rest)| {
        let mut path: Vec<AsSegment> = first.map(AsSegment::Sequence).into_iter().collect();
        path.extend(rest);
        path
    })
}

/// Attributes a peer may send us on this kind of session (eBGP peers' LOCAL_PREF,
/// ORIGINATOR_ID and CLUSTER_LIST are discarded on receipt, so they are not generated then).
fn path_attrs(ibgp: bool) -> impl Strategy<Value = PathAttrs> {
    let base = (
        prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ],
        as_path(),
        prop::option::of(any::<u32>()),
        any::<bool>(),
        prop::option::of((asn(), any::<u32>().prop_map(Ipv4Addr::from))),
        prop::collection::vec(any::<u32>(), 0..20),
        prop::collection::vec(any::<(u32, u32, u32)>(), 0..10),
    );
    let ibgp_only = (
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>().prop_map(Ipv4Addr::from)),
        prop::collection::vec(any::<u32>().prop_map(Ipv4Addr::from), 0..4),
    );
    let unknown = prop::collection::vec(
        (
            prop_oneof![Just(33u8), Just(99), Just(200), Just(255)],
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(code, value)| RawAttribute {
                flags: 0xe0,
                code,
                value,
            }),
        0..2,
    );
    (base, ibgp_only, unknown).prop_map(
        move |(
            (origin, as_path, med, atomic, aggregator, communities, large),
            (lp, oid, cl),
            mut unknown,
        )| {
            unknown.sort_by_key(|u| u.code);
            unknown.dedup_by_key(|u| u.code);
            PathAttrs {
                origin,
                as_path,
                next_hop: None,
                link_local_next_hop: None,
                med,
                local_pref: if ibgp { lp } else { None },
                atomic_aggregate: atomic,
                aggregator,
                communities,
                large_communities: large,
                originator_id: if ibgp { oid } else { None },
                cluster_list: if ibgp { cl } else { vec![] },
                unknown,
            }
        },
    )
}

#[derive(Debug, Clone)]
struct Case {
    cx: DecodeCxt,
    update: Update,
    /// IPv4 routes go with an IPv6 next hop (RFC 8950).
    v4_over_v6: bool,
}

fn nlri(prefix: impl Strategy<Value = IpNet>, add_path: bool) -> impl Strategy<Value = Nlri> {
    (prefix, any::<u32>()).prop_map(move |(prefix, id)| Nlri {
        path_id: add_path.then_some(id),
        prefix,
    })
}

fn case() -> impl Strategy<Value = Case> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), prop_oneof![Just(Afi::Ipv4), Just(Afi::Ipv6)], any::<bool>())
        .prop_flat_map(|(four, ibgp, ap4, ap6, afi, v4_over_v6)| {
            let cx = DecodeCxt {
                four_octet_as: four,
                add_path: [(ap4, Afi::Ipv4), (ap6, Afi::Ipv6)].into_iter().filter(|(on, _)| *on).map(|(_, a)| a).collect(),
                local_as: 65000,
                is_ibgp: ibgp,
            };
            let routes = |one: BoxedStrategy<Nlri>| {
                prop_oneof![3 => prop::collection::vec(one.clone(), 1..50), 1 => prop::collection::vec(one, 500..3000)]
            };
            let announced = match afi {
                Afi::Ipv4 => routes(nlri(v4_prefix(), ap4).boxed()),
                Afi::Ipv6 => routes(nlri(v6_prefix(), ap6).boxed()),
            };
            let withdrawn = (prop::collection::vec(nlri(v4_prefix(), ap4), 0..30), prop::collection::vec(nlri(v6_prefix(), ap6), 0..30))
                .prop_map(|(mut a, b)| {
                    a.extend(b);
                    a
                });
            let v6_next_hop = afi == Afi::Ipv6 || v4_over_v6;
            (Just(cx), path_attrs(ibgp), announced, withdrawn, host_v4(), global_v6(), prop::option::of(link_local()), Just(v6_next_hop))
        })
        .prop_map(|(cx, mut attrs, announced, withdrawn, nh4, nh6, ll, v6_next_hop)| {
            if v6_next_hop {
                attrs.next_hop = Some(IpAddr::V6(nh6));
                attrs.link_local_next_hop = ll;
            } else {
                attrs.next_hop = Some(IpAddr::V4(nh4));
            }
            let v4_over_v6 = v6_next_hop && announced.first().is_some_and(|n: &Nlri| n.prefix.addr().is_ipv4());
            Case { cx, update: Update { withdrawn, attrs: Some(attrs), announced, ..Default::default() }, v4_over_v6 }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), header in any::<bool>()) {
        let contexts = all_contexts();
        let mut b = bytes;
        if header && b.len() >= 19 {
            // Give the fuzz a valid header so the bodies get exercised.
            let len = (b.len() as u16).to_be_bytes();
            b[..16].fill(0xff);
            b[16] = len[0];
            b[17] = len[1];
            b[18] = 1 + b[18] % 5;
        }
        exercise(&b, &contexts);
    }

    #[test]
    fn mutated_vectors_never_panic(pick in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..6), fix in any::<bool>()) {
        let vectors = all_vectors();
        let v = vectors[pick.index(vectors.len())].clone();
        exercise(&mutate(v, &muts, fix), &all_contexts());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn encode_updates_then_decode_gives_the_routes_back(c in case()) {
        let ecx = EncodeCxt {
            four_octet_as: c.cx.four_octet_as,
            add_path: c.cx.add_path.clone(),
            ipv4_over_ipv6_next_hop: c.v4_over_v6,
            mp_ipv4: false,
        };
        let frames = wire::encode_updates(&c.update, &ecx).unwrap();
        let mut announced = Vec::new();
        let mut withdrawn = BTreeSet::new();
        let mut previous: Option<(usize, bool)> = None;
        for f in &frames {
            prop_assert!(f.len() <= wire::MAX_MESSAGE_LEN);
            let Ok(Message::Update(u)) = wire::decode(f, &c.cx) else { panic!("undecodable frame") };
            prop_assert_eq!(&u.treat_as_withdraw, &None);
            prop_assert!(u.end_of_rib.is_none());
            // netgauze reads the same routes.
            let theirs = netgauze_routes(f, c.cx.four_octet_as, &c.cx.add_path).unwrap();
            prop_assert_eq!(routes_of(&u), theirs);
            if u.announced.is_empty() {
                prop_assert!(u.attrs.is_none());
            } else {
                prop_assert_eq!(u.attrs.as_ref(), c.update.attrs.as_ref());
                // Greedy packing: the previous announcement had no room for this one's first route.
                if let Some((len, true)) = previous {
                    let add_path = c.cx.add_path.contains(&Afi::of(&u.announced[0].prefix));
                    let first = 1 + usize::from(u.announced[0].prefix.prefix_len()).div_ceil(8) + if add_path { 4 } else { 0 };
                    prop_assert!(len + first > wire::MAX_MESSAGE_LEN, "message of {} octets had room for {}", len, first);
                }
            }
            previous = Some((f.len(), !u.announced.is_empty()));
            announced.extend(u.announced);
            withdrawn.extend(u.withdrawn);
        }
        prop_assert_eq!(announced, c.update.announced.clone());
        prop_assert_eq!(withdrawn, c.update.withdrawn.iter().copied().collect::<BTreeSet<_>>());
    }
}
