//! # The BGP wire layer: bytes ⇄ [`Message`]
//!
//! ```text
//!   TCP bytes ──► FrameDecoder ──► frame ──► decode(frame, &DecodeCxt) ──► Message | Notification
//!                 (header checks,            (per-type decoding; UPDATE        (the NOTIFICATION
//!                  RFC 4271 §6.1)             errors per RFC 7606)              to send)
//!
//!   Message ──► encode(msg, &EncodeCxt) ──► one message
//!   Update  ──► encode_updates(update, &EncodeCxt) ──► as few ≤ 4096-octet UPDATEs as possible
//! ```
//!
//! The contexts come from the negotiated capabilities ([`Negotiated`]): 4-octet AS numbers
//! (RFC 6793), ADD-PATH per family and direction (RFC 7911), extended next hop (RFC 8950).
//! Nothing is guessed from the bytes.
//!
//! ## Codec
//!
//! The codec is written here, directly on bytes, with a bounds-checked reader (no input can
//! panic). netgauze-bgp-pkt was evaluated as the codec and is used by the tests as an
//! independent second implementation that must agree with ours (`tests/wire_*.rs`); it is not
//! on the message path because it cannot decode a NOTIFICATION or ROUTE-REFRESH with codes or
//! families it does not know, fails a whole OPEN over one capability with an unknown family,
//! accepts UPDATEs over 4096 octets (RFC 8654 semantics), and its error-collection mode cannot
//! express the RFC 7606 outcomes below (no flag, duplicate or missing-attribute handling).
//!
//! ## Decode errors
//!
//! Header (RFC 4271 §6.1, checked by [`FrameDecoder`] and again by [`decode`]):
//!
//! | condition | NOTIFICATION |
//! |---|---|
//! | marker not all ones | 1/1 |
//! | length < 19, > 4096, below the type's minimum (OPEN 29, UPDATE 23, NOTIFICATION 21, ROUTE-REFRESH 23), KEEPALIVE ≠ 19 | 1/2, data = length field |
//! | type not 1–5 | 1/3, data = type |
//!
//! OPEN (RFC 4271 §6.2): version ≠ 4 → 2/1 with data 0x0004; My AS 0 → 2/2 (RFC 7607);
//! hold time 1 or 2 → 2/6; BGP identifier 0 → 2/3 (RFC 6286 §2.2 made any other value legal,
//! so "multicast" identifiers are accepted); optional parameter other than capabilities → 2/4;
//! a malformed capability that we interpret → 2/0; inconsistent lengths → 1/2. The FSM checks
//! the rest (peer AS, identifier collision, acceptable hold time).
//!
//! NOTIFICATION: any code and subcode is returned as received (RFC 4271 §6.4: never answered).
//!
//! ROUTE-REFRESH (RFC 2918, RFC 7313 §5): subtype 0–2 with length ≠ 23 → 7/1 with the message
//! as data; other subtypes are returned for the FSM to ignore, whatever their length. A
//! family we do not carry cannot be represented by [`Message::RouteRefresh`]; it decodes with
//! subtype [`ROUTE_REFRESH_IGNORE`] (255), which RFC 7313 §5 says to ignore, as RFC 2918 §4
//! says for the family.
//!
//! UPDATE (RFC 4271 §6.3 as revised by RFC 7606). "Withdraw" = treat-as-withdraw: the routes
//! of the UPDATE are moved to [`Update::withdrawn`] and the reason is in
//! [`Update::treat_as_withdraw`]; "discard" = attribute discard (logged at debug level);
//! "reset" = `Err(Notification)`. When several apply, the strongest wins (RFC 7606 §3 h).
//!
//! | condition | action | rule |
//! |---|---|---|
//! | Withdrawn Routes Length / Total Attribute Length beyond the message | reset 3/1 | RFC 4271 §6.3 |
//! | prefix in Withdrawn Routes / NLRI field too long or truncated | reset 3/10 | RFC 7606 §5.3 |
//! | attribute header truncated or its length beyond the attribute list | withdraw | RFC 7606 §4 |
//! | MP_REACH_NLRI or MP_UNREACH_NLRI twice | reset 3/1 | RFC 7606 §3 g |
//! | any other attribute twice | discard the repeats | RFC 7606 §3 g |
//! | Optional/Transitive flags wrong | withdraw (discard for ATOMIC_AGGREGATE, AGGREGATOR, AS4_*) | RFC 7606 §3 c, §3 f |
//! | ORIGIN length ≠ 1 or value > 2 | withdraw | RFC 7606 §7.1 |
//! | AS_PATH malformed (overrun, underrun, zero-length segment, unknown type), confederation segments, AS 0 | withdraw | RFC 7606 §7.2, RFC 7607 |
//! | NEXT_HOP length ≠ 4 or not a host address, with classic NLRI | withdraw | RFC 7606 §7.3, RFC 4271 §6.3 |
//! | MULTI_EXIT_DISC length ≠ 4 | withdraw | RFC 7606 §7.4 |
//! | LOCAL_PREF from an eBGP peer | discard | RFC 7606 §7.5 |
//! | LOCAL_PREF length ≠ 4 (iBGP) | withdraw | RFC 7606 §7.5 |
//! | ATOMIC_AGGREGATE length ≠ 0 | discard | RFC 7606 §7.6 |
//! | AGGREGATOR length ≠ 6/8 (per session), AS 0 | discard | RFC 7606 §7.7, RFC 7607 |
//! | COMMUNITIES length not a non-zero multiple of 4 | withdraw | RFC 7606 §7.8 |
//! | ORIGINATOR_ID / CLUSTER_LIST from an eBGP peer | discard | RFC 7606 §7.9, §7.10 |
//! | ORIGINATOR_ID length ≠ 4, CLUSTER_LIST not a non-zero multiple of 4 (iBGP) | withdraw | RFC 7606 §7.9, §7.10 |
//! | MP_REACH_NLRI / MP_UNREACH_NLRI truncated, next-hop length wrong for the family, NLRI unparsable | reset 3/9, data = attribute | RFC 7606 §7.11, §5.3; RFC 4760 §7 |
//! | MP_(UN)REACH_NLRI of a family we do not carry | ignored | RFC 4760 §7 (not ours to judge) |
//! | EXTENDED_COMMUNITIES (8), IPv6 ext. communities (20), LARGE_COMMUNITY (12) length not a non-zero multiple | withdraw | RFC 7606 §7.14, §7.15; RFC 8092 §6 |
//! | AS4_PATH / AS4_AGGREGATOR on a 4-octet session | discard | RFC 6793 §3 |
//! | AS4_PATH / AS4_AGGREGATOR malformed or with AS 0 | discard | RFC 6793 §6, RFC 7607 |
//! | ORIGIN or AS_PATH missing with NLRI; NEXT_HOP missing with classic NLRI | withdraw | RFC 7606 §3 d |
//! | prefix whose network is multicast, in NLRI or MP_REACH_NLRI | that prefix ignored | RFC 4271 §6.3 |
//! | unrecognised well-known attribute | reset 3/2, data = attribute | RFC 4271 §6.3 |
//! | unrecognised optional attribute | transitive: kept, Partial set; non-transitive: dropped | RFC 4271 §5 |
//! | classic NLRI and MP_REACH_NLRI announcing with different next hops | withdraw (an [`Update`] has one next hop) | — |
//!
//! On a 2-octet session AS_PATH and AGGREGATOR are rebuilt from AS4_PATH / AS4_AGGREGATOR
//! (RFC 6793 §4.2.3), so [`PathAttrs::as_path`] is always 4-octet. End-of-RIB (RFC 4724 §2): an
//! empty UPDATE is the IPv4 marker, an UPDATE holding only an empty MP_UNREACH_NLRI the marker
//! of its family; both decode to [`Update::end_of_rib`].

