//! The routing information bases, as a pure state machine: `Rib::step(input) -> outputs`.
//!
//! - **Adj-RIB-In** per peer: what the peer announced and import policy accepted.
//! - **Loc-RIB**: per prefix, every candidate path and the best one(s), chosen by the RFC 4271
//!   §9.1.2.2 decision process extended with RFC 4456 §9; paths equal up to the eBGP/iBGP step
//!   form the ECMP set reported to the embedding agent.
//! - **Adj-RIB-Out** per peer: what we last advertised, so that only changes are sent. iBGP split
//!   horizon and route reflection (RFC 4456 §6: client → everyone, non-client → clients only, with
//!   ORIGINATOR_ID and CLUSTER_LIST) decide who gets what.
//!
//! Path attributes are interned (`Arc`): the routes of one UPDATE share one allocation, and the
//! attributes exported to a peer are built once per distinct source attribute set per step.
//! Outputs are batched: one `Send` per peer and attribute set, carrying every prefix of the step.

use std::collections::{BTreeMap, BTreeSet};

// aHash with random keys: several times faster than SipHash on prefix keys, and still keyed, so
// a peer cannot craft prefixes that collide.
use ahash::{AHashMap as HashMap, AHashSet as HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use smallvec::SmallVec;

use crate::policy::Policy;
use crate::types::{Afi, AsSegment, Nlri, PathAttrs, Update};

/// Index of a peer in the RIB.
pub type PeerId = u32;

/// LOCAL_PREF given to routes without one (eBGP-learned, locally originated).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// Next-hop handling towards a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NextHopMode {
    /// Our address towards eBGP peers; unchanged towards iBGP peers.
    #[default]
    Auto,
    /// Always our address.
    SelfAddress,
    /// Never changed (also towards eBGP).
    Keep,
}

/// What the RIB needs to know about a peer.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's AS.
    pub remote_as: u32,
    /// A route-reflector client of ours (iBGP only).
    pub rr_client: bool,
    /// Next-hop handling.
    pub next_hop: NextHopMode,
    /// Import policy.
    pub import: Policy,
    /// Export policy.
    pub export: Policy,
    /// Tear the session down above this many accepted prefixes.
    pub max_prefixes: Option<u32>,
}

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Originated by us (the embedding agent).
    Local,
    /// Learned from a peer.
    Peer(PeerId),
}

/// One candidate path for a prefix.
#[derive(Debug, Clone)]
pub struct Path {
    /// Who sent it.
    pub source: Source,
    /// ADD-PATH identifier it was received with.
    pub path_id: Option<u32>,
    /// Its attributes (shared).
    pub attrs: Arc<PathAttrs>,
    /// Kept from a peer that is restarting (RFC 4724 §4.2).
    pub stale: bool,
}

/// An ECMP next-hop set, shared: most prefixes have the same one.
pub type NextHops = Arc<[IpAddr]>;

/// A Loc-RIB best-path change, for the embedding agent (kernel routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestChange {
    /// The prefix.
    pub prefix: IpNet,
    /// The next hops of the ECMP set (empty: the prefix is gone or only local).
    pub next_hops: NextHops,
}

/// Inputs.
#[derive(Debug, Clone)]
pub enum RibInput {
    /// A session reached Established.
    PeerUp {
        /// Peer.
        peer: PeerId,
        /// Its configuration.
        config: PeerConfig,
        /// Its BGP identifier.
        bgp_id: Ipv4Addr,
        /// Our address on the session (for next-hop self).
        local_address: IpAddr,
        /// Negotiated families.
        families: BTreeSet<Afi>,
    },
    /// A session went down; with `stale_for`, the peer is GR-capable: keep its routes as stale
    /// that long (RFC 4724 §4.2) instead of withdrawing them.
    PeerDown {
        /// Peer.
        peer: PeerId,
        /// GR restart time of the peer.
        stale_for: Option<Duration>,
    },
    /// The peer was removed from the configuration.
    PeerRemoved {
        /// Peer.
        peer: PeerId,
    },
    /// An UPDATE from a peer.
    Update {
        /// Peer.
        peer: PeerId,
        /// The update.
        update: Update,
    },
    /// The restart timer of a peer expired: drop its stale routes.
    StaleTimerExpired {
        /// Peer.
        peer: PeerId,
    },
    /// The peer asked for our routes again (RFC 2918).
    RouteRefresh {
        /// Peer.
        peer: PeerId,
        /// Family.
        afi: Afi,
    },
    /// Originate prefixes (or change their attributes).
    Originate {
        /// Prefixes with their attributes (next hop may be left empty: the session address is used).
        routes: Vec<(IpNet, PathAttrs)>,
    },
    /// Stop originating prefixes.
    WithdrawLocal {
        /// Prefixes.
        prefixes: Vec<IpNet>,
    },
}

