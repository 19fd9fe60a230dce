//! Value types that check themselves while being decoded.
//!
//! Each type here parses from the document's string form inside `Deserialize`, so that a bad
//! value is reported by the decoder together with its path (`spec.cidr: "10.0.0.0/33" is not a
//! valid CIDR`), and the rest of the code base works with parsed values only.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::selector::Selector;

/// Implements `Serialize`/`Deserialize` through `Display`/`FromStr` with a `String` error.
macro_rules! string_serde {
    ($t:ty) => {
        // In CRD schemas these are plain strings; the agent and the CLI check them on decode.
        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string" })
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A strictly masked IPv4 or IPv6 network (`10.0.0.0/16`, not `10.0.0.1/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// The network.
    pub fn net(&self) -> IpNet {
        self.0
    }
    /// Prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }
    /// True for IPv4.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.0, IpNet::V4(_))
    }
    /// True when the two networks share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.0.contains(&other.0.network()) || other.0.contains(&self.0.network())
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let net: IpNet = s
            .parse()
            .map_err(|_| format!("{s:?} is not a valid CIDR"))?;
        if net.trunc() != net {
            return Err(format!(
                "{s:?} is not strictly masked (did you mean {}?)",
                net.trunc()
            ));
        }
        Ok(Cidr(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
string_serde!(Cidr);

/// An interface address with its prefix length (`198.18.0.10/24`): host bits allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterfaceAddress(pub IpNet);

impl InterfaceAddress {
    /// The address itself.
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }
}

impl FromStr for InterfaceAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(InterfaceAddress(net));
        }
        // A bare address means a host prefix, as calicoctl accepts.
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(InterfaceAddress(IpNet::from(ip))),
            Err(_) => Err(format!(
                "{s:?} is not a valid address with prefix length (e.g. 198.18.0.10/24)"
            )),
        }
    }
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
string_serde!(InterfaceAddress);

/// A BGP peer address: `IP`, `IPv4:port` or `[IPv6]:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    /// The peer's address.
    pub ip: IpAddr,
    /// TCP port when not 179.
    pub port: Option<u16>,
}

impl FromStr for PeerAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PeerAddress { ip, port: None });
        }
        match s.parse::<SocketAddr>() {
            Ok(sa) if sa.port() != 0 => Ok(PeerAddress {
                ip: sa.ip(),
                port: Some(sa.port()),
            }),
            _ => Err(format!(
                "{s:?} is not a valid peer address (IP, IPv4:port or [IPv6]:port)"
            )),
        }
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (ip, None) => write!(f, "{ip}"),
            (IpAddr::V4(ip), Some(p)) => write!(f, "{ip}:{p}"),
            (IpAddr::V6(ip), Some(p)) => write!(f, "[{ip}]:{p}"),
        }
    }
}
string_serde!(PeerAddress);

/// A 4-octet AS number (RFC 6793). Accepts a number, a decimal string, or asdot `1.10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsNumber(pub u32);

// A number or a string (asdot), as Kubernetes' int-or-string.
impl schemars::JsonSchema for AsNumber {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AsNumber".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

impl FromStr for AsNumber {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a valid AS number (1 to 4294967295, or asdot N.M)");
        let n = if let Some((hi, lo)) = s.split_once('.') {
            let hi: u16 = hi.parse().map_err(|_| bad())?;
            let lo: u16 = lo.parse().map_err(|_| bad())?;
            (u32::from(hi) << 16) | u32::from(lo)
        } else {
            s.parse::<u32>().map_err(|_| bad())?
        };
        // AS 0 is reserved and must not be used in a session (RFC 7607).
        if n == 0 {
            return Err(format!(
                "{s:?} is not a valid AS number: AS 0 is reserved (RFC 7607)"
            ));
        }
        Ok(AsNumber(n))
    }
}

