//! UPDATE encoding: one message ([`encode_update`]) or a batch packed into as few ≤ 4096-octet
//! messages as possible ([`encode_updates`]). Bytes are written straight into each message
//! buffer: the attributes of a batch are encoded once and copied, every prefix is appended in
//! place, nothing is allocated per prefix.
//!
//! Layout choices (any order is legal; these make our output canonical):
//! * MP_REACH_NLRI, then MP_UNREACH_NLRI, come first (RFC 7606 §5.1 "SHALL be encoded as the
//!   very first path attribute"), the other attributes follow in type-code order;
//! * the extended-length flag is set only when a value exceeds 255 octets;
//! * IPv4 routes use the classic fields unless the context says MP (`mp_ipv4`) or their next
//!   hop is IPv6 (RFC 8950, when negotiated); IPv6 routes always use MP_REACH/MP_UNREACH.

use std::net::{IpAddr, Ipv4Addr};

use super::attr::{begin_attr, code, encode_path_attrs, end_attr, flag};
use super::frame::{HEADER_LEN, MAX_MESSAGE_LEN, msg_type};
use super::nlri::{prefix_size, put_prefix};
use super::open::afi_code;
use super::{EncodeCxt, EncodeError};
use crate::types::{Afi, Nlri, PathAttrs, Update};

/// Capacity of a message buffer: the largest message plus the few octets `put_prefix` writes
/// past a prefix before trimming them, so that a buffer never grows.
const BUFFER: usize = MAX_MESSAGE_LEN + 16;

/// Offset of the Withdrawn Routes Length field.
const WITHDRAWN_LEN_AT: usize = HEADER_LEN;

/// The next-hop field of MP_REACH_NLRI: 4, 16 or 32 octets.
struct MpNextHop {
    bytes: [u8; 32],
    len: usize,
}

impl MpNextHop {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// How the announced routes of one family travel.
enum Carry {
    /// In the NLRI field, with this NEXT_HOP attribute.
    Classic(Ipv4Addr),
    /// In MP_REACH_NLRI with this next hop.
    Mp(MpNextHop),
}

fn carry(afi: Afi, a: &PathAttrs, cx: &EncodeCxt) -> Result<Carry, EncodeError> {
    let v6 = |g: std::net::Ipv6Addr| {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&g.octets());
        let len = match a.link_local_next_hop {
            Some(ll) => {
                bytes[16..].copy_from_slice(&ll.octets());
                32
            }
            None => 16,
        };
        Carry::Mp(MpNextHop { bytes, len })
    };
    match (afi, a.next_hop) {
        (_, None) => Err(EncodeError::NextHop("announced routes without a next hop")),
        (Afi::Ipv4, Some(IpAddr::V4(nh))) if !cx.mp_ipv4 => Ok(Carry::Classic(nh)),
        (Afi::Ipv4, Some(IpAddr::V4(nh))) => {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&nh.octets());
            Ok(Carry::Mp(MpNextHop { bytes, len: 4 }))
        }
        (Afi::Ipv4, Some(IpAddr::V6(g))) if cx.ipv4_over_ipv6_next_hop => Ok(v6(g)),
        (Afi::Ipv4, Some(IpAddr::V6(_))) => Err(EncodeError::NextHop(
            "IPv6 next hop for IPv4 routes, extended next hop (RFC 8950) not negotiated",
        )),
        (Afi::Ipv6, Some(IpAddr::V6(g))) => Ok(v6(g)),
        (Afi::Ipv6, Some(IpAddr::V4(_))) => {
            Err(EncodeError::NextHop("IPv4 next hop for IPv6 routes"))
        }
    }
}

/// Whether withdrawals of `afi` go into MP_UNREACH_NLRI.
fn withdraw_in_mp(afi: Afi, cx: &EncodeCxt) -> bool {
    afi == Afi::Ipv6 || cx.mp_ipv4
}

/// Starts a message: the header with a length to be filled in by [`finish`].
fn start(m: &mut Vec<u8>) {
    m.extend_from_slice(&[0xff; 16]);
    m.extend_from_slice(&[0, 0, msg_type::UPDATE]);
}

/// Fills in the message length.
fn finish(m: &mut [u8]) -> Result<(), EncodeError> {
    let len = m.len();
    if len > MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLarge { len });
    }
    put_u16(m, 16, len)
}

