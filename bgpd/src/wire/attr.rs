//! Path attribute codes and flags, AS_PATH / AS4_PATH segments (RFC 4271 §4.3, §5; RFC 6793),
//! and the encoder of the attributes other than MP_REACH_NLRI / MP_UNREACH_NLRI.

use std::net::Ipv4Addr;

use super::EncodeError;
use crate::types::{AsSegment, Origin, PathAttrs};

/// Attribute type codes (IANA "BGP Path Attributes").
pub(super) mod code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH: u8 = 14;
    pub const MP_UNREACH: u8 = 15;
    pub const EXT_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const IPV6_EXT_COMMUNITIES: u8 = 25;
    pub const LARGE_COMMUNITY: u8 = 32;
}

/// Attribute flag bits (RFC 4271 §4.3).
pub(super) mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED: u8 = 0x10;
    /// Well-known (mandatory or discretionary): optional 0, transitive 1.
    pub const WELL_KNOWN: u8 = TRANSITIVE;
    pub const OPT_TRANSITIVE: u8 = OPTIONAL | TRANSITIVE;
    pub const OPT_NON_TRANSITIVE: u8 = OPTIONAL;
}

/// The 2-octet placeholder for a 4-octet AS number (RFC 6793 §9).
pub const AS_TRANS: u32 = 23456;

/// AS_PATH segment types (RFC 4271 §4.3, RFC 5065 §3).
mod segment {
    pub const AS_SET: u8 = 1;
    pub const AS_SEQUENCE: u8 = 2;
    pub const AS_CONFED_SEQUENCE: u8 = 3;
    pub const AS_CONFED_SET: u8 = 4;
}

/// The flags (optional and transitive bits) an attribute we recognise must carry, and whether
/// it is one of ours to generate (so it may not appear in `PathAttrs::unknown` on encode).
pub(super) fn expected_flags(code: u8) -> Option<u8> {
    use code::*;
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => flag::WELL_KNOWN,
        MED | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH | MP_UNREACH => flag::OPT_NON_TRANSITIVE,
        AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR | LARGE_COMMUNITY
        | EXT_COMMUNITIES | IPV6_EXT_COMMUNITIES => flag::OPT_TRANSITIVE,
        _ => return None,
    })
}

/// What is wrong with an AS_PATH / AS4_PATH (RFC 7606 §7.2, RFC 7607).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AsPathError {
    /// Overrun, underrun, zero segment length or unknown segment type.
    Malformed,
    /// AS number 0 (RFC 7607 §2).
    ZeroAs,
}