mod attr;
mod frame;
mod nlri;
mod open;
mod reader;
mod update_decode;
mod update_encode;

use std::collections::BTreeSet;

pub use attr::AS_TRANS;
pub use frame::{FrameDecoder, HEADER_LEN, MAX_MESSAGE_LEN};

use crate::types::{Afi, Message, Negotiated, Notification, codes};
#[cfg(doc)]
use crate::types::{PathAttrs, Update};
use frame::{check_header, msg_type};
use reader::Reader;

/// Subtype given to a ROUTE-REFRESH for a family we do not carry, so that it is ignored
/// (RFC 2918 §4, RFC 7313 §5: subtypes other than 0, 1, 2 are ignored).
pub const ROUTE_REFRESH_IGNORE: u8 = 255;

/// How to read the messages of one session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecodeCxt {
    /// Both sides announced 4-octet AS numbers (RFC 6793): AS_PATH / AGGREGATOR are 4-octet.
    pub four_octet_as: bool,
    /// Families in which received NLRI carry path identifiers (RFC 7911).
    pub add_path: BTreeSet<Afi>,
    /// Our AS number. The codec does not need it today (loop detection and allow-as-in are the
    /// RIB's); kept so one context describes the session.
    pub local_as: u32,
    /// An internal peer: LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST are accepted only from
    /// internal peers (RFC 4271 §5.1.5, RFC 7606 §7.5, §7.9, §7.10).
    pub is_ibgp: bool,
}