/// Outputs.
// Values are built once and moved straight to their consumer; boxing would only add an
// allocation per UPDATE on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RibOutput {
    /// Send this to a peer.
    Send {
        /// Peer.
        peer: PeerId,
        /// What to send (the codec splits it into messages).
        update: Update,
    },
    /// Best paths changed.
    BestChanged(Vec<BestChange>),
    /// Start the stale timer of a peer.
    StartStaleTimer {
        /// Peer.
        peer: PeerId,
        /// How long.
        after: Duration,
    },
    /// The peer sent more prefixes than allowed: stop it with Cease/1 (RFC 4486).
    MaxPrefixesExceeded {
        /// Peer.
        peer: PeerId,
        /// The limit.
        limit: u32,
    },
}

#[derive(Debug)]
struct PeerState {
    config: PeerConfig,
    bgp_id: Ipv4Addr,
    local_address: IpAddr,
    families: BTreeSet<Afi>,
    established: bool,
    ibgp: bool,
    adj_in: HashMap<(IpNet, Option<u32>), Arc<PathAttrs>>,
    adj_out: HashMap<IpNet, Arc<PathAttrs>>,
    /// Prefixes still stale after a graceful restart, per family.
    stale: HashSet<(IpNet, Option<u32>)>,
}

/// Counters of one peer, for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Routes in Adj-RIB-In (accepted by import policy).
    pub accepted: usize,
    /// Routes we currently advertise to it.
    pub advertised: usize,
    /// Of the accepted, the stale ones.
    pub stale: usize,
}

/// The RIBs of one speaker.
pub struct Rib {
    local_as: u32,
    router_id: Ipv4Addr,
    /// Set when we are a route reflector (RFC 4456 §7).
    cluster_id: Option<Ipv4Addr>,
    peers: HashMap<PeerId, PeerState>,
    /// One path inline (the common case: a block announced by one node), more on the heap.
    loc: HashMap<IpNet, SmallVec<[Path; 1]>>,
    /// Last reported ECMP next hops per prefix (to report only changes), interned.
    best_hops: HashMap<IpNet, NextHops>,
    hop_sets: HashSet<NextHops>,
    interner: HashSet<Arc<PathAttrs>>,
    interner_clean_at: usize,
}

/// Compares two paths by the decision process; `Less` means `a` is better.
fn compare(peers: &HashMap<PeerId, PeerState>, a: &Path, b: &Path) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    // Our own routes first (the "weight" every implementation has).
    match (a.source, b.source) {
        (Source::Local, Source::Local) => return Equal,
        (Source::Local, _) => return Less,
        (_, Source::Local) => return Greater,
        _ => {}
    }
    // Not stale before stale (RFC 4724 §4.2 keeps stale routes only as a fallback).
    if a.stale != b.stale {
        return if a.stale { Greater } else { Less };
    }
    let ord = ecmp_key_cmp(peers, a, b);
    if ord != Equal {
        return ord;
    }
    let (pa, pb) = (peer_of(peers, a), peer_of(peers, b));
    // f) IGP cost to the next hop: not known here. g) lowest BGP identifier, ORIGINATOR_ID when
    // reflected (RFC 4456 §9).
    let id = |p: &Path, st: Option<&PeerState>| {
        p.attrs
            .originator_id
            .or(st.map(|s| s.bgp_id))
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    };
    let ord = id(a, pa).cmp(&id(b, pb));
    if ord != Equal {
        return ord;
    }
    // RFC 4456 §9: shorter CLUSTER_LIST.
    let ord = a.attrs.cluster_list.len().cmp(&b.attrs.cluster_list.len());
    if ord != Equal {
        return ord;
    }
    // h) lowest peer address.
    let addr = |st: Option<&PeerState>| st.map(|s| s.config.address);
    addr(pa).cmp(&addr(pb)).then(a.path_id.cmp(&b.path_id))
}

