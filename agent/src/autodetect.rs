//! The node's IPv4 address, chosen like calico-node's `IP_AUTODETECTION_METHOD`:
//!
//! - `first-found` (default): the first address on an up interface not on the exclusion list
//!   (container bridges, pod veths, tunnels, loopback);
//! - `interface=REGEX`: the first interface whose name matches;
//! - `skip-interface=REGEX`: like first-found, also skipping matching interfaces;
//! - `cidr=CIDR[,CIDR…]`: the first address inside one of the ranges;
//! - `can-reach=DEST`: the source address the kernel picks towards DEST (a UDP `connect`, which
//!   sends nothing).
//!
//! [`choose`] is pure; it returns the address and a sentence saying why, for the log.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use ipnet::IpNet;
use regex::Regex;

/// Interfaces `first-found` never picks (Calico's list, plus ours).
pub const EXCLUDED: &[&str] = &[
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^vxlan\\.calico.*",
    "^vxlan\\.tortie",
    "^nodelocaldns.*",
    "^podman.*",
    "^br-.*",
    "^kube-bridge.*",
    "^tortie.*",
];

/// A method.
#[derive(Debug, Clone)]
pub enum Method {
    /// First usable address.
    FirstFound,
    /// First address of an interface matching.
    Interface(Regex),
    /// First-found, skipping these too.
    SkipInterface(Regex),
    /// First address in one of these ranges.
    Cidr(Vec<IpNet>),
    /// The kernel's source address towards this destination.
    CanReach(IpAddr),
}

impl Method {
    /// Parses `first-found`, `interface=…`, `skip-interface=…`, `cidr=…`, `can-reach=…`.
    pub fn parse(s: &str) -> Result<Method, String> {
        let bad = |why: String| format!("IP autodetection method {s:?}: {why}");
        match s.split_once('=') {
            None if s == "first-found" => Ok(Method::FirstFound),
            Some(("interface", re)) => Regex::new(re)
                .map(Method::Interface)
                .map_err(|e| bad(e.to_string())),
            Some(("skip-interface", re)) => Regex::new(re)
                .map(Method::SkipInterface)
                .map_err(|e| bad(e.to_string())),
            Some(("cidr", list)) => list
                .split(',')
                .map(|c| c.trim().parse::<IpNet>().map_err(|e| bad(format!("{c}: {e}"))))
                .collect::<Result<_, _>>()
                .map(Method::Cidr),
            Some(("can-reach", dest)) => dest
                .parse::<IpAddr>()
                .map(Method::CanReach)
                .map_err(|e| bad(format!("{dest}: {e}"))),
            _ => Err(bad(
                "expected first-found, interface=REGEX, skip-interface=REGEX, cidr=CIDR or can-reach=IP".into(),
            )),
        }
    }
}

/// One candidate: interface name and address with its prefix length (up interfaces only).
pub type Candidate = (String, IpNet);

/// Picks the IPv4 address; `reach` answers `can-reach` (the kernel's source address for a
/// destination).
pub fn choose(
    method: &Method,
    candidates: &[Candidate],
    reach: impl Fn(IpAddr) -> Option<IpAddr>,
) -> Result<(IpNet, String), String> {
    choose_family(method, candidates, reach, false)
}