/// Parses an AS_PATH or AS4_PATH value with `width`-octet AS numbers. Confederation segments
/// (we are never a confederation member) are dropped and reported in the second value.
pub(super) fn parse_as_path(
    value: &[u8],
    width: usize,
) -> Result<(Vec<AsSegment>, bool), AsPathError> {
    let mut segments = Vec::new();
    let mut confed = false;
    let mut rest = value;
    while !rest.is_empty() {
        let (&[kind, count], tail) = rest
            .split_first_chunk::<2>()
            .ok_or(AsPathError::Malformed)?;
        if count == 0 {
            return Err(AsPathError::Malformed);
        }
        let (asns, tail) = tail
            .split_at_checked(usize::from(count) * width)
            .ok_or(AsPathError::Malformed)?;
        rest = tail;
        let asns: Vec<u32> = if width == 4 {
            asns.chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            asns.chunks_exact(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .collect()
        };
        if asns.contains(&0) {
            return Err(AsPathError::ZeroAs);
        }
        match kind {
            segment::AS_SET => segments.push(AsSegment::Set(asns)),
            segment::AS_SEQUENCE => segments.push(AsSegment::Sequence(asns)),
            segment::AS_CONFED_SEQUENCE | segment::AS_CONFED_SET => confed = true,
            _ => return Err(AsPathError::Malformed),
        }
    }
    Ok((segments, confed))
}

/// Number of AS numbers for RFC 6793 §4.2.3 (a set counts 1).
fn path_count(path: &[AsSegment]) -> usize {
    path.iter()
        .map(|s| match s {
            AsSegment::Sequence(v) => v.len(),
            AsSegment::Set(_) => 1,
        })
        .sum()
}

/// Reconstructs the 4-octet path from a 2-octet AS_PATH and an AS4_PATH (RFC 6793 §4.2.3): if
/// AS_PATH holds fewer AS numbers than AS4_PATH the latter is ignored; otherwise the leading
/// AS numbers of AS_PATH in excess are kept and AS4_PATH appended (joining two sequences).
pub(super) fn merge_as4_path(as_path: Vec<AsSegment>, as4_path: Vec<AsSegment>) -> Vec<AsSegment> {
    let (n2, n4) = (path_count(&as_path), path_count(&as4_path));
    if n2 < n4 {
        return as_path;
    }
    let mut need = n2 - n4;
    let mut out: Vec<AsSegment> = Vec::new();
    for seg in as_path {
        if need == 0 {
            break;
        }
        match seg {
            AsSegment::Sequence(mut v) => {
                v.truncate(need);
                need -= v.len();
                out.push(AsSegment::Sequence(v));
            }
            set @ AsSegment::Set(_) => {
                need -= 1;
                out.push(set);
            }
        }
    }
    let mut tail = as4_path.into_iter().peekable();
    if let Some(AsSegment::Sequence(last)) = out.last_mut()
        && let Some(AsSegment::Sequence(first)) =
            tail.next_if(|s| matches!(s, AsSegment::Sequence(_)))
    {
        last.extend(first);
    }
    out.extend(tail);
    out
}

/// Appends an attribute header and value (extended length when the value exceeds 255 octets).
pub(super) fn put_attr(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    put_attr_header(out, flags, code, value.len());
    out.extend_from_slice(value);
}

/// Appends an attribute header for a value of `len` octets (≤ 65535, checked by the callers'
/// 4096-octet message limit before it matters).
pub(super) fn put_attr_header(out: &mut Vec<u8>, flags: u8, code: u8, len: usize) {
    let flags = flags & (flag::OPTIONAL | flag::TRANSITIVE | flag::PARTIAL);
    match u8::try_from(len) {
        Ok(l) => out.extend_from_slice(&[flags, code, l]),
        Err(_) => {
            let l = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
            out.extend_from_slice(&[flags | flag::EXTENDED, code, l[0], l[1]]);
        }
    }
}

/// Opens an attribute whose length is not known yet: returns where it starts, for
/// [`end_attr`].
pub(super) fn begin_attr(out: &mut Vec<u8>, flags: u8, code: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[flags | flag::EXTENDED, code, 0, 0]);
    start
}

/// Closes an attribute opened by [`begin_attr`]: writes its length, switching to the 1-octet
/// form (moving the value down) when it fits, so that encoding is canonical.
pub(super) fn end_attr(out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
    let len = out.len() - start - 4;
    if let Ok(l) = u8::try_from(len) {
        out.copy_within(start + 4.., start + 3);
        out.truncate(out.len() - 1);
        out[start] &= !flag::EXTENDED;
        out[start + 2] = l;
    } else {
        let l = u16::try_from(len).map_err(|_| EncodeError::TooLarge { len })?;
        out[start + 2..start + 4].copy_from_slice(&l.to_be_bytes());
    }
    Ok(())
}

fn as_path_value(path: &[AsSegment], four_octet: bool) -> Result<Vec<u8>, EncodeError> {
    let mut v = Vec::new();
    for seg in path {
        let (kind, asns) = match seg {
            AsSegment::Sequence(a) => (segment::AS_SEQUENCE, a),
            AsSegment::Set(a) => (segment::AS_SET, a),
        };
        if kind == segment::AS_SET && asns.len() > 255 {
            return Err(EncodeError::Invalid("AS_SET with more than 255 AS numbers"));
        }
        // Long sequences become several segments; empty segments are not sent (a zero segment
        // length is malformed, RFC 7606 §7.2).
        for chunk in asns.chunks(255) {
            v.extend_from_slice(&[kind, chunk.len() as u8]);
            for &asn in chunk {
                if four_octet {
                    v.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let two = u16::try_from(asn).unwrap_or(AS_TRANS as u16);
                    v.extend_from_slice(&two.to_be_bytes());
                }
            }
        }
    }
    Ok(v)
}

fn needs_as4(asn: u32) -> bool {
    asn > u32::from(u16::MAX)
}