/// Steps a)–e) of RFC 4271 §9.1.2.2; paths equal here are equal-cost multipaths.
fn ecmp_key_cmp(peers: &HashMap<PeerId, PeerState>, a: &Path, b: &Path) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let lp = |p: &Path| p.attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF);
    let ord = lp(b).cmp(&lp(a)); // higher is better
    if ord != Equal {
        return ord;
    }
    let ord = a.attrs.as_path_len().cmp(&b.attrs.as_path_len());
    if ord != Equal {
        return ord;
    }
    let ord = a.attrs.origin.cmp(&b.attrs.origin);
    if ord != Equal {
        return ord;
    }
    // c) MED only between paths from the same neighbouring AS; a missing MED is 0.
    if a.attrs.neighbor_as() == b.attrs.neighbor_as() {
        let ord = a.attrs.med.unwrap_or(0).cmp(&b.attrs.med.unwrap_or(0));
        if ord != Equal {
            return ord;
        }
    }
    // d) eBGP over iBGP.
    let ibgp = |p: &Path| peer_of(peers, p).is_some_and(|s| s.ibgp);
    ibgp(a).cmp(&ibgp(b))
}

fn peer_of<'a>(peers: &'a HashMap<PeerId, PeerState>, p: &Path) -> Option<&'a PeerState> {
    match p.source {
        Source::Peer(id) => peers.get(&id),
        Source::Local => None,
    }
}

impl Rib {
    /// An empty RIB. `cluster_id` makes this speaker a route reflector.
    pub fn new(local_as: u32, router_id: Ipv4Addr, cluster_id: Option<Ipv4Addr>) -> Self {
        Rib {
            local_as,
            router_id,
            cluster_id,
            peers: HashMap::default(),
            loc: HashMap::default(),
            best_hops: HashMap::default(),
            hop_sets: HashSet::default(),
            interner: HashSet::default(),
            interner_clean_at: 1024,
        }
    }

    fn intern(&mut self, attrs: PathAttrs) -> Arc<PathAttrs> {
        if let Some(a) = self.interner.get(&attrs) {
            return a.clone();
        }
        let a = Arc::new(attrs);
        self.interner.insert(a.clone());
        if self.interner.len() > self.interner_clean_at {
            // Drop attribute sets no route uses any more.
            self.interner.retain(|a| Arc::strong_count(a) > 1);
            self.interner_clean_at = (self.interner.len() * 2).max(1024);
        }
        a
    }

    /// Number of distinct attribute sets held (for tests and status).
    pub fn interned(&self) -> usize {
        self.interner.len()
    }

    /// Number of prefixes in the Loc-RIB.
    pub fn len(&self) -> usize {
        self.loc.len()
    }

    /// True when the Loc-RIB is empty.
    pub fn is_empty(&self) -> bool {
        self.loc.is_empty()
    }

    /// The candidate paths of a prefix, best first.
    pub fn paths(&self, prefix: &IpNet) -> &[Path] {
        self.loc.get(prefix).map_or(&[], |p| p.as_slice())
    }

    /// Counters of a peer.
    pub fn counters(&self, peer: PeerId) -> PeerCounters {
        self.peers
            .get(&peer)
            .map_or_else(PeerCounters::default, |p| PeerCounters {
                accepted: p.adj_in.len(),
                advertised: p.adj_out.len(),
                stale: p.stale.len(),
            })
    }

