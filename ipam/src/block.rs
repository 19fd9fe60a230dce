//! Pure operations on one block: no I/O, so they are unit- and property-tested directly and the
//! datastore driver only has to read a block, call one of these, and compare-and-swap it back.
//!
//! A block is a power-of-two range of a pool (`blockSize`, /26 by default). Addresses are
//! identified by their *ordinal*, the offset from the block's first address. Free ordinals form
//! a FIFO (`unallocated`): handing out pops from the front and releasing pushes to the back, so
//! the address that has been free the longest is reused first — a just-released address (whose
//! old conntrack entries or ARP caches may still linger) is reused last.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use tortie_api::values::Cidr;
use tortie_api::{Allocation, IPAMBlockSpec};

/// Largest block we handle: /20 for IPv4, /116 for IPv6 (4096 addresses), as the pool
/// validation allows.
pub const MAX_BLOCK_ADDRESSES: u32 = 4096;

/// Number of addresses in a block.
pub fn block_len(cidr: Cidr) -> u32 {
    let host_bits = u32::from(cidr.net().max_prefix_len() - cidr.prefix_len());
    1u32 << host_bits.min(12)
}

/// The address at `ordinal`.
pub fn address_at(cidr: Cidr, ordinal: u32) -> IpAddr {
    match cidr.net() {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + ordinal)),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(
            u128::from(n.network()) + u128::from(ordinal),
        )),
    }
}

/// The ordinal of `ip`, when it lies in the block.
pub fn ordinal_of(cidr: Cidr, ip: IpAddr) -> Option<u32> {
    if !cidr.net().contains(&ip) {
        return None;
    }
    let off = match (cidr.net(), ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => u128::from(u32::from(a) - u32::from(n.network())),
        (IpNet::V6(n), IpAddr::V6(a)) => u128::from(a) - u128::from(n.network()),
        _ => return None,
    };
    u32::try_from(off).ok().filter(|o| *o < block_len(cidr))
}

/// The block of `block_size` that contains `ip`.
pub fn containing_block(ip: IpAddr, block_size: u8) -> Option<Cidr> {
    IpNet::new(ip, block_size).ok().map(|n| Cidr(n.trunc()))
}

/// A new, empty block.
pub fn new_block(cidr: Cidr, affinity: Option<String>) -> IPAMBlockSpec {
    IPAMBlockSpec {
        cidr,
        affinity,
        allocations: BTreeMap::new(),
        unallocated: (0..block_len(cidr)).collect(),
        sequence_number: 0,
    }
}

/// One address handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Assigned {
    /// The address.
    pub ip: IpAddr,
    /// The block's sequence number at assignment (quote it to release by address).
    pub sequence_number: u64,
}

/// Hands out up to `count` free addresses, skipping those `reserved` says are not to be used.
/// Returns what was assigned (possibly fewer than asked, or none).
pub fn assign(
    block: &mut IPAMBlockSpec,
    count: usize,
    handle_id: &str,
    attributes: &BTreeMap<String, String>,
    reserved: impl Fn(IpAddr) -> bool,
) -> Vec<Assigned> {
    let cidr = block.cidr;
    let picks: Vec<usize> = block
        .unallocated
        .iter()
        .enumerate()
        .filter(|(_, o)| !reserved(address_at(cidr, **o)))
        .map(|(i, _)| i)
        .take(count)
        .collect();
    if picks.is_empty() {
        return Vec::new();
    }
    block.sequence_number += 1;
    let seq = block.sequence_number;
    let mut out = Vec::with_capacity(picks.len());
    // Remove from the back so earlier indices stay valid.
    for &i in picks.iter().rev() {
        let ordinal = block.unallocated.remove(i);
        block.allocations.insert(
            ordinal,
            Allocation {
                handle_id: handle_id.to_string(),
                attributes: attributes.clone(),
                sequence_number: seq,
            },
        );
        out.push(Assigned {
            ip: address_at(cidr, ordinal),
            sequence_number: seq,
        });
    }
    out.reverse();
    out
}