fn put_u16(m: &mut [u8], at: usize, value: usize) -> Result<(), EncodeError> {
    let v = u16::try_from(value).map_err(|_| EncodeError::TooLarge { len: value })?;
    m.get_mut(at..at + 2)
        .ok_or(EncodeError::TooLarge { len: at })?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

fn put_mp_header(m: &mut Vec<u8>, attr_code: u8, afi: Afi) -> usize {
    let at = begin_attr(m, flag::OPT_NON_TRANSITIVE, attr_code);
    m.extend_from_slice(&afi_code(afi).to_be_bytes());
    m.push(1); // SAFI unicast
    at
}

/// End-of-RIB (RFC 4724 §2): an empty UPDATE for IPv4 sent classically, otherwise an UPDATE
/// holding only an empty MP_UNREACH_NLRI.
fn end_of_rib(afi: Afi, cx: &EncodeCxt) -> Result<Vec<u8>, EncodeError> {
    let mut m = Vec::with_capacity(HEADER_LEN + 10);
    start(&mut m);
    m.extend_from_slice(&[0, 0, 0, 0]);
    if withdraw_in_mp(afi, cx) {
        let at = put_mp_header(&mut m, code::MP_UNREACH, afi);
        end_attr(&mut m, at)?;
        let attr_len = m.len() - HEADER_LEN - 4;
        put_u16(&mut m, HEADER_LEN + 2, attr_len)?;
    }
    finish(&mut m)?;
    Ok(m)
}

/// Encodes one UPDATE (see the module docs for the layout). Errors: routes of both families
/// announced, announcements without attributes or usable next hop, withdrawals that would need
/// two MP_UNREACH_NLRI, an End-of-RIB with routes, an empty UPDATE, more than 4096 octets.
pub(super) fn encode_update(u: &Update, cx: &EncodeCxt) -> Result<Vec<u8>, EncodeError> {
    if let Some(afi) = u.end_of_rib {
        if !u.withdrawn.is_empty() || !u.announced.is_empty() || u.attrs.is_some() {
            return Err(EncodeError::Invalid(
                "an End-of-RIB UPDATE carries nothing else",
            ));
        }
        return end_of_rib(afi, cx);
    }
    if u.withdrawn.is_empty() && u.announced.is_empty() && u.attrs.is_none() {
        return Err(EncodeError::Invalid(
            "empty UPDATE (an End-of-RIB needs `end_of_rib`)",
        ));
    }
    let family = u.announced.first().map(|n| Afi::of(&n.prefix));
    if u.announced
        .iter()
        .any(|n| Some(Afi::of(&n.prefix)) != family)
    {
        return Err(EncodeError::MixedFamilies);
    }
    let attrs = match family {
        Some(_) => Some(u.attrs.as_ref().ok_or(EncodeError::MissingAttributes)?),
        None => u.attrs.as_ref(),
    };
    let carry = match (family, attrs) {
        (Some(afi), Some(a)) => Some((afi, carry(afi, a, cx)?)),
        _ => None,
    };
    let mut unreach: Option<Afi> = None;
    for n in &u.withdrawn {
        let afi = Afi::of(&n.prefix);
        if withdraw_in_mp(afi, cx) {
            match unreach {
                Some(f) if f != afi => {
                    return Err(EncodeError::Invalid(
                        "withdrawals of two families would need two MP_UNREACH_NLRI",
                    ));
                }
                _ => unreach = Some(afi),
            }
        }
    }
    let v4_add_path = cx.add_path.contains(&Afi::Ipv4);

    let mut m = Vec::with_capacity(BUFFER);
    start(&mut m);
    m.extend_from_slice(&[0, 0]);
    for n in u
        .withdrawn
        .iter()
        .filter(|n| !withdraw_in_mp(Afi::of(&n.prefix), cx))
    {
        put_prefix(&mut m, n, v4_add_path);
    }
    let withdrawn_len = m.len() - HEADER_LEN - 2;
    put_u16(&mut m, WITHDRAWN_LEN_AT, withdrawn_len)?;

    let attrs_at = m.len();
    m.extend_from_slice(&[0, 0]);
    if let Some((afi, Carry::Mp(nh))) = &carry {
        let at = put_mp_header(&mut m, code::MP_REACH, *afi);
        m.push(nh.len as u8);
        m.extend_from_slice(nh.as_slice());
        m.push(0); // Reserved
        let add_path = cx.add_path.contains(afi);
        for n in &u.announced {
            put_prefix(&mut m, n, add_path);
        }
        end_attr(&mut m, at)?;
    }
    if let Some(afi) = unreach {
        let at = put_mp_header(&mut m, code::MP_UNREACH, afi);
        let add_path = cx.add_path.contains(&afi);
        for n in u.withdrawn.iter().filter(|n| Afi::of(&n.prefix) == afi) {
            put_prefix(&mut m, n, add_path);
        }
        end_attr(&mut m, at)?;
    }
    if let Some(a) = attrs {
        let next_hop = match &carry {
            Some((_, Carry::Classic(nh))) => Some(*nh),
            Some((_, Carry::Mp(_))) => None,
            // Attributes without routes: keep an IPv4 next hop as NEXT_HOP.
            None => match a.next_hop {
                Some(IpAddr::V4(nh)) => Some(nh),
                _ => None,
            },
        };
        m.extend_from_slice(&encode_path_attrs(a, cx.four_octet_as, next_hop)?);
    }
    let attr_len = m.len() - attrs_at - 2;
    put_u16(&mut m, attrs_at, attr_len)?;

    if let Some((_, Carry::Classic(_))) = &carry {
        for n in &u.announced {
            put_prefix(&mut m, n, v4_add_path);
        }
    }
    finish(&mut m)?;
    Ok(m)
}

/// Encodes a batch: withdrawals first (IPv4, then IPv6), then announcements per family (IPv4,
/// then IPv6), each packed into as few messages as fit in 4096 octets, then the End-of-RIB if
/// `end_of_rib` is set. `attrs` are used only for announcements.
pub(super) fn encode_updates(u: &Update, cx: &EncodeCxt) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut out = Vec::new();
    for afi in [Afi::Ipv4, Afi::Ipv6] {
        let mut routes = u
            .withdrawn
            .iter()
            .filter(|n| Afi::of(&n.prefix) == afi)
            .peekable();
        if routes.peek().is_none() {
            continue;
        }
        let add_path = cx.add_path.contains(&afi);
        if withdraw_in_mp(afi, cx) {
            pack_mp_unreach(afi, routes, add_path, &mut out)?;
        } else {
            pack_withdrawn(routes, add_path, &mut out)?;
        }
    }
    if !u.announced.is_empty() {
        let attrs = u.attrs.as_ref().ok_or(EncodeError::MissingAttributes)?;
        for afi in [Afi::Ipv4, Afi::Ipv6] {
            let mut routes = u
                .announced
                .iter()
                .filter(|n| Afi::of(&n.prefix) == afi)
                .peekable();
            if routes.peek().is_none() {
                continue;
            }
            let add_path = cx.add_path.contains(&afi);
            match carry(afi, attrs, cx)? {
                Carry::Classic(nh) => {
                    let encoded = encode_path_attrs(attrs, cx.four_octet_as, Some(nh))?;
                    pack_nlri(routes, &encoded, add_path, &mut out)?;
                }
                Carry::Mp(nh) => {
                    let encoded = encode_path_attrs(attrs, cx.four_octet_as, None)?;
                    pack_mp_reach(afi, &nh, routes, &encoded, add_path, &mut out)?;
                }
            }
        }
    }
    if let Some(afi) = u.end_of_rib {
        out.push(end_of_rib(afi, cx)?);
    }
    Ok(out)
}

