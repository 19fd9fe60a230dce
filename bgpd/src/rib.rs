//! The routing information bases, as a pure state machine: `Rib::step(input) -> outputs`.
//!
//! - **Adj-RIB-In** per peer: what the peer announced and import policy accepted.
//! - **Loc-RIB**: per prefix, every candidate path and the best one(s), chosen by the RFC 4271
//!   §9.1.2.2 decision process extended with RFC 4456 §9; paths equal up to the eBGP/iBGP step
//!   form the ECMP set reported to the embedding agent.
//!
//!   Both live in one table keyed once per prefix: an entry holds the candidate paths of every
//!   peer (and ours) in decision order, so a peer's Adj-RIB-In is its paths there (with
//!   per-peer counters), and the reported next hops are recomputed from the paths rather than
//!   stored. A received route costs one table lookup; an entry is 56 bytes.
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
    /// Paths of this peer in the table (its Adj-RIB-In: what import policy accepted).
    accepted: usize,
    /// Of those, the ones still stale after a graceful restart.
    stale: usize,
    /// End-of-RIB received (any family) since the session came up: the peer's initial table
    /// is complete (RFC 4724 §2).
    end_of_rib: bool,
    adj_out: HashMap<IpNet, Arc<PathAttrs>>,
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
    /// The peer has sent End-of-RIB since the session came up (its initial table is in).
    pub end_of_rib: bool,
}

/// The candidate paths of one prefix: one inline (the common case: a block announced by one
/// node), more on the heap. 32 bytes, like one `Path`.
#[derive(Debug)]
enum Paths {
    One(Path),
    Many(Vec<Path>),
}

impl Paths {
    fn as_slice(&self) -> &[Path] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Path] {
        match self {
            Paths::One(p) => std::slice::from_mut(p),
            Paths::Many(v) => v,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Paths::Many(v) if v.is_empty())
    }

    fn push(&mut self, path: Path) {
        match self {
            Paths::Many(v) if v.is_empty() => *self = Paths::One(path),
            Paths::Many(v) => v.push(path),
            Paths::One(_) => {
                let Paths::One(first) = std::mem::replace(self, Paths::Many(Vec::new())) else {
                    unreachable!()
                };
                *self = Paths::Many(vec![first, path]);
            }
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&Path) -> bool) {
        match self {
            Paths::One(p) => {
                if !keep(p) {
                    *self = Paths::Many(Vec::new());
                }
            }
            Paths::Many(v) => {
                v.retain(|p| keep(p));
                if v.len() == 1 {
                    let p = v.pop().expect("one");
                    *self = Paths::One(p);
                } else if v.is_empty() {
                    *self = Paths::Many(Vec::new()); // frees the buffer
                }
            }
        }
    }
}

/// One prefix of the table: its candidate paths (the Adj-RIB-In of every peer and our own
/// routes, in one place) in decision order, best first.
struct Entry {
    paths: Paths,
    prefix: IpNet,
    /// Already listed in the current step's changes (with its state before the step).
    dirty: bool,
}

/// The table, keyed once per prefix: entries stored densely (56 bytes each; the vector grows
/// in place, without a second copy, and nothing is rehashed with it), plus an index of 4-byte
/// positions hashed by prefix. Emptied entries are removed at the end of a step.
struct Table {
    index: hashbrown::HashTable<u32>,
    entries: Vec<Entry>,
    hasher: ahash::RandomState,
}

impl Table {
    fn new() -> Self {
        Table {
            index: hashbrown::HashTable::new(),
            entries: Vec::new(),
            hasher: ahash::RandomState::new(),
        }
    }

    fn find(&self, prefix: &IpNet) -> Option<u32> {
        let h = self.hasher.hash_one(prefix);
        self.index
            .find(h, |&i| self.entries[i as usize].prefix == *prefix)
            .copied()
    }

