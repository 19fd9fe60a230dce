//! UPDATE decoding (RFC 4271 §4.3, §6.3) with the revised error handling of RFC 7606; the
//! mapping is tabled in the module docs of [`crate::wire`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::DecodeCxt;
use super::attr::{self, AS_TRANS, AsPathError, code, flag};
use super::nlri::parse_prefixes;
use super::open::family;
use super::reader::Reader;
use crate::types::{
    Afi, AsSegment, Nlri, Notification, Origin, PathAttrs, RawAttribute, Update, codes,
};

/// What an attribute error makes us do (RFC 7606 §2); the strongest one found wins (§3 h).
enum Action {
    /// Drop the attribute, process the rest (logged).
    Discard(String),
    /// Withdraw every route of the UPDATE.
    Withdraw(String),
}

/// Session reset: the NOTIFICATION to send.
type Reset = Notification;

fn update_error(subcode: u8, data: Vec<u8>) -> Notification {
    Notification {
        code: codes::UPDATE,
        subcode,
        data,
    }
}

/// MP_REACH_NLRI contents for a family we carry.
struct MpReach {
    next_hop: IpAddr,
    link_local: Option<Ipv6Addr>,
    nlri: Vec<Nlri>,
    /// A next hop that cannot be used (RFC 4271 §6.3 "semantically incorrect").
    bad_next_hop: Option<String>,
}

/// The attributes of one UPDATE while they are being walked.
#[derive(Default)]
struct Walk {
    seen: [u64; 4],
    /// Attributes walked (duplicates included), and how many were not MP_(UN)REACH_NLRI.
    count: usize,
    non_mp: usize,
    origin: Option<Origin>,
    as_path: Option<Vec<AsSegment>>,
    as4_path: Option<Vec<AsSegment>>,
    next_hop: Option<Ipv4Addr>,
    /// NEXT_HOP problems matter only when classic NLRI is present (RFC 4760 §3 lets a
    /// MP-only UPDATE carry a NEXT_HOP that is ignored).
    next_hop_error: Option<String>,
    aggregator: Option<(u32, Ipv4Addr)>,
    as4_aggregator: Option<(u32, Ipv4Addr)>,
    attrs: PathAttrs,
    mp_reach: Option<MpReach>,
    mp_unreach: Option<(Afi, Vec<Nlri>)>,
    withdraw: Option<String>,
}

impl Walk {
    fn seen(&mut self, code: u8) -> bool {
        let (word, bit) = (usize::from(code / 64), 1u64 << (code % 64));
        let was = self.seen[word] & bit != 0;
        self.seen[word] |= bit;
        was
    }

    fn apply(&mut self, action: Action, code: u8) {
        match action {
            Action::Discard(reason) => tracing::debug!(code, %reason, "RFC 7606 attribute discard"),
            Action::Withdraw(reason) => {
                self.withdraw.get_or_insert(reason);
            }
        }
    }
}

/// Treat-as-withdraw, with the reason and the rule (`cite`) that asks for it.
fn withdraw(what: &str, cite: &str) -> Action {
    Action::Withdraw(format!("{what} ({cite})"))
}

/// Attribute discard, likewise.
fn discard(what: &str, cite: &str) -> Action {
    Action::Discard(format!("{what} ({cite})"))
}

/// True for an address that can be a next hop (RFC 4271 §6.3: "a valid IP host address").
fn usable_v4(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}

fn usable_v6(a: Ipv6Addr) -> bool {
    !(a.is_unspecified() || a.is_multicast())
}

/// RFC 4271 §6.3: a semantically incorrect prefix, here one whose network address is multicast
/// (224.0.0.0/4, ff00::/8) in a unicast family, "SHOULD be ignored" and logged.
fn drop_multicast(announced: &mut Vec<Nlri>) {
    let before = announced.len();
    announced.retain(|n| match n.prefix {
        IpNet::V4(p) => !p.network().is_multicast(),
        IpNet::V6(p) => !p.network().is_multicast(),
    });
    if announced.len() != before {
        tracing::debug!(
            ignored = before - announced.len(),
            "multicast prefixes in unicast NLRI ignored (RFC 4271 §6.3)"
        );
    }
}