/// Encodes every attribute of `a` except MP_REACH_NLRI / MP_UNREACH_NLRI, in type-code order
/// with the uninterpreted ones merged in by code. `next_hop`: whether to write NEXT_HOP (the
/// IPv4 next hop of classic NLRI). On a 2-octet session AS numbers above 65535 become AS_TRANS
/// and AS4_PATH / AS4_AGGREGATOR carry the real ones (RFC 6793 §4.2.2).
pub(super) fn encode_path_attrs(
    a: &PathAttrs,
    four_octet_as: bool,
    next_hop: Option<Ipv4Addr>,
) -> Result<Vec<u8>, EncodeError> {
    use code::*;
    let mut unknown: Vec<_> = a.unknown.iter().collect();
    unknown.sort_by_key(|u| u.code);
    if let Some(u) = unknown.iter().find(|u| {
        expected_flags(u.code).is_some()
            && !matches!(u.code, EXT_COMMUNITIES | IPV6_EXT_COMMUNITIES)
    }) {
        return Err(EncodeError::ReservedAttribute(u.code));
    }
    let mut unknown = unknown.into_iter().peekable();
    let mut out = Vec::with_capacity(64);
    let mut flush_unknown_below = |out: &mut Vec<u8>, limit: u16| {
        while let Some(u) = unknown.next_if(|u| u16::from(u.code) < limit) {
            put_attr(out, u.flags, u.code, &u.value);
        }
    };

    flush_unknown_below(&mut out, u16::from(ORIGIN));
    let origin = match a.origin {
        Origin::Igp => 0,
        Origin::Egp => 1,
        Origin::Incomplete => 2,
    };
    put_attr(&mut out, flag::WELL_KNOWN, ORIGIN, &[origin]);

    flush_unknown_below(&mut out, u16::from(AS_PATH));
    put_attr(
        &mut out,
        flag::WELL_KNOWN,
        AS_PATH,
        &as_path_value(&a.as_path, four_octet_as)?,
    );

    if let Some(nh) = next_hop {
        flush_unknown_below(&mut out, u16::from(NEXT_HOP));
        put_attr(&mut out, flag::WELL_KNOWN, NEXT_HOP, &nh.octets());
    }
    if let Some(med) = a.med {
        flush_unknown_below(&mut out, u16::from(MED));
        put_attr(&mut out, flag::OPT_NON_TRANSITIVE, MED, &med.to_be_bytes());
    }
    if let Some(lp) = a.local_pref {
        flush_unknown_below(&mut out, u16::from(LOCAL_PREF));
        put_attr(&mut out, flag::WELL_KNOWN, LOCAL_PREF, &lp.to_be_bytes());
    }
    if a.atomic_aggregate {
        flush_unknown_below(&mut out, u16::from(ATOMIC_AGGREGATE));
        put_attr(&mut out, flag::WELL_KNOWN, ATOMIC_AGGREGATE, &[]);
    }
    if let Some((asn, id)) = a.aggregator {
        flush_unknown_below(&mut out, u16::from(AGGREGATOR));
        let mut v = Vec::with_capacity(8);
        if four_octet_as {
            v.extend_from_slice(&asn.to_be_bytes());
        } else {
            v.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS as u16).to_be_bytes());
        }
        v.extend_from_slice(&id.octets());
        put_attr(&mut out, flag::OPT_TRANSITIVE, AGGREGATOR, &v);
    }
    if !a.communities.is_empty() {
        flush_unknown_below(&mut out, u16::from(COMMUNITIES));
        let v: Vec<u8> = a.communities.iter().flat_map(|c| c.to_be_bytes()).collect();
        put_attr(&mut out, flag::OPT_TRANSITIVE, COMMUNITIES, &v);
    }
    if let Some(id) = a.originator_id {
        flush_unknown_below(&mut out, u16::from(ORIGINATOR_ID));
        put_attr(
            &mut out,
            flag::OPT_NON_TRANSITIVE,
            ORIGINATOR_ID,
            &id.octets(),
        );
    }
    if !a.cluster_list.is_empty() {
        flush_unknown_below(&mut out, u16::from(CLUSTER_LIST));
        let v: Vec<u8> = a.cluster_list.iter().flat_map(|c| c.octets()).collect();
        put_attr(&mut out, flag::OPT_NON_TRANSITIVE, CLUSTER_LIST, &v);
    }
    if !four_octet_as {
        let wide = a.as_path.iter().any(|s| match s {
            AsSegment::Sequence(v) | AsSegment::Set(v) => v.iter().any(|&asn| needs_as4(asn)),
        });
        if wide {
            flush_unknown_below(&mut out, u16::from(AS4_PATH));
            put_attr(
                &mut out,
                flag::OPT_TRANSITIVE,
                AS4_PATH,
                &as_path_value(&a.as_path, true)?,
            );
        }
        if let Some((asn, id)) = a.aggregator
            && needs_as4(asn)
        {
            flush_unknown_below(&mut out, u16::from(AS4_AGGREGATOR));
            let mut v = asn.to_be_bytes().to_vec();
            v.extend_from_slice(&id.octets());
            put_attr(&mut out, flag::OPT_TRANSITIVE, AS4_AGGREGATOR, &v);
        }
    }
    if !a.large_communities.is_empty() {
        flush_unknown_below(&mut out, u16::from(LARGE_COMMUNITY));
        let mut v = Vec::with_capacity(12 * a.large_communities.len());
        for (g, l1, l2) in &a.large_communities {
            v.extend_from_slice(&g.to_be_bytes());
            v.extend_from_slice(&l1.to_be_bytes());
            v.extend_from_slice(&l2.to_be_bytes());
        }
        put_attr(&mut out, flag::OPT_TRANSITIVE, LARGE_COMMUNITY, &v);
    }
    flush_unknown_below(&mut out, 256);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AsSegment::{Sequence as Seq, Set};

    #[test]
    fn as4_merge_rfc6793() {
        // AS_PATH (2-octet) [100 23456 23456], AS4_PATH [4200000001 4200000002] → [100, 42…1, 42…2].
        let merged = merge_as4_path(
            vec![Seq(vec![100, AS_TRANS, AS_TRANS])],
            vec![Seq(vec![4_200_000_001, 4_200_000_002])],
        );
        assert_eq!(merged, vec![Seq(vec![100, 4_200_000_001, 4_200_000_002])]);
        // AS4_PATH longer than AS_PATH: ignored.
        let p = vec![Seq(vec![23456])];
        assert_eq!(merge_as4_path(p.clone(), vec![Seq(vec![1, 2])]), p);
        // A set counts one and is kept whole.
        let merged = merge_as4_path(
            vec![Seq(vec![1]), Set(vec![2, 3]), Seq(vec![AS_TRANS])],
            vec![Seq(vec![70000])],
        );
        assert_eq!(
            merged,
            vec![Seq(vec![1]), Set(vec![2, 3]), Seq(vec![70000])]
        );
    }

    #[test]
    fn as_path_errors() {
        assert_eq!(parse_as_path(&[2, 0], 4), Err(AsPathError::Malformed));
        assert_eq!(
            parse_as_path(&[2, 1, 0, 0, 0], 4),
            Err(AsPathError::Malformed)
        );
        assert_eq!(
            parse_as_path(&[2, 1, 0, 1, 9], 2),
            Err(AsPathError::Malformed)
        );
        assert_eq!(parse_as_path(&[5, 1, 0, 1], 2), Err(AsPathError::Malformed));
        assert_eq!(parse_as_path(&[2, 1, 0, 0], 2), Err(AsPathError::ZeroAs));
        assert_eq!(
            parse_as_path(&[3, 1, 0, 1, 2, 1, 0, 2], 2),
            Ok((vec![Seq(vec![2])], true))
        );
    }

    #[test]
    fn extended_length_only_when_needed() {
        let mut out = Vec::new();
        let start = begin_attr(&mut out, flag::OPT_NON_TRANSITIVE, code::MP_REACH);
        out.extend_from_slice(&[1, 2, 3]);
        end_attr(&mut out, start).unwrap();
        assert_eq!(out, [0x80, 14, 3, 1, 2, 3]);
        let mut out = Vec::new();
        put_attr(&mut out, flag::OPT_TRANSITIVE, code::COMMUNITIES, &[0; 256]);
        assert_eq!(out[..4], [0xd0, 8, 1, 0]);
    }
}
