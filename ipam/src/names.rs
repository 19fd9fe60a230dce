//! Datastore names of IPAM's objects. Names must be DNS subdomains (≤ 253 characters, lower-case
//! alphanumerics, `-` and `.`); anything that would not fit is shortened with a stable hash, and
//! the object's spec keeps the real value so a hash collision is detected on read.

use std::net::IpAddr;

use ipnet::IpNet;
use tortie_api::values::Cidr;

/// `10.244.1.64/26` → `10-244-1-64-26`; IPv6 is written out in full so that the name never
/// starts with `-` (`fd00:10::40/122` → `fd00-10-0-0-0-0-0-40-122`).
pub fn block_name(cidr: Cidr) -> String {
    match cidr.net() {
        IpNet::V4(n) => format!(
            "{}-{}",
            n.network().to_string().replace('.', "-"),
            n.prefix_len()
        ),
        IpNet::V6(n) => {
            let groups: Vec<String> = n
                .network()
                .segments()
                .iter()
                .map(|s| format!("{s:x}"))
                .collect();
            format!("{}-{}", groups.join("-"), n.prefix_len())
        }
    }
}

/// The affinity of `node` for the block `cidr`.
pub fn affinity_name(node: &str, cidr: Cidr) -> String {
    fit(format!("{node}.{}", block_name(cidr)))
}

/// The handle object's name for a handle ID such as `k8s-pod-network.<containerID>`.
pub fn handle_name(handle_id: &str) -> String {
    if is_dns_subdomain(handle_id) {
        handle_id.to_string()
    } else {
        let cleaned: String = handle_id
            .to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .take(200)
            .collect();
        format!(
            "h{:016x}.{}",
            fnv1a(handle_id.as_bytes()),
            cleaned.trim_matches(|c| c == '-' || c == '.')
        )
        .trim_end_matches(['-', '.'])
        .to_string()
    }
}

/// A stable 64-bit hash (FNV-1a): deterministic across processes and versions.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn fit(name: String) -> String {
    if name.len() <= 253 {
        return name;
    }
    let hash = format!("{:016x}", fnv1a(name.as_bytes()));
    let keep = name[..253 - 17].trim_end_matches(['-', '.']).to_string();
    format!("{keep}-{hash}")
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The family of an address as a word, for messages.
pub fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_subdomains() {
        assert_eq!(
            block_name("10.244.1.64/26".parse().unwrap()),
            "10-244-1-64-26"
        );
        assert_eq!(
            block_name("fd00:10::40/122".parse().unwrap()),
            "fd00-10-0-0-0-0-0-40-122"
        );
        assert_eq!(block_name("::/122".parse().unwrap()), "0-0-0-0-0-0-0-0-122");
        assert_eq!(
            handle_name("k8s-pod-network.0123abc"),
            "k8s-pod-network.0123abc"
        );
        let odd = handle_name("My_Net.ABC");
        assert!(is_dns_subdomain(&odd), "{odd}");
        assert_ne!(handle_name("My_Net.ABC"), handle_name("My_Net.ABD"));
        let long = affinity_name(&"n".repeat(250), "10.0.0.0/26".parse().unwrap());
        assert!(long.len() <= 253 && is_dns_subdomain(&long), "{long}");
    }
}
