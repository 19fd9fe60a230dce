//! The fixed message header (RFC 4271 §4.1) and the stream splitter.

use crate::types::{Notification, codes};

/// Header length: marker (16) + length (2) + type (1).
pub const HEADER_LEN: usize = 19;
/// Largest message without the RFC 8654 extended-message capability (which we never announce).
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Message type codes (RFC 4271 §4.1, RFC 2918 §3).
pub(super) mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Smallest legal length of each message type (RFC 4271 §4.2–§4.5, RFC 2918 §3).
fn min_len(kind: u8) -> Option<usize> {
    Some(match kind {
        msg_type::OPEN => 29,
        msg_type::UPDATE => 23,
        msg_type::NOTIFICATION => 21,
        msg_type::KEEPALIVE => 19,
        msg_type::ROUTE_REFRESH => 23,
        _ => return None,
    })
}

/// Checks a message header (RFC 4271 §6.1) and returns the message length and type.
///
/// * marker not all ones → 1/1 Connection Not Synchronized;
/// * length < 19 or > 4096, below the minimum of its type, or a KEEPALIVE that is not exactly
///   19 octets → 1/2 Bad Message Length, data = the erroneous length field;
/// * unknown type → 1/3 Bad Message Type, data = the type octet.
pub(super) fn check_header(h: &[u8; HEADER_LEN]) -> Result<(usize, u8), Notification> {
    let (marker, rest) = h.split_at(16);
    if marker.iter().any(|&b| b != 0xff) {
        return Err(Notification::new(
            codes::HEADER,
            codes::HEADER_NOT_SYNCHRONIZED,
        ));
    }
    let len_field = [rest[0], rest[1]];
    let len = usize::from(u16::from_be_bytes(len_field));
    let kind = rest[2];
    let bad_length = || Notification {
        code: codes::HEADER,
        subcode: codes::HEADER_BAD_LENGTH,
        data: len_field.to_vec(),
    };
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(bad_length());
    }
    let Some(min) = min_len(kind) else {
        return Err(Notification {
            code: codes::HEADER,
            subcode: codes::HEADER_BAD_TYPE,
            data: vec![kind],
        });
    };
    if len < min || (kind == msg_type::KEEPALIVE && len != HEADER_LEN) {
        return Err(bad_length());
    }
    Ok((len, kind))
}

/// Splits a TCP byte stream into whole messages, checking each header as soon as its 19 octets
/// have arrived (RFC 4271 §6.1), so a bad header is reported before its body is awaited.
///
/// After an error the offending header stays at the front: every further call reports the same
/// NOTIFICATION (the session is over anyway).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Offset of the first byte not yet returned.
    start: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        FrameDecoder::default()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= MAX_MESSAGE_LEN && self.start * 2 >= self.buf.len() {
            // Compact once the consumed prefix dominates: amortised O(1) per byte.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message (header included), `Ok(None)` if more bytes are needed, or the
    /// NOTIFICATION to send when the header is invalid.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, Notification> {
        let avail = self.buf.get(self.start..).unwrap_or_default();
        let Some(header) = avail.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let (len, _) = check_header(header)?;
        let Some(frame) = avail.get(..len) else {
            return Ok(None);
        };
        let frame = frame.to_vec();
        self.start += len;
        Ok(Some(frame))
    }
}
