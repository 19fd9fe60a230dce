//! Helpers for the wire tests, included by them with `#[path = "wire_support.rs"] mod support;`
//! (cargo also builds this file as an empty test crate).
//!
//! Besides loading vectors, this holds the netgauze-bgp-pkt oracle: an independent decoder that
//! must find the same routes in every UPDATE we accept or produce.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::path_attribute::{MpReach, MpUnreach, PathAttributeValue};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use tortie_bgpd::wire::{DecodeCxt, EncodeCxt};
use tortie_bgpd::{Afi, Nlri, Update};

/// Bytes from hex text; whitespace and `#` comments (to the end of the line) are ignored.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The directory of captured vectors.
pub fn vectors_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors"))
}

/// A captured vector, by path relative to `tests/vectors` (e.g. `"bird/open.hex"`).
pub fn vector(rel: &str) -> Vec<u8> {
    let path = vectors_dir().join(rel);
    hex(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The encode context mirroring a decode context (same AS width and ADD-PATH families).
pub fn encode_cx_for(d: &DecodeCxt) -> EncodeCxt {
    EncodeCxt {
        four_octet_as: d.four_octet_as,
        add_path: d.add_path.clone(),
        ipv4_over_ipv6_next_hop: true,
        mp_ipv4: false,
    }
}

/// A decode context.
pub fn dcx(four_octet_as: bool, add_path: &[Afi], is_ibgp: bool) -> DecodeCxt {
    DecodeCxt {
        four_octet_as,
        add_path: add_path.iter().copied().collect(),
        local_as: 65010,
        is_ibgp,
    }
}

/// The routes of an UPDATE, order-independent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routes {
    pub announced: BTreeSet<Nlri>,
    pub withdrawn: BTreeSet<Nlri>,
    pub next_hop: Option<IpAddr>,
}

/// Our view of an UPDATE as [`Routes`].
pub fn routes_of(u: &Update) -> Routes {
    Routes {
        announced: u.announced.iter().copied().collect(),
        withdrawn: u.withdrawn.iter().copied().collect(),
        next_hop: u.attrs.as_ref().and_then(|a| {
            if u.announced.is_empty() {
                None
            } else {
                a.next_hop
            }
        }),
    }
}

/// netgauze's view of an UPDATE frame as [`Routes`], with the same AS width and ADD-PATH
/// families; `Err` when netgauze rejects the message or it is not an UPDATE.
pub fn netgauze_routes(
    frame: &[u8],
    four_octet_as: bool,
    add_path: &BTreeSet<Afi>,
) -> Result<Routes, String> {
    let mut paths = HashMap::new();
    paths.insert(AddressType::Ipv4Unicast, add_path.contains(&Afi::Ipv4));
    paths.insert(AddressType::Ipv6Unicast, add_path.contains(&Afi::Ipv6));
    let mut cx =
        BgpParsingContext::new(four_octet_as, HashMap::new(), paths, true, true, true, true);
    let msg =
        BgpMessage::parse(&mut SliceReader::new(frame), &mut cx).map_err(|e| e.to_string())?;
    let BgpMessage::Update(u) = msg else {
        return Err("not an UPDATE".into());
    };
    let v4 = |a: &netgauze_bgp_pkt::nlri::Ipv4UnicastAddress| Nlri {
        path_id: a.path_id(),
        prefix: IpNet::V4(a.network().address()),
    };
    let v6 = |a: &netgauze_bgp_pkt::nlri::Ipv6UnicastAddress| Nlri {
        path_id: a.path_id(),
        prefix: IpNet::V6(a.network().address()),
    };
    let mut r = Routes {
        announced: u.nlri().iter().map(v4).collect(),
        withdrawn: u.withdraw_routes().iter().map(v4).collect(),
        next_hop: None,
    };
    for attr in u.path_attributes() {
        match attr.value() {
            PathAttributeValue::NextHop(nh) if !u.nlri().is_empty() => {
                r.next_hop = Some(IpAddr::V4(nh.next_hop()))
            }
            PathAttributeValue::MpReach(MpReach::Ipv4Unicast { next_hop, nlri, .. }) => {
                if !nlri.is_empty() {
                    r.next_hop = Some(*next_hop);
                }
                r.announced.extend(nlri.iter().map(v4));
            }
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                next_hop_global,
                nlri,
                ..
            }) => {
                if !nlri.is_empty() {
                    r.next_hop = Some(IpAddr::V6(*next_hop_global));
                }
                r.announced.extend(nlri.iter().map(v6));
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => {
                r.withdrawn.extend(nlri.iter().map(v4))
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                r.withdrawn.extend(nlri.iter().map(v6))
            }
            _ => {}
        }
    }
    Ok(r)
}
