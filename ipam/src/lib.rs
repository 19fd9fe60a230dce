//! # tortie-ipam: block IPAM
//!
//! Pools are cut into blocks (`pool.blockSize`, /26 and /122 by default); a block is *affine* to
//! one node, which routes the whole block; pods get single addresses from their node's blocks.
//! The semantics are Calico's (see `docs/architecture.md`), without its leaks:
//!
//! - **Allocation order**: the node's confirmed blocks; else claim a free block; else, unless
//!   `strictAffinity`, borrow one address from another block.
//! - **Two-phase claim**: affinity `pending` → block created → affinity `confirmed`. A crash at any
//!   point leaves either nothing routed (a pending affinity, which routing ignores) or a block
//!   owned by the node; the node's next allocation (or GC) finishes or rolls the claim back.
//! - **Every write is a compare-and-swap**, and each one that allocates or frees an address
//!   also updates the handle index **in the same transaction**, so the index and the blocks can
//!   never disagree; a lost race re-reads and retries, at most [`MAX_ATTEMPTS`] times.
//! - **Handles** (`IPAMHandle`) index which blocks hold a handle's addresses, so a release by
//!   handle touches only those blocks and never scans.
//! - **Sequence numbers**: an address released by address must quote the sequence number it was
//!   handed out with, so a stale release cannot free it after reuse.
//!
//! [`block`] holds the pure per-block logic; this module reads, decides, and writes.

pub mod block;
pub mod gc;
pub mod names;
pub mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tortie_api::values::Cidr;
use tortie_api::{
    AffinityState, AllowedUse, BlockAffinity, BlockAffinitySpec, IPAMBlock, IPAMBlockSpec,
    IPAMConfigurationSpec, IPAMHandleSpec, IPPool, IPPoolSpec, IPReservationSpec, NodeSpec, Object,
};
use tortie_datastore::{Change, Datastore, Error as DsError};

pub use block::Assigned;

/// How many times one operation re-reads and retries after losing a compare-and-swap race.
pub const MAX_ATTEMPTS: u32 = 100;

/// Attribute keys stored with every allocation.
pub mod attr {
    /// The node that asked.
    pub const NODE: &str = "node";
    /// Pod namespace.
    pub const NAMESPACE: &str = "namespace";
    /// Pod name.
    pub const POD: &str = "pod";
    /// Pod UID, when known.
    pub const POD_UID: &str = "podUID";
    /// Container interface.
    pub const INTERFACE: &str = "interface";
    /// RFC 3339 time of allocation.
    pub const TIMESTAMP: &str = "timestamp";
    /// `vxlanTunnelAddress` for tunnel addresses.
    pub const TYPE: &str = "type";
}

/// IPAM failures, each with a message a person can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IpamError {
    /// The request itself is wrong.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No pool may be used for this request.
    #[error("no usable {family} pool for node {node:?}: {why}")]
    NoPool {
        /// IPv4 or IPv6.
        family: &'static str,
        /// The node.
        node: String,
        /// Why each pool was rejected.
        why: String,
    },
    /// The pools are full for this node.
    #[error("{0}")]
    Exhausted(String),
    /// A specific address is taken.
    #[error("{0}")]
    AddressInUse(String),
    /// A release quoted an old sequence number: the address was reused.
    #[error(
        "{ip} was not released: sequence number {given} is stale (current {current}); it was released and handed out again since"
    )]
    StaleSequence {
        /// The address.
        ip: IpAddr,
        /// What the caller quoted.
        given: u64,
        /// The current holder's.
        current: u64,
    },
    /// Too much contention.
    #[error("gave up after {MAX_ATTEMPTS} attempts: the blocks kept changing underneath")]
    Contended,
    /// The datastore failed.
    #[error("datastore: {0}")]
    Datastore(#[from] DsError),
}

/// What to allocate.
#[derive(Debug, Clone, Default)]
pub struct AllocateRequest {
    /// `<network>.<containerID>`.
    pub handle_id: String,
    /// The node asking (its blocks are used first).
    pub node: String,
    /// Stored with each address; `node` and `timestamp` are filled in when absent.
    pub attributes: BTreeMap<String, String>,
    /// IPv4 addresses wanted.
    pub num_ipv4: u32,
    /// IPv6 addresses wanted.
    pub num_ipv6: u32,
    /// Only these pools (by name); empty means every usable pool.
    pub pools: Vec<String>,
    /// Specific addresses wanted (in addition to the counts).
    pub addresses: Vec<IpAddr>,
    /// What the addresses are for (pools filter on `allowedUses`).
    pub usage: Option<AllowedUse>,
}

