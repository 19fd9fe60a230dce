//! OPEN (RFC 4271 §4.2) with capabilities (RFC 5492) and extended optional parameters
//! (RFC 9072, decode only unless needed).

use std::net::Ipv4Addr;

use super::EncodeError;
use super::reader::Reader;
use crate::types::{AddPathMode, Afi, Capabilities, GracefulRestart, Notification, Open, codes};

/// Optional parameter type "Capabilities" (RFC 5492 §4).
const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072: a Non-Ext OP Type of 255 announces 2-octet parameter lengths.
const PARAM_EXTENDED: u8 = 255;

/// Capability codes (IANA "Capability Codes").
pub(super) mod cap {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
}

/// AFI/SAFI (unicast only) → our family.
pub(super) fn family(afi: u16, safi: u8) -> Option<Afi> {
    match (afi, safi) {
        (1, 1) => Some(Afi::Ipv4),
        (2, 1) => Some(Afi::Ipv6),
        _ => None,
    }
}

pub(super) fn afi_code(afi: Afi) -> u16 {
    match afi {
        Afi::Ipv4 => 1,
        Afi::Ipv6 => 2,
    }
}

fn afi_of(code: u16) -> Option<Afi> {
    family(code, 1)
}

fn open_error(subcode: u8) -> Notification {
    Notification::new(codes::OPEN, subcode)
}

/// Decodes the body of an OPEN (after the 19-octet header; the header check guaranteed ≥ 10
/// octets). Errors (RFC 4271 §6.2):
/// * version ≠ 4 → 2/1, data = 2-octet largest supported version (4);
/// * My AS = 0 or a 4-octet AS capability of 0 → 2/2 (RFC 7607 §2);
/// * hold time 1 or 2 → 2/6;
/// * BGP identifier 0 → 2/3 (RFC 6286 §2.2: the identifier is any non-zero 32-bit value, so
///   multicast-looking identifiers are legal; equal-to-ours is the FSM's check);
/// * optional parameter other than Capabilities → 2/4;
/// * lengths inconsistent with the message → 1/2 (outer) or 2/0 (inside a parameter);
/// * a capability we use that is malformed → 2/0 (misreading it would corrupt the session).
pub(super) fn decode_open(body: &[u8], msg_len: usize) -> Result<Open, Notification> {
    let bad_length = || Notification {
        code: codes::HEADER,
        subcode: codes::HEADER_BAD_LENGTH,
        data: u16::try_from(msg_len)
            .unwrap_or(u16::MAX)
            .to_be_bytes()
            .to_vec(),
    };
    let mut r = Reader::new(body);
    let (Some(version), Some(my_as), Some(hold_time), Some(id), Some(opt_len)) =
        (r.u8(), r.u16(), r.u16(), r.u32(), r.u8())
    else {
        return Err(bad_length());
    };
    if version != 4 {
        return Err(Notification {
            code: codes::OPEN,
            subcode: codes::OPEN_UNSUPPORTED_VERSION,
            data: vec![0, 4],
        });
    }
    if my_as == 0 {
        return Err(open_error(codes::OPEN_BAD_PEER_AS));
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(open_error(codes::OPEN_UNACCEPTABLE_HOLD_TIME));
    }
    if id == 0 {
        return Err(open_error(codes::OPEN_BAD_BGP_ID));
    }
    // RFC 9072 §2: Non-Ext OP Len 255 followed by Non-Ext OP Type 255 → 2-octet lengths.
    let extended = opt_len == 255 && r.rest().first() == Some(&PARAM_EXTENDED);
    let params = if extended {
        r.u8();
        let len = r.u16().ok_or_else(bad_length)?;
        r.take(usize::from(len)).ok_or_else(bad_length)?
    } else {
        r.take(usize::from(opt_len)).ok_or_else(bad_length)?
    };
    if !r.is_empty() {
        return Err(bad_length());
    }
    let mut caps = Capabilities::default();
    let mut p = Reader::new(params);
    while !p.is_empty() {
        let kind = p.u8().ok_or(open_error(0))?;
        let len = if extended {
            p.u16()
        } else {
            p.u8().map(u16::from)
        }
        .ok_or(open_error(0))?;
        let value = p.take(usize::from(len)).ok_or(open_error(0))?;
        if kind != PARAM_CAPABILITIES {
            return Err(open_error(codes::OPEN_UNSUPPORTED_PARAMETER));
        }
        decode_capabilities(value, &mut caps)?;
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_id: Ipv4Addr::from(id),
        capabilities: caps,
    })
}