/// Withdrawals in the classic Withdrawn Routes field.
fn pack_withdrawn<'a>(
    routes: impl Iterator<Item = &'a Nlri>,
    add_path: bool,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), EncodeError> {
    let head = |m: &mut Vec<u8>| {
        start(m);
        m.extend_from_slice(&[0, 0]);
    };
    let flush = |m: &mut Vec<u8>, out: &mut Vec<Vec<u8>>| -> Result<(), EncodeError> {
        let withdrawn_len = m.len() - HEADER_LEN - 2;
        put_u16(m, WITHDRAWN_LEN_AT, withdrawn_len)?;
        m.extend_from_slice(&[0, 0]);
        finish(m)?;
        out.push(std::mem::replace(m, Vec::with_capacity(BUFFER)));
        Ok(())
    };
    let base = HEADER_LEN + 2;
    let mut m = Vec::with_capacity(BUFFER);
    head(&mut m);
    for n in routes {
        // + 2: the Total Path Attribute Length that follows.
        if m.len() + prefix_size(n, add_path) + 2 > MAX_MESSAGE_LEN && m.len() > base {
            flush(&mut m, out)?;
            head(&mut m);
        }
        put_prefix(&mut m, n, add_path);
    }
    flush(&mut m, out)
}

/// Announcements in the classic NLRI field behind the (already encoded) attributes.
fn pack_nlri<'a>(
    routes: impl Iterator<Item = &'a Nlri>,
    attrs: &[u8],
    add_path: bool,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), EncodeError> {
    let base = HEADER_LEN + 4 + attrs.len();
    if base >= MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLarge { len: base });
    }
    let head = |m: &mut Vec<u8>| {
        start(m);
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(attrs);
    };
    let mut m = Vec::with_capacity(BUFFER);
    head(&mut m);
    for n in routes {
        if m.len() + prefix_size(n, add_path) > MAX_MESSAGE_LEN && m.len() > base {
            finish(&mut m)?;
            out.push(std::mem::replace(&mut m, Vec::with_capacity(BUFFER)));
            head(&mut m);
        }
        put_prefix(&mut m, n, add_path);
    }
    finish(&mut m)?;
    out.push(m);
    Ok(())
}