    /// The position of `prefix`, created (with no paths) if absent; true when created.
    fn find_or_insert(&mut self, prefix: IpNet) -> (u32, bool) {
        let h = self.hasher.hash_one(prefix);
        let (entries, hasher) = (&mut self.entries, &self.hasher);
        match self.index.entry(
            h,
            |&i| entries[i as usize].prefix == prefix,
            |&i| hasher.hash_one(entries[i as usize].prefix),
        ) {
            hashbrown::hash_table::Entry::Occupied(o) => (*o.get(), false),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let i = u32::try_from(entries.len()).expect("fewer than 2^32 prefixes");
                entries.push(Entry {
                    paths: Paths::Many(Vec::new()),
                    prefix,
                    dirty: false,
                });
                v.insert(i);
                (i, true)
            }
        }
    }

    /// Removes the entry at `i`; the last entry takes its position.
    fn remove(&mut self, i: u32) {
        let h = self.hasher.hash_one(self.entries[i as usize].prefix);
        if let Ok(e) = self.index.find_entry(h, |&j| j == i) {
            e.remove();
        }
        let last = (self.entries.len() - 1) as u32;
        if i != last {
            let h = self.hasher.hash_one(self.entries[last as usize].prefix);
            if let Some(j) = self.index.find_mut(h, |&j| j == last) {
                *j = i;
            }
        }
        self.entries.swap_remove(i as usize);
    }

    /// Gives memory back after large withdrawals.
    fn maybe_shrink(&mut self) {
        let (len, cap) = (self.entries.len(), self.entries.capacity());
        if cap > 1024 && len < cap / 4 {
            self.entries.shrink_to(len * 2);
            let (entries, hasher) = (&self.entries, &self.hasher);
            self.index
                .shrink_to(len * 2, |&i| hasher.hash_one(entries[i as usize].prefix));
        }
    }
}

/// A prefix touched in the current step, with the ECMP next hops it had before (`None`: it did
/// not exist). Between steps every entry has paths and its last reported next hops are exactly
/// those computed from its paths, so nothing else needs to be stored per prefix.
struct Changed {
    idx: u32,
    old: Option<SmallVec<[IpAddr; 2]>>,
}

/// The RIBs of one speaker.
pub struct Rib {
    local_as: u32,
    router_id: Ipv4Addr,
    /// Set when we are a route reflector (RFC 4456 §7).
    cluster_id: Option<Ipv4Addr>,
    peers: HashMap<PeerId, PeerState>,
    /// Adj-RIB-In of every peer and Loc-RIB, one entry per prefix.
    table: Table,
    /// Interned ECMP next-hop sets for reports (a cache: reports share them).
    hop_sets: HashSet<NextHops>,
    interner: HashSet<Arc<PathAttrs>>,
    interner_clean_at: usize,
    /// Build `BestChanged` outputs (off when nobody consumes them).
    report_best: bool,
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

/// The ECMP next hops of `paths` (in decision order, best first): those of the paths equal to
/// the best up to the eBGP/iBGP step; empty when the best is ours.
fn ecmp_hops(peers: &HashMap<PeerId, PeerState>, paths: &[Path], out: &mut SmallVec<[IpAddr; 2]>) {
    out.clear();
    let Some(best) = paths.first() else {
        return;
    };
    if best.source == Source::Local {
        return;
    }
    out.extend(
        paths
            .iter()
            .take_while(|p| {
                p.source != Source::Local
                    && p.stale == best.stale
                    && (paths.len() == 1 || ecmp_key_cmp(peers, p, best).is_eq())
            })
            .filter_map(|p| p.attrs.next_hop),
    );
    if out.len() > 1 {
        out.sort_unstable();
        out.dedup();
    }
}

/// Lists entry `i` in the step's changes, with its next hops before the step, unless already
/// listed. Call before changing its paths.
fn touch(
    entries: &mut [Entry],
    peers: &HashMap<PeerId, PeerState>,
    changed: &mut Vec<Changed>,
    i: u32,
    report: bool,
) {
    let e = &mut entries[i as usize];
    if e.dirty {
        return;
    }
    e.dirty = true;
    let mut old = SmallVec::new();
    if report {
        ecmp_hops(peers, e.paths.as_slice(), &mut old);
    }
    changed.push(Changed {
        idx: i,
        old: Some(old),
    });
}

impl Rib {
    /// An empty RIB. `cluster_id` makes this speaker a route reflector.
    pub fn new(local_as: u32, router_id: Ipv4Addr, cluster_id: Option<Ipv4Addr>) -> Self {
        Rib {
            local_as,
            router_id,
            cluster_id,
            peers: HashMap::default(),
            table: Table::new(),
            hop_sets: HashSet::default(),
            interner: HashSet::default(),
            interner_clean_at: 1024,
            report_best: true,
        }
    }

