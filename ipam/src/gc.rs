//! Garbage collection and consistency checks; the agent drives [`Ipam::gc_pass`] periodically
//! and `tortiectl ipam check` calls [`Ipam::check`].
//!
//! GC never trusts a single observation: an allocation is released only after its owner has been
//! seen gone for the whole grace period, its owner is checked again right before the release, and
//! the release is all-or-none per handle and conditional on the handle's addresses (with their
//! sequence numbers) being exactly what was inspected. A block is given back only after it was
//! seen empty on two consecutive passes, and never a node's last block while the node exists.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tortie_api::values::Cidr;
use tortie_api::{
    AffinityState, BlockAffinitySpec, IPAMBlockSpec, IPAMHandleSpec, IPPoolSpec, Kind,
};
use tortie_datastore::Change;

use crate::{Ipam, IpamError, block, host_affinity, names};

/// One allocated address and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationInfo {
    /// The address.
    pub ip: IpAddr,
    /// Its block.
    pub block: Cidr,
    /// The block's owner (`host:<node>`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_affinity: Option<String>,
    /// The holder.
    pub handle_id: String,
    /// Stored attributes (node, namespace, pod, …).
    pub attributes: BTreeMap<String, String>,
    /// Sequence number to quote when releasing by address.
    pub sequence_number: u64,
}

impl AllocationInfo {
    /// True when the address is not in a block affine to the node that holds it.
    pub fn is_borrowed(&self) -> bool {
        match (self.attributes.get(crate::attr::NODE), &self.block_affinity) {
            (Some(node), Some(aff)) => *aff != host_affinity(node),
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// What the caller knows about an allocation's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The owner exists: never release.
    Alive,
    /// The owner is gone: release after the grace period.
    Gone,
    /// Cannot tell (e.g. attributes missing): keep.
    Unknown,
}

/// Answers who still exists; implemented by the agent (pods, nodes) and by tests.
pub trait OwnerCheck {
    /// Whether the owner of this allocation still exists.
    fn allocation(&self, a: &AllocationInfo) -> Liveness;
    /// Whether a node still exists (a deleted node's last block may go too).
    fn node_exists(&self, _node: &str) -> bool {
        true
    }
}

/// What GC remembers between passes.
#[derive(Debug, Default)]
pub struct GcState {
    gone_since: HashMap<String, Instant>,
    empty_passes: HashMap<String, u32>,
    dangling_since: HashMap<String, Instant>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Handles released because their owner is gone.
    pub released_handles: Vec<String>,
    /// Addresses those handles held.
    pub released_addresses: usize,
    /// Handles whose owner is gone but still within the grace period.
    pub candidates: usize,
    /// Empty blocks given back to the pool.
    pub released_blocks: Vec<Cidr>,
    /// Affinities removed because their block does not exist.
    pub removed_affinities: Vec<String>,
}

/// One inconsistency found by [`Ipam::check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A short category: `leak`, `handle-without-addresses`, `index-mismatch`,
    /// `affinity-without-block`, `overlapping-blocks`, `outside-pools`, `block-corrupt`,
    /// `duplicate-address`.
    pub kind: &'static str,
    /// What exactly.
    pub detail: String,
}

impl Ipam {
    /// Every allocated address with its holder.
    pub async fn allocations(&self) -> Result<Vec<AllocationInfo>, IpamError> {
        let blocks = self.ds.list::<IPAMBlockSpec>(None).await?.items;
        Ok(blocks
            .iter()
            .flat_map(|b| {
                b.spec.allocations.iter().map(move |(o, a)| AllocationInfo {
                    ip: block::address_at(b.spec.cidr, *o),
                    block: b.spec.cidr,
                    block_affinity: b.spec.affinity.clone(),
                    handle_id: a.handle_id.clone(),
                    attributes: a.attributes.clone(),
                    sequence_number: a.sequence_number,
                })
            })
            .collect())
    }