/// Why a specific address cannot be assigned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// Not in this block.
    #[error("{0} is not in block {1}")]
    OutsideBlock(IpAddr, Cidr),
    /// Held by another handle.
    #[error("{ip} is already in use by {handle_id}")]
    InUse {
        /// The address.
        ip: IpAddr,
        /// Its holder.
        handle_id: String,
    },
}

/// Assigns one specific address. Assigning an address already held by the same handle is a
/// success (idempotent retries).
pub fn assign_address(
    block: &mut IPAMBlockSpec,
    ip: IpAddr,
    handle_id: &str,
    attributes: &BTreeMap<String, String>,
) -> Result<Assigned, AssignError> {
    let ordinal = ordinal_of(block.cidr, ip).ok_or(AssignError::OutsideBlock(ip, block.cidr))?;
    if let Some(a) = block.allocations.get(&ordinal) {
        return if a.handle_id == handle_id {
            Ok(Assigned {
                ip,
                sequence_number: a.sequence_number,
            })
        } else {
            Err(AssignError::InUse {
                ip,
                handle_id: a.handle_id.clone(),
            })
        };
    }
    block.sequence_number += 1;
    let seq = block.sequence_number;
    block.unallocated.retain(|o| *o != ordinal);
    block.allocations.insert(
        ordinal,
        Allocation {
            handle_id: handle_id.to_string(),
            attributes: attributes.clone(),
            sequence_number: seq,
        },
    );
    Ok(Assigned {
        ip,
        sequence_number: seq,
    })
}

/// Frees every address of `handle_id` in the block; returns them (empty if none).
pub fn release_handle(block: &mut IPAMBlockSpec, handle_id: &str) -> Vec<IpAddr> {
    let ordinals: Vec<u32> = block
        .allocations
        .iter()
        .filter(|(_, a)| a.handle_id == handle_id)
        .map(|(o, _)| *o)
        .collect();
    free(block, &ordinals)
}

/// Outcome of a release by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressRelease {
    /// Freed; it belonged to this handle.
    Released {
        /// The former holder.
        handle_id: String,
    },
    /// Already free: nothing to do.
    AlreadyFree,
    /// Held under another sequence number: it was released and reused since; left alone.
    StaleSequence {
        /// The sequence number of the current holder.
        current: u64,
    },
}

/// Frees one address if `sequence_number` (when given) matches its current allocation.
pub fn release_address(
    block: &mut IPAMBlockSpec,
    ip: IpAddr,
    sequence_number: Option<u64>,
) -> AddressRelease {
    let Some(ordinal) = ordinal_of(block.cidr, ip) else {
        return AddressRelease::AlreadyFree;
    };
    let Some(a) = block.allocations.get(&ordinal) else {
        return AddressRelease::AlreadyFree;
    };
    if let Some(seq) = sequence_number
        && seq != a.sequence_number
    {
        return AddressRelease::StaleSequence {
            current: a.sequence_number,
        };
    }
    let handle_id = a.handle_id.clone();
    free(block, &[ordinal]);
    AddressRelease::Released { handle_id }
}

fn free(block: &mut IPAMBlockSpec, ordinals: &[u32]) -> Vec<IpAddr> {
    if ordinals.is_empty() {
        return Vec::new();
    }
    block.sequence_number += 1;
    ordinals
        .iter()
        .filter(|o| block.allocations.remove(o).is_some())
        .map(|o| {
            block.unallocated.push(*o);
            address_at(block.cidr, *o)
        })
        .collect()
}

