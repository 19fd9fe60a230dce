//! Nexthop objects (`RTM_NEWNEXTHOP`, Linux 5.3+): one per BGP next hop, shared by every
//! remote-block route through it (`RTA_NH_ID`).
//!
//! Why: a route given as `via G` makes the kernel build a fresh `fib_info` with its own per-CPU
//! route cache for every insertion, only to find an identical one and free it again; a route
//! given as `nhid N` points at the existing object. On 100,000 routes that was about a seventh
//! of `ip -batch`'s time (docs/benchmarks.md). It also lets a next hop move to another
//! interface with one replace of the object instead of one per route.
//!
//! Our objects carry our route protocol number, so they are told apart from anybody else's
//! (FRR uses them too). The kernel wants an output interface on a gateway nexthop, found here
//! by asking the kernel's own route lookup for the gateway; a gateway that is not directly
//! reachable gets no object, and its routes are written the classic way (and fail the same way
//! they would have). The kernel answers with netlink messages this module encodes by hand:
//! netlink-packet-route 0.34 has no nexthop messages.
//!
//! Deleting an object deletes every route through it, so [`prune`] is only called once the
//! routes are converged, with every gateway still wanted.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::kernel::KernelError;

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NHA_ID: u16 = 1;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// One nexthop object as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexthop {
    /// Its id (unique in the namespace, across protocols).
    pub id: u32,
    /// Protocol number of whoever made it.
    pub protocol: u8,
    /// The gateway, when it has one.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
}

/// A netlink route socket for these blocking request/answer exchanges.
pub fn socket() -> Result<Socket, KernelError> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    Ok(sock)
}

/// Writes a netlink header for a message of `len` bytes in all.
fn header(out: &mut Vec<u8>, len: u32, kind: u16, flags: u16, seq: u32) {
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
}

fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn family(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { AF_INET } else { AF_INET6 }
}

fn set_len(msg: &mut [u8]) {
    let len = msg.len() as u32;
    msg[..4].copy_from_slice(&len.to_ne_bytes());
}