    /// One garbage-collection pass (see the module docs).
    pub async fn gc_pass(
        &self,
        state: &mut GcState,
        owners: &(dyn OwnerCheck + Sync),
        grace: Duration,
    ) -> Result<GcReport, IpamError> {
        let mut report = GcReport::default();
        let now = Instant::now();

        // 1. Allocations whose owner is gone, per handle.
        let mut by_handle: BTreeMap<String, Vec<AllocationInfo>> = BTreeMap::new();
        for a in self.allocations().await? {
            by_handle.entry(a.handle_id.clone()).or_default().push(a);
        }
        state.gone_since.retain(|h, _| by_handle.contains_key(h));
        for (handle, allocs) in &by_handle {
            if !allocs
                .iter()
                .all(|a| owners.allocation(a) == Liveness::Gone)
            {
                state.gone_since.remove(handle);
                continue;
            }
            let since = *state.gone_since.entry(handle.clone()).or_insert(now);
            if now.duration_since(since) < grace {
                report.candidates += 1;
                continue;
            }
            // Re-check right before releasing: the owner may have come back.
            if !allocs
                .iter()
                .all(|a| owners.allocation(a) == Liveness::Gone)
            {
                state.gone_since.remove(handle);
                continue;
            }
            let expected: BTreeSet<(IpAddr, u64)> =
                allocs.iter().map(|a| (a.ip, a.sequence_number)).collect();
            if let Some(freed) = self.release_checked(handle, Some(&expected)).await? {
                report.released_addresses += freed.len();
                report.released_handles.push(handle.clone());
                state.gone_since.remove(handle);
            }
        }

        // 2. Empty blocks, after two consecutive empty observations; never a live node's last.
        let blocks = self.ds.list::<IPAMBlockSpec>(None).await?.items;
        let affinities = self.ds.list::<BlockAffinitySpec>(None).await?.items;
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for a in &affinities {
            if a.spec.state == AffinityState::Confirmed {
                *per_node.entry(a.spec.node.clone()).or_default() += 1;
            }
        }
        let names_now: BTreeSet<String> = blocks.iter().map(|b| b.metadata.name.clone()).collect();
        state.empty_passes.retain(|n, _| names_now.contains(n));
        for b in &blocks {
            if !b.spec.allocations.is_empty() {
                state.empty_passes.remove(&b.metadata.name);
                continue;
            }
            let node = b
                .spec
                .affinity
                .as_deref()
                .and_then(|a| a.strip_prefix("host:"))
                .map(str::to_string);
            if let Some(node) = &node
                && per_node.get(node).copied().unwrap_or(0) <= 1
                && owners.node_exists(node)
            {
                state.empty_passes.remove(&b.metadata.name);
                continue;
            }
            let passes = state
                .empty_passes
                .entry(b.metadata.name.clone())
                .or_insert(0);
            *passes += 1;
            if *passes < 2 {
                continue;
            }
            // The block (only if still exactly as seen: empty) and its affinity, together.
            let mut changes = vec![Change::Delete {
                kind: Kind::IPAMBlock,
                name: b.metadata.name.clone(),
                precondition: b.metadata.resource_version.clone(),
            }];
            if let Some(node) = &node
                && let Some(aff) = affinities
                    .iter()
                    .find(|a| a.spec.node == *node && a.spec.cidr == b.spec.cidr)
            {
                changes.push(Change::Delete {
                    kind: Kind::BlockAffinity,
                    name: aff.metadata.name.clone(),
                    precondition: aff.metadata.resource_version.clone(),
                });
            }
            match self.ds.write_all(changes).await {
                Ok(_) => {
                    report.released_blocks.push(b.spec.cidr);
                    state.empty_passes.remove(&b.metadata.name);
                    if let Some(node) = node {
                        *per_node.entry(node).or_default() -= 1;
                    }
                }
                Err(e) if crate::conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }

        // 3. Affinities without their block (a claim that died, or a block removed by hand).
        let blocks_now: HashMap<String, Option<String>> = self
            .ds
            .list::<IPAMBlockSpec>(None)
            .await?
            .items
            .into_iter()
            .map(|b| (b.metadata.name, b.spec.affinity))
            .collect();
        let aff_names: BTreeSet<String> =
            affinities.iter().map(|a| a.metadata.name.clone()).collect();
        state.dangling_since.retain(|n, _| aff_names.contains(n));
        for a in &affinities {
            let owned = blocks_now
                .get(&names::block_name(a.spec.cidr))
                .map(|aff| aff.as_deref() == Some(host_affinity(&a.spec.node).as_str()));
            if owned == Some(true) {
                state.dangling_since.remove(&a.metadata.name);
                continue;
            }
            // A claim may be between its phases: only remove what was already dangling on an
            // earlier pass and for at least the grace period.
            let since = *state
                .dangling_since
                .entry(a.metadata.name.clone())
                .or_insert(now);
            if since == now || now.duration_since(since) < grace {
                continue;
            }
            match self
                .ds
                .delete::<BlockAffinitySpec>(
                    &a.metadata.name,
                    a.metadata.resource_version.as_deref(),
                )
                .await
            {
                Ok(_) => {
                    report.removed_affinities.push(a.metadata.name.clone());
                    state.dangling_since.remove(&a.metadata.name);
                }
                Err(e) if crate::conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }

    /// Finds inconsistencies. `live_handles`, when given, is the set of handles whose owners
    /// exist (from a report or the agent): any other handle holding addresses is a leak.
    pub async fn check(
        &self,
        live_handles: Option<&BTreeSet<String>>,
    ) -> Result<Vec<Problem>, IpamError> {
        let mut problems = Vec::new();
        let mut push = |kind, detail: String| problems.push(Problem { kind, detail });
        let pools = self.ds.list::<IPPoolSpec>(None).await?.items;
        let blocks = self.ds.list::<IPAMBlockSpec>(None).await?.items;
        let handles = self.ds.list::<IPAMHandleSpec>(None).await?.items;
        let affinities = self.ds.list::<BlockAffinitySpec>(None).await?.items;

        let mut counts: BTreeMap<(String, String), u32> = BTreeMap::new();
        let mut seen_ips: HashMap<IpAddr, String> = HashMap::new();
        for b in &blocks {
            for p in block::check(&b.spec) {
                push("block-corrupt", format!("block {}: {p}", b.spec.cidr));
            }
            if !pools
                .iter()
                .any(|p| p.spec.cidr.net().contains(&b.spec.cidr.net()))
            {
                push(
                    "outside-pools",
                    format!("block {} is in no pool", b.spec.cidr),
                );
            }
            for (o, a) in &b.spec.allocations {
                let ip = block::address_at(b.spec.cidr, *o);
                if let Some(other) = seen_ips.insert(ip, a.handle_id.clone()) {
                    push(
                        "duplicate-address",
                        format!("{ip} is held by {other} and {}", a.handle_id),
                    );
                }
                *counts
                    .entry((a.handle_id.clone(), b.metadata.name.clone()))
                    .or_default() += 1;
                if let Some(live) = live_handles
                    && !live.contains(&a.handle_id)
                {
                    push(
                        "leak",
                        format!("{ip} is held by {} which has no live owner", a.handle_id),
                    );
                }
            }
        }
        for (i, a) in blocks.iter().enumerate() {
            for b in &blocks[i + 1..] {
                if a.spec.cidr.overlaps(&b.spec.cidr) {
                    push(
                        "overlapping-blocks",
                        format!("blocks {} and {} overlap", a.spec.cidr, b.spec.cidr),
                    );
                }
            }
        }
        let mut indexed: BTreeMap<(String, String), u32> = BTreeMap::new();
        for h in &handles {
            if h.spec.block.values().all(|c| *c == 0) {
                push(
                    "handle-without-addresses",
                    format!("handle {} holds no address", h.spec.handle_id),
                );
            }
            for (blk, c) in &h.spec.block {
                indexed.insert((h.spec.handle_id.clone(), blk.clone()), *c);
            }
        }
        for (key, n) in &counts {
            if indexed.get(key) != Some(n) {
                push(
                    "index-mismatch",
                    format!(
                        "handle {} has {n} addresses in block {} but its index says {:?}",
                        key.0,
                        key.1,
                        indexed.get(key)
                    ),
                );
            }
        }
        for (key, n) in &indexed {
            if !counts.contains_key(key) && *n > 0 {
                push(
                    "index-mismatch",
                    format!(
                        "handle {}'s index lists block {} where it holds nothing",
                        key.0, key.1
                    ),
                );
            }
        }
        let block_owner: HashMap<&str, Option<&str>> = blocks
            .iter()
            .map(|b| (b.metadata.name.as_str(), b.spec.affinity.as_deref()))
            .collect();
        for a in &affinities {
            match block_owner.get(names::block_name(a.spec.cidr).as_str()) {
                None => push(
                    "affinity-without-block",
                    format!(
                        "node {} has an affinity ({:?}) for block {} which does not exist",
                        a.spec.node, a.spec.state, a.spec.cidr
                    ),
                ),
                Some(owner) if *owner != Some(host_affinity(&a.spec.node).as_str()) => push(
                    "affinity-without-block",
                    format!(
                        "node {}'s affinity for block {} but the block belongs to {:?}",
                        a.spec.node, a.spec.cidr, owner
                    ),
                ),
                _ => {}
            }
        }
        Ok(problems)
    }
}