    /// Applies one input.
    pub fn step(&mut self, input: RibInput) -> Vec<RibOutput> {
        let mut out = Vec::new();
        let mut changed: Vec<IpNet> = Vec::new();
        let mut only_peer: Option<PeerId> = None;
        match input {
            RibInput::PeerUp {
                peer,
                config,
                bgp_id,
                local_address,
                families,
            } => {
                let ibgp = config.remote_as == self.local_as;
                let st = self.peers.entry(peer).or_insert_with(|| PeerState {
                    config: config.clone(),
                    bgp_id,
                    local_address,
                    families: families.clone(),
                    established: false,
                    ibgp,
                    adj_in: HashMap::default(),
                    adj_out: HashMap::default(),
                    stale: HashSet::default(),
                });
                st.config = config;
                st.bgp_id = bgp_id;
                st.local_address = local_address;
                st.families = families.clone();
                st.ibgp = ibgp;
                st.established = true;
                st.adj_out.clear();
                // Initial table dump, then End-of-RIB per family (RFC 4724 §2).
                changed = self.loc.keys().copied().collect();
                changed.sort_unstable();
                only_peer = Some(peer);
                self.export(&changed, only_peer, &mut out);
                for afi in families {
                    out.push(RibOutput::Send {
                        peer,
                        update: Update {
                            end_of_rib: Some(afi),
                            ..Default::default()
                        },
                    });
                }
                return out;
            }
            RibInput::PeerDown { peer, stale_for } => {
                let Some(st) = self.peers.get_mut(&peer) else {
                    return out;
                };
                st.established = false;
                st.adj_out.clear();
                match stale_for {
                    Some(after) if !st.adj_in.is_empty() => {
                        st.stale = st.adj_in.keys().copied().collect();
                        let keys: Vec<_> = st.stale.iter().copied().collect();
                        for (prefix, pid) in keys {
                            if let Some(paths) = self.loc.get_mut(&prefix) {
                                for p in paths
                                    .iter_mut()
                                    .filter(|p| p.source == Source::Peer(peer) && p.path_id == pid)
                                {
                                    p.stale = true;
                                }
                                changed.push(prefix);
                            }
                        }
                        out.push(RibOutput::StartStaleTimer { peer, after });
                    }
                    _ => changed = self.drop_peer_routes(peer, |_| true),
                }
            }
            RibInput::PeerRemoved { peer } => {
                changed = self.drop_peer_routes(peer, |_| true);
                self.peers.remove(&peer);
            }
            RibInput::StaleTimerExpired { peer } => {
                changed = self.drop_stale(peer, None);
            }
            RibInput::RouteRefresh { peer, afi } => {
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.adj_out.retain(|p, _| Afi::of(p) != afi);
                }
                let mut prefixes: Vec<IpNet> = self
                    .loc
                    .keys()
                    .filter(|p| Afi::of(p) == afi)
                    .copied()
                    .collect();
                prefixes.sort_unstable();
                self.export(&prefixes, Some(peer), &mut out);
                return out;
            }
            RibInput::Update { peer, update } => {
                changed = self.import(peer, update, &mut out);
            }
            RibInput::Originate { routes } => {
                for (prefix, attrs) in routes {
                    let attrs = self.intern(attrs);
                    let paths = self.loc.entry(prefix.trunc()).or_default();
                    paths.retain(|p| p.source != Source::Local);
                    paths.push(Path {
                        source: Source::Local,
                        path_id: None,
                        attrs,
                        stale: false,
                    });
                    changed.push(prefix.trunc());
                }
            }
            RibInput::WithdrawLocal { prefixes } => {
                for prefix in prefixes {
                    if let Some(paths) = self.loc.get_mut(&prefix.trunc()) {
                        paths.retain(|p| p.source != Source::Local);
                        changed.push(prefix.trunc());
                    }
                }
            }
        }
        self.decide(&changed, &mut out);
        self.export(&changed, only_peer, &mut out);
        out
    }

    fn drop_peer_routes(
        &mut self,
        peer: PeerId,
        keep_if: impl Fn(&(IpNet, Option<u32>)) -> bool,
    ) -> Vec<IpNet> {
        let Some(st) = self.peers.get_mut(&peer) else {
            return Vec::new();
        };
        let gone: Vec<(IpNet, Option<u32>)> =
            st.adj_in.keys().filter(|k| keep_if(k)).copied().collect();
        for k in &gone {
            st.adj_in.remove(k);
            st.stale.remove(k);
        }
        let mut changed = Vec::with_capacity(gone.len());
        for (prefix, pid) in gone {
            if let Some(paths) = self.loc.get_mut(&prefix) {
                paths.retain(|p| !(p.source == Source::Peer(peer) && p.path_id == pid));
                changed.push(prefix);
            }
        }
        changed
    }

    /// Drops the stale routes of `peer` (of one family, or all).
    fn drop_stale(&mut self, peer: PeerId, afi: Option<Afi>) -> Vec<IpNet> {
        let Some(st) = self.peers.get(&peer) else {
            return Vec::new();
        };
        let stale: HashSet<(IpNet, Option<u32>)> = st
            .stale
            .iter()
            .filter(|(p, _)| afi.is_none_or(|a| Afi::of(p) == a))
            .copied()
            .collect();
        self.drop_peer_routes(peer, |k| stale.contains(k))
    }

    fn import(&mut self, peer: PeerId, update: Update, out: &mut Vec<RibOutput>) -> Vec<IpNet> {
        let mut changed = Vec::new();
        if let Some(afi) = update.end_of_rib {
            // RFC 4724 §4.2: End-of-RIB ends the stale phase for the family.
            return self.drop_stale(peer, Some(afi));
        }
        let Some(st) = self.peers.get(&peer) else {
            return changed;
        };
        let (ibgp, import) = (st.ibgp, st.config.import.clone());
        let mut withdrawn = update.withdrawn;
        let mut accepted: Vec<Nlri> = Vec::new();
        let mut attrs_arc = None;
        if let Some(mut attrs) = update.attrs {
            let looped = if ibgp {
                // RFC 4456 §8: our own reflected routes come back.
                attrs.originator_id == Some(self.router_id)
                    || self
                        .cluster_id
                        .is_some_and(|c| attrs.cluster_list.contains(&c))
            } else {
                // RFC 4271 §9.1.2: a path containing our AS is unusable.
                attrs.contains_as(self.local_as)
            };
            if looped {
                withdrawn.extend(update.announced);
            } else {
                if !ibgp {
                    // LOCAL_PREF is not carried from another AS (RFC 4271 §5.1.5).
                    attrs.local_pref = None;
                }
                for n in update.announced {
                    if import.accepts(&n.prefix) {
                        accepted.push(n);
                    } else {
                        withdrawn.push(n);
                    }
                }
                if !accepted.is_empty() {
                    attrs_arc = Some(self.intern(attrs));
                }
            }
        }
        let st = self.peers.get_mut(&peer).expect("checked above");
        for n in withdrawn {
            let key = (n.prefix, n.path_id);
            if st.adj_in.remove(&key).is_some() {
                st.stale.remove(&key);
                if let Some(paths) = self.loc.get_mut(&n.prefix) {
                    paths.retain(|p| !(p.source == Source::Peer(peer) && p.path_id == n.path_id));
                }
                changed.push(n.prefix);
            }
        }
        if let Some(attrs) = attrs_arc {
            let any_stale = !st.stale.is_empty();
            for n in accepted {
                let key = (n.prefix, n.path_id);
                if any_stale {
                    st.stale.remove(&key);
                }
                let same = st
                    .adj_in
                    .get(&key)
                    .is_some_and(|old| Arc::ptr_eq(old, &attrs));
                st.adj_in.insert(key, attrs.clone());
                let paths = self.loc.entry(n.prefix).or_default();
                match paths
                    .iter_mut()
                    .find(|p| p.source == Source::Peer(peer) && p.path_id == n.path_id)
                {
                    Some(p) => {
                        if same && !p.stale {
                            continue;
                        }
                        p.attrs = attrs.clone();
                        p.stale = false;
                    }
                    None => paths.push(Path {
                        source: Source::Peer(peer),
                        path_id: n.path_id,
                        attrs: attrs.clone(),
                        stale: false,
                    }),
                }
                changed.push(n.prefix);
            }
            if let Some(limit) = st.config.max_prefixes
                && st.adj_in.len() > limit as usize
            {
                out.push(RibOutput::MaxPrefixesExceeded { peer, limit });
            }
        }
        changed
    }

    /// Re-runs the decision process for `changed` prefixes and reports ECMP next-hop changes.
    fn decide(&mut self, changed: &[IpNet], out: &mut Vec<RibOutput>) {
        // No sort/dedup: a prefix listed twice is evaluated twice, and the second time nothing
        // has changed, so it is neither reported nor exported again.
        let mut report = Vec::new();
        let mut hops: Vec<IpAddr> = Vec::with_capacity(4);
        let empty: NextHops = Arc::from(Vec::new());
        for prefix in changed.iter() {
            let paths = match self.loc.get_mut(prefix) {
                Some(p) if !p.is_empty() => p,
                _ => {
                    self.loc.remove(prefix);
                    if self.best_hops.remove(prefix).is_some() {
                        report.push(BestChange {
                            prefix: *prefix,
                            next_hops: empty.clone(),
                        });
                    }
                    continue;
                }
            };
            if paths.len() > 1 {
                let peers = &self.peers;
                paths.sort_by(|a, b| compare(peers, a, b));
            }
            let best = &paths[0];
            hops.clear();
            if best.source != Source::Local {
                hops.extend(
                    paths
                        .iter()
                        .take_while(|p| {
                            p.source != Source::Local
                                && p.stale == best.stale
                                && ecmp_key_cmp(&self.peers, p, best).is_eq()
                        })
                        .filter_map(|p| p.attrs.next_hop),
                );
                hops.sort_unstable();
                hops.dedup();
            }
            if self.best_hops.get(prefix).is_some_and(|h| **h == *hops) {
                continue;
            }
            let set = match self.hop_sets.get(hops.as_slice()) {
                Some(s) => s.clone(),
                None => {
                    let s: NextHops = Arc::from(hops.as_slice());
                    self.hop_sets.insert(s.clone());
                    s
                }
            };
            report.push(BestChange {
                prefix: *prefix,
                next_hops: set.clone(),
            });
            self.best_hops.insert(*prefix, set);
        }
        if self.hop_sets.len() > 4096 {
            self.hop_sets.retain(|s| Arc::strong_count(s) > 1);
        }
        if !report.is_empty() {
            out.push(RibOutput::BestChanged(report));
        }
    }

    /// What to advertise to `to` for the best path `best` of a prefix, or `None` to advertise
    /// nothing (split horizon, reflection rules, policy).
    fn export_attrs(
        &self,
        to: &PeerState,
        to_id: PeerId,
        best: &Path,
        afi: Afi,
    ) -> Option<PathAttrs> {
        let from = peer_of(&self.peers, best);
        if best.source == Source::Peer(to_id) {
            return None; // never back to where it came from
        }
        if best.stale && from.is_none() {
            return None;
        }
        let from_ibgp = from.is_some_and(|f| f.ibgp);
        let mut attrs = (*best.attrs).clone();
        if to.ibgp {
            if from_ibgp {
                // RFC 4456 §6: reflect client routes to everyone and non-client routes to clients.
                let cluster = self.cluster_id?;
                let from_client = from.is_some_and(|f| f.config.rr_client);
                if !from_client && !to.config.rr_client {
                    return None;
                }
                if attrs.originator_id.is_none() {
                    attrs.originator_id = from.map(|f| f.bgp_id);
                }
                attrs.cluster_list.insert(0, cluster);
            }
            attrs.local_pref.get_or_insert(DEFAULT_LOCAL_PREF);
            if to.config.next_hop == NextHopMode::SelfAddress
                || attrs.next_hop.is_none_or(|n| n.is_unspecified())
            {
                attrs.next_hop = Some(own_next_hop(to.local_address, afi));
            }
        } else {
            // eBGP: prepend our AS, next hop self, no LOCAL_PREF / RR attributes, MED only for
            // our own routes (RFC 4271 §5.1.4).
            match attrs.as_path.first_mut() {
                Some(AsSegment::Sequence(v)) if v.len() < 255 => v.insert(0, self.local_as),
                _ => attrs
                    .as_path
                    .insert(0, AsSegment::Sequence(vec![self.local_as])),
            }
            attrs.local_pref = None;
            attrs.originator_id = None;
            attrs.cluster_list.clear();
            if from.is_some() {
                attrs.med = None;
            }
            if to.config.next_hop != NextHopMode::Keep
                || attrs.next_hop.is_none_or(|n| n.is_unspecified())
            {
                attrs.next_hop = Some(own_next_hop(to.local_address, afi));
                attrs.link_local_next_hop = None;
            }
        }
        to.config.export.apply(&mut attrs);
        Some(attrs)
    }

    /// Advertises the current best of `prefixes` to every established peer (or only `only`),
    /// sending only what differs from the Adj-RIB-Out, batched per attribute set.
    fn export(&mut self, prefixes: &[IpNet], only: Option<PeerId>, out: &mut Vec<RibOutput>) {
        let ids: Vec<PeerId> = match only {
            Some(p) => vec![p],
            None => {
                let mut v: Vec<PeerId> = self
                    .peers
                    .iter()
                    .filter(|(_, s)| s.established)
                    .map(|(id, _)| *id)
                    .collect();
                v.sort_unstable();
                v
            }
        };
        for to_id in ids {
            let Some(to) = self.peers.get(&to_id) else {
                continue;
            };
            if !to.established {
                continue;
            }
            // Exported attributes built once per source attribute set in this step.
            let mut cache: HashMap<(*const PathAttrs, Afi), Option<Arc<PathAttrs>>> =
                HashMap::default();
            let mut announce: Vec<(Arc<PathAttrs>, Vec<Nlri>)> = Vec::new();
            let mut group_of: HashMap<*const PathAttrs, usize> = HashMap::default();
            let mut withdraw: Vec<Nlri> = Vec::new();
            let mut new_out: Vec<(IpNet, Option<Arc<PathAttrs>>)> =
                Vec::with_capacity(prefixes.len());
            for prefix in prefixes {
                if !to.families.contains(&Afi::of(prefix)) {
                    continue;
                }
                let best = self.loc.get(prefix).and_then(|p| p.first());
                // The common case when receiving a table: the best path came from this very peer
                // and we never advertised anything to it; nothing to do, skip the lookups.
                if to.adj_out.is_empty() && best.is_some_and(|b| b.source == Source::Peer(to_id)) {
                    continue;
                }
                let exported = match best {
                    Some(b) if to.config.export.accepts(prefix) => {
                        // The cache key includes the family: the next hop differs per family.
                        let key = (Arc::as_ptr(&b.attrs), Afi::of(prefix));
                        match cache.get(&key) {
                            Some(e) if b.source != Source::Peer(to_id) => e.clone(),
                            _ => {
                                let e = self
                                    .export_attrs(to, to_id, b, Afi::of(prefix))
                                    .map(Arc::new);
                                if b.source != Source::Peer(to_id) {
                                    cache.insert(key, e.clone());
                                }
                                e
                            }
                        }
                    }
                    _ => None,
                };
                match (&exported, to.adj_out.get(prefix)) {
                    (Some(e), Some(old)) if **e == **old => {}
                    (Some(e), _) => {
                        let g = *group_of.entry(Arc::as_ptr(e)).or_insert_with(|| {
                            announce.push((e.clone(), Vec::new()));
                            announce.len() - 1
                        });
                        announce[g].1.push(Nlri::new(*prefix));
                        new_out.push((*prefix, exported.clone()));
                    }
                    (None, Some(_)) => {
                        withdraw.push(Nlri::new(*prefix));
                        new_out.push((*prefix, None));
                    }
                    (None, None) => {}
                }
            }
            let to = self.peers.get_mut(&to_id).expect("present");
            for (prefix, e) in new_out {
                match e {
                    Some(e) => {
                        to.adj_out.insert(prefix, e);
                    }
                    None => {
                        to.adj_out.remove(&prefix);
                    }
                }
            }
            // One UPDATE per family (the codec packs and splits); withdrawals first.
            for afi in [Afi::Ipv4, Afi::Ipv6] {
                let w: Vec<Nlri> = withdraw
                    .iter()
                    .filter(|n| Afi::of(&n.prefix) == afi)
                    .copied()
                    .collect();
                if !w.is_empty() {
                    out.push(RibOutput::Send {
                        peer: to_id,
                        update: Update {
                            withdrawn: w,
                            ..Default::default()
                        },
                    });
                }
            }
            for (attrs, nlri) in announce {
                for afi in [Afi::Ipv4, Afi::Ipv6] {
                    let n: Vec<Nlri> = nlri
                        .iter()
                        .filter(|n| Afi::of(&n.prefix) == afi)
                        .copied()
                        .collect();
                    if !n.is_empty() {
                        out.push(RibOutput::Send {
                            peer: to_id,
                            update: Update {
                                announced: n,
                                attrs: Some((*attrs).clone()),
                                ..Default::default()
                            },
                        });
                    }
                }
            }
        }
    }
}

/// Our next hop for a family: the session address when it is of that family, else its
/// IPv4-mapped IPv6 form (RFC 4291 §2.5.5.2) for IPv6 routes over an IPv4 session.
fn own_next_hop(session: IpAddr, afi: Afi) -> IpAddr {
    match (session, afi) {
        (IpAddr::V4(v4), Afi::Ipv6) => IpAddr::V6(v4.to_ipv6_mapped()),
        (a, _) => a,
    }
}

/// All the prefixes of a Loc-RIB with their best-path next hops (for status and tests).
pub fn best_next_hops(rib: &Rib) -> BTreeMap<IpNet, Vec<IpAddr>> {
    rib.best_hops
        .iter()
        .map(|(k, v)| (*k, v.to_vec()))
        .collect()
}