/// Decodes the capabilities of one Capabilities parameter into `caps`.
fn decode_capabilities(buf: &[u8], caps: &mut Capabilities) -> Result<(), Notification> {
    let malformed = || open_error(0);
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let code = r.u8().ok_or_else(malformed)?;
        let len = r.u8().ok_or_else(malformed)?;
        let value = r.take(usize::from(len)).ok_or_else(malformed)?;
        let mut v = Reader::new(value);
        match code {
            cap::MULTIPROTOCOL => {
                // RFC 4760 §8: AFI (2), reserved (1), SAFI (1).
                let ([a0, a1, _, safi], true) =
                    (v.array::<4>().ok_or_else(malformed)?, v.is_empty())
                else {
                    return Err(malformed());
                };
                match family(u16::from_be_bytes([a0, a1]), safi) {
                    Some(afi) => {
                        caps.multiprotocol.insert(afi);
                    }
                    None => caps.unknown.push((code, value.to_vec())),
                }
            }
            cap::ROUTE_REFRESH => {
                if !value.is_empty() {
                    return Err(malformed());
                }
                caps.route_refresh = true;
            }
            cap::EXTENDED_NEXT_HOP => {
                // RFC 8950 §3: (NLRI AFI 2, NLRI SAFI 2, Nexthop AFI 2)*.
                if value.is_empty() || !value.len().is_multiple_of(6) {
                    return Err(malformed());
                }
                while let (Some(afi), Some(safi), Some(nh)) = (v.u16(), v.u16(), v.u16()) {
                    let nlri = u8::try_from(safi).ok().and_then(|s| family(afi, s));
                    if let (Some(nlri), Some(nh)) = (nlri, afi_of(nh))
                        && !caps.extended_next_hop.contains(&(nlri, nh))
                    {
                        caps.extended_next_hop.push((nlri, nh));
                    }
                }
            }
            cap::GRACEFUL_RESTART => {
                // RFC 4724 §3: flags (4 bits) + restart time (12 bits), then (AFI, SAFI, flags)*.
                let head = v.u16().ok_or_else(malformed)?;
                if !v.remaining().is_multiple_of(4) {
                    return Err(malformed());
                }
                let mut gr = GracefulRestart {
                    restarting: head & 0x8000 != 0,
                    restart_time: head & 0x0fff,
                    ..Default::default()
                };
                while let (Some(afi), Some(safi), Some(flags)) = (v.u16(), v.u8(), v.u8()) {
                    if let Some(afi) = family(afi, safi) {
                        gr.families.insert(afi, flags & 0x80 != 0);
                    }
                }
                caps.graceful_restart = Some(gr);
            }
            cap::FOUR_OCTET_AS => {
                let (Some(asn), true) = (v.u32(), v.remaining() == 0) else {
                    return Err(malformed());
                };
                if asn == 0 {
                    return Err(open_error(codes::OPEN_BAD_PEER_AS));
                }
                caps.four_octet_as.get_or_insert(asn);
            }
            cap::ADD_PATH => {
                // RFC 7911 §4: (AFI 2, SAFI 1, Send/Receive 1)*; unknown modes are ignored.
                if value.is_empty() || !value.len().is_multiple_of(4) {
                    return Err(malformed());
                }
                while let (Some(afi), Some(safi), Some(mode)) = (v.u16(), v.u8(), v.u8()) {
                    let mode = match mode {
                        1 => AddPathMode::Receive,
                        2 => AddPathMode::Send,
                        3 => AddPathMode::Both,
                        _ => continue,
                    };
                    if let Some(afi) = family(afi, safi) {
                        caps.add_path.insert(afi, mode);
                    }
                }
            }
            _ => caps.unknown.push((code, value.to_vec())),
        }
    }
    Ok(())
}