/// Decodes an UPDATE body (after the header; the header check guaranteed ≥ 4 octets).
pub(super) fn decode_update(body: &[u8], cx: &DecodeCxt) -> Result<Update, Notification> {
    // RFC 4271 §6.3: Withdrawn Routes Length or Total Attribute Length too large → 3/1.
    let malformed_list = || update_error(codes::UPDATE_MALFORMED_ATTRIBUTE_LIST, Vec::new());
    let mut r = Reader::new(body);
    let withdrawn_len = r.u16().ok_or_else(malformed_list)?;
    let withdrawn_field = r
        .take(usize::from(withdrawn_len))
        .ok_or_else(malformed_list)?;
    let attr_len = r.u16().ok_or_else(malformed_list)?;
    let attr_field = r.take(usize::from(attr_len)).ok_or_else(malformed_list)?;
    let nlri_field = r.rest();

    // RFC 7606 §5.3: a Withdrawn Routes or NLRI field that cannot be parsed → session reset
    // (3/10 Invalid Network Field, RFC 4271 §6.3).
    let v4_add_path = cx.add_path.contains(&Afi::Ipv4);
    let mut update = Update::default();
    let invalid_network = |_| update_error(codes::UPDATE_INVALID_NETWORK, Vec::new());
    parse_prefixes(
        withdrawn_field,
        Afi::Ipv4,
        v4_add_path,
        &mut update.withdrawn,
    )
    .map_err(invalid_network)?;
    parse_prefixes(nlri_field, Afi::Ipv4, v4_add_path, &mut update.announced)
        .map_err(invalid_network)?;
    drop_multicast(&mut update.announced);

    // End-of-RIB for IPv4 unicast: an UPDATE with nothing in it (RFC 4724 §2).
    if withdrawn_field.is_empty() && attr_field.is_empty() && nlri_field.is_empty() {
        update.end_of_rib = Some(Afi::Ipv4);
        return Ok(update);
    }

    let mut w = Walk::default();
    walk_attributes(attr_field, cx, &mut w)?;
    finish(update, w, cx)
}

/// Walks the path attributes (RFC 4271 §4.3), sorting out each one.
fn walk_attributes(field: &[u8], cx: &DecodeCxt, w: &mut Walk) -> Result<(), Reset> {
    let mut r = Reader::new(field);
    while !r.is_empty() {
        let start = r.rest();
        // RFC 7606 §4: fewer octets than an attribute header, or a length running past the
        // Total Attribute Length → treat-as-withdraw; the NLRI field is still located by the
        // Total Attribute Length. Attributes after that point cannot be found.
        let (Some(flags), Some(code)) = (r.u8(), r.u8()) else {
            w.apply(withdraw("truncated attribute header", "RFC 7606 §4"), 0);
            break;
        };
        let len = if flags & flag::EXTENDED != 0 {
            r.u16()
        } else {
            r.u8().map(u16::from)
        };
        let Some(value) = len.and_then(|l| r.take(usize::from(l))) else {
            w.apply(
                withdraw(
                    &format!("attribute {code} overruns the attribute list"),
                    "RFC 7606 §4",
                ),
                code,
            );
            break;
        };
        let whole = start.get(..start.len() - r.remaining()).unwrap_or_default();
        w.count += 1;
        if code != code::MP_REACH && code != code::MP_UNREACH {
            w.non_mp += 1;
        }
        if w.seen(code) {
            // RFC 7606 §3 g: a repeated MP_(UN)REACH_NLRI → session reset 3/1; any other
            // repeated attribute: all but the first occurrence are discarded.
            if code == code::MP_REACH || code == code::MP_UNREACH {
                return Err(update_error(
                    codes::UPDATE_MALFORMED_ATTRIBUTE_LIST,
                    Vec::new(),
                ));
            }
            w.apply(
                discard(&format!("repeated attribute {code}"), "RFC 7606 §3 g"),
                code,
            );
            continue;
        }
        attribute(flags, code, value, whole, cx, w)?;
    }
    Ok(())
}

