//! The one audited place in tortie where `unsafe` is allowed: kernel interfaces that no safe
//! binding (std, socket2, rustix) offers. Every other crate denies `unsafe_code`.
//!
//! Each `unsafe` block is one system call on a file descriptor the caller lends us as a
//! [`BorrowedFd`] (so it is open for the duration of the call), with a value that lives on our
//! stack and whose size we pass alongside it. Nothing here keeps pointers past the call.
//!
//! - [`set_tcp_md5_key`]: TCP-MD5 signatures per peer (RFC 2385), the `TCP_MD5SIG` option.
//! - [`set_min_ttl`]: the receive side of the Generalized TTL Security Mechanism (RFC 5082),
//!   `IP_MINTTL` / `IPV6_MINHOPCOUNT`.
//! - [`save_syn`] / [`saved_syn_ttl`]: the TTL the connection's SYN arrived with. A minimum TTL
//!   can only be set on an accepted socket after the handshake, when the peer's first data may
//!   already be queued; checking the SYN closes that gap for inbound GTSM sessions.
//! - [`netns`]: running code inside another network namespace (a scoped thread that `setns`es
//!   and never comes back, so no other code ever runs in the wrong namespace).
#![allow(unsafe_code)]

pub mod netns;

use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Longest TCP-MD5 key the kernel accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const TCP_MD5_MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from `<linux/tcp.h>`; libc does not define it.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: u32,
    key: [u8; TCP_MD5_MAX_KEY_LEN],
}

/// Installs (`Some(key)`) or removes (`None`) the TCP-MD5 key for connections between `socket`
/// and `peer`. On a listening socket it applies to the connections it will accept; on an
/// unconnected socket, to the connection it will make. An IPv4 peer on an IPv6 socket is
/// written as an IPv4-mapped address, as the kernel expects for dual-stack sockets.
pub fn set_tcp_md5_key(
    socket: BorrowedFd<'_>,
    socket_is_ipv6: bool,
    peer: IpAddr,
    key: Option<&[u8]>,
) -> io::Result<()> {
    let key = key.unwrap_or_default();
    if key.len() > TCP_MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP-MD5 key longer than {TCP_MD5_MAX_KEY_LEN} bytes"),
        ));
    }
    // An all-zero sockaddr_storage is a valid (AF_UNSPEC) value: zeroed() is sound for it.
    let mut sig = TcpMd5Sig {
        // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
        addr: unsafe { std::mem::zeroed() },
        flags: 0,
        prefix_len: 0,
        key_len: key.len() as u16,
        ifindex: 0,
        key: [0; TCP_MD5_MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    let v6 = match peer {
        IpAddr::V6(v6) => Some(v6),
        IpAddr::V4(v4) if socket_is_ipv6 => Some(v4.to_ipv6_mapped()),
        IpAddr::V4(_) => None,
    };
    let storage = &mut sig.addr as *mut libc::sockaddr_storage;
    match (v6, peer) {
        (Some(v6), _) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is at least as large and as aligned as sockaddr_in6
            // (that is its purpose); we write one whole value into our own stack variable.
            unsafe { storage.cast::<libc::sockaddr_in6>().write(sin6) };
        }
        (None, IpAddr::V4(v4)) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: as above, for sockaddr_in.
            unsafe { storage.cast::<libc::sockaddr_in>().write(sin) };
        }
        (None, IpAddr::V6(_)) => unreachable!("IPv6 peers always take the first arm"),
    }
    setsockopt(socket, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// Drops every packet on `socket` that arrives with a TTL (hop limit) below `min`: RFC 5082
/// §3 with `min = 255 - (hops - 1)`. 0 turns the check off.
pub fn set_min_ttl(socket: BorrowedFd<'_>, ipv6: bool, min: u8) -> io::Result<()> {
    let value = libc::c_int::from(min);
    if ipv6 {
        setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &value)
    } else {
        setsockopt(socket, libc::IPPROTO_IP, libc::IP_MINTTL, &value)
    }
}

/// Makes a listening socket keep the headers of each connection's SYN (`TCP_SAVE_SYN`), for
/// [`saved_syn_ttl`] on the accepted sockets.
pub fn save_syn(listener: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt(
        listener,
        libc::IPPROTO_TCP,
        libc::TCP_SAVE_SYN,
        &1 as &libc::c_int,
    )
}