    /// Whether to produce [`RibOutput::BestChanged`] (default: yes). An embedding with nobody
    /// listening turns it off to save the work; changes made meanwhile are not reported later.
    pub fn set_report_best(&mut self, on: bool) {
        self.report_best = on;
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
        self.table.entries.len()
    }

    /// True when the Loc-RIB is empty.
    pub fn is_empty(&self) -> bool {
        self.table.entries.is_empty()
    }

    /// The candidate paths of a prefix, best first.
    pub fn paths(&self, prefix: &IpNet) -> &[Path] {
        self.table
            .find(prefix)
            .map_or(&[], |i| self.table.entries[i as usize].paths.as_slice())
    }

    /// Counters of a peer.
    pub fn counters(&self, peer: PeerId) -> PeerCounters {
        self.peers
            .get(&peer)
            .map_or_else(PeerCounters::default, |p| PeerCounters {
                accepted: p.accepted,
                advertised: p.adj_out.len(),
                stale: p.stale,
                end_of_rib: p.end_of_rib,
            })
    }

    /// Positions of all prefixes (of one family), in prefix order.
    fn sorted_positions(&self, afi: Option<Afi>) -> Vec<u32> {
        let entries = &self.table.entries;
        let mut v: Vec<u32> = (0..entries.len() as u32)
            .filter(|&i| afi.is_none_or(|a| Afi::of(&entries[i as usize].prefix) == a))
            .collect();
        v.sort_unstable_by_key(|&i| entries[i as usize].prefix);
        v
    }

