//! BGP values shared by the wire codec, the session FSM and the RIBs — independent of how they
//! are encoded, so that `wire` is the only module that knows the bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Address families we carry (SAFI unicast only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Afi {
    /// IPv4 unicast (AFI 1, SAFI 1).
    Ipv4,
    /// IPv6 unicast (AFI 2, SAFI 1).
    Ipv6,
}

impl Afi {
    /// The family of a prefix.
    pub fn of(prefix: &IpNet) -> Afi {
        match prefix {
            IpNet::V4(_) => Afi::Ipv4,
            IpNet::V6(_) => Afi::Ipv6,
        }
    }
}

/// ORIGIN (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Origin {
    /// Learned from an IGP (0).
    #[default]
    Igp,
    /// Learned from EGP (1).
    Egp,
    /// Anything else (2).
    Incomplete,
}

/// One AS_PATH segment (RFC 4271 §4.3), always with 4-octet AS numbers here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsSegment {
    /// Ordered.
    Sequence(Vec<u32>),
    /// Unordered (from aggregation); counts as 1 in path length.
    Set(Vec<u32>),
}

/// A path attribute we do not interpret, passed on as received (with the Partial bit set when
/// optional transitive, RFC 4271 §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// Attribute flags octet.
    pub flags: u8,
    /// Type code.
    pub code: u8,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// Path attributes of a route. Shared (interned) between routes by the RIB.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PathAttrs {
    /// ORIGIN.
    pub origin: Origin,
    /// AS_PATH, 4-octet (AS4_PATH already merged on 2-octet sessions, RFC 6793 §4.2.3).
    pub as_path: Vec<AsSegment>,
    /// NEXT_HOP (IPv4) or the global MP_REACH next hop.
    pub next_hop: Option<IpAddr>,
    /// IPv6 link-local next hop, when MP_REACH carried 32 bytes.
    pub link_local_next_hop: Option<Ipv6Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE.
    pub atomic_aggregate: bool,
    /// AGGREGATOR (AS, router ID).
    pub aggregator: Option<(u32, Ipv4Addr)>,
    /// COMMUNITIES (RFC 1997), as 32-bit values.
    pub communities: Vec<u32>,
    /// LARGE_COMMUNITY (RFC 8092).
    pub large_communities: Vec<(u32, u32, u32)>,
    /// ORIGINATOR_ID (RFC 4456).
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (RFC 4456).
    pub cluster_list: Vec<Ipv4Addr>,
    /// Attributes passed through uninterpreted.
    pub unknown: Vec<RawAttribute>,
}

impl PathAttrs {
    /// AS path length for the decision process: a SET counts 1 (RFC 4271 §9.1.2.2 a).
    pub fn as_path_len(&self) -> usize {
        self.as_path
            .iter()
            .map(|s| match s {
                AsSegment::Sequence(v) => v.len(),
                AsSegment::Set(_) => 1,
            })
            .sum()
    }

    /// The neighbouring AS: the first AS of the path (RFC 4271 §9.1.2.2 c), if any.
    pub fn neighbor_as(&self) -> Option<u32> {
        match self.as_path.first()? {
            AsSegment::Sequence(v) => v.first().copied(),
            AsSegment::Set(_) => None,
        }
    }

    /// True if `asn` appears anywhere in the path (loop detection).
    pub fn contains_as(&self, asn: u32) -> bool {
        self.as_path.iter().any(|s| match s {
            AsSegment::Sequence(v) | AsSegment::Set(v) => v.contains(&asn),
        })
    }
}

/// A prefix with an optional ADD-PATH identifier (RFC 7911).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nlri {
    /// Path identifier when ADD-PATH is negotiated for the family in this direction.
    pub path_id: Option<u32>,
    /// The prefix (host bits clear).
    pub prefix: IpNet,
}

impl Nlri {
    /// A prefix without path ID.
    pub fn new(prefix: IpNet) -> Self {
        Nlri {
            path_id: None,
            prefix,
        }
    }
}