/// The TTL (IPv4) or hop limit (IPv6) of the SYN that opened an accepted connection, when its
/// listener had [`save_syn`]. `Ok(None)`: nothing saved (the kernel hands it out once).
pub fn saved_syn_ttl(accepted: BorrowedFd<'_>) -> io::Result<Option<u8>> {
    // IPv6 header (40) + the largest TCP header (60) fit easily.
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the descriptor is open for the call; `buf` is a live buffer of `len` bytes that
    // the kernel fills up to `len` and reports the written length back in `len`.
    let rc = unsafe {
        libc::getsockopt(
            accepted.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SAVED_SYN,
            buf.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ttl_of_ip_header(&buf[..(len as usize).min(buf.len())]))
}

/// TTL / hop limit from the start of a saved SYN (an IP header): byte 8 of IPv4, byte 7 of IPv6.
fn ttl_of_ip_header(header: &[u8]) -> Option<u8> {
    match header.first().map(|b| b >> 4) {
        Some(4) => header.get(8).copied(),
        Some(6) => header.get(7).copied(),
        _ => None,
    }
}

fn setsockopt<T>(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: the descriptor is open (borrowed for the call); `value` points to a live,
    // initialised T and we pass exactly its size; the kernel copies it before returning.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
    use std::os::fd::AsFd;

    #[test]
    fn md5_struct_matches_the_kernel_layout() {
        // 128 (sockaddr_storage) + 1 + 1 + 2 + 4 + 80 = 216 bytes, as in <linux/tcp.h>.
        assert_eq!(size_of::<TcpMd5Sig>(), 216);
    }

    // Socket options on unconnected sockets: no traffic, no namespace needed.
    #[test]
    fn md5_keys_are_accepted_and_removed_on_both_families() {
        let v4 = listener("127.0.0.1:0");
        set_tcp_md5_key(
            v4.as_fd(),
            false,
            Ipv4Addr::new(198, 18, 0, 1).into(),
            Some(b"s3cret"),
        )
        .unwrap();
        set_tcp_md5_key(v4.as_fd(), false, Ipv4Addr::new(198, 18, 0, 1).into(), None).unwrap();
        if let Some(v6) = listener_if_possible("[::1]:0") {
            set_tcp_md5_key(
                v6.as_fd(),
                true,
                "fd00:198::1".parse::<Ipv6Addr>().unwrap().into(),
                Some(b"k"),
            )
            .unwrap();
            // IPv4 peer on a dual-stack socket: written as ::ffff:a.b.c.d.
            set_tcp_md5_key(
                v6.as_fd(),
                true,
                Ipv4Addr::new(198, 18, 0, 2).into(),
                Some(b"k"),
            )
            .unwrap();
        }
    }

    #[test]
    fn over_long_md5_keys_are_refused_before_the_kernel() {
        let l = listener("127.0.0.1:0");
        let err = set_tcp_md5_key(
            l.as_fd(),
            false,
            Ipv4Addr::LOCALHOST.into(),
            Some(&[b'x'; 81]),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn min_ttl_is_set_on_both_families() {
        let v4 = listener("127.0.0.1:0");
        set_min_ttl(v4.as_fd(), false, 254).unwrap();
        if let Some(v6) = listener_if_possible("[::1]:0") {
            set_min_ttl(v6.as_fd(), true, 254).unwrap();
        }
        // The wrong level for the family is an error, not silently ignored.
        assert!(set_min_ttl(v4.as_fd(), true, 254).is_err());
    }

    #[test]
    fn ttl_is_read_from_either_ip_version() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[8] = 254;
        assert_eq!(ttl_of_ip_header(&v4), Some(254));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[7] = 255;
        assert_eq!(ttl_of_ip_header(&v6), Some(255));
        assert_eq!(ttl_of_ip_header(&[]), None);
        assert_eq!(ttl_of_ip_header(&[0x45, 0, 0]), None);
    }

    #[test]
    fn save_syn_is_accepted_on_a_listener() {
        let l = listener("127.0.0.1:0");
        save_syn(l.as_fd()).unwrap();
    }

    fn listener(addr: &str) -> TcpListener {
        TcpListener::bind(addr).unwrap()
    }

    fn listener_if_possible(addr: &str) -> Option<TcpListener> {
        TcpListener::bind(addr).ok()
    }
}