/// Checks a block's internal consistency; returns what is wrong (empty when fine).
pub fn check(block: &IPAMBlockSpec) -> Vec<String> {
    let mut problems = Vec::new();
    let len = block_len(block.cidr);
    let mut seen = vec![false; len as usize];
    for o in block.unallocated.iter().chain(block.allocations.keys()) {
        match seen.get_mut(*o as usize) {
            None => problems.push(format!("ordinal {o} is outside block {}", block.cidr)),
            Some(true) => problems.push(format!(
                "{} is listed twice (free and/or allocated)",
                address_at(block.cidr, *o)
            )),
            Some(s) => *s = true,
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        problems.push(format!(
            "{} is neither free nor allocated",
            address_at(block.cidr, missing as u32)
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block(cidr: &str) -> IPAMBlockSpec {
        new_block(cidr.parse().unwrap(), Some("host:n1".into()))
    }

    fn no_reservations(_: IpAddr) -> bool {
        false
    }

    #[test]
    fn arithmetic() {
        let c: Cidr = "10.244.1.64/26".parse().unwrap();
        assert_eq!(block_len(c), 64);
        assert_eq!(address_at(c, 5).to_string(), "10.244.1.69");
        assert_eq!(ordinal_of(c, "10.244.1.127".parse().unwrap()), Some(63));
        assert_eq!(ordinal_of(c, "10.244.1.128".parse().unwrap()), None);
        let c6: Cidr = "fd00:10::40/122".parse().unwrap();
        assert_eq!(block_len(c6), 64);
        assert_eq!(address_at(c6, 1).to_string(), "fd00:10::41");
        assert_eq!(ordinal_of(c6, "10.0.0.1".parse().unwrap()), None);
        assert_eq!(
            containing_block("10.244.1.70".parse().unwrap(), 26)
                .unwrap()
                .to_string(),
            "10.244.1.64/26"
        );
    }

    #[test]
    fn least_recently_freed_is_reused_first() {
        let mut b = block("10.0.0.0/30");
        let attrs = BTreeMap::new();
        let got = assign(&mut b, 4, "h1", &attrs, no_reservations);
        assert_eq!(got.len(), 4);
        assert!(
            assign(&mut b, 1, "h2", &attrs, no_reservations).is_empty(),
            "block full"
        );
        // Free .2 then .0: .2 has been free longer, so it comes back first.
        assert!(matches!(
            release_address(&mut b, "10.0.0.2".parse().unwrap(), None),
            AddressRelease::Released { .. }
        ));
        release_address(&mut b, "10.0.0.0".parse().unwrap(), None);
        let again = assign(&mut b, 1, "h3", &attrs, no_reservations);
        assert_eq!(again[0].ip.to_string(), "10.0.0.2");
        assert!(check(&b).is_empty());
    }

    #[test]
    fn stale_sequence_cannot_free_a_reused_address() {
        let mut b = block("10.0.0.0/30");
        let attrs = BTreeMap::new();
        let a = assign(&mut b, 1, "pod-a", &attrs, no_reservations)[0];
        assert_eq!(release_handle(&mut b, "pod-a"), vec![a.ip]);
        // Fill the block so the same address comes back to pod B.
        let b_addrs = assign(&mut b, 4, "pod-b", &attrs, no_reservations);
        assert!(b_addrs.iter().any(|x| x.ip == a.ip));
        let r = release_address(&mut b, a.ip, Some(a.sequence_number));
        assert!(matches!(r, AddressRelease::StaleSequence { .. }), "{r:?}");
        assert_eq!(b.allocations.len(), 4);
        assert_eq!(release_address(&mut b, a.ip, Some(a.sequence_number)), r);
    }

    #[test]
    fn reservations_are_skipped_and_specific_addresses() {
        let mut b = block("10.0.0.0/29");
        let attrs = BTreeMap::new();
        let reserved = |ip: IpAddr| ip.to_string() == "10.0.0.0" || ip.to_string() == "10.0.0.1";
        let got = assign(&mut b, 2, "h", &attrs, reserved);
        assert_eq!(
            got.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>(),
            ["10.0.0.2", "10.0.0.3"]
        );
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let x = assign_address(&mut b, ip, "h2", &attrs).unwrap();
        assert_eq!(
            assign_address(&mut b, ip, "h2", &attrs).unwrap(),
            x,
            "idempotent"
        );
        assert!(matches!(
            assign_address(&mut b, ip, "h3", &attrs),
            Err(AssignError::InUse { .. })
        ));
        assert!(assign_address(&mut b, "10.0.1.0".parse().unwrap(), "h", &attrs).is_err());
        assert!(check(&b).is_empty());
    }

    #[derive(Debug, Clone)]
    enum BlockOp {
        Assign(usize, u8),
        AssignAt(u8, u8),
        ReleaseHandle(u8),
        ReleaseAt(u8, bool),
    }

    fn op() -> impl Strategy<Value = BlockOp> {
        prop_oneof![
            (1usize..6, 0u8..4).prop_map(|(n, h)| BlockOp::Assign(n, h)),
            (0u8..16, 0u8..4).prop_map(|(o, h)| BlockOp::AssignAt(o, h)),
            (0u8..4).prop_map(BlockOp::ReleaseHandle),
            (0u8..16, any::<bool>()).prop_map(|(o, s)| BlockOp::ReleaseAt(o, s)),
        ]
    }

    proptest! {
        /// Any sequence of operations keeps every ordinal exactly once (free or allocated) and
        /// agrees with a simple model of who holds what.
        #[test]
        fn block_stays_consistent(ops in prop::collection::vec(op(), 0..80)) {
            let mut b = block("10.0.0.0/28");
            let attrs = BTreeMap::new();
            let mut model: BTreeMap<IpAddr, (String, u64)> = BTreeMap::new();
            for op in ops {
                match op {
                    BlockOp::Assign(n, h) => {
                        let free = 16 - model.len();
                        let got = assign(&mut b, n, &format!("h{h}"), &attrs, no_reservations);
                        prop_assert_eq!(got.len(), n.min(free));
                        for a in got {
                            let holder = format!("h{h}");
                            prop_assert!(model.insert(a.ip, (holder, a.sequence_number)).is_none(), "assigned twice");
                        }
                    }
                    BlockOp::AssignAt(o, h) => {
                        let ip = address_at(b.cidr, u32::from(o));
                        let r = assign_address(&mut b, ip, &format!("h{h}"), &attrs);
                        match model.get(&ip) {
                            Some((holder, _)) if *holder != format!("h{h}") => prop_assert!(r.is_err()),
                            _ => { let a = r.unwrap(); model.insert(ip, (format!("h{h}"), a.sequence_number)); }
                        }
                    }
                    BlockOp::ReleaseHandle(h) => {
                        let mut freed = release_handle(&mut b, &format!("h{h}"));
                        freed.sort();
                        let want: Vec<IpAddr> = model.iter().filter(|(_, (x, _))| *x == format!("h{h}")).map(|(ip, _)| *ip).collect();
                        model.retain(|_, (x, _)| *x != format!("h{h}"));
                        prop_assert_eq!(freed, want);
                    }
                    BlockOp::ReleaseAt(o, use_seq) => {
                        let ip = address_at(b.cidr, u32::from(o));
                        let seq = model.get(&ip).map(|(_, s)| if use_seq { *s } else { s + 1000 });
                        let r = release_address(&mut b, ip, seq);
                        match (model.get(&ip), use_seq) {
                            (None, _) => prop_assert_eq!(r, AddressRelease::AlreadyFree),
                            (Some(_), true) => { prop_assert!(matches!(r, AddressRelease::Released { .. }), "{:?}", r); model.remove(&ip); }
                            (Some(_), false) => prop_assert!(matches!(r, AddressRelease::StaleSequence { .. }), "{:?}", r),
                        }
                    }
                }
                prop_assert!(check(&b).is_empty(), "{:?}", check(&b));
                prop_assert_eq!(b.allocations.len(), model.len());
            }
        }
    }
}