/// Like [`choose`], for IPv4 (`ipv6` false) or IPv6 addresses.
pub fn choose_family(
    method: &Method,
    candidates: &[Candidate],
    reach: impl Fn(IpAddr) -> Option<IpAddr>,
    ipv6: bool,
) -> Result<(IpNet, String), String> {
    let excluded: Vec<Regex> = EXCLUDED
        .iter()
        .map(|r| Regex::new(r).expect("ours"))
        .collect();
    let usable = |name: &str| !excluded.iter().any(|r| r.is_match(name));
    let v4 = candidates
        .iter()
        .filter(|(_, a)| a.addr().is_ipv6() == ipv6);
    let found = match method {
        Method::FirstFound => v4
            .clone()
            .find(|(n, _)| usable(n))
            .map(|(n, a)| (*a, format!("first-found: first usable interface {n}"))),
        Method::Interface(re) => v4
            .clone()
            .find(|(n, _)| re.is_match(n))
            .map(|(n, a)| (*a, format!("interface={re}: {n} matches"))),
        Method::SkipInterface(re) => {
            v4.clone()
                .find(|(n, _)| usable(n) && !re.is_match(n))
                .map(|(n, a)| {
                    (
                        *a,
                        format!("skip-interface={re}: first other interface {n}"),
                    )
                })
        }
        Method::Cidr(nets) => v4
            .clone()
            .find(|(_, a)| nets.iter().any(|c| c.contains(&a.addr())))
            .map(|(n, a)| (*a, format!("cidr: {a} on {n} is in range"))),
        Method::CanReach(dest) => reach(*dest).and_then(|src| {
            candidates
                .iter()
                .find(|(_, a)| a.addr() == src)
                .map(|(n, a)| {
                    (
                        *a,
                        format!("can-reach={dest}: the kernel sends from {src} on {n}"),
                    )
                })
        }),
    };
    let family = if ipv6 { "IPv6" } else { "IPv4" };
    found.ok_or_else(|| format!("no {family} address matches {method:?} among {candidates:?}"))
}

/// The kernel's source address towards `dest` (UDP connect: a route lookup, no packet sent).
pub fn source_towards(dest: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if dest.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(dest, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: &str, a: &str) -> Candidate {
        (n.into(), a.parse().unwrap())
    }

    #[test]
    fn each_method_picks_and_says_why() {
        let cands = vec![
            c("docker0", "172.17.0.1/16"),
            c("cali1234567890a", "169.254.1.2/32"),
            c("eth0", "198.18.1.5/24"),
            c("eth1", "198.18.9.5/24"),
        ];
        let none = |_| None;
        let (a, why) = choose(&Method::FirstFound, &cands, none).unwrap();
        assert_eq!(a.to_string(), "198.18.1.5/24");
        assert!(why.contains("eth0"), "{why}");
        let (a, _) = choose(&Method::parse("interface=eth1").unwrap(), &cands, none).unwrap();
        assert_eq!(a.to_string(), "198.18.9.5/24");
        let (a, _) = choose(&Method::parse("skip-interface=eth0").unwrap(), &cands, none).unwrap();
        assert_eq!(a.to_string(), "198.18.9.5/24");
        let (a, _) = choose(
            &Method::parse("cidr=10.0.0.0/8, 198.18.9.0/24").unwrap(),
            &cands,
            none,
        )
        .unwrap();
        assert_eq!(a.to_string(), "198.18.9.5/24");
        let (a, why) = choose(
            &Method::parse("can-reach=198.18.9.1").unwrap(),
            &cands,
            |_| Some("198.18.9.5".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(a.to_string(), "198.18.9.5/24");
        assert!(why.contains("can-reach"), "{why}");
        assert!(choose(&Method::parse("interface=wlan.*").unwrap(), &cands, none).is_err());
        let dual = vec![c("eth0", "198.18.1.5/24"), c("eth0", "fd00:198:18::5/64")];
        let (a, _) = choose_family(&Method::FirstFound, &dual, none, true).unwrap();
        assert_eq!(a.to_string(), "fd00:198:18::5/64");
        let (a, _) =
            choose_family(&Method::parse("cidr=fd00::/8").unwrap(), &dual, none, true).unwrap();
        assert_eq!(a.to_string(), "fd00:198:18::5/64");
        for bad in [
            "nearest",
            "cidr=10.0.0.0/33",
            "interface=(",
            "can-reach=host",
        ] {
            assert!(Method::parse(bad).is_err(), "{bad}");
        }
    }
}