impl DecodeCxt {
    /// The context before the OPENs are exchanged: OPEN, KEEPALIVE and NOTIFICATION do not
    /// depend on it; UPDATEs (which cannot legally arrive yet) are read as the RFCs' defaults:
    /// 2-octet AS numbers, no ADD-PATH, external peer.
    pub fn before_open() -> Self {
        DecodeCxt::default()
    }

    /// The context for an established session.
    pub fn from_negotiated(n: &Negotiated, local_as: u32, is_ibgp: bool) -> Self {
        DecodeCxt {
            four_octet_as: n.four_octet_as,
            add_path: n.add_path_receive.clone(),
            local_as,
            is_ibgp,
        }
    }
}

/// How to write the messages of one session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncodeCxt {
    /// Write 4-octet AS numbers; otherwise AS_TRANS plus AS4_PATH / AS4_AGGREGATOR (RFC 6793).
    pub four_octet_as: bool,
    /// Families in which we send path identifiers (RFC 7911); a route without one gets 0.
    pub add_path: BTreeSet<Afi>,
    /// IPv4 routes may carry an IPv6 next hop, in MP_REACH_NLRI (RFC 8950).
    pub ipv4_over_ipv6_next_hop: bool,
    /// Send IPv4 routes (and IPv4 End-of-RIB) in MP_REACH_NLRI / MP_UNREACH_NLRI even with an
    /// IPv4 next hop. False: the classic NLRI / Withdrawn Routes fields and NEXT_HOP, which
    /// every implementation reads.
    pub mp_ipv4: bool,
}

impl EncodeCxt {
    /// The context before the OPENs are exchanged (2-octet AS numbers, nothing negotiated).
    pub fn before_open() -> Self {
        EncodeCxt::default()
    }

    /// The context for an established session. IPv4 goes in the classic fields (`mp_ipv4` is
    /// false) unless its next hop is IPv6 and RFC 8950 was negotiated.
    pub fn from_negotiated(n: &Negotiated) -> Self {
        EncodeCxt {
            four_octet_as: n.four_octet_as,
            add_path: n.add_path_send.clone(),
            ipv4_over_ipv6_next_hop: n.ipv4_over_ipv6_next_hop,
            mp_ipv4: false,
        }
    }
}