/// Lists the capabilities: the ones we interpret in code order (MP: IPv4 before IPv6), then the
/// others in the order received. [`encode_open`] puts them all in one Capabilities parameter
/// while they fit in 255 octets, in more parameters otherwise (RFC 5492 §4 allows several).
fn encode_capabilities(c: &Capabilities) -> Result<Vec<(u8, Vec<u8>)>, EncodeError> {
    let mut list: Vec<(u8, Vec<u8>)> = Vec::new();
    for afi in &c.multiprotocol {
        let mut v = afi_code(*afi).to_be_bytes().to_vec();
        v.extend_from_slice(&[0, 1]);
        list.push((cap::MULTIPROTOCOL, v));
    }
    if c.route_refresh {
        list.push((cap::ROUTE_REFRESH, Vec::new()));
    }
    if !c.extended_next_hop.is_empty() {
        let mut v = Vec::new();
        for (nlri, nh) in &c.extended_next_hop {
            v.extend_from_slice(&afi_code(*nlri).to_be_bytes());
            v.extend_from_slice(&1u16.to_be_bytes());
            v.extend_from_slice(&afi_code(*nh).to_be_bytes());
        }
        list.push((cap::EXTENDED_NEXT_HOP, v));
    }
    if let Some(gr) = &c.graceful_restart {
        if gr.restart_time > 0x0fff {
            return Err(EncodeError::Invalid("graceful restart time above 4095 s"));
        }
        let head = gr.restart_time | if gr.restarting { 0x8000 } else { 0 };
        let mut v = head.to_be_bytes().to_vec();
        for (afi, forwarding) in &gr.families {
            v.extend_from_slice(&afi_code(*afi).to_be_bytes());
            v.extend_from_slice(&[1, if *forwarding { 0x80 } else { 0 }]);
        }
        list.push((cap::GRACEFUL_RESTART, v));
    }
    if let Some(asn) = c.four_octet_as {
        list.push((cap::FOUR_OCTET_AS, asn.to_be_bytes().to_vec()));
    }
    if !c.add_path.is_empty() {
        let mut v = Vec::new();
        for (afi, mode) in &c.add_path {
            v.extend_from_slice(&afi_code(*afi).to_be_bytes());
            let mode = match mode {
                AddPathMode::Receive => 1,
                AddPathMode::Send => 2,
                AddPathMode::Both => 3,
            };
            v.extend_from_slice(&[1, mode]);
        }
        list.push((cap::ADD_PATH, v));
    }
    list.extend(c.unknown.iter().cloned());
    if list.iter().any(|(_, v)| v.len() > 253) {
        return Err(EncodeError::Invalid(
            "capability value longer than 253 octets",
        ));
    }
    Ok(list)
}

/// Appends the body of an OPEN.
pub(super) fn encode_open(open: &Open, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(open.version);
    out.extend_from_slice(&open.my_as.to_be_bytes());
    out.extend_from_slice(&open.hold_time.to_be_bytes());
    out.extend_from_slice(&open.bgp_id.octets());
    let caps = encode_capabilities(&open.capabilities)?;
    // Group into parameters of at most 255 octets.
    let mut params: Vec<u8> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for (code, value) in caps {
        if !current.is_empty() && current.len() + 2 + value.len() > 255 {
            params.extend_from_slice(&[PARAM_CAPABILITIES, current.len() as u8]);
            params.append(&mut current);
        }
        current.extend_from_slice(&[code, value.len() as u8]);
        current.extend_from_slice(&value);
    }
    if !current.is_empty() {
        params.extend_from_slice(&[PARAM_CAPABILITIES, current.len() as u8]);
        params.append(&mut current);
    }
    // A parameter list longer than 255 octets would need RFC 9072, which an OPEN cannot know
    // the peer supports.
    let opt_len = u8::try_from(params.len())
        .map_err(|_| EncodeError::Invalid("OPEN optional parameters longer than 255 octets"))?;
    out.push(opt_len);
    out.extend_from_slice(&params);
    Ok(())
}
