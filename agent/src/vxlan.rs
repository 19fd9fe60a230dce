//! VXLAN for pools with `vxlanMode: Always` or `CrossSubnet` (Calico's layout).
//!
//! Each node has one device, `vxlan.tortie` (VNI 4096, UDP 4789, no learning), with a tunnel
//! address from a VXLAN pool (IPAM handle `vxlan-tunnel-addr-<node>`) and a MAC derived from the
//! node's name; both are published on its `Node`. For every other node the device gets a
//! permanent neighbour entry (tunnel address → MAC) and an FDB entry (MAC → underlay address),
//! so nothing is learned or flooded. A remote block then routes `via <tunnel address> dev
//! vxlan.tortie onlink` — or, in CrossSubnet mode, straight via the node's underlay address when
//! that is in our own subnet, with no encapsulation at all.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use rtnetlink::{Handle, LinkVxlan};

use crate::kernel::KernelError;

/// The device's name.
pub const DEVICE: &str = "vxlan.tortie";
/// VXLAN network identifier (Calico's).
pub const VNI: u32 = 4096;
/// UDP port (IANA's).
pub const PORT: u16 = 4789;
/// Encapsulation overhead: outer IPv4 + UDP + VXLAN + inner Ethernet.
pub const OVERHEAD: u32 = 50;

fn nl(what: &str) -> impl FnOnce(rtnetlink::Error) -> KernelError + '_ {
    move |source| KernelError::Netlink {
        what: what.to_string(),
        source,
    }
}

/// A stable, locally administered unicast MAC for `node`'s device (FNV-1a of the name).
pub fn mac_for(node: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x66, b[1], b[2], b[3], b[4], b[5]]
}

/// `aa:bb:…`.
pub fn mac_string(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// Creates the device if it is missing (kept as is otherwise), brings it up, gives it
/// `tunnel_addr/32`. Returns its index.
pub async fn ensure_device(
    h: &Handle,
    underlay: Ipv4Addr,
    tunnel_addr: Ipv4Addr,
    mac: [u8; 6],
    mtu: u32,
) -> Result<u32, KernelError> {
    let existing = h
        .link()
        .get()
        .match_name(DEVICE)
        .execute()
        .try_next()
        .await
        .ok()
        .flatten();
    let index = match existing {
        Some(l) => l.header.index,
        None => {
            let msg = LinkVxlan::new(DEVICE, VNI)
                .port(PORT)
                .local(underlay)
                .learning(false)
                .mtu(mtu)
                .address(mac.to_vec())
                .up()
                .build();
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(nl("create the VXLAN device"))?;
            h.link()
                .get()
                .match_name(DEVICE)
                .execute()
                .try_next()
                .await
                .map_err(nl("find the VXLAN device"))?
                .map(|l| l.header.index)
                .ok_or_else(|| KernelError::Io(std::io::Error::other("VXLAN device vanished")))?
        }
    };
    h.link()
        .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("bring the VXLAN device up"))?;
    let mut add = h
        .address()
        .add(index, IpAddr::V4(tunnel_addr), 32)
        .replace();
    let _ = &mut add;
    add.execute()
        .await
        .map_err(nl("give the VXLAN device its tunnel address"))?;
    Ok(index)
}

/// Makes `remote` reachable through the device: tunnel address → MAC (ARP), MAC → underlay
/// address (FDB). Both are replaced, so a node that moved is followed.
pub async fn ensure_peer(
    h: &Handle,
    index: u32,
    tunnel_addr: Ipv4Addr,
    mac: [u8; 6],
    underlay: Ipv4Addr,
) -> Result<(), KernelError> {
    h.neighbours()
        .add(index, IpAddr::V4(tunnel_addr))
        .link_layer_address(&mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(nl("add the VXLAN neighbour"))?;
    h.neighbours()
        .add_bridge(index, &mac)
        .destination(IpAddr::V4(underlay))
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(nl("add the VXLAN forwarding entry"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_local_unicast_and_round_trip() {
        let a = mac_for("node-1");
        assert_eq!(a, mac_for("node-1"));
        assert_ne!(a, mac_for("node-2"));
        assert_eq!(a[0] & 0x03, 0x02, "locally administered, unicast");
        assert_eq!(parse_mac(&mac_string(&a)), Some(a));
        assert_eq!(parse_mac("zz:00:00:00:00:00"), None);
        assert_eq!(parse_mac("66:00:00:00:00"), None);
    }
}