/// One attribute. `whole` is the attribute as received (flags, type, length, value): the data
/// of the NOTIFICATIONs that carry an attribute (RFC 4271 §6.3).
fn attribute(
    flags: u8,
    code: u8,
    value: &[u8],
    whole: &[u8],
    cx: &DecodeCxt,
    w: &mut Walk,
) -> Result<(), Reset> {
    // RFC 7606 §3 c: the Optional and Transitive bits must match the attribute's definition.
    let flags_ok = attr::expected_flags(code)
        .is_none_or(|want| flags & (flag::OPTIONAL | flag::TRANSITIVE) == want);
    let bad_flags = |name: &str| format!("{name}: wrong attribute flags {flags:#04x}");
    let mut v = Reader::new(value);
    let action = match code {
        code::ORIGIN => {
            // RFC 7606 §7.1.
            let origin = match value {
                [0] => Some(Origin::Igp),
                [1] => Some(Origin::Egp),
                [2] => Some(Origin::Incomplete),
                _ => None,
            };
            match (flags_ok, origin) {
                (false, _) => Some(withdraw(&bad_flags("ORIGIN"), "RFC 7606 §3 c")),
                (true, Some(o)) => {
                    w.origin = Some(o);
                    None
                }
                (true, None) => Some(withdraw(
                    &format!("malformed ORIGIN {value:02x?}"),
                    "RFC 7606 §7.1",
                )),
            }
        }
        code::AS_PATH => {
            // RFC 7606 §7.2, RFC 7607 §2.
            if !flags_ok {
                Some(withdraw(&bad_flags("AS_PATH"), "RFC 7606 §3 c"))
            } else {
                match attr::parse_as_path(value, if cx.four_octet_as { 4 } else { 2 }) {
                    Ok((_, true)) => Some(withdraw(
                        "AS_PATH with confederation segments (no confederation here)",
                        "RFC 7606 §7.2",
                    )),
                    Ok((path, false)) => {
                        w.as_path = Some(path);
                        None
                    }
                    Err(AsPathError::ZeroAs) => {
                        Some(withdraw("AS_PATH contains AS 0", "RFC 7607 §2"))
                    }
                    Err(AsPathError::Malformed) => {
                        Some(withdraw("malformed AS_PATH", "RFC 7606 §7.2"))
                    }
                }
            }
        }
        code::NEXT_HOP => {
            // RFC 7606 §7.3; semantically incorrect (not a host address): RFC 4271 §6.3
            // "the route SHOULD be ignored". Both only matter with classic NLRI.
            let problem = match (flags_ok, v.array::<4>(), v.is_empty()) {
                (false, ..) => Some(bad_flags("NEXT_HOP")),
                (true, Some(a), true) if usable_v4(Ipv4Addr::from(a)) => {
                    w.next_hop = Some(Ipv4Addr::from(a));
                    None
                }
                (true, Some(a), true) => Some(format!(
                    "NEXT_HOP {} is not a host address",
                    Ipv4Addr::from(a)
                )),
                _ => Some(format!("NEXT_HOP length {}", value.len())),
            };
            w.next_hop_error = problem.map(|p| format!("{p} (RFC 7606 §7.3)"));
            None
        }
        code::MED => {
            // RFC 7606 §7.4.
            match (flags_ok, v.u32(), v.is_empty()) {
                (false, ..) => Some(withdraw(&bad_flags("MULTI_EXIT_DISC"), "RFC 7606 §3 c")),
                (true, Some(m), true) => {
                    w.attrs.med = Some(m);
                    None
                }
                _ => Some(withdraw("MULTI_EXIT_DISC length not 4", "RFC 7606 §7.4")),
            }
        }
        code::LOCAL_PREF => {
            // RFC 7606 §7.5: from an external peer always discarded (RFC 4271 §5.1.5).
            match (cx.is_ibgp, flags_ok, v.u32(), v.is_empty()) {
                (false, ..) => Some(discard("LOCAL_PREF from an external peer", "RFC 7606 §7.5")),
                (true, false, ..) => Some(withdraw(&bad_flags("LOCAL_PREF"), "RFC 7606 §3 c")),
                (true, true, Some(lp), true) => {
                    w.attrs.local_pref = Some(lp);
                    None
                }
                _ => Some(withdraw("LOCAL_PREF length not 4", "RFC 7606 §7.5")),
            }
        }
        code::ATOMIC_AGGREGATE => {
            // RFC 7606 §7.6 (and §3 f: attribute discard for it, flags included).
            if !flags_ok {
                Some(discard(&bad_flags("ATOMIC_AGGREGATE"), "RFC 7606 §3 f"))
            } else if !value.is_empty() {
                Some(discard("ATOMIC_AGGREGATE length not 0", "RFC 7606 §7.6"))
            } else {
                w.attrs.atomic_aggregate = true;
                None
            }
        }
        code::AGGREGATOR => {
            // RFC 7606 §7.7: length 8 on 4-octet sessions, 6 otherwise; AS 0: RFC 7607 §2.
            let asn = if cx.four_octet_as {
                v.u32()
            } else {
                v.u16().map(u32::from)
            };
            match (flags_ok, asn, v.array::<4>(), v.is_empty()) {
                (false, ..) => Some(discard(&bad_flags("AGGREGATOR"), "RFC 7606 §3 f")),
                (true, Some(0), Some(_), true) => {
                    Some(discard("AGGREGATOR with AS 0", "RFC 7607 §2"))
                }
                (true, Some(asn), Some(id), true) => {
                    w.aggregator = Some((asn, Ipv4Addr::from(id)));
                    None
                }
                _ => Some(discard(
                    &format!("AGGREGATOR length {}", value.len()),
                    "RFC 7606 §7.7",
                )),
            }
        }
        code::COMMUNITIES => {
            // RFC 7606 §7.8: a non-zero multiple of 4.
            if !flags_ok {
                Some(withdraw(&bad_flags("COMMUNITIES"), "RFC 7606 §3 c"))
            } else if value.is_empty() || !value.len().is_multiple_of(4) {
                Some(withdraw(
                    "COMMUNITIES length not a non-zero multiple of 4",
                    "RFC 7606 §7.8",
                ))
            } else {
                w.attrs.communities = value
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                None
            }
        }
        code::ORIGINATOR_ID => {
            // RFC 7606 §7.9.
            match (cx.is_ibgp, flags_ok, v.array::<4>(), v.is_empty()) {
                (false, ..) => Some(discard(
                    "ORIGINATOR_ID from an external peer",
                    "RFC 7606 §7.9",
                )),
                (true, false, ..) => Some(withdraw(&bad_flags("ORIGINATOR_ID"), "RFC 7606 §3 c")),
                (true, true, Some(id), true) => {
                    w.attrs.originator_id = Some(Ipv4Addr::from(id));
                    None
                }
                _ => Some(withdraw("ORIGINATOR_ID length not 4", "RFC 7606 §7.9")),
            }
        }
        code::CLUSTER_LIST => {
            // RFC 7606 §7.10.
            if !cx.is_ibgp {
                Some(discard(
                    "CLUSTER_LIST from an external peer",
                    "RFC 7606 §7.10",
                ))
            } else if !flags_ok {
                Some(withdraw(&bad_flags("CLUSTER_LIST"), "RFC 7606 §3 c"))
            } else if value.is_empty() || !value.len().is_multiple_of(4) {
                Some(withdraw(
                    "CLUSTER_LIST length not a non-zero multiple of 4",
                    "RFC 7606 §7.10",
                ))
            } else {
                w.attrs.cluster_list = value
                    .chunks_exact(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                    .collect();
                None
            }
        }
        code::MP_REACH => {
            let flag_action =
                (!flags_ok).then(|| withdraw(&bad_flags("MP_REACH_NLRI"), "RFC 7606 §3 c"));
            mp_reach(value, whole, cx, w)?;
            flag_action
        }
        code::MP_UNREACH => {
            let flag_action =
                (!flags_ok).then(|| withdraw(&bad_flags("MP_UNREACH_NLRI"), "RFC 7606 §3 c"));
            mp_unreach(value, whole, cx, w)?;
            flag_action
        }
        code::AS4_PATH => {
            // RFC 6793 §3: not used between two 4-octet speakers; §6 (error handling) and RFC
            // 7607: a malformed AS4_PATH is discarded. Confederation segments, which may not
            // appear in it, are dropped.
            if cx.four_octet_as {
                Some(discard("AS4_PATH on a 4-octet session", "RFC 6793 §3"))
            } else if !flags_ok {
                Some(discard(&bad_flags("AS4_PATH"), "RFC 6793 §6"))
            } else {
                match attr::parse_as_path(value, 4) {
                    Ok((path, _)) => {
                        w.as4_path = Some(path);
                        None
                    }
                    Err(_) => Some(discard("malformed AS4_PATH", "RFC 6793 §6, RFC 7607 §2")),
                }
            }
        }
        code::AS4_AGGREGATOR => {
            let (asn, id) = (v.u32(), v.array::<4>());
            if cx.four_octet_as {
                Some(discard(
                    "AS4_AGGREGATOR on a 4-octet session",
                    "RFC 6793 §3",
                ))
            } else if !flags_ok {
                Some(discard(&bad_flags("AS4_AGGREGATOR"), "RFC 6793 §6"))
            } else {
                match (asn, id, v.is_empty()) {
                    (Some(asn), Some(id), true) if asn != 0 => {
                        w.as4_aggregator = Some((asn, Ipv4Addr::from(id)));
                        None
                    }
                    _ => Some(discard(
                        "malformed AS4_AGGREGATOR",
                        "RFC 6793 §6, RFC 7607 §2",
                    )),
                }
            }
        }
        code::EXT_COMMUNITIES | code::IPV6_EXT_COMMUNITIES | code::LARGE_COMMUNITY => {
            // RFC 7606 §7.14 (8-octet), §7.15 (20-octet), RFC 8092 §6 (12-octet).
            let (name, unit, cite) = match code {
                code::EXT_COMMUNITIES => ("EXTENDED_COMMUNITIES", 8, "RFC 7606 §7.14"),
                code::IPV6_EXT_COMMUNITIES => ("IPV6_EXTENDED_COMMUNITIES", 20, "RFC 7606 §7.15"),
                _ => ("LARGE_COMMUNITY", 12, "RFC 8092 §6"),
            };
            if !flags_ok {
                Some(withdraw(&bad_flags(name), "RFC 7606 §3 c"))
            } else if value.is_empty() || !value.len().is_multiple_of(unit) {
                Some(withdraw(
                    &format!("{name} length not a non-zero multiple of {unit}"),
                    cite,
                ))
            } else {
                if code == code::LARGE_COMMUNITY {
                    w.attrs.large_communities = value
                        .chunks_exact(12)
                        .map(|c| {
                            let word =
                                |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                            (word(0), word(4), word(8))
                        })
                        .collect();
                } else {
                    w.attrs.unknown.push(RawAttribute {
                        flags: flags & 0xe0,
                        code,
                        value: value.to_vec(),
                    });
                }
                None
            }
        }
        _ if flags & flag::OPTIONAL == 0 => {
            // RFC 4271 §6.3: unrecognised well-known attribute → 3/2 (RFC 7606 keeps it).
            return Err(update_error(
                codes::UPDATE_UNRECOGNIZED_WELL_KNOWN,
                whole.to_vec(),
            ));
        }
        _ => {
            // RFC 4271 §5: unrecognised optional transitive attributes are kept, with the
            // Partial bit set; optional non-transitive ones are quietly ignored.
            if flags & flag::TRANSITIVE != 0 {
                w.attrs.unknown.push(RawAttribute {
                    flags: (flags & 0xe0) | flag::PARTIAL,
                    code,
                    value: value.to_vec(),
                });
            }
            None
        }
    };
    if let Some(action) = action {
        w.apply(action, code);
    }
    Ok(())
}

/// MP_REACH_NLRI (RFC 4760 §3; RFC 7606 §7.11, §5.3): a next-hop length that does not fit the
/// family, a truncated attribute or unparsable NLRI → session reset 3/9 Optional Attribute
/// Error with the attribute as data (RFC 4760 §7; "AFI/SAFI disable" is not offered). A
/// family we do not carry is ignored.
fn mp_reach(value: &[u8], whole: &[u8], cx: &DecodeCxt, w: &mut Walk) -> Result<(), Reset> {
    let reset = || update_error(codes::UPDATE_OPTIONAL_ATTRIBUTE, whole.to_vec());
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(reset());
    };
    let nh = r.take(usize::from(nh_len)).ok_or_else(reset)?;
    r.u8().ok_or_else(reset)?; // Reserved (RFC 4760 §3: ignored on receipt)
    let Some(fam) = family(afi, safi) else {
        tracing::debug!(
            afi,
            safi,
            "MP_REACH_NLRI for a family we do not carry: ignored"
        );
        return Ok(());
    };
    // IPv6: global (16) or global + link-local (32), RFC 2545 §3. IPv4: 4, or an IPv6 next hop
    // (16/32) per RFC 8950 §3.
    let (next_hop, link_local) = match (fam, nh.len()) {
        (Afi::Ipv4, 4) => {
            let a: [u8; 4] = nh.try_into().map_err(|_| reset())?;
            (IpAddr::V4(Ipv4Addr::from(a)), None)
        }
        (_, 16 | 32) => {
            let (g, ll) = nh.split_at(16);
            let g: [u8; 16] = g.try_into().map_err(|_| reset())?;
            // An all-zero link-local part is the same as none.
            let ll = <[u8; 16]>::try_from(ll)
                .ok()
                .map(Ipv6Addr::from)
                .filter(|a| !a.is_unspecified());
            (IpAddr::V6(Ipv6Addr::from(g)), ll)
        }
        _ => return Err(reset()),
    };
    let bad_next_hop = match next_hop {
        IpAddr::V4(a) if !usable_v4(a) => {
            Some(format!("MP_REACH_NLRI next hop {a} is not a host address"))
        }
        IpAddr::V6(a) if !usable_v6(a) => {
            Some(format!("MP_REACH_NLRI next hop {a} is not a host address"))
        }
        _ => None,
    };
    let mut nlri = Vec::new();
    parse_prefixes(r.rest(), fam, cx.add_path.contains(&fam), &mut nlri).map_err(|_| reset())?;
    drop_multicast(&mut nlri);
    w.mp_reach = Some(MpReach {
        next_hop,
        link_local,
        nlri,
        bad_next_hop,
    });
    Ok(())
}