/// Announcements in MP_REACH_NLRI (first attribute), followed by the other attributes.
fn pack_mp_reach<'a>(
    afi: Afi,
    nh: &MpNextHop,
    routes: impl Iterator<Item = &'a Nlri>,
    attrs: &[u8],
    add_path: bool,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), EncodeError> {
    let mp_at = HEADER_LEN + 4;
    let head = |m: &mut Vec<u8>| {
        start(m);
        m.extend_from_slice(&[0, 0, 0, 0]);
        put_mp_header(m, code::MP_REACH, afi);
        m.push(nh.len as u8);
        m.extend_from_slice(nh.as_slice());
        m.push(0); // Reserved
    };
    let flush = |m: &mut Vec<u8>, out: &mut Vec<Vec<u8>>| -> Result<(), EncodeError> {
        end_attr(m, mp_at)?;
        m.extend_from_slice(attrs);
        let attr_len = m.len() - HEADER_LEN - 4;
        put_u16(m, HEADER_LEN + 2, attr_len)?;
        finish(m)?;
        out.push(std::mem::replace(m, Vec::with_capacity(BUFFER)));
        Ok(())
    };
    let mut m = Vec::with_capacity(BUFFER);
    head(&mut m);
    let base = m.len();
    if base + attrs.len() >= MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLarge {
            len: base + attrs.len(),
        });
    }
    for n in routes {
        if m.len() + prefix_size(n, add_path) + attrs.len() > MAX_MESSAGE_LEN && m.len() > base {
            flush(&mut m, out)?;
            head(&mut m);
        }
        put_prefix(&mut m, n, add_path);
    }
    flush(&mut m, out)
}

/// Withdrawals in MP_UNREACH_NLRI.
fn pack_mp_unreach<'a>(
    afi: Afi,
    routes: impl Iterator<Item = &'a Nlri>,
    add_path: bool,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), EncodeError> {
    let mp_at = HEADER_LEN + 4;
    let head = |m: &mut Vec<u8>| {
        start(m);
        m.extend_from_slice(&[0, 0, 0, 0]);
        put_mp_header(m, code::MP_UNREACH, afi);
    };
    let flush = |m: &mut Vec<u8>, out: &mut Vec<Vec<u8>>| -> Result<(), EncodeError> {
        end_attr(m, mp_at)?;
        let attr_len = m.len() - HEADER_LEN - 4;
        put_u16(m, HEADER_LEN + 2, attr_len)?;
        finish(m)?;
        out.push(std::mem::replace(m, Vec::with_capacity(BUFFER)));
        Ok(())
    };
    let mut m = Vec::with_capacity(BUFFER);
    head(&mut m);
    let base = m.len();
    for n in routes {
        if m.len() + prefix_size(n, add_path) > MAX_MESSAGE_LEN && m.len() > base {
            flush(&mut m, out)?;
            head(&mut m);
        }
        put_prefix(&mut m, n, add_path);
    }
    flush(&mut m, out)
}