/// Why a message could not be encoded (a bug or a policy mistake upstream, not a peer error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would exceed 4096 octets (or attributes leave no room for a prefix).
    #[error("message of {len} octets exceeds the 4096-octet limit")]
    TooLarge {
        /// The length it would have had (or reached when the limit was detected).
        len: usize,
    },
    /// Routes are announced without attributes.
    #[error("announced routes without path attributes")]
    MissingAttributes,
    /// `encode` got announcements of both families (use `encode_updates`).
    #[error("one UPDATE cannot announce IPv4 and IPv6 routes")]
    MixedFamilies,
    /// The next hop is missing or cannot be used for the family.
    #[error("next hop: {0}")]
    NextHop(&'static str),
    /// `PathAttrs::unknown` holds an attribute the codec writes itself.
    #[error("attribute {0} may not be passed as an uninterpreted attribute")]
    ReservedAttribute(u8),
    /// Anything else that cannot be put on the wire.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Decodes one whole message (header included, as returned by [`FrameDecoder::next_frame`]).
/// An error is the NOTIFICATION to send before closing the session (see the module docs).
pub fn decode(frame: &[u8], cx: &DecodeCxt) -> Result<Message, Notification> {
    let header = frame
        .first_chunk::<HEADER_LEN>()
        .ok_or_else(|| bad_length(frame.len()))?;
    let (len, kind) = check_header(header)?;
    if len != frame.len() {
        return Err(Notification {
            code: codes::HEADER,
            subcode: codes::HEADER_BAD_LENGTH,
            data: header[16..18].to_vec(),
        });
    }
    let body = frame.get(HEADER_LEN..).unwrap_or_default();
    match kind {
        msg_type::OPEN => open::decode_open(body, len).map(Message::Open),
        msg_type::UPDATE => update_decode::decode_update(body, cx).map(Message::Update),
        msg_type::NOTIFICATION => {
            // RFC 4271 §4.5; unknown codes are reported as they are (§6.4: never answered).
            let mut r = Reader::new(body);
            let (Some(code), Some(subcode)) = (r.u8(), r.u8()) else {
                return Err(bad_length(len));
            };
            Ok(Message::Notification(Notification {
                code,
                subcode,
                data: r.rest().to_vec(),
            }))
        }
        msg_type::KEEPALIVE => Ok(Message::Keepalive),
        msg_type::ROUTE_REFRESH => {
            let mut r = Reader::new(body);
            let (Some(afi), Some(subtype), Some(safi)) = (r.u16(), r.u8(), r.u8()) else {
                return Err(bad_length(len));
            };
            // RFC 7313 §5: subtypes other than 0–2 are ignored whatever their length.
            if subtype <= 2 && !r.is_empty() {
                return Err(Notification {
                    code: codes::ROUTE_REFRESH,
                    subcode: 1,
                    data: frame.to_vec(),
                });
            }
            Ok(match open::family(afi, safi) {
                Some(afi) => Message::RouteRefresh { afi, subtype },
                None => Message::RouteRefresh {
                    afi: Afi::Ipv4,
                    subtype: ROUTE_REFRESH_IGNORE,
                },
            })
        }
        _ => Err(Notification {
            code: codes::HEADER,
            subcode: codes::HEADER_BAD_TYPE,
            data: vec![kind],
        }),
    }
}

fn bad_length(len: usize) -> Notification {
    let field = u16::try_from(len).unwrap_or(u16::MAX);
    Notification {
        code: codes::HEADER,
        subcode: codes::HEADER_BAD_LENGTH,
        data: field.to_be_bytes().to_vec(),
    }
}

/// Encodes one message; an UPDATE must fit in one message (4096 octets) and announce a single
/// family. Bulk announcements go through [`encode_updates`].
pub fn encode(msg: &Message, cx: &EncodeCxt) -> Result<Vec<u8>, EncodeError> {
    if let Message::Update(u) = msg {
        return update_encode::encode_update(u, cx);
    }
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&[0xff; 16]);
    m.extend_from_slice(&[0, 0, 0]);
    let kind = match msg {
        Message::Open(o) => {
            open::encode_open(o, &mut m)?;
            msg_type::OPEN
        }
        Message::Notification(n) => {
            m.extend_from_slice(&[n.code, n.subcode]);
            m.extend_from_slice(&n.data);
            msg_type::NOTIFICATION
        }
        Message::Keepalive => msg_type::KEEPALIVE,
        Message::RouteRefresh { afi, subtype } => {
            m.extend_from_slice(&open::afi_code(*afi).to_be_bytes());
            m.extend_from_slice(&[*subtype, 1]);
            msg_type::ROUTE_REFRESH
        }
        Message::Update(_) => msg_type::UPDATE, // handled above
    };
    let len = m.len();
    let len16 = u16::try_from(len)
        .ok()
        .filter(|_| len <= MAX_MESSAGE_LEN)
        .ok_or(EncodeError::TooLarge { len })?;
    m[16..18].copy_from_slice(&len16.to_be_bytes());
    m[18] = kind;
    Ok(m)
}

/// Encodes an UPDATE of any size: withdrawals, then announcements per family, packed into as
/// few ≤ 4096-octet messages as possible (one family per message), then the End-of-RIB marker
/// if [`Update::end_of_rib`] is set. Made for bulk: attributes are encoded once per family and
/// prefixes are written in place.
pub fn encode_updates(
    update: &crate::types::Update,
    cx: &EncodeCxt,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    update_encode::encode_updates(update, cx)
}