    /// Applies one input.
    pub fn step(&mut self, input: RibInput) -> Vec<RibOutput> {
        let mut out = Vec::new();
        let mut changed: Vec<Changed> = Vec::new();
        let report = self.report_best;
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
                    accepted: 0,
                    stale: 0,
                    end_of_rib: false,
                    adj_out: HashMap::default(),
                });
                st.config = config;
                st.bgp_id = bgp_id;
                st.local_address = local_address;
                st.families = families.clone();
                st.ibgp = ibgp;
                st.established = true;
                st.end_of_rib = false;
                st.adj_out.clear();
                // Initial table dump, then End-of-RIB per family (RFC 4724 §2).
                let all = self.sorted_positions(None);
                self.export(&all, Some(peer), &mut out);
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
                    Some(after) if st.accepted > 0 => {
                        st.stale = st.accepted;
                        let (entries, peers) = (&mut self.table.entries, &self.peers);
                        for i in 0..entries.len() as u32 {
                            if !entries[i as usize]
                                .paths
                                .as_slice()
                                .iter()
                                .any(|p| p.source == Source::Peer(peer))
                            {
                                continue;
                            }
                            touch(entries, peers, &mut changed, i, report);
                            for p in entries[i as usize].paths.as_mut_slice() {
                                if p.source == Source::Peer(peer) {
                                    p.stale = true;
                                }
                            }
                        }
                        out.push(RibOutput::StartStaleTimer { peer, after });
                    }
                    _ => self.drop_peer_routes(peer, |_, _| false, &mut changed),
                }
            }
            RibInput::PeerRemoved { peer } => {
                self.drop_peer_routes(peer, |_, _| false, &mut changed);
                self.peers.remove(&peer);
            }
            RibInput::StaleTimerExpired { peer } => {
                self.drop_stale(peer, None, &mut changed);
            }
            RibInput::RouteRefresh { peer, afi } => {
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.adj_out.retain(|p, _| Afi::of(p) != afi);
                }
                let prefixes = self.sorted_positions(Some(afi));
                self.export(&prefixes, Some(peer), &mut out);
                return out;
            }
            RibInput::Update { peer, update } => {
                self.import(peer, update, &mut out, &mut changed);
            }
            RibInput::Originate { routes } => {
                for (prefix, attrs) in routes {
                    let attrs = self.intern(attrs);
                    let (i, new) = self.table.find_or_insert(prefix.trunc());
                    if new {
                        self.table.entries[i as usize].dirty = true;
                        changed.push(Changed { idx: i, old: None });
                    } else {
                        touch(
                            &mut self.table.entries,
                            &self.peers,
                            &mut changed,
                            i,
                            report,
                        );
                    }
                    let paths = &mut self.table.entries[i as usize].paths;
                    paths.retain(|p| p.source != Source::Local);
                    paths.push(Path {
                        source: Source::Local,
                        path_id: None,
                        attrs,
                        stale: false,
                    });
                }
            }
            RibInput::WithdrawLocal { prefixes } => {
                for prefix in prefixes {
                    if let Some(i) = self.table.find(&prefix.trunc()) {
                        touch(
                            &mut self.table.entries,
                            &self.peers,
                            &mut changed,
                            i,
                            report,
                        );
                        self.table.entries[i as usize]
                            .paths
                            .retain(|p| p.source != Source::Local);
                    }
                }
            }
        }
        let positions = self.decide(changed, &mut out);
        self.export(&positions, None, &mut out);
        self.remove_emptied(positions);
        out
    }

    /// Removes the paths of `peer` except those `keep(prefix, path)` keeps.
    fn drop_peer_routes(
        &mut self,
        peer: PeerId,
        keep: impl Fn(&IpNet, &Path) -> bool,
        changed: &mut Vec<Changed>,
    ) {
        let Some(st) = self.peers.get_mut(&peer) else {
            return;
        };
        if st.accepted == 0 {
            return;
        }
        let report = self.report_best;
        let (mut gone, mut gone_stale) = (0, 0);
        let (entries, peers) = (&mut self.table.entries, &self.peers);
        for i in 0..entries.len() as u32 {
            let e = &entries[i as usize];
            let drop = |p: &Path| p.source == Source::Peer(peer) && !keep(&e.prefix, p);
            if !e.paths.as_slice().iter().any(drop) {
                continue;
            }
            touch(entries, peers, changed, i, report);
            let e = &mut entries[i as usize];
            let prefix = e.prefix;
            e.paths.retain(|p| {
                if p.source == Source::Peer(peer) && !keep(&prefix, p) {
                    gone += 1;
                    gone_stale += usize::from(p.stale);
                    false
                } else {
                    true
                }
            });
        }
        let st = self.peers.get_mut(&peer).expect("checked above");
        st.accepted -= gone;
        st.stale -= gone_stale;
    }

    /// Drops the stale routes of `peer` (of one family, or all).
    fn drop_stale(&mut self, peer: PeerId, afi: Option<Afi>, changed: &mut Vec<Changed>) {
        if self.peers.get(&peer).is_none_or(|st| st.stale == 0) {
            return;
        }
        self.drop_peer_routes(
            peer,
            |prefix, p| !p.stale || afi.is_some_and(|a| Afi::of(prefix) != a),
            changed,
        );
    }

    fn import(
        &mut self,
        peer: PeerId,
        update: Update,
        out: &mut Vec<RibOutput>,
        changed: &mut Vec<Changed>,
    ) {
        if let Some(afi) = update.end_of_rib {
            if let Some(st) = self.peers.get_mut(&peer) {
                st.end_of_rib = true;
            }
            // RFC 4724 §4.2: End-of-RIB ends the stale phase for the family.
            return self.drop_stale(peer, Some(afi), changed);
        }
        let Some(st) = self.peers.get(&peer) else {
            return;
        };
        let ibgp = st.ibgp;
        let report = self.report_best;
        let mut withdrawn = update.withdrawn;
        let mut announced = update.announced;
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
                withdrawn.append(&mut announced);
            } else {
                if !ibgp {
                    // LOCAL_PREF is not carried from another AS (RFC 4271 §5.1.5).
                    attrs.local_pref = None;
                }
                let import = &st.config.import;
                announced.retain(|n| {
                    let ok = import.accepts(&n.prefix);
                    if !ok {
                        withdrawn.push(*n);
                    }
                    ok
                });
                if !announced.is_empty() {
                    // Once per UPDATE: its routes share one attribute set.
                    attrs_arc = Some(self.intern(attrs));
                }
            }
        }
        let (table, peers) = (&mut self.table, &mut self.peers);
        let src = Source::Peer(peer);
        let (mut removed, mut removed_stale) = (0usize, 0usize);
        for n in withdrawn {
            let Some(i) = table.find(&n.prefix) else {
                continue;
            };
            let mine = |p: &Path| p.source == src && p.path_id == n.path_id;
            if !table.entries[i as usize].paths.as_slice().iter().any(mine) {
                continue;
            }
            touch(&mut table.entries, peers, changed, i, report);
            table.entries[i as usize].paths.retain(|p| {
                if mine(p) {
                    removed += 1;
                    removed_stale += usize::from(p.stale);
                    false
                } else {
                    true
                }
            });
        }
        let (mut added, mut unstaled) = (0usize, 0usize);
        if let Some(attrs) = &attrs_arc {
            for n in announced {
                let (i, new) = table.find_or_insert(n.prefix);
                let path = Path {
                    source: src,
                    path_id: n.path_id,
                    attrs: attrs.clone(),
                    stale: false,
                };
                if new {
                    let e = &mut table.entries[i as usize];
                    e.dirty = true;
                    e.paths = Paths::One(path);
                    changed.push(Changed { idx: i, old: None });
                    added += 1;
                    continue;
                }
                let pos = table.entries[i as usize]
                    .paths
                    .as_slice()
                    .iter()
                    .position(|p| p.source == src && p.path_id == n.path_id);
                if let Some(k) = pos {
                    let p = &table.entries[i as usize].paths.as_slice()[k];
                    if !p.stale && Arc::ptr_eq(&p.attrs, attrs) {
                        continue;
                    }
                }
                touch(&mut table.entries, peers, changed, i, report);
                let paths = &mut table.entries[i as usize].paths;
                match pos {
                    Some(k) => {
                        let p = &mut paths.as_mut_slice()[k];
                        unstaled += usize::from(p.stale);
                        *p = path;
                    }
                    None => {
                        paths.push(path);
                        added += 1;
                    }
                }
            }
        }
        let st = peers.get_mut(&peer).expect("checked above");
        st.accepted = st.accepted + added - removed;
        st.stale -= removed_stale + unstaled;
        if attrs_arc.is_some()
            && let Some(limit) = st.config.max_prefixes
            && st.accepted > limit as usize
        {
            out.push(RibOutput::MaxPrefixesExceeded { peer, limit });
        }
    }

    /// Re-runs the decision process for the changed prefixes and reports ECMP next-hop
    /// changes; returns their positions.
    fn decide(&mut self, changed: Vec<Changed>, out: &mut Vec<RibOutput>) -> Vec<u32> {
        let report_on = self.report_best;
        let mut report = Vec::new();
        let mut hops: SmallVec<[IpAddr; 2]> = SmallVec::new();
        // Consecutive prefixes mostly share their next hops: reuse the last set.
        let mut last: Option<NextHops> = None;
        let mut positions = Vec::with_capacity(changed.len());
        let peers = &self.peers;
        for c in changed {
            positions.push(c.idx);
            let e = &mut self.table.entries[c.idx as usize];
            e.dirty = false;
            if let Paths::Many(v) = &mut e.paths
                && v.len() > 1
            {
                v.sort_by(|a, b| compare(peers, a, b));
            }
            if !report_on {
                continue;
            }
            if e.paths.is_empty() {
                if c.old.is_some() {
                    hops.clear();
                } else {
                    continue;
                }
            } else {
                ecmp_hops(peers, e.paths.as_slice(), &mut hops);
                if c.old.as_deref() == Some(&hops[..]) {
                    continue;
                }
            }
            let set = match &last {
                Some(s) if **s == *hops => s.clone(),
                _ => {
                    let s = match self.hop_sets.get(hops.as_slice()) {
                        Some(s) => s.clone(),
                        None => {
                            if self.hop_sets.len() >= 4096 {
                                self.hop_sets.clear();
                            }
                            let s: NextHops = Arc::from(hops.as_slice());
                            self.hop_sets.insert(s.clone());
                            s
                        }
                    };
                    last = Some(s.clone());
                    s
                }
            };
            if report.is_empty() {
                report.reserve(positions.capacity() - positions.len() + 1);
            }
            report.push(BestChange {
                prefix: e.prefix,
                next_hops: set,
            });
        }
        if !report.is_empty() {
            out.push(RibOutput::BestChanged(report));
        }
        positions
    }

    /// Removes the entries left without paths (at the end of a step, when positions are no
    /// longer needed).
    fn remove_emptied(&mut self, mut positions: Vec<u32>) {
        positions.retain(|&i| self.table.entries[i as usize].paths.is_empty());
        if positions.is_empty() {
            return;
        }
        // Highest first: the entry moved into a freed position is never one still to remove.
        positions.sort_unstable_by(|a, b| b.cmp(a));
        for i in positions {
            self.table.remove(i);
        }
        self.table.maybe_shrink();
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

    /// Advertises the current best of the prefixes at `positions` to every established peer
    /// (or only `only`), sending only what differs from the Adj-RIB-Out, batched per attribute
    /// set.
    fn export(&mut self, positions: &[u32], only: Option<PeerId>, out: &mut Vec<RibOutput>) {
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
            let mut new_out: Vec<(IpNet, Option<Arc<PathAttrs>>)> = Vec::new();
            type Exported = Option<Arc<PathAttrs>>;
            let mut last: Option<((*const PathAttrs, Afi), Exported)> = None;
            let mut last_group: Option<(*const PathAttrs, usize)> = None;
            for &i in positions {
                let entry = &self.table.entries[i as usize];
                let prefix = &entry.prefix;
                let best = entry.paths.as_slice().first();
                // The common case when receiving a table: the best path came from this very peer
                // (or there is none) and we never advertised anything to it; nothing to do.
                if to.adj_out.is_empty() && best.is_none_or(|b| b.source == Source::Peer(to_id)) {
                    continue;
                }
                if !to.families.contains(&Afi::of(prefix)) {
                    continue;
                }
                let exported = match best {
                    Some(b) if b.source == Source::Peer(to_id) => None, // never back
                    Some(b)
                        if to.config.export.accepts(prefix)
                            && (!to.config.export.local_only || b.source == Source::Local) =>
                    {
                        // The cache key includes the family: the next hop differs per family.
                        let key = (Arc::as_ptr(&b.attrs), Afi::of(prefix));
                        match &last {
                            // Runs of prefixes share attributes: skip the lookup.
                            Some((k, e)) if *k == key => e.clone(),
                            _ => {
                                let e = match cache.get(&key) {
                                    Some(e) => e.clone(),
                                    None => {
                                        let e = self
                                            .export_attrs(to, to_id, b, Afi::of(prefix))
                                            .map(Arc::new);
                                        cache.insert(key, e.clone());
                                        e
                                    }
                                };
                                last = Some((key, e.clone()));
                                e
                            }
                        }
                    }
                    _ => None,
                };
                match (&exported, to.adj_out.get(prefix)) {
                    (Some(e), Some(old)) if Arc::ptr_eq(e, old) || **e == **old => {}
                    (Some(e), _) => {
                        let g = match last_group {
                            Some((ptr, g)) if ptr == Arc::as_ptr(e) => g,
                            _ => {
                                let g = *group_of.entry(Arc::as_ptr(e)).or_insert_with(|| {
                                    announce.push((e.clone(), Vec::new()));
                                    announce.len() - 1
                                });
                                last_group = Some((Arc::as_ptr(e), g));
                                g
                            }
                        };
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
    let mut hops = SmallVec::new();
    rib.table
        .entries
        .iter()
        .map(|e| {
            ecmp_hops(&rib.peers, e.paths.as_slice(), &mut hops);
            (e.prefix, hops.to_vec())
        })
        .collect()
}