/// The attributes of one netlink message body, from `from` on: (type, value).
fn attributes(body: &[u8], from: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = from;
    while off + 4 <= body.len() {
        let len = u16::from_ne_bytes([body[off], body[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([body[off + 2], body[off + 3]]) & 0x3fff;
        if len < 4 || off + len > body.len() {
            break;
        }
        out.push((kind, &body[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    out
}

fn parse_ip(fam: u8, v: &[u8]) -> Option<IpAddr> {
    match (fam, v.len()) {
        (AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
        (AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
        _ => None,
    }
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// Sends one request and returns the bodies (after the 16-byte header) of the answers with
/// their types, until the kernel's ACK, error or end of dump. A kernel error becomes `Err`.
fn exchange(sock: &Socket, msg: &[u8], seq: u32) -> Result<Vec<(u16, Vec<u8>)>, std::io::Error> {
    sock.send(msg, 0)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            if len < 16 || off + len > n {
                break;
            }
            let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            let their_seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
            let body = &buf[off + 16..off + len];
            off += (len + 3) & !3;
            if their_seq != seq {
                continue;
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(body[..4].try_into().unwrap());
                    return if code == 0 {
                        Ok(out)
                    } else {
                        Err(std::io::Error::from_raw_os_error(-code))
                    };
                }
                _ => out.push((kind, body.to_vec())),
            }
        }
    }
}

/// Every nexthop object in the namespace (anybody's).
pub fn list(sock: &Socket, seq: u32) -> Result<Vec<Nexthop>, KernelError> {
    let mut msg = Vec::with_capacity(24);
    header(
        &mut msg,
        24,
        RTM_GETNEXTHOP,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    );
    msg.extend_from_slice(&[0u8; 8]); // struct nhmsg, all families
    let answers = exchange(sock, &msg, seq)?;
    Ok(answers
        .into_iter()
        .filter(|(kind, body)| *kind == RTM_NEWNEXTHOP && body.len() >= 8)
        .filter_map(|(_, body)| {
            let fam = body[0];
            let protocol = body[2];
            let mut nh = Nexthop {
                id: 0,
                protocol,
                gateway: None,
                oif: None,
            };
            for (kind, v) in attributes(&body, 8) {
                match kind {
                    NHA_ID => nh.id = u32_of(v)?,
                    NHA_OIF => nh.oif = u32_of(v),
                    NHA_GATEWAY => nh.gateway = parse_ip(fam, v),
                    _ => {}
                }
            }
            (nh.id != 0).then_some(nh)
        })
        .collect())
}

/// The interface the kernel would send to `gateway` through, when it is directly reachable
/// (the answer has no gateway of its own).
fn direct_interface(sock: &Socket, gateway: IpAddr, seq: u32) -> Option<u32> {
    let mut msg = Vec::with_capacity(48);
    header(&mut msg, 0, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_ACK, seq);
    let bits = if gateway.is_ipv4() { 32 } else { 128 };
    msg.extend_from_slice(&[family(&gateway), bits, 0, 0, 0, 0, 0, 0]);
    msg.extend_from_slice(&0u32.to_ne_bytes());
    attr(&mut msg, RTA_DST, &ip_bytes(&gateway));
    set_len(&mut msg);
    let answers = exchange(sock, &msg, seq).ok()?;
    let (_, body) = answers.iter().find(|(k, _)| *k == RTM_NEWROUTE)?;
    let attrs = attributes(body, 12);
    if attrs.iter().any(|(k, _)| *k == RTA_GATEWAY) {
        return None;
    }
    attrs
        .iter()
        .find(|(k, _)| *k == RTA_OIF)
        .and_then(|(_, v)| u32_of(v))
}

fn write_nexthop(
    sock: &Socket,
    id: u32,
    gateway: IpAddr,
    oif: u32,
    protocol: u8,
    seq: u32,
) -> Result<(), std::io::Error> {
    let mut msg = Vec::with_capacity(48);
    header(
        &mut msg,
        0,
        RTM_NEWNEXTHOP,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    );
    // struct nhmsg: family, scope (universe), protocol, reserved, flags.
    msg.extend_from_slice(&[family(&gateway), 0, protocol, 0]);
    msg.extend_from_slice(&0u32.to_ne_bytes());
    attr(&mut msg, NHA_ID, &id.to_ne_bytes());
    attr(&mut msg, NHA_OIF, &oif.to_ne_bytes());
    attr(&mut msg, NHA_GATEWAY, &ip_bytes(&gateway));
    set_len(&mut msg);
    exchange(sock, &msg, seq).map(|_| ())
}

fn delete_nexthop(sock: &Socket, id: u32, seq: u32) -> Result<(), std::io::Error> {
    let mut msg = Vec::with_capacity(32);
    header(&mut msg, 0, RTM_DELNEXTHOP, NLM_F_REQUEST | NLM_F_ACK, seq);
    msg.extend_from_slice(&[0u8; 8]);
    attr(&mut msg, NHA_ID, &id.to_ne_bytes());
    set_len(&mut msg);
    exchange(sock, &msg, seq).map(|_| ())
}

/// Makes sure each of `gateways` has one of our nexthop objects with the interface the kernel
/// routes it through today (an object whose interface changed is replaced in place, which
/// moves every route through it at once). Returns gateway → id for the gateways that have one;
/// the others are left to classic routes.
pub fn ensure(
    sock: &Socket,
    protocol: u8,
    gateways: &BTreeSet<IpAddr>,
) -> Result<HashMap<IpAddr, u32>, KernelError> {
    let mut ids = HashMap::new();
    if gateways.is_empty() {
        return Ok(ids);
    }
    let mut seq = 0x8000_0000u32;
    let existing = list(sock, seq)?;
    let mut next_id = existing.iter().map(|n| n.id).max().unwrap_or(0) + 1;
    for gw in gateways {
        seq += 1;
        let Some(oif) = direct_interface(sock, *gw, seq) else {
            continue;
        };
        let ours = existing
            .iter()
            .find(|n| n.protocol == protocol && n.gateway == Some(*gw));
        if let Some(n) = ours
            && n.oif == Some(oif)
        {
            ids.insert(*gw, n.id);
            continue;
        }
        let id = ours.map_or_else(
            || {
                next_id += 1;
                next_id - 1
            },
            |n| n.id,
        );
        seq += 1;
        match write_nexthop(sock, id, *gw, oif, protocol, seq) {
            Ok(()) => {
                ids.insert(*gw, id);
            }
            Err(e) => {
                tracing::warn!(gateway = %gw, error = %e, "nexthop object not created; routes through it are written without one")
            }
        }
    }
    Ok(ids)
}

/// Deletes our nexthop objects whose gateway is not in `keep` (and with them any route of
/// ours still through them). Returns how many went.
pub fn prune(protocol: u8, keep: &BTreeSet<IpAddr>) -> Result<usize, KernelError> {
    let sock = socket()?;
    let mut seq = 0x9000_0000u32;
    let mut gone = 0;
    for n in list(&sock, seq)? {
        if n.protocol != protocol || n.gateway.is_some_and(|g| keep.contains(&g)) {
            continue;
        }
        seq += 1;
        match delete_nexthop(&sock, n.id, seq) {
            Ok(()) => gone += 1,
            Err(e) if e.raw_os_error() == Some(2) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(gone)
}

/// gateway of each of our objects, by id: for reading routes that name only their `nhid`
/// (when `net.ipv4.nexthop_compat_mode` is 0 the kernel leaves out the gateway).
pub fn gateways_by_id(protocol: u8) -> Result<HashMap<u32, IpAddr>, KernelError> {
    let sock = socket()?;
    Ok(list(&sock, 0xa000_0000)?
        .into_iter()
        .filter(|n| n.protocol == protocol)
        .filter_map(|n| Some((n.id, n.gateway?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_back_as_written() {
        let mut body = vec![0u8; 8];
        attr(&mut body, NHA_ID, &7u32.to_ne_bytes());
        attr(&mut body, NHA_GATEWAY, &[198, 18, 0, 2]);
        attr(&mut body, NHA_OIF, &3u32.to_ne_bytes());
        let got = attributes(&body, 8);
        assert_eq!(got.len(), 3);
        assert_eq!(u32_of(got[0].1), Some(7));
        assert_eq!(
            parse_ip(AF_INET, got[1].1),
            Some("198.18.0.2".parse().unwrap())
        );
        assert_eq!(u32_of(got[2].1), Some(3));
        // A truncated attribute ends the list instead of reading past it.
        body.truncate(body.len() - 2);
        assert_eq!(attributes(&body, 8).len(), 2);
    }
}
