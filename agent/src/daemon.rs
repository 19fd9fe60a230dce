//! The agent's control loop: datastore → BGP → kernel.
//!
//! On every datastore change (a watch per kind) and at least every `poll` (2 s), the loop reads
//! the few objects that decide this node's routing (its
//! `Node`, the others, `BGPConfiguration`, `BGPPeer`s, its confirmed block affinities), brings
//! the speaker's peers and originated blocks in line, and reconciles the kernel: a blackhole per
//! owned block and a route to every other block via its best BGP next hops (ECMP); best-path
//! changes from the speaker wake the loop too. A full kernel
//! resync (dump + plan) runs on every change of the desired routes and every `resync` (90 s).
//!
//! Graceful restart (RFC 4724): if the kernel already holds our routes at start, we are
//! restarting — the speaker sets the R bit so peers keep our routes, and until BGP has
//! converged (every peer Established and `restart_settle` passed) the reconciler only adds and
//! replaces, never deletes, so forwarding never stops.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tortie_api::values::InterfaceAddress;
use tortie_api::{
    AffinityState, BGPConfigurationSpec, BGPPeerSpec, BlockAffinitySpec, EncapMode, IPPoolSpec,
    NodeBgpSpec, NodeSpec, Object,
};
use tortie_bgpd::PathAttrs;
use tortie_bgpd::speaker::{PeerSpec, Speaker, SpeakerConfig};
use tortie_datastore::Datastore;

use crate::routes::{self, Target};
use crate::{kernel, vxlan};

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node name.
    pub node: String,
    /// Node IPv4 address with prefix length (its BGP identifier and session address).
    pub address: InterfaceAddress,
    /// Node IPv6 address with prefix length: next hop of our IPv6 blocks (dual stack); the
    /// sessions stay on IPv4 and carry both families (RFC 4760).
    pub address6: Option<InterfaceAddress>,
    /// AS for this node when its `Node` does not say (else the cluster's, else 64512).
    pub as_number: Option<u32>,
    /// BGP listen address.
    pub bgp_listen: SocketAddr,
    /// Protocol number of our kernel routes.
    pub route_protocol: u8,
    /// Datastore poll interval.
    pub poll: Duration,
    /// Full kernel resync interval.
    pub resync: Duration,
    /// Graceful-restart time we advertise.
    pub graceful_restart_time: u16,
    /// How long after start a restarting agent keeps stale kernel routes at most.
    pub restart_settle: Duration,
    /// The CNI plugin's `dataDir` (its attachment records tell which pod routes must exist).
    pub cni_data_dir: std::path::PathBuf,
    /// A pod younger than this is left to the CNI plugin (it may still be setting up).
    pub pod_route_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct WantedPeer {
    address: IpAddr,
    port: u16,
    remote_as: u32,
    passive: bool,
    password: Option<String>,
    ttl_security: Option<u8>,
    rr_client: bool,
    /// How `tortiectl node status` names it (Calico's words).
    kind: &'static str,
    /// A router outside the cluster (`peerIP`): it gets only what this node announces itself,
    /// so its next hop for a block is the block's owner.
    external: bool,
    /// Import and export rules from the peer's `BGPFilter`s.
    import: tortie_bgpd::policy::Policy,
    export: tortie_bgpd::policy::Policy,
}

fn node_as(cfg: &Config, node: Option<&NodeBgpSpec>, cluster: &BGPConfigurationSpec) -> u32 {
    node.and_then(|b| b.as_number.map(|a| a.0))
        .or(cfg.as_number)
        .or(cluster.as_number.map(|a| a.0))
        .unwrap_or(64512)
}