/// One allocated address with its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    /// The address.
    pub ip: IpAddr,
    /// Its block.
    pub block: Cidr,
    /// The pool it came from.
    pub pool: String,
    /// Quote this to release by address.
    pub sequence_number: u64,
}

/// Entry point to IPAM over a datastore.
#[derive(Clone)]
pub struct Ipam {
    ds: Datastore,
    /// One allocation at a time per node within this process: concurrent requests of one node
    /// would otherwise all race for the same block and mostly lose their compare-and-swap.
    /// Races between nodes (processes) are still settled by compare-and-swap.
    node_locks: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    >,
}

/// What `allocate` needs to know about the cluster, read once per attempt.
struct Snapshot {
    config: IPAMConfigurationSpec,
    pools: Vec<IPPool>,
    reserved: Vec<Cidr>,
    node_labels: BTreeMap<String, String>,
}

impl Snapshot {
    fn is_reserved(&self, ip: IpAddr) -> bool {
        self.reserved.iter().any(|r| r.net().contains(&ip))
    }
}

fn conflict(e: &DsError) -> bool {
    matches!(
        e.root(),
        DsError::Conflict { .. } | DsError::AlreadyExists { .. } | DsError::NotFound { .. }
    )
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The pending → block → confirmed handshake's affinity value on a block.
pub fn host_affinity(node: &str) -> String {
    format!("host:{node}")
}

impl Ipam {
    /// IPAM over `ds`.
    pub fn new(ds: Datastore) -> Self {
        Ipam {
            ds,
            node_locks: Default::default(),
        }
    }

    fn node_lock(&self, node: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.node_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(node.to_string()).or_default().clone()
    }

    /// The datastore.
    pub fn datastore(&self) -> &Datastore {
        &self.ds
    }

    async fn snapshot(&self, node: &str) -> Result<Snapshot, IpamError> {
        let config = self
            .ds
            .get::<IPAMConfigurationSpec>("default")
            .await?
            .map(|c| c.spec)
            .unwrap_or_default();
        let pools = self.ds.list::<IPPoolSpec>(None).await?.items;
        let reserved = self
            .ds
            .list::<IPReservationSpec>(None)
            .await?
            .items
            .into_iter()
            .flat_map(|r| r.spec.reserved_cidrs)
            .collect();
        let node_labels = self
            .ds
            .get::<NodeSpec>(node)
            .await?
            .map(|n| n.metadata.labels)
            .unwrap_or_default();
        Ok(Snapshot {
            config,
            pools,
            reserved,
            node_labels,
        })
    }

    /// Pools of one family this request may use, or why none.
    fn usable_pools<'a>(
        snap: &'a Snapshot,
        req: &AllocateRequest,
        v4: bool,
    ) -> Result<Vec<&'a IPPool>, IpamError> {
        let usage = req.usage.unwrap_or(AllowedUse::Workload);
        let mut why = Vec::new();
        let mut out = Vec::new();
        for p in &snap.pools {
            let name = &p.metadata.name;
            if p.spec.cidr.is_ipv4() != v4 {
                continue;
            }
            if !req.pools.is_empty() && !req.pools.contains(name) {
                continue;
            }
            if p.spec.disabled {
                why.push(format!("{name} is disabled"));
            } else if !p.spec.allowed_uses.contains(&usage) {
                why.push(format!("{name} does not allow {usage:?}"));
            } else if !p.spec.node_selector.matches(&snap.node_labels) {
                why.push(format!(
                    "{name}'s nodeSelector {:?} does not match the node",
                    p.spec.node_selector.as_str()
                ));
            } else {
                out.push(p);
            }
        }
        for wanted in &req.pools {
            if !snap.pools.iter().any(|p| &p.metadata.name == wanted) {
                why.push(format!("pool {wanted} does not exist"));
            }
        }
        if out.is_empty() {
            if why.is_empty() {
                why.push("no pool of this family exists".into());
            }
            return Err(IpamError::NoPool {
                family: if v4 { "IPv4" } else { "IPv6" },
                node: req.node.clone(),
                why: why.join("; "),
            });
        }
        Ok(out)
    }

    /// Allocates what `req` asks for, all or nothing: if any part fails (one family of a
    /// dual-stack request, one specific address), what was already assigned is released.
    pub async fn allocate(&self, req: &AllocateRequest) -> Result<Vec<Allocated>, IpamError> {
        if req.handle_id.is_empty() || req.node.is_empty() {
            return Err(IpamError::InvalidRequest(
                "handle and node are required".into(),
            ));
        }
        if req.num_ipv4 == 0 && req.num_ipv6 == 0 && req.addresses.is_empty() {
            return Err(IpamError::InvalidRequest(
                "nothing to allocate: ask for IPv4 and/or IPv6 addresses".into(),
            ));
        }
        let mut attrs = req.attributes.clone();
        attrs
            .entry(attr::NODE.into())
            .or_insert_with(|| req.node.clone());
        attrs
            .entry(attr::TIMESTAMP.into())
            .or_insert_with(now_rfc3339);

        let lock = self.node_lock(&req.node);
        let _serialized = lock.lock().await;
        let mut done: Vec<Allocated> = Vec::new();
        let result = async {
            for ip in &req.addresses {
                done.push(self.allocate_address(req, &attrs, *ip).await?);
            }
            for (v4, n) in [(true, req.num_ipv4), (false, req.num_ipv6)] {
                if n > 0 {
                    // Appends as it commits, so that a failure part-way is rolled back below.
                    self.allocate_family(req, &attrs, v4, n as usize, &mut done)
                        .await?;
                }
            }
            Ok::<_, IpamError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(done),
            Err(e) => {
                // Half a success is a failure: give back what this request got.
                if !done.is_empty() {
                    let back: Vec<(IpAddr, Option<u64>)> = done
                        .iter()
                        .map(|a| (a.ip, Some(a.sequence_number)))
                        .collect();
                    if let Err(undo) = self.release_addresses(&back).await {
                        tracing::error!(handle = %req.handle_id, error = %undo, "rolling back a partial allocation failed; GC will reclaim it");
                    }
                }
                Err(e)
            }
        }
    }

    async fn allocate_family(
        &self,
        req: &AllocateRequest,
        attrs: &BTreeMap<String, String>,
        v4: bool,
        want: usize,
        done: &mut Vec<Allocated>,
    ) -> Result<(), IpamError> {
        let before = done.len();
        for _ in 0..MAX_ATTEMPTS {
            let snap = self.snapshot(&req.node).await?;
            let pools = Self::usable_pools(&snap, req, v4)?;
            let in_pools = |c: &Cidr| {
                pools
                    .iter()
                    .find(|p| p.spec.cidr.net().contains(&c.net().network()))
            };

            // 1. The node's own blocks (finishing any claim a crash left half-done).
            let mine = self.node_affinities(&req.node).await?;
            let mut confirmed = Vec::new();
            for aff in &mine {
                if in_pools(&aff.spec.cidr).is_none() {
                    continue;
                }
                match aff.spec.state {
                    AffinityState::Confirmed => confirmed.push(aff.spec.cidr),
                    AffinityState::Pending => {
                        if let Some(c) = self.finish_claim(&req.node, aff).await? {
                            confirmed.push(c);
                        }
                    }
                    AffinityState::PendingDeletion => {}
                }
            }
            confirmed.sort();
            let mut raced = false;
            for cidr in &confirmed {
                let pool = in_pools(cidr).expect("filtered above");
                match self
                    .assign_in_block(
                        *cidr,
                        pool,
                        req,
                        attrs,
                        want - (done.len() - before),
                        &snap,
                        Some(&req.node),
                    )
                    .await?
                {
                    Some(more) => done.extend(more),
                    None => {
                        raced = true;
                        break;
                    }
                }
                if done.len() - before == want {
                    return Ok(());
                }
            }
            if raced {
                continue;
            }

            // 2. Claim a new block.
            let owned = mine
                .iter()
                .filter(|a| a.spec.state != AffinityState::PendingDeletion)
                .count() as u32;
            let cap = snap.config.max_blocks_per_host;
            if snap.config.auto_allocate_blocks && (cap == 0 || owned < cap) {
                match self.claim_block(&req.node, &pools, &snap).await? {
                    ClaimOutcome::Claimed | ClaimOutcome::Raced => continue,
                    ClaimOutcome::NoFreeBlock => {}
                }
            }

            // 3. Borrow from another node's block.
            if !snap.config.strict_affinity {
                let raced = !self
                    .borrow(
                        &pools,
                        req,
                        attrs,
                        want - (done.len() - before),
                        &snap,
                        done,
                    )
                    .await?;
                if done.len() - before == want {
                    return Ok(());
                }
                if raced {
                    continue;
                }
            }
            let family = if v4 { "IPv4" } else { "IPv6" };
            let names: Vec<&str> = pools.iter().map(|p| p.metadata.name.as_str()).collect();
            let why = if cap != 0 && owned >= cap {
                format!(
                    "node {} already owns {owned} blocks (maxBlocksPerHost {cap})",
                    req.node
                )
            } else {
                "every block is claimed and full".into()
            };
            let detail = self.utilisation_message(&pools).await?;
            return Err(IpamError::Exhausted(format!(
                "no free {family} address for node {} in pool {}: {why}{}; {detail}",
                req.node,
                names.join(", "),
                if snap.config.strict_affinity {
                    " and strictAffinity forbids borrowing"
                } else {
                    ""
                },
            )));
        }
        Err(IpamError::Contended)
    }

    async fn utilisation_message(&self, pools: &[&IPPool]) -> Result<String, IpamError> {
        let blocks = self.ds.list::<IPAMBlockSpec>(None).await?.items;
        let mut parts = Vec::new();
        for p in pools {
            let bs = p.spec.effective_block_size();
            let total = 1u64 << u32::from(bs - p.spec.cidr.prefix_len()).min(40);
            let mine: Vec<_> = blocks
                .iter()
                .filter(|b| p.spec.cidr.net().contains(&b.spec.cidr.net().network()))
                .collect();
            let free: usize = mine.iter().map(|b| b.spec.unallocated.len()).sum();
            parts.push(format!(
                "pool {}: {} of {total} blocks claimed, {free} free addresses in them",
                p.metadata.name,
                mine.len()
            ));
        }
        Ok(parts.join("; "))
    }

    /// Finishes or rolls back every half-done claim of `node` (a crash between the phases);
    /// the agent calls it at start-up. Returns the blocks now confirmed.
    pub async fn recover_node(&self, node: &str) -> Result<Vec<Cidr>, IpamError> {
        let mut confirmed = Vec::new();
        for aff in self.node_affinities(node).await? {
            if aff.spec.state == AffinityState::Pending
                && let Some(c) = self.finish_claim(node, &aff).await?
            {
                confirmed.push(c);
            }
        }
        Ok(confirmed)
    }

    /// The node's affinities.
    pub async fn node_affinities(&self, node: &str) -> Result<Vec<BlockAffinity>, IpamError> {
        Ok(self
            .ds
            .list::<BlockAffinitySpec>(None)
            .await?
            .items
            .into_iter()
            .filter(|a| a.spec.node == node)
            .collect())
    }

    /// Finishes (or rolls back) a pending claim; returns the block when it is now confirmed.
    async fn finish_claim(
        &self,
        node: &str,
        aff: &BlockAffinity,
    ) -> Result<Option<Cidr>, IpamError> {
        let cidr = aff.spec.cidr;
        let block = self
            .ds
            .get::<IPAMBlockSpec>(&names::block_name(cidr))
            .await?;
        let mut changes = Vec::new();
        match block {
            None => {
                // Crash after phase 1: do phase 2 and 3 together.
                changes.push(Change::Create(
                    Object::new(
                        names::block_name(cidr),
                        block::new_block(cidr, Some(host_affinity(node))),
                    )
                    .into(),
                ));
            }
            Some(b) if b.spec.affinity.as_deref() == Some(host_affinity(node).as_str()) => {}
            Some(_) => {
                // Someone else's block: our claim lost; drop it.
                let _ = self
                    .ds
                    .delete::<BlockAffinitySpec>(
                        &aff.metadata.name,
                        aff.metadata.resource_version.as_deref(),
                    )
                    .await;
                return Ok(None);
            }
        }
        let mut confirmed = aff.clone();
        confirmed.spec.state = AffinityState::Confirmed;
        changes.push(Change::Replace(confirmed.into()));
        match self.ds.write_all(changes).await {
            Ok(_) => Ok(Some(cidr)),
            Err(e) if conflict(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Assigns up to `want` addresses in one block and commits. `Ok(None)`: lost a race, retry.
    #[allow(clippy::too_many_arguments)]
    async fn assign_in_block(
        &self,
        cidr: Cidr,
        pool: &IPPool,
        req: &AllocateRequest,
        attrs: &BTreeMap<String, String>,
        want: usize,
        snap: &Snapshot,
        owner: Option<&str>,
    ) -> Result<Option<Vec<Allocated>>, IpamError> {
        let Some(mut blk) = self
            .ds
            .get::<IPAMBlockSpec>(&names::block_name(cidr))
            .await?
        else {
            return Ok(None);
        };
        if let Some(node) = owner
            && blk.spec.affinity.as_deref() != Some(host_affinity(node).as_str())
        {
            return Ok(Some(Vec::new()));
        }
        let assigned = block::assign(&mut blk.spec, want, &req.handle_id, attrs, |ip| {
            snap.is_reserved(ip)
        });
        if assigned.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let handle_change = self
            .handle_delta(
                &req.handle_id,
                &names::block_name(cidr),
                assigned.len() as i64,
            )
            .await?;
        match self
            .ds
            .write_all(vec![Change::Replace(blk.into()), handle_change])
            .await
        {
            Ok(_) => Ok(Some(
                assigned
                    .into_iter()
                    .map(|a| Allocated {
                        ip: a.ip,
                        block: cidr,
                        pool: pool.metadata.name.clone(),
                        sequence_number: a.sequence_number,
                    })
                    .collect(),
            )),
            Err(e) if conflict(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The change to the handle index for `delta` more (or fewer) addresses in `block`.
    async fn handle_delta(
        &self,
        handle_id: &str,
        block: &str,
        delta: i64,
    ) -> Result<Change, IpamError> {
        let name = names::handle_name(handle_id);
        Ok(match self.ds.get::<IPAMHandleSpec>(&name).await? {
            Some(mut h) => {
                if h.spec.handle_id != handle_id {
                    return Err(IpamError::InvalidRequest(format!(
                        "handle {handle_id:?} collides with {:?} (same storage name {name}); use another handle",
                        h.spec.handle_id
                    )));
                }
                let count = h.spec.block.entry(block.to_string()).or_insert(0);
                *count = (i64::from(*count) + delta).max(0) as u32;
                if *count == 0 {
                    h.spec.block.remove(block);
                }
                if h.spec.block.is_empty() {
                    Change::Delete {
                        kind: tortie_api::Kind::IPAMHandle,
                        name,
                        precondition: h.metadata.resource_version.clone(),
                    }
                } else {
                    Change::Replace(h.into())
                }
            }
            None => {
                let mut spec = IPAMHandleSpec {
                    handle_id: handle_id.to_string(),
                    ..Default::default()
                };
                if delta > 0 {
                    spec.block.insert(block.to_string(), delta as u32);
                }
                Change::Create(Object::new(name, spec).into())
            }
        })
    }

    /// Claims a free block for `node` from `pools` (two-phase).
    async fn claim_block(
        &self,
        node: &str,
        pools: &[&IPPool],
        snap: &Snapshot,
    ) -> Result<ClaimOutcome, IpamError> {
        let existing: BTreeSet<String> = self
            .ds
            .list::<IPAMBlockSpec>(None)
            .await?
            .items
            .into_iter()
            .map(|b| b.metadata.name)
            .collect();
        let pending: BTreeSet<Cidr> = self
            .ds
            .list::<BlockAffinitySpec>(None)
            .await?
            .items
            .into_iter()
            .map(|a| a.spec.cidr)
            .collect();
        for pool in pools {
            let Some(cidr) = free_block(pool, node, |c| {
                existing.contains(&names::block_name(c))
                    || pending.contains(&c)
                    || whole_block_reserved(c, &snap.reserved)
            }) else {
                continue;
            };
            // Phase 1: a pending affinity. Routing and export ignore pending affinities.
            let mut aff = Object::new(
                names::affinity_name(node, cidr),
                BlockAffinitySpec {
                    state: AffinityState::Pending,
                    node: node.to_string(),
                    cidr,
                },
            );
            match self.ds.create(aff.clone()).await {
                Ok(created) => aff = created,
                Err(e) if conflict(&e) => return Ok(ClaimOutcome::Raced),
                Err(e) => return Err(e.into()),
            }
            // Phase 2: the block, owned by the node. Phase 3: confirm. Both in one transaction:
            // the block exists exactly when the claim is confirmed.
            let blk: IPAMBlock = Object::new(
                names::block_name(cidr),
                block::new_block(cidr, Some(host_affinity(node))),
            );
            let mut confirmed = aff.clone();
            confirmed.spec.state = AffinityState::Confirmed;
            return match self
                .ds
                .write_all(vec![
                    Change::Create(blk.into()),
                    Change::Replace(confirmed.into()),
                ])
                .await
            {
                Ok(_) => {
                    tracing::info!(%node, block = %cidr, pool = %pool.metadata.name, "claimed block");
                    Ok(ClaimOutcome::Claimed)
                }
                Err(e) if conflict(&e) => {
                    // Another node created the block first: roll our claim back.
                    let _ = self
                        .ds
                        .delete::<BlockAffinitySpec>(
                            &aff.metadata.name,
                            aff.metadata.resource_version.as_deref(),
                        )
                        .await;
                    Ok(ClaimOutcome::Raced)
                }
                Err(e) => Err(e.into()),
            };
        }
        Ok(ClaimOutcome::NoFreeBlock)
    }

    /// Borrows up to `want` addresses from any block of `pools` with room, appending what it
    /// commits to `done`. `Ok(false)`: lost a race (retry); `Ok(true)`: went through every block.
    async fn borrow(
        &self,
        pools: &[&IPPool],
        req: &AllocateRequest,
        attrs: &BTreeMap<String, String>,
        want: usize,
        snap: &Snapshot,
        done: &mut Vec<Allocated>,
    ) -> Result<bool, IpamError> {
        let blocks = self.ds.list::<IPAMBlockSpec>(None).await?.items;
        let mut got = 0;
        for b in blocks {
            let Some(pool) = pools
                .iter()
                .find(|p| p.spec.cidr.net().contains(&b.spec.cidr.net().network()))
            else {
                continue;
            };
            if b.spec
                .unallocated
                .iter()
                .all(|o| snap.is_reserved(block::address_at(b.spec.cidr, *o)))
            {
                continue;
            }
            match self
                .assign_in_block(b.spec.cidr, pool, req, attrs, want - got, snap, None)
                .await?
            {
                Some(more) => {
                    got += more.len();
                    done.extend(more);
                }
                None => return Ok(false),
            }
            if got == want {
                break;
            }
        }
        Ok(true)
    }

    /// Allocates one specific address.
    async fn allocate_address(
        &self,
        req: &AllocateRequest,
        attrs: &BTreeMap<String, String>,
        ip: IpAddr,
    ) -> Result<Allocated, IpamError> {
        for _ in 0..MAX_ATTEMPTS {
            let snap = self.snapshot(&req.node).await?;
            let pools = Self::usable_pools(&snap, req, ip.is_ipv4())?;
            let Some(pool) = pools.iter().find(|p| p.spec.cidr.net().contains(&ip)) else {
                return Err(IpamError::InvalidRequest(format!(
                    "{ip} is not in any pool this request may use"
                )));
            };
            if snap.is_reserved(ip) {
                return Err(IpamError::AddressInUse(format!(
                    "{ip} is reserved by an IPReservation"
                )));
            }
            let cidr = block::containing_block(ip, pool.spec.effective_block_size())
                .expect("valid block size");
            let name = names::block_name(cidr);
            let Some(mut blk) = self.ds.get::<IPAMBlockSpec>(&name).await? else {
                // Claim the containing block for this node first.
                let aff = Object::new(
                    names::affinity_name(&req.node, cidr),
                    BlockAffinitySpec {
                        state: AffinityState::Confirmed,
                        node: req.node.clone(),
                        cidr,
                    },
                );
                let blk = Object::new(name, block::new_block(cidr, Some(host_affinity(&req.node))));
                match self
                    .ds
                    .write_all(vec![Change::Create(blk.into()), Change::Create(aff.into())])
                    .await
                {
                    Ok(_) | Err(_) => continue,
                }
            };
            if snap.config.strict_affinity
                && blk.spec.affinity.as_deref() != Some(host_affinity(&req.node).as_str())
            {
                return Err(IpamError::AddressInUse(format!(
                    "{ip} is in block {cidr} of {}, and strictAffinity forbids borrowing",
                    blk.spec.affinity.as_deref().unwrap_or("no node")
                )));
            }
            let a = block::assign_address(&mut blk.spec, ip, &req.handle_id, attrs)
                .map_err(|e| IpamError::AddressInUse(e.to_string()))?;
            let handle_change = self
                .handle_delta(&req.handle_id, &names::block_name(cidr), 1)
                .await?;
            match self
                .ds
                .write_all(vec![Change::Replace(blk.into()), handle_change])
                .await
            {
                Ok(_) => {
                    return Ok(Allocated {
                        ip,
                        block: cidr,
                        pool: pool.metadata.name.clone(),
                        sequence_number: a.sequence_number,
                    });
                }
                Err(e) if conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contended)
    }

    /// Releases every address of a handle, atomically across its blocks. Idempotent: an unknown
    /// handle releases nothing and succeeds. Returns what was freed.
    pub async fn release(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        self.release_checked(handle_id, None)
            .await
            .map(|r| r.unwrap_or_default())
    }

    /// Releases a handle only if its addresses are exactly `expected` (address, sequence
    /// number) — the garbage collector's all-or-none release. `Ok(None)`: the handle changed
    /// since it was inspected, nothing released.
    pub async fn release_checked(
        &self,
        handle_id: &str,
        expected: Option<&BTreeSet<(IpAddr, u64)>>,
    ) -> Result<Option<Vec<IpAddr>>, IpamError> {
        let name = names::handle_name(handle_id);
        for _ in 0..MAX_ATTEMPTS {
            let Some(handle) = self.ds.get::<IPAMHandleSpec>(&name).await? else {
                return Ok(Some(Vec::new()));
            };
            if handle.spec.handle_id != handle_id {
                return Ok(Some(Vec::new()));
            }
            let mut changes = Vec::new();
            let mut freed = Vec::new();
            let mut current = BTreeSet::new();
            for block_name in handle.spec.block.keys() {
                let Some(mut blk) = self.ds.get::<IPAMBlockSpec>(block_name).await? else {
                    continue;
                };
                for (o, a) in &blk.spec.allocations {
                    if a.handle_id == handle_id {
                        current.insert((block::address_at(blk.spec.cidr, *o), a.sequence_number));
                    }
                }
                let ips = block::release_handle(&mut blk.spec, handle_id);
                if !ips.is_empty() {
                    freed.extend(ips);
                    changes.push(Change::Replace(blk.into()));
                }
            }
            if let Some(exp) = expected
                && *exp != current
            {
                return Ok(None);
            }
            changes.push(Change::Delete {
                kind: tortie_api::Kind::IPAMHandle,
                name: name.clone(),
                precondition: handle.metadata.resource_version.clone(),
            });
            match self.ds.write_all(changes).await {
                Ok(_) => return Ok(Some(freed)),
                Err(e) if conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contended)
    }

    /// Releases single addresses. With a sequence number, an address handed out again since is
    /// left alone and reported as [`IpamError::StaleSequence`]; an address already free is fine.
    pub async fn release_addresses(
        &self,
        addrs: &[(IpAddr, Option<u64>)],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let mut freed = Vec::new();
        for (ip, seq) in addrs {
            if self.release_address(*ip, *seq).await? {
                freed.push(*ip);
            }
        }
        Ok(freed)
    }

    async fn release_address(&self, ip: IpAddr, seq: Option<u64>) -> Result<bool, IpamError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(mut blk) = self.block_of(ip).await? else {
                return Ok(false);
            };
            let block_name = blk.metadata.name.clone();
            let handle_id = match block::release_address(&mut blk.spec, ip, seq) {
                block::AddressRelease::AlreadyFree => return Ok(false),
                block::AddressRelease::StaleSequence { current } => {
                    return Err(IpamError::StaleSequence {
                        ip,
                        given: seq.unwrap_or_default(),
                        current,
                    });
                }
                block::AddressRelease::Released { handle_id } => handle_id,
            };
            let handle_change = self.handle_delta(&handle_id, &block_name, -1).await?;
            match self
                .ds
                .write_all(vec![Change::Replace(blk.into()), handle_change])
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contended)
    }

    /// The block that holds `ip`, if it exists.
    pub async fn block_of(&self, ip: IpAddr) -> Result<Option<IPAMBlock>, IpamError> {
        let pools = self.ds.list::<IPPoolSpec>(None).await?.items;
        if let Some(pool) = pools.iter().find(|p| p.spec.cidr.net().contains(&ip)) {
            let cidr = block::containing_block(ip, pool.spec.effective_block_size())
                .expect("valid block size");
            return Ok(self
                .ds
                .get::<IPAMBlockSpec>(&names::block_name(cidr))
                .await?);
        }
        // A pool deleted after its blocks were made: find the block by scanning.
        Ok(self
            .ds
            .list::<IPAMBlockSpec>(None)
            .await?
            .items
            .into_iter()
            .find(|b| b.spec.cidr.net().contains(&ip)))
    }

    /// The addresses of a handle.
    pub async fn get(&self, handle_id: &str) -> Result<Vec<Allocated>, IpamError> {
        let Some(handle) = self
            .ds
            .get::<IPAMHandleSpec>(&names::handle_name(handle_id))
            .await?
        else {
            return Ok(Vec::new());
        };
        if handle.spec.handle_id != handle_id {
            return Ok(Vec::new());
        }
        let pools = self.ds.list::<IPPoolSpec>(None).await?.items;
        let mut out = Vec::new();
        for block_name in handle.spec.block.keys() {
            let Some(blk) = self.ds.get::<IPAMBlockSpec>(block_name).await? else {
                continue;
            };
            let pool = pools
                .iter()
                .find(|p| p.spec.cidr.net().contains(&blk.spec.cidr.net().network()))
                .map(|p| p.metadata.name.clone())
                .unwrap_or_default();
            for (o, a) in &blk.spec.allocations {
                if a.handle_id == handle_id {
                    out.push(Allocated {
                        ip: block::address_at(blk.spec.cidr, *o),
                        block: blk.spec.cidr,
                        pool: pool.clone(),
                        sequence_number: a.sequence_number,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Writes the IPAM configuration (creating it if needed).
    pub async fn configure(
        &self,
        strict_affinity: Option<bool>,
        max_blocks_per_host: Option<u32>,
    ) -> Result<IPAMConfigurationSpec, IpamError> {
        for _ in 0..MAX_ATTEMPTS {
            let current = self.ds.get::<IPAMConfigurationSpec>("default").await?;
            let mut obj = current
                .clone()
                .unwrap_or_else(|| Object::new("default", IPAMConfigurationSpec::default()));
            if let Some(s) = strict_affinity {
                obj.spec.strict_affinity = s;
            }
            if let Some(m) = max_blocks_per_host {
                obj.spec.max_blocks_per_host = m;
            }
            let change = if current.is_some() {
                Change::Replace(obj.clone().into())
            } else {
                Change::Create(obj.clone().into())
            };
            match self.ds.write_all(vec![change]).await {
                Ok(_) => return Ok(obj.spec),
                Err(e) if conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contended)
    }
}

enum ClaimOutcome {
    Claimed,
    Raced,
    NoFreeBlock,
}

fn whole_block_reserved(block: Cidr, reserved: &[Cidr]) -> bool {
    reserved.iter().any(|r| r.net().contains(&block.net()))
}

/// The first free block of `pool`, searching from a node-specific starting point so that nodes
/// claiming at the same time mostly try different blocks (fewer races), while one node's retries
/// look at the same candidates first.
pub fn free_block(pool: &IPPool, node: &str, taken: impl Fn(Cidr) -> bool) -> Option<Cidr> {
    let bs = pool.spec.effective_block_size();
    let host_bits = u32::from(bs - pool.spec.cidr.prefix_len());
    // Pools with more than 2^20 blocks are searched from the start in a window of that size.
    let count: u64 = 1u64 << host_bits.min(20);
    let start = names::fnv1a(node.as_bytes()) % count;
    let base = pool.spec.cidr.net();
    (0..count).map(|i| (start + i) % count).find_map(|i| {
        let cidr = nth_block(base, bs, i)?;
        (!taken(cidr)).then_some(cidr)
    })
}

fn nth_block(pool: ipnet::IpNet, block_size: u8, i: u64) -> Option<Cidr> {
    use ipnet::IpNet;
    let shift = u32::from(pool.max_prefix_len() - block_size);
    let net = match pool {
        IpNet::V4(n) => {
            let addr =
                u32::from(n.network()).checked_add(u32::try_from(i).ok()?.checked_shl(shift)?)?;
            IpNet::new(IpAddr::V4(addr.into()), block_size).ok()?
        }
        IpNet::V6(n) => {
            let addr = u128::from(n.network()).checked_add(u128::from(i).checked_shl(shift)?)?;
            IpNet::new(IpAddr::V6(addr.into()), block_size).ok()?
        }
    };
    pool.contains(&net).then_some(Cidr(net))
}