/// MP_UNREACH_NLRI (RFC 4760 §4), errors as for [`mp_reach`].
fn mp_unreach(value: &[u8], whole: &[u8], cx: &DecodeCxt, w: &mut Walk) -> Result<(), Reset> {
    let reset = || update_error(codes::UPDATE_OPTIONAL_ATTRIBUTE, whole.to_vec());
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err(reset());
    };
    let Some(fam) = family(afi, safi) else {
        tracing::debug!(
            afi,
            safi,
            "MP_UNREACH_NLRI for a family we do not carry: ignored"
        );
        return Ok(());
    };
    let mut nlri = Vec::new();
    parse_prefixes(r.rest(), fam, cx.add_path.contains(&fam), &mut nlri).map_err(|_| reset())?;
    w.mp_unreach = Some((fam, nlri));
    Ok(())
}

/// Checks the attribute set as a whole and builds the [`Update`].
fn finish(mut update: Update, mut w: Walk, cx: &DecodeCxt) -> Result<Update, Notification> {
    let classic = !update.announced.is_empty();
    let mp_announces = w.mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty());

    // End-of-RIB for another family: only an empty MP_UNREACH_NLRI (RFC 4724 §2).
    if update.withdrawn.is_empty()
        && !classic
        && w.count == 1
        && w.withdraw.is_none()
        && let Some((afi, nlri)) = &w.mp_unreach
        && nlri.is_empty()
    {
        update.end_of_rib = Some(*afi);
        return Ok(update);
    }

    // RFC 7606 §3 d: missing well-known mandatory attributes → treat-as-withdraw. ORIGIN and
    // AS_PATH go with any NLRI (RFC 4760 §3 for MP_REACH_NLRI), NEXT_HOP with classic NLRI.
    if classic {
        if let Some(e) = w.next_hop_error.take() {
            w.withdraw.get_or_insert(e);
        } else if w.next_hop.is_none() {
            w.apply(
                withdraw("NEXT_HOP missing", "RFC 7606 §3 d"),
                code::NEXT_HOP,
            );
        }
    }
    if classic || mp_announces {
        if w.origin.is_none() {
            w.apply(withdraw("ORIGIN missing", "RFC 7606 §3 d"), code::ORIGIN);
        }
        if w.as_path.is_none() {
            w.apply(withdraw("AS_PATH missing", "RFC 7606 §3 d"), code::AS_PATH);
        }
    }

    // RFC 6793 §4.2.3: rebuild AGGREGATOR and AS_PATH from their AS4_ companions.
    let mut as_path = w.as_path.take().unwrap_or_default();
    let mut aggregator = w.aggregator;
    if !cx.four_octet_as {
        let mut as4_path = w.as4_path.take();
        match (aggregator, w.as4_aggregator) {
            (Some((asn, _)), Some(_)) if asn != AS_TRANS => as4_path = None,
            (Some(_), Some(a4)) => aggregator = Some(a4),
            _ => {}
        }
        if let Some(as4) = as4_path {
            as_path = attr::merge_as4_path(as_path, as4);
        }
    }
    w.attrs.as_path = as_path;
    // Uninterpreted attributes in type-code order, the order in which we send them.
    w.attrs.unknown.sort_by_key(|a| a.code);
    w.attrs.aggregator = aggregator;
    w.attrs.origin = w.origin.unwrap_or_default();

    // The next hop of the announced routes. Our `Update` has one next hop, so an UPDATE that
    // announces classic NLRI and MP_REACH_NLRI with different next hops cannot be represented.
    match (&w.mp_reach, classic) {
        (Some(mp), true) if mp_announces => {
            if Some(mp.next_hop) != w.next_hop.map(IpAddr::V4) || mp.link_local.is_some() {
                w.withdraw.get_or_insert_with(|| {
                    "classic NLRI and MP_REACH_NLRI with different next hops in one UPDATE (not supported)".to_string()
                });
            }
            w.attrs.next_hop = w.next_hop.map(IpAddr::V4);
        }
        (Some(mp), false) if mp_announces => {
            if let Some(reason) = &mp.bad_next_hop {
                w.withdraw
                    .get_or_insert_with(|| format!("{reason} (RFC 4271 §6.3)"));
            }
            w.attrs.next_hop = Some(mp.next_hop);
            w.attrs.link_local_next_hop = mp.link_local;
        }
        _ => w.attrs.next_hop = w.next_hop.map(IpAddr::V4),
    }

    if let Some(mp) = w.mp_reach.take() {
        update.announced.extend(mp.nlri);
    }

    if let Some((_, nlri)) = w.mp_unreach.take() {
        update.withdrawn.extend(nlri);
    }
    let has_attrs = w.non_mp > 0 || !update.announced.is_empty();
    if let Some(reason) = w.withdraw {
        update.withdrawn.append(&mut update.announced);
        update.treat_as_withdraw = Some(reason);
    } else if has_attrs {
        update.attrs = Some(w.attrs);
    }
    Ok(update)
}