impl fmt::Display for AsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for AsNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Unsigned(u64),
            Signed(i64),
            Float(f64),
            Text(String),
            Other(serde::de::IgnoredAny),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Unsigned(n) => n.to_string(),
            Raw::Signed(n) => n.to_string(),
            Raw::Text(t) => t,
            // YAML reads an unquoted asdot `1.10` as the float 1.1: the digits are lost.
            Raw::Float(f) => {
                return Err(serde::de::Error::custom(format!(
                    "{f} is not a valid AS number: write asdot notation in quotes, e.g. \"1.10\""
                )));
            }
            Raw::Other(_) => {
                return Err(serde::de::Error::custom(
                    "is not a valid AS number (a number from 1 to 4294967295, or asdot \"N.M\")",
                ));
            }
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A duration in Go/Kubernetes notation: `90s`, `2m30s`, `500ms`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Whole seconds.
    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a valid duration (e.g. 90s, 2m30s, 500ms)");
        if s == "0" {
            return Ok(Duration(std::time::Duration::ZERO));
        }
        let mut rest = s;
        let mut total_ms: u128 = 0;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 12 {
                return Err(bad());
            }
            let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let factor = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total_ms += n * factor;
        }
        let ms = u64::try_from(total_ms).map_err(|_| bad())?;
        Ok(Duration(std::time::Duration::from_millis(ms)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}
string_serde!(Duration);

/// A label selector kept with the text the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    text: String,
    ast: Selector,
}

impl LabelSelector {
    /// `all()`.
    pub fn all() -> Self {
        "all()".parse().expect("all() parses")
    }
    /// The parsed expression.
    pub fn selector(&self) -> &Selector {
        &self.ast
    }
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
    /// Evaluates against a label map.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.ast.matches(labels)
    }
}

impl FromStr for LabelSelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ast = Selector::parse(s).map_err(|e| format!("{s:?} is not a valid selector: {e}"))?;
        Ok(LabelSelector {
            text: s.to_string(),
            ast,
        })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
string_serde!(LabelSelector);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_is_strict() {
        assert!("10.0.0.0/16".parse::<Cidr>().is_ok());
        assert!("fd00::/48".parse::<Cidr>().is_ok());
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>().unwrap_err(),
            "\"10.0.0.0/33\" is not a valid CIDR"
        );
        assert!(
            "10.0.0.1/16"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("did you mean 10.0.0.0/16")
        );
        let a: Cidr = "10.0.0.0/16".parse().unwrap();
        let b: Cidr = "10.0.128.0/17".parse().unwrap();
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
    }

    #[test]
    fn peer_addresses() {
        for (text, ip, port) in [
            ("198.18.0.1", "198.18.0.1", None),
            ("198.18.0.1:1179", "198.18.0.1", Some(1179)),
            ("[fd00::1]:179", "fd00::1", Some(179)),
            ("fd00::1", "fd00::1", None),
        ] {
            let p: PeerAddress = text.parse().unwrap();
            assert_eq!(p.ip, ip.parse::<IpAddr>().unwrap());
            assert_eq!(p.port, port);
            assert_eq!(p.to_string(), text);
        }
        assert!("198.18.0.1:0".parse::<PeerAddress>().is_err());
        assert!("host:179".parse::<PeerAddress>().is_err());
    }

    #[test]
    fn as_numbers_are_four_octet() {
        assert_eq!("4200000000".parse::<AsNumber>().unwrap().0, 4_200_000_000);
        assert_eq!("1.10".parse::<AsNumber>().unwrap().0, 65_546);
        assert!("0".parse::<AsNumber>().is_err());
        assert!("4294967296".parse::<AsNumber>().is_err());
        let n: AsNumber = serde_json::from_str("64512").unwrap();
        assert_eq!(n.0, 64512);
        assert!(serde_json::from_str::<AsNumber>("-1").is_err());
        assert!(serde_json::from_str::<AsNumber>("99999999999").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!("90s".parse::<Duration>().unwrap().as_secs(), 90);
        assert_eq!("2m30s".parse::<Duration>().unwrap().as_secs(), 150);
        assert_eq!("500ms".parse::<Duration>().unwrap().to_string(), "500ms");
        assert_eq!("1h".parse::<Duration>().unwrap().to_string(), "3600s");
        for bad in ["", "s", "10", "10x", "-1s", "99999999999999h"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }
}