/// An UPDATE in family-neutral form: IPv4 routes may travel in the classic fields or in
/// MP_REACH/MP_UNREACH; IPv6 always in MP. The codec chooses per the encode context.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn routes (any family).
    pub withdrawn: Vec<Nlri>,
    /// Attributes of `announced` (required when it is not empty).
    pub attrs: Option<PathAttrs>,
    /// Announced routes (one family per UPDATE when encoded).
    pub announced: Vec<Nlri>,
    /// End-of-RIB marker for this family (RFC 4724 §2): an UPDATE with nothing else.
    pub end_of_rib: Option<Afi>,
    /// RFC 7606: an attribute error made the routes of this UPDATE withdrawn: the decoder moved
    /// them from `announced` to `withdrawn` and the reason is here.
    pub treat_as_withdraw: Option<String>,
}

/// Graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restarting: bool,
    /// Seconds the peer should keep our routes after the session goes down.
    pub restart_time: u16,
    /// Families with forwarding state preserved (F bit).
    pub families: BTreeMap<Afi, bool>,
}

/// ADD-PATH direction for one family (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddPathMode {
    /// We can receive multiple paths.
    Receive,
    /// We can send multiple paths.
    Send,
    /// Both.
    Both,
}

/// Capabilities of an OPEN (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Multiprotocol (RFC 4760), unicast SAFI.
    pub multiprotocol: BTreeSet<Afi>,
    /// Route refresh (RFC 2918).
    pub route_refresh: bool,
    /// 4-octet AS (RFC 6793): our real AS number.
    pub four_octet_as: Option<u32>,
    /// Graceful restart (RFC 4724).
    pub graceful_restart: Option<GracefulRestart>,
    /// ADD-PATH (RFC 7911).
    pub add_path: BTreeMap<Afi, AddPathMode>,
    /// Extended next hop (RFC 8950): NLRI family → next-hop family.
    pub extended_next_hop: Vec<(Afi, Afi)>,
    /// Capabilities we do not understand (code, value), kept for display.
    pub unknown: Vec<(u8, Vec<u8>)>,
}

/// An OPEN message (RFC 4271 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Always 4.
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS 23456 when the real AS is larger).
    pub my_as: u16,
    /// Proposed hold time: 0 or ≥ 3 seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities.
    pub capabilities: Capabilities,
}

impl Open {
    /// The sender's AS: the 4-octet capability when present, else the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .four_octet_as
            .unwrap_or(u32::from(self.my_as))
    }
}

/// A NOTIFICATION (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data.
    pub data: Vec<u8>,
}

/// NOTIFICATION error codes and subcodes (RFC 4271 §4.5, §6; RFC 4486; RFC 8203; RFC 7313).
pub mod codes {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// Connection Not Synchronized.
    pub const HEADER_NOT_SYNCHRONIZED: u8 = 1;
    /// Bad Message Length.
    pub const HEADER_BAD_LENGTH: u8 = 2;
    /// Bad Message Type.
    pub const HEADER_BAD_TYPE: u8 = 3;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// Unsupported Version Number.
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    /// Bad Peer AS.
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    /// Bad BGP Identifier.
    pub const OPEN_BAD_BGP_ID: u8 = 3;
    /// Unsupported Optional Parameter.
    pub const OPEN_UNSUPPORTED_PARAMETER: u8 = 4;
    /// Unacceptable Hold Time.
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// Unsupported Capability (RFC 5492).
    pub const OPEN_UNSUPPORTED_CAPABILITY: u8 = 7;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Malformed Attribute List.
    pub const UPDATE_MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    /// Unrecognized Well-known Attribute.
    pub const UPDATE_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    /// Missing Well-known Attribute.
    pub const UPDATE_MISSING_WELL_KNOWN: u8 = 3;
    /// Attribute Flags Error.
    pub const UPDATE_ATTRIBUTE_FLAGS: u8 = 4;
    /// Attribute Length Error.
    pub const UPDATE_ATTRIBUTE_LENGTH: u8 = 5;
    /// Invalid ORIGIN Attribute.
    pub const UPDATE_INVALID_ORIGIN: u8 = 6;
    /// Invalid NEXT_HOP Attribute.
    pub const UPDATE_INVALID_NEXT_HOP: u8 = 8;
    /// Optional Attribute Error.
    pub const UPDATE_OPTIONAL_ATTRIBUTE: u8 = 9;
    /// Invalid Network Field.
    pub const UPDATE_INVALID_NETWORK: u8 = 10;
    /// Malformed AS_PATH.
    pub const UPDATE_MALFORMED_AS_PATH: u8 = 11;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// Maximum Number of Prefixes Reached (RFC 4486).
    pub const CEASE_MAX_PREFIXES: u8 = 1;
    /// Administrative Shutdown (RFC 4486, RFC 8203 text).
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    /// Peer De-configured.
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    /// Administrative Reset.
    pub const CEASE_ADMIN_RESET: u8 = 4;
    /// Connection Rejected.
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    /// Other Configuration Change.
    pub const CEASE_CONFIGURATION_CHANGE: u8 = 6;
    /// Connection Collision Resolution.
    pub const CEASE_COLLISION: u8 = 7;
    /// Out of Resources.
    pub const CEASE_OUT_OF_RESOURCES: u8 = 8;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;
}

