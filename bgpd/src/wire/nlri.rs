//! Prefix lists: the Withdrawn Routes and NLRI fields (RFC 4271 §4.3) and the NLRI inside
//! MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760 §5), with ADD-PATH path identifiers (RFC 7911 §3).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::types::{Afi, Nlri};

/// Why a prefix list could not be parsed (RFC 7606 §5.3: "syntactically incorrect").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PrefixError {
    /// A prefix length larger than the family allows.
    Length(u8),
    /// The field ends inside a path identifier or a prefix.
    Truncated,
}

impl std::fmt::Display for PrefixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrefixError::Length(l) => write!(f, "prefix length {l} too long for the family"),
            PrefixError::Truncated => f.write_str("prefix list overruns its field"),
        }
    }
}

fn max_len(afi: Afi) -> u8 {
    match afi {
        Afi::Ipv4 => 32,
        Afi::Ipv6 => 128,
    }
}

/// Parses a whole prefix field, appending to `out`. Host bits beyond the prefix length are
/// cleared (their value "is irrelevant", RFC 4271 §4.3).
pub(super) fn parse_prefixes(
    buf: &[u8],
    afi: Afi,
    add_path: bool,
    out: &mut Vec<Nlri>,
) -> Result<(), PrefixError> {
    out.reserve(count_prefixes(buf, add_path));
    let max = max_len(afi);
    let mut rest = buf;
    while !rest.is_empty() {
        let path_id = if add_path {
            let (id, tail) = rest
                .split_first_chunk::<4>()
                .ok_or(PrefixError::Truncated)?;
            rest = tail;
            Some(u32::from_be_bytes(*id))
        } else {
            None
        };
        let (&len, tail) = rest.split_first().ok_or(PrefixError::Truncated)?;
        if len > max {
            return Err(PrefixError::Length(len));
        }
        let (bytes, tail) = tail
            .split_at_checked(usize::from(len).div_ceil(8))
            .ok_or(PrefixError::Truncated)?;
        rest = tail;
        let prefix = match afi {
            Afi::Ipv4 => {
                let mut a = [0u8; 4];
                a.get_mut(..bytes.len())
                    .ok_or(PrefixError::Length(len))?
                    .copy_from_slice(bytes);
                let bits =
                    u32::from_be_bytes(a) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::from(bits), len)
                        .map_err(|_| PrefixError::Length(len))?,
                )
            }
            Afi::Ipv6 => {
                let mut a = [0u8; 16];
                a.get_mut(..bytes.len())
                    .ok_or(PrefixError::Length(len))?
                    .copy_from_slice(bytes);
                let bits = u128::from_be_bytes(a)
                    & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpNet::V6(
                    Ipv6Net::new(Ipv6Addr::from(bits), len)
                        .map_err(|_| PrefixError::Length(len))?,
                )
            }
        };
        out.push(Nlri { path_id, prefix });
    }
    Ok(())
}

/// How many prefixes a field holds (a capacity hint; stops early on malformed input).
fn count_prefixes(buf: &[u8], add_path: bool) -> usize {
    let skip = if add_path { 4 } else { 0 };
    let (mut i, mut n) = (0usize, 0usize);
    while let Some(&len) = buf.get(i + skip) {
        i += skip + 1 + usize::from(len).div_ceil(8);
        if i > buf.len() {
            break;
        }
        n += 1;
    }
    n
}

/// Encoded size of one prefix.
pub(super) fn prefix_size(n: &Nlri, add_path: bool) -> usize {
    let path = if add_path { 4 } else { 0 };
    path + 1 + usize::from(n.prefix.prefix_len()).div_ceil(8)
}

/// Appends one prefix; with `add_path` its path identifier first (0 when it has none).
#[inline]
pub(super) fn put_prefix(out: &mut Vec<u8>, n: &Nlri, add_path: bool) {
    if add_path {
        out.extend_from_slice(&n.path_id.unwrap_or(0).to_be_bytes());
    }
    // Length octet and the whole address (a fixed-size copy), then drop the octets beyond the
    // prefix: cheaper than a variable-length copy on the bulk path.
    let len = n.prefix.prefix_len();
    let (whole, used) = match n.prefix {
        IpNet::V4(p) => {
            out.push(len);
            out.extend_from_slice(&p.network().octets());
            (4, usize::from(len).div_ceil(8))
        }
        IpNet::V6(p) => {
            out.push(len);
            out.extend_from_slice(&p.network().octets());
            (16, usize::from(len).div_ceil(8))
        }
    };
    out.truncate(out.len() - (whole - used));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8], afi: Afi, add_path: bool) -> Result<Vec<Nlri>, PrefixError> {
        let mut v = Vec::new();
        parse_prefixes(buf, afi, add_path, &mut v).map(|()| v)
    }

    #[test]
    fn v4_prefixes_round_trip_and_host_bits_are_cleared() {
        let got = parse(
            &[26, 10, 0, 0, 64, 0, 24, 10, 1, 2, 32, 1, 2, 3, 4],
            Afi::Ipv4,
            false,
        )
        .unwrap();
        let want: Vec<Nlri> = ["10.0.0.64/26", "0.0.0.0/0", "10.1.2.0/24", "1.2.3.4/32"]
            .iter()
            .map(|s| Nlri::new(s.parse().unwrap()))
            .collect();
        assert_eq!(got, want);
        // Trailing bits set in the last octet: irrelevant, cleared.
        let got = parse(&[25, 10, 0, 0, 0xff], Afi::Ipv4, false).unwrap();
        assert_eq!(got[0].prefix, "10.0.0.128/25".parse::<IpNet>().unwrap());
        let mut out = Vec::new();
        for n in &want {
            put_prefix(&mut out, n, false);
        }
        assert_eq!(out, [26, 10, 0, 0, 64, 0, 24, 10, 1, 2, 32, 1, 2, 3, 4]);
    }

    #[test]
    fn add_path_and_v6() {
        let buf = [0, 0, 0, 7, 64, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1];
        let got = parse(&buf, Afi::Ipv6, true).unwrap();
        assert_eq!(
            got,
            vec![Nlri {
                path_id: Some(7),
                prefix: "2001:db8:0:1::/64".parse().unwrap()
            }]
        );
        let mut out = Vec::new();
        put_prefix(&mut out, &got[0], true);
        assert_eq!(out, buf);
        assert_eq!(prefix_size(&got[0], true), buf.len());
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(&[33, 1, 2, 3, 4, 5], Afi::Ipv4, false),
            Err(PrefixError::Length(33))
        );
        assert_eq!(
            parse(&[129], Afi::Ipv6, false),
            Err(PrefixError::Length(129))
        );
        assert_eq!(
            parse(&[24, 10, 0], Afi::Ipv4, false),
            Err(PrefixError::Truncated)
        );
        assert_eq!(
            parse(&[0, 0, 1], Afi::Ipv4, true),
            Err(PrefixError::Truncated)
        );
        assert_eq!(parse(&[], Afi::Ipv4, true), Ok(vec![]));
    }
}