/// Runs until `shutdown` resolves. Kernel routes are left in place on the way out, so a restart
/// does not interrupt forwarding.
pub async fn run(
    cfg: Config,
    ds: Datastore,
    shared: crate::status::Shared,
    metrics: crate::health::Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let IpAddr::V4(router_id) = cfg.address.addr() else {
        anyhow::bail!("node address {} is not IPv4", cfg.address);
    };
    // Our Node object, with the address and AS other nodes and tortiectl see.
    let cluster = cluster_config(&ds).await?;
    let mut node = ds
        .get::<NodeSpec>(&cfg.node)
        .await?
        .unwrap_or_else(|| Object::new(cfg.node.clone(), NodeSpec::default()));
    let mut bgp = node.spec.bgp.clone().unwrap_or_default();
    bgp.ipv4_address = Some(cfg.address);
    if let Some(a6) = cfg.address6 {
        bgp.ipv6_address = Some(a6);
    }
    if bgp.as_number.is_none()
        && let Some(a) = cfg.as_number
    {
        bgp.as_number = Some(tortie_api::values::AsNumber(a));
    }
    node.spec.bgp = Some(bgp.clone());
    if node.metadata.resource_version.is_some() {
        ds.update(node).await?;
    } else {
        ds.create(node).await?;
    }
    let local_as = node_as(&cfg, Some(&bgp), &cluster);

    let kernel_handle = kernel::connect()?;
    let existing = kernel::dump(&kernel_handle, cfg.route_protocol).await?;
    let restarting = !existing.is_empty();
    tracing::info!(
        restarting,
        kernel_routes = existing.len(),
        "graceful-restart state"
    );
    let speaker = Speaker::start(SpeakerConfig {
        local_as,
        router_id,
        listen: vec![cfg.bgp_listen],
        cluster_id: bgp.route_reflector_cluster_id,
        graceful_restart_time: cfg.graceful_restart_time,
        restarting,
    })
    .await?;

    let ipam = tortie_ipam::Ipam::new(ds.clone());
    let mut vxlan_device: Option<u32> = None;
    let mut warned_vxlan_v6: std::collections::BTreeSet<String> = Default::default();
    let mut nat_applied: Option<(Vec<IpNet>, Vec<IpNet>)> = None;
    let mut kernel_view: BTreeMap<IpNet, Target> = BTreeMap::new();
    let mut vxlan_endpoints: BTreeMap<String, (std::net::Ipv4Addr, [u8; 6], std::net::Ipv4Addr)> =
        BTreeMap::new();
    let started = Instant::now();
    // Datastore watches wake the loop at once; the poll interval is only a safety net.
    let wake = watch_everything(&ds);
    // So do best-path changes from BGP: a remote block's route follows its announcement.
    {
        let (mut best, wake) = (speaker.subscribe(), wake.clone());
        tokio::spawn(async move {
            // Lagged: changes were missed, which is a change too; Closed: the speaker is gone.
            while !matches!(
                best.recv().await,
                Err(tokio::sync::broadcast::error::RecvError::Closed)
            ) {
                wake.notify_one();
            }
        });
    }
    // Link changes (a carrier lost and back) make the next step resync the kernel.
    let links_changed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (flag, wake) = (links_changed.clone(), wake.clone());
        tokio::spawn(async move {
            let notify = move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                wake.notify_one();
            };
            if let Err(e) = kernel::watch_links(notify).await {
                tracing::warn!(error = %e, "link events unavailable; the periodic resync covers link changes");
            }
        });
    }
    let mut peers: BTreeMap<IpAddr, WantedPeer> = BTreeMap::new();
    let mut originated: BTreeSet<IpNet> = BTreeSet::new();
    let mut exported: BTreeMap<IpNet, PathAttrs> = BTreeMap::new();
    let mut last_desired: Option<BTreeMap<IpNet, Target>> = None;
    let mut last_resync = Instant::now();
    let mut settled = !restarting;
    tokio::pin!(shutdown);
    loop {
        let step = async {
            let cluster = cluster_config(&ds).await?;
            // ---- our blocks ----
            // Originated before any peer is added: a session that comes up (after our restart
            // too) gets our blocks before End-of-RIB, so the peer never sweeps them as stale.
            let affinities: Vec<BlockAffinitySpec> = ds
                .list::<BlockAffinitySpec>(None)
                .await?
                .items
                .into_iter()
                .filter(|a| a.spec.state == AffinityState::Confirmed)
                .map(|a| a.spec)
                .collect();
            let blocks: BTreeSet<IpNet> = affinities
                .iter()
                .filter(|a| a.node == cfg.node)
                .map(|a| a.cidr.net())
                .collect();
            let pools = ds.list::<IPPoolSpec>(None).await?.items;
            // IPAM utilisation per pool, for /metrics.
            let allocations = ipam.allocations().await?;
            let usage: BTreeMap<String, (u64, u128)> = pools
                .iter()
                .map(|p| {
                    let net = p.spec.cidr.net();
                    let used = allocations.iter().filter(|a| net.contains(&a.ip)).count() as u64;
                    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
                    (
                        p.metadata.name.clone(),
                        (used, 1u128.checked_shl(bits).unwrap_or(u128::MAX)),
                    )
                })
                .collect();
            shared.write().expect("not poisoned").pools = usage;
            let mine = tortie_ipam::host_affinity(&cfg.node);
            let borrowed: BTreeSet<IpNet> = allocations
                .iter()
                .filter(|a| {
                    a.attributes.get(tortie_ipam::attr::NODE) == Some(&cfg.node)
                        && a.block_affinity.as_deref() != Some(mine.as_str())
                })
                .filter_map(|a| IpNet::new(a.ip, if a.ip.is_ipv4() { 32 } else { 128 }).ok())
                .collect();
            // Borrowed addresses (ours, in another node's block) go out as host routes, more
            // specific than the owner's block.
            let exported_prefixes: BTreeSet<IpNet> =
                blocks.iter().chain(borrowed.iter()).copied().collect();
            let want = export_set(
                cfg.address.addr(),
                cfg.address6.map(|a| a.addr()),
                &exported_prefixes,
                &pools,
                &cluster,
            );
            let gone: Vec<IpNet> = exported
                .keys()
                .filter(|p| !want.contains_key(p))
                .copied()
                .collect();
            let new: Vec<(IpNet, PathAttrs)> = want
                .iter()
                .filter(|(p, a)| exported.get(p) != Some(a))
                .map(|(p, a)| (*p, a.clone()))
                .collect();
            if !gone.is_empty() {
                tracing::info!(?gone, "withdrawing");
                speaker.withdraw(gone).await;
            }
            if !new.is_empty() {
                tracing::info!(prefixes = ?new.iter().map(|b| b.0).collect::<Vec<_>>(), "announcing");
                speaker.originate(new).await;
            }
            exported = want;
            originated = blocks;
            // ---- peers ----
            let wanted = wanted_peers(&cfg, &ds, &cluster, local_as).await?;
            for (addr, old) in &peers {
                if wanted.get(addr) != Some(old) {
                    speaker.remove_peer(*addr, None).await;
                }
            }
            for (addr, p) in &wanted {
                if peers.get(addr) != Some(p) {
                    let mut spec = PeerSpec::new(p.address, p.remote_as);
                    spec.port = p.port;
                    spec.passive = p.passive;
                    spec.local_address = Some(cfg.address.addr());
                    spec.password = p.password.clone();
                    spec.ttl_security_hops = p.ttl_security;
                    spec.rr_client = p.rr_client;
                    spec.import = p.import.clone();
                    spec.export = p.export.clone();
                    spec.export.local_only = p.external;
                    spec.families = if cfg.address6.is_some() {
                        BTreeSet::from([tortie_bgpd::Afi::Ipv4, tortie_bgpd::Afi::Ipv6])
                    } else {
                        BTreeSet::from([tortie_bgpd::Afi::Ipv4])
                    };
                    if let Err(e) = speaker.add_peer(spec).await {
                        tracing::warn!(peer = %addr, error = %e, "cannot add peer");
                    } else {
                        tracing::info!(peer = %addr, remote_as = p.remote_as, passive = p.passive, "peer configured");
                    }
                }
            }
            peers = wanted;
            // Decided before the Loc-RIB is read, so that what we read includes everything
            // the End-of-RIBs we counted brought.
            if !settled {
                let status = speaker.status().await;
                // RFC 4724 §4.1: route selection waits for every peer's End-of-RIB, so the
                // routes it brings replace the stale ones before anything is deleted.
                let all_in = !status.is_empty()
                    && status.iter().all(|s| {
                        s.state == tortie_bgpd::fsm::State::Established && s.counters.end_of_rib
                    });
                if all_in || started.elapsed() > cfg.restart_settle {
                    tracing::info!("BGP converged after restart; stale kernel routes may go now");
                    settled = true;
                }
            }
            // ---- kernel ----
            let mut desired: BTreeMap<IpNet, Target> =
                originated.iter().map(|b| (*b, Target::Blackhole)).collect();
            let loc_rib = speaker.loc_rib().await;
            let mut bgp_view = BTreeMap::new();
            for (prefix, hops) in loc_rib {
                bgp_view.insert(prefix, hops.clone());
                if originated.contains(&prefix) || hops.is_empty() {
                    continue;
                }
                let hops: Vec<IpAddr> = hops
                    .into_iter()
                    .filter(|h| {
                        !h.is_unspecified()
                            && *h != cfg.address.addr()
                            && Some(*h) != cfg.address6.map(|a| a.addr())
                    })
                    .collect();
                if !hops.is_empty() {
                    desired.insert(prefix, Target::via(hops));
                }
            }
            // VXLAN pools: their blocks on other nodes route through the tunnel (or, in
            // CrossSubnet mode within our subnet, straight), whatever BGP says.
            // natOutgoing: one nftables table, rewritten when the pools change.
            let nat_now = (
                pools
                    .iter()
                    .filter(|p| p.spec.nat_outgoing && !p.spec.disabled)
                    .map(|p| p.spec.cidr.net())
                    .collect::<Vec<_>>(),
                pools.iter().map(|p| p.spec.cidr.net()).collect::<Vec<_>>(),
            );
            if nat_applied.as_ref() != Some(&nat_now) {
                let (nat, all) = nat_now.clone();
                tokio::task::spawn_blocking(move || crate::nat::apply(&nat, &all)).await??;
                tracing::info!(nat_pools = ?nat_now.0, "natOutgoing rules applied");
                nat_applied = Some(nat_now);
            }
            // IPv6 VXLAN is not built yet: such a pool's blocks are routed natively over BGP,
            // which is said once in the log rather than failing every step.
            let (vxlan_pools, vxlan_v6): (Vec<&Object<IPPoolSpec>>, Vec<_>) = pools
                .iter()
                .filter(|p| p.spec.vxlan_mode != EncapMode::Never)
                .partition(|p| p.spec.cidr.net().addr().is_ipv4());
            for p in vxlan_v6 {
                if warned_vxlan_v6.insert(p.metadata.name.clone()) {
                    tracing::warn!(pool = %p.metadata.name, "IPv6 VXLAN is not supported yet; this pool's blocks are routed over BGP without encapsulation");
                }
            }
            if !vxlan_pools.is_empty() {
                let index = match vxlan_device {
                    Some(i) => i,
                    None => {
                        let i = setup_vxlan(&cfg, &ds, &ipam, &kernel_handle, &vxlan_pools).await?;
                        vxlan_device = Some(i);
                        i
                    }
                };
                let nodes = ds.list::<NodeSpec>(None).await?.items;
                let mut endpoints = BTreeMap::new();
                for n in nodes.iter().filter(|n| n.metadata.name != cfg.node) {
                    let (Some(tunnel), Some(mac), Some(IpAddr::V4(underlay))) = (
                        n.spec.ipv4_vxlan_tunnel_addr,
                        n.spec
                            .vxlan_tunnel_mac_addr
                            .as_deref()
                            .and_then(vxlan::parse_mac),
                        n.spec
                            .bgp
                            .as_ref()
                            .and_then(|b| b.ipv4_address)
                            .map(|a| a.addr()),
                    ) else {
                        continue;
                    };
                    if vxlan_endpoints.get(&n.metadata.name) != Some(&(tunnel, mac, underlay)) {
                        vxlan::ensure_peer(&kernel_handle, index, tunnel, mac, underlay).await?;
                    }
                    endpoints.insert(n.metadata.name.clone(), (tunnel, mac, underlay));
                }
                for a in affinities.iter().filter(|a| a.node != cfg.node) {
                    let Some(pool) = vxlan_pools
                        .iter()
                        .find(|p| p.spec.cidr.net().contains(&a.cidr.net()))
                    else {
                        continue;
                    };
                    let Some((tunnel, _, underlay)) = endpoints.get(&a.node) else {
                        continue;
                    };
                    let same_subnet = cfg.address.0.contains(&IpAddr::V4(*underlay));
                    let target = if pool.spec.vxlan_mode == EncapMode::CrossSubnet && same_subnet {
                        Target::via(vec![IpAddr::V4(*underlay)])
                    } else {
                        Target::Onlink(IpAddr::V4(*tunnel), index)
                    };
                    desired.insert(a.cidr.net(), target);
                }
                vxlan_endpoints = endpoints;
            }
            let links_changed = links_changed.swap(false, std::sync::atomic::Ordering::SeqCst);
            if last_desired.as_ref() != Some(&desired)
                || last_resync.elapsed() > cfg.resync
                || links_changed
            {
                let actual = kernel::dump(&kernel_handle, cfg.route_protocol).await?;
                let mut ops = routes::plan(&desired, &actual);
                if !settled {
                    ops.retain(|op| matches!(op, routes::Op::Replace(..)));
                }
                if !ops.is_empty() {
                    tracing::info!(changes = ops.len(), "reconciling kernel routes");
                }
                let protocol = cfg.route_protocol;
                let changed_kernel = !ops.is_empty();
                // Nexthop objects no route wants any more go once we are settled: deleting
                // one takes its routes with it, and stale routes must stay during a restart.
                let keep: Option<std::collections::BTreeSet<IpAddr>> = settled.then(|| {
                    desired
                        .values()
                        .filter_map(|t| match t {
                            routes::Target::Via(hops) => Some(hops.iter().copied()),
                            _ => None,
                        })
                        .flatten()
                        .collect()
                });
                let failed = tokio::task::spawn_blocking(move || {
                    let failed = kernel::apply(&ops, protocol)?;
                    if let Some(keep) = keep {
                        crate::nexthop::prune(protocol, &keep)?;
                    }
                    Ok::<_, kernel::KernelError>(failed)
                })
                .await??;
                for (op, why) in &failed {
                    tracing::warn!(?op, %why, "route change failed; next resync retries");
                }
                last_resync = Instant::now();
                // Pod routes: the CNI plugin makes them; put back what went missing.
                let repaired = repair_pod_routes(&cfg, &kernel_handle).await?;
                if repaired > 0 {
                    tracing::info!(repaired, "pod routes restored");
                }
                kernel_view = if changed_kernel {
                    kernel::dump(&kernel_handle, cfg.route_protocol).await?
                } else {
                    actual
                };
                // Stale routes kept during a restart mean we are not converged yet: look again.
                last_desired = if failed.is_empty() && settled {
                    Some(desired)
                } else {
                    None
                };
            }
            // The report for `tortiectl node status`.
            let status = speaker.status().await;
            let mut snap = shared.write().expect("not poisoned");
            snap.node = cfg.node.clone();
            snap.address = cfg.address.to_string();
            snap.as_number = local_as;
            snap.peers = status
                .iter()
                .map(|p| crate::status::PeerSnapshot {
                    address: p.address,
                    kind: peers.get(&p.address).map_or("?", |w| w.kind).to_string(),
                    remote_as: p.remote_as,
                    state: format!("{:?}", p.state),
                    since: p.since,
                    received: p.received,
                    accepted: p.counters.accepted as u64,
                    advertised: p.counters.advertised as u64,
                    last_error: p.last_error.clone().unwrap_or_default(),
                })
                .collect();
            snap.blocks = originated.iter().copied().collect();
            snap.bgp = bgp_view;
            snap.kernel = kernel_view.clone();
            snap.ready = settled;
            anyhow::Ok(())
        };
        let t0 = Instant::now();
        let res = step.await;
        metrics.reconcile.observe(t0.elapsed().as_secs_f64());
        shared.write().expect("not poisoned").datastore_ok = res.is_ok();
        if let Err(e) = res {
            tracing::warn!(error = %e, "control loop step failed; retrying");
        }
        tokio::select! {
            _ = &mut shutdown => break,
            // The kernel resync is due every `resync` even when nothing else happens.
            _ = tokio::time::sleep(cfg.poll.min(cfg.resync)) => {}
            _ = wake.notified() => {
                // A burst of changes (a pod ADD writes several objects) makes one step.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Sessions must close without a NOTIFICATION, so that peers keep our routes for the restart
    // time while our kernel routes stay (RFC 4724 §4.1). Dropping the speaker would stop its
    // peer tasks with Cease/"peer de-configured"; instead it is kept alive until the process
    // exits, and the kernel closes the sockets.
    std::mem::forget(speaker);
    Ok(())
}

/// Adds the /32 (/128) of every pod whose attachment record is older than the grace period
/// and whose veth exists but whose route is missing or points elsewhere. Never deletes: stale
/// pod routes vanish with their veth. Returns how many were restored.
async fn repair_pod_routes(cfg: &Config, h: &rtnetlink::Handle) -> anyhow::Result<usize> {
    let records = tortie_cni::state::State::new(&cfg.cni_data_dir).older_than(cfg.pod_route_grace);
    if records.is_empty() {
        return Ok(0);
    }
    let actual = kernel::dump_pod_routes(h, cfg.route_protocol).await?;
    let mut ops = Vec::new();
    for r in records {
        if r.host_ifname.is_empty() {
            continue; // tortie-ipam attachments: another plugin's veth
        }
        let Some(index) = kernel::link_index(h, &r.host_ifname).await? else {
            continue;
        };
        for ip in &r.addresses {
            let net = IpNet::new(*ip, if ip.is_ipv4() { 32 } else { 128 }).expect("host prefix");
            if actual.get(&net) != Some(&index) {
                ops.push(routes::Op::Replace(net, Target::Device(index)));
            }
        }
    }
    let n = ops.len();
    let protocol = cfg.route_protocol;
    let failed = tokio::task::spawn_blocking(move || kernel::apply(&ops, protocol)).await??;
    for (op, why) in &failed {
        tracing::warn!(?op, %why, "pod route repair failed");
    }
    Ok(n - failed.len())
}

/// What this node announces: its blocks (except those of pools with `disableBGPExport`) and
/// the service ranges of `BGPConfiguration`, each with the communities `prefixAdvertisements`
/// give it (by name from `communities`, or literal), next hop our address.
pub fn export_set(
    next_hop: IpAddr,
    next_hop6: Option<IpAddr>,
    blocks: &BTreeSet<IpNet>,
    pools: &[Object<IPPoolSpec>],
    cluster: &BGPConfigurationSpec,
) -> BTreeMap<IpNet, PathAttrs> {
    let mut out = BTreeMap::new();
    let exportable = |b: &IpNet| {
        !pools
            .iter()
            .any(|p| p.spec.disable_bgp_export && p.spec.cidr.net().contains(b))
    };
    let services = cluster
        .service_cluster_ips
        .iter()
        .chain(&cluster.service_external_ips)
        .chain(&cluster.service_load_balancer_ips)
        .map(|r| r.cidr.net());
    for prefix in blocks.iter().copied().filter(exportable).chain(services) {
        // An IPv6 prefix needs an IPv6 next hop; without one the node cannot offer it.
        let hop = if prefix.addr().is_ipv6() {
            match next_hop6 {
                Some(h) => h,
                None => continue,
            }
        } else {
            next_hop
        };
        let mut attrs = PathAttrs {
            next_hop: Some(hop),
            ..Default::default()
        };
        for adv in cluster
            .prefix_advertisements
            .iter()
            .filter(|a| a.cidr.net().contains(&prefix))
        {
            for c in &adv.communities {
                let value = cluster
                    .communities
                    .iter()
                    .find(|n| n.name == *c)
                    .map_or(c.as_str(), |n| n.value.as_str());
                let parts: Vec<u32> = value.split(':').filter_map(|p| p.parse().ok()).collect();
                match parts.as_slice() {
                    [a, b] if *a <= 0xffff && *b <= 0xffff => attrs.communities.push((a << 16) | b),
                    [a, b, c] => attrs.large_communities.push((*a, *b, *c)),
                    _ => tracing::warn!(community = %c, "not a community value; ignored"),
                }
            }
        }
        attrs.communities.sort_unstable();
        attrs.communities.dedup();
        out.insert(prefix, attrs);
    }
    out
}

/// The policy of `names`' `BGPFilter`s in order (import or export side): their rules, first
/// match wins, each family's rules scoped to that family; no match accepts (Calico's rule). A
/// filter that does not exist is skipped, as one with no rules.
pub fn filter_policy(
    filters: &BTreeMap<String, tortie_api::BGPFilterSpec>,
    names: &[String],
    export: bool,
) -> tortie_bgpd::policy::Policy {
    use tortie_bgpd::policy::{MatchOp, Policy, Rule};
    let mut policy = Policy::accept_all();
    for f in names.iter().filter_map(|n| filters.get(n)) {
        let (v4, v6) = if export {
            (&f.export_v4, &f.export_v6)
        } else {
            (&f.import_v4, &f.import_v6)
        };
        for (rules, any) in [(v4, "0.0.0.0/0"), (v6, "::/0")] {
            for r in rules {
                let cidr = match (&r.cidr, &r.match_operator) {
                    (Some(c), op) => Some((
                        c.net(),
                        match op.unwrap_or(tortie_api::MatchOperator::In) {
                            tortie_api::MatchOperator::Equal => MatchOp::Equal,
                            tortie_api::MatchOperator::NotEqual => MatchOp::NotEqual,
                            tortie_api::MatchOperator::In => MatchOp::In,
                            tortie_api::MatchOperator::NotIn => MatchOp::NotIn,
                        },
                    )),
                    // No CIDR: the rule still only speaks for its own family.
                    (None, _) => Some((any.parse().expect("constant"), MatchOp::In)),
                };
                let max = if any.contains(':') { 128 } else { 32 };
                policy.rules.push(Rule {
                    cidr,
                    length: r
                        .prefix_length
                        .as_ref()
                        .map(|l| (l.min.unwrap_or(0), l.max.unwrap_or(max))),
                    accept: r.action == tortie_api::FilterAction::Accept,
                });
            }
        }
    }
    policy
}

/// A session to another node (iBGP or eBGP by their AS); the higher address waits passively,
/// so that the two ends make one connection between them.
fn node_peer(
    cfg: &Config,
    cluster: &BGPConfigurationSpec,
    n: &Object<NodeSpec>,
    rr_client: bool,
    kind: &'static str,
) -> Option<WantedPeer> {
    let theirs = n.spec.bgp.as_ref()?.ipv4_address?.addr();
    Some(WantedPeer {
        address: theirs,
        port: 179,
        remote_as: node_as(cfg, n.spec.bgp.as_ref(), cluster),
        passive: cfg.address.addr() > theirs,
        password: None,
        ttl_security: None,
        rr_client,
        kind,
        external: false,
        import: tortie_bgpd::policy::Policy::accept_all(),
        export: tortie_bgpd::policy::Policy::accept_all(),
    })
}

/// This node's VXLAN endpoint: a tunnel address from a VXLAN pool (kept across restarts by its
/// IPAM handle), the device, and both published on our `Node`. Returns the device's index.
async fn setup_vxlan(
    cfg: &Config,
    ds: &Datastore,
    ipam: &tortie_ipam::Ipam,
    h: &rtnetlink::Handle,
    pools: &[&Object<IPPoolSpec>],
) -> anyhow::Result<u32> {
    let IpAddr::V4(underlay) = cfg.address.addr() else {
        anyhow::bail!("VXLAN needs an IPv4 node address");
    };
    let handle = format!("vxlan-tunnel-addr-{}", cfg.node);
    let tunnel = match ipam.get(&handle).await?.first() {
        Some(a) => a.ip,
        None => {
            ipam.allocate(&tortie_ipam::AllocateRequest {
                handle_id: handle.clone(),
                node: cfg.node.clone(),
                attributes: BTreeMap::from([(
                    "type".to_string(),
                    "vxlanTunnelAddress".to_string(),
                )]),
                num_ipv4: 1,
                num_ipv6: 0,
                pools: pools.iter().map(|p| p.metadata.name.clone()).collect(),
                addresses: Vec::new(),
                usage: Some(tortie_api::AllowedUse::Tunnel),
            })
            .await?
            .first()
            .ok_or_else(|| anyhow::anyhow!("IPAM gave no VXLAN tunnel address"))?
            .ip
        }
    };
    let IpAddr::V4(tunnel) = tunnel else {
        anyhow::bail!("VXLAN tunnel address {tunnel} is not IPv4");
    };
    let mac = vxlan::mac_for(&cfg.node);
    let mut node = ds
        .get::<NodeSpec>(&cfg.node)
        .await?
        .ok_or_else(|| anyhow::anyhow!("our Node is gone"))?;
    let mac_text = vxlan::mac_string(&mac);
    if node.spec.ipv4_vxlan_tunnel_addr != Some(tunnel)
        || node.spec.vxlan_tunnel_mac_addr.as_deref() != Some(&mac_text)
    {
        node.spec.ipv4_vxlan_tunnel_addr = Some(tunnel);
        node.spec.vxlan_tunnel_mac_addr = Some(mac_text);
        ds.update(node).await?;
    }
    let mtu = tortie_cni::dataplane::uplink_mtu(h)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .unwrap_or(1500);
    let index = vxlan::ensure_device(h, underlay, tunnel, mac, mtu - vxlan::OVERHEAD).await?;
    tracing::info!(%tunnel, mac = %vxlan::mac_string(&mac), "VXLAN endpoint ready");
    Ok(index)
}

/// One watch per kind; any event wakes the control loop. A watch that ends or fails is
/// started again after a second (the loop's periodic poll covers the gap).
fn watch_everything(ds: &Datastore) -> std::sync::Arc<tokio::sync::Notify> {
    use futures::StreamExt;
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    for kind in tortie_api::Kind::ALL {
        let (ds, wake) = (ds.clone(), wake.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(mut events) = ds.watch_any(*kind, None).await {
                    while let Some(ev) = events.next().await {
                        if ev.is_err() {
                            break;
                        }
                        wake.notify_one();
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    wake
}

async fn cluster_config(ds: &Datastore) -> anyhow::Result<BGPConfigurationSpec> {
    Ok(ds
        .get::<BGPConfigurationSpec>("default")
        .await?
        .map(|o| o.spec)
        .unwrap_or_default())
}

/// The sessions this node should have: the full iBGP mesh (when enabled) to every other node
/// with an address — the higher address waits passively so that only one connection is made —
/// and the `BGPPeer`s that apply to this node (global ones and those naming it).
async fn wanted_peers(
    cfg: &Config,
    ds: &Datastore,
    cluster: &BGPConfigurationSpec,
    local_as: u32,
) -> anyhow::Result<BTreeMap<IpAddr, WantedPeer>> {
    let mut out = BTreeMap::new();
    let nodes = ds.list::<NodeSpec>(None).await?.items;
    let me = cfg.address.addr();
    if cluster.node_to_node_mesh_enabled.unwrap_or(true) {
        for n in &nodes {
            if n.metadata.name == cfg.node {
                continue;
            }
            if let Some(p) = node_peer(cfg, cluster, n, false, "node-to-node mesh") {
                out.insert(p.address, p);
            }
        }
    }
    let my_labels = nodes
        .iter()
        .find(|n| n.metadata.name == cfg.node)
        .map(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    let my_cluster = nodes
        .iter()
        .find(|n| n.metadata.name == cfg.node)
        .and_then(|n| n.spec.bgp.as_ref())
        .and_then(|b| b.route_reflector_cluster_id);
    let selects = |sel: &Option<tortie_api::values::LabelSelector>,
                   labels: &BTreeMap<String, String>| match sel {
        Some(s) => s.matches(labels),
        None => false,
    };
    let filters: BTreeMap<String, tortie_api::BGPFilterSpec> = ds
        .list::<tortie_api::BGPFilterSpec>(None)
        .await?
        .items
        .into_iter()
        .map(|f| (f.metadata.name, f.spec))
        .collect();
    for p in ds.list::<BGPPeerSpec>(None).await?.items {
        let s = &p.spec;
        let node_side = match (&s.node, &s.node_selector) {
            (Some(n), _) => *n == cfg.node,
            (None, Some(sel)) => sel.matches(&my_labels),
            (None, None) => true,
        };
        if let Some(peer) = s.peer_ip {
            // An explicit peer (a ToR, an external router).
            if !node_side || peer.ip == me {
                continue;
            }
            let password = match s.password.as_ref().and_then(|p| p.file.as_ref()) {
                Some(f) => std::fs::read_to_string(f)
                    .ok()
                    .map(|s| s.trim_end().to_string()),
                None => None,
            };
            out.insert(
                peer.ip,
                WantedPeer {
                    address: peer.ip,
                    port: peer.port.unwrap_or(179),
                    remote_as: s.as_number.map(|a| a.0).unwrap_or(local_as),
                    passive: false,
                    password,
                    ttl_security: s.ttl_security,
                    rr_client: false,
                    kind: if s.node.is_some() || s.node_selector.is_some() {
                        "node specific"
                    } else {
                        "global"
                    },
                    external: true,
                    import: filter_policy(&filters, &s.filters, false),
                    export: filter_policy(&filters, &s.filters, true),
                },
            );
            continue;
        }
        // Node-to-node peerings by selector are symmetric (as in Calico): a node selected by
        // `nodeSelector` peers with the nodes `peerSelector` selects, and the other way round.
        let peer_side = selects(&s.peer_selector, &my_labels);
        for n in &nodes {
            if n.metadata.name == cfg.node {
                continue;
            }
            let their_node_side = match (&s.node, &s.node_selector) {
                (Some(x), _) => *x == n.metadata.name,
                (None, Some(sel)) => sel.matches(&n.metadata.labels),
                (None, None) => true,
            };
            let wanted = (node_side && selects(&s.peer_selector, &n.metadata.labels))
                || (peer_side && their_node_side);
            if !wanted {
                continue;
            }
            let their_cluster = n
                .spec
                .bgp
                .as_ref()
                .and_then(|b| b.route_reflector_cluster_id);
            // RFC 4456: a reflector's peers outside its cluster are its clients.
            let client = my_cluster.is_some() && their_cluster != my_cluster;
            let kind = if client {
                "route reflector client"
            } else if their_cluster.is_some() {
                "route reflector"
            } else {
                "node (selector)"
            };
            if let Some(p) = node_peer(cfg, cluster, n, client, kind) {
                out.insert(p.address, p);
            }
        }
    }
    Ok(out)
}