impl Notification {
    /// A notification without data.
    pub fn new(code: u8, subcode: u8) -> Self {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// Cease / Administrative Shutdown with an RFC 8203 shutdown communication (UTF-8, at most
    /// 255 octets, cut at a character boundary).
    pub fn admin_shutdown(message: &str) -> Self {
        let mut end = message.len().min(255);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = vec![end as u8];
        data.extend_from_slice(&message.as_bytes()[..end]);
        Notification {
            code: codes::CEASE,
            subcode: codes::CEASE_ADMIN_SHUTDOWN,
            data,
        }
    }

    /// The RFC 8203 shutdown communication, when present and well formed.
    pub fn shutdown_communication(&self) -> Option<String> {
        if self.code != codes::CEASE
            || !matches!(
                self.subcode,
                codes::CEASE_ADMIN_SHUTDOWN | codes::CEASE_ADMIN_RESET
            )
        {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        String::from_utf8(text.to_vec()).ok()
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use codes::*;
        let name = match (self.code, self.subcode) {
            (HEADER, HEADER_NOT_SYNCHRONIZED) => {
                "message header error: connection not synchronized"
            }
            (HEADER, HEADER_BAD_LENGTH) => "message header error: bad message length",
            (HEADER, HEADER_BAD_TYPE) => "message header error: bad message type",
            (HEADER, _) => "message header error",
            (OPEN, OPEN_UNSUPPORTED_VERSION) => "OPEN error: unsupported version number",
            (OPEN, OPEN_BAD_PEER_AS) => "OPEN error: bad peer AS",
            (OPEN, OPEN_BAD_BGP_ID) => "OPEN error: bad BGP identifier",
            (OPEN, OPEN_UNSUPPORTED_PARAMETER) => "OPEN error: unsupported optional parameter",
            (OPEN, OPEN_UNACCEPTABLE_HOLD_TIME) => "OPEN error: unacceptable hold time",
            (OPEN, OPEN_UNSUPPORTED_CAPABILITY) => "OPEN error: unsupported capability",
            (OPEN, _) => "OPEN message error",
            (UPDATE, UPDATE_MALFORMED_ATTRIBUTE_LIST) => "UPDATE error: malformed attribute list",
            (UPDATE, UPDATE_UNRECOGNIZED_WELL_KNOWN) => {
                "UPDATE error: unrecognized well-known attribute"
            }
            (UPDATE, UPDATE_MISSING_WELL_KNOWN) => "UPDATE error: missing well-known attribute",
            (UPDATE, UPDATE_ATTRIBUTE_FLAGS) => "UPDATE error: attribute flags error",
            (UPDATE, UPDATE_ATTRIBUTE_LENGTH) => "UPDATE error: attribute length error",
            (UPDATE, UPDATE_INVALID_ORIGIN) => "UPDATE error: invalid ORIGIN",
            (UPDATE, UPDATE_INVALID_NEXT_HOP) => "UPDATE error: invalid NEXT_HOP",
            (UPDATE, UPDATE_OPTIONAL_ATTRIBUTE) => "UPDATE error: optional attribute error",
            (UPDATE, UPDATE_INVALID_NETWORK) => "UPDATE error: invalid network field",
            (UPDATE, UPDATE_MALFORMED_AS_PATH) => "UPDATE error: malformed AS_PATH",
            (UPDATE, _) => "UPDATE message error",
            (HOLD_TIMER_EXPIRED, _) => "hold timer expired",
            (FSM, _) => "finite state machine error",
            (CEASE, CEASE_MAX_PREFIXES) => "cease: maximum number of prefixes reached",
            (CEASE, CEASE_ADMIN_SHUTDOWN) => "cease: administrative shutdown",
            (CEASE, CEASE_PEER_DECONFIGURED) => "cease: peer de-configured",
            (CEASE, CEASE_ADMIN_RESET) => "cease: administrative reset",
            (CEASE, CEASE_CONNECTION_REJECTED) => "cease: connection rejected",
            (CEASE, CEASE_CONFIGURATION_CHANGE) => "cease: other configuration change",
            (CEASE, CEASE_COLLISION) => "cease: connection collision resolution",
            (CEASE, CEASE_OUT_OF_RESOURCES) => "cease: out of resources",
            (CEASE, _) => "cease",
            (ROUTE_REFRESH, _) => "ROUTE-REFRESH message error",
            _ => "unknown error",
        };
        write!(f, "{name} ({}/{})", self.code, self.subcode)?;
        if let Some(text) = self.shutdown_communication() {
            write!(f, ": {text:?}")?;
        }
        Ok(())
    }
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH (RFC 2918; subtype per RFC 7313: 0 normal, 1 BoRR, 2 EoRR).
    RouteRefresh {
        /// Family.
        afi: Afi,
        /// Subtype (the RFC 2918 "reserved" octet).
        subtype: u8,
    },
}

/// What both sides agreed on in their OPENs; the codec contexts are built from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Both sides sent the 4-octet AS capability.
    pub four_octet_as: bool,
    /// Families both sides announced (IPv4 when neither sent multiprotocol, RFC 4760 §8).
    pub families: BTreeSet<Afi>,
    /// Families in which we may receive path IDs.
    pub add_path_receive: BTreeSet<Afi>,
    /// Families in which we must send path IDs.
    pub add_path_send: BTreeSet<Afi>,
    /// IPv4 NLRI may have an IPv6 next hop (RFC 8950), both directions.
    pub ipv4_over_ipv6_next_hop: bool,
    /// Both sides can refresh.
    pub route_refresh: bool,
    /// The hold time in force (the smaller of both, RFC 4271 §4.2).
    pub hold_time: u16,
    /// The peer's graceful-restart capability, if it sent one.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// The peer's AS and identifier.
    pub peer_as: u32,
    /// The peer's BGP identifier.
    pub peer_id: Ipv4Addr,
}

impl Negotiated {
    /// Works out the session parameters from our OPEN and the peer's (RFC 4271 §4.2, RFC 5492,
    /// RFC 4760 §8, RFC 6793, RFC 7911 §4, RFC 8950).
    pub fn from_opens(ours: &Open, theirs: &Open) -> Negotiated {
        let (a, b) = (&ours.capabilities, &theirs.capabilities);
        let mp_a: BTreeSet<Afi> = if a.multiprotocol.is_empty() {
            [Afi::Ipv4].into()
        } else {
            a.multiprotocol.clone()
        };
        let mp_b: BTreeSet<Afi> = if b.multiprotocol.is_empty() {
            [Afi::Ipv4].into()
        } else {
            b.multiprotocol.clone()
        };
        let families: BTreeSet<Afi> = mp_a.intersection(&mp_b).copied().collect();
        let mut add_path_receive = BTreeSet::new();
        let mut add_path_send = BTreeSet::new();
        for afi in &families {
            let mine = a.add_path.get(afi);
            let peer = b.add_path.get(afi);
            let can = |m: Option<&AddPathMode>, want: AddPathMode| {
                matches!(
                    (m, want),
                    (Some(AddPathMode::Both), _)
                        | (Some(AddPathMode::Receive), AddPathMode::Receive)
                        | (Some(AddPathMode::Send), AddPathMode::Send)
                )
            };
            if can(mine, AddPathMode::Receive) && can(peer, AddPathMode::Send) {
                add_path_receive.insert(*afi);
            }
            if can(mine, AddPathMode::Send) && can(peer, AddPathMode::Receive) {
                add_path_send.insert(*afi);
            }
        }
        let enh = |c: &Capabilities| c.extended_next_hop.contains(&(Afi::Ipv4, Afi::Ipv6));
        Negotiated {
            four_octet_as: a.four_octet_as.is_some() && b.four_octet_as.is_some(),
            families,
            add_path_receive,
            add_path_send,
            ipv4_over_ipv6_next_hop: enh(a) && enh(b),
            route_refresh: a.route_refresh && b.route_refresh,
            hold_time: ours.hold_time.min(theirs.hold_time),
            peer_graceful_restart: b.graceful_restart.clone(),
            peer_as: theirs.asn(),
            peer_id: theirs.bgp_id,
        }
    }
}
