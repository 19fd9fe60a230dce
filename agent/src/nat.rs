//! `natOutgoing`: pods of such pools reach destinations outside every pool through the node's
//! address (nftables masquerade), as Calico's `cali-nat-outgoing` does.
//!
//! The agent owns one table, `ip tortie-nat` (`ip6 tortie-nat` for IPv6 pools), and replaces it
//! whole in one nftables transaction whenever the set of pools changes; it touches nothing else.

use ipnet::IpNet;

/// The nftables script for the pools: `nat` are the pools with `natOutgoing`, `all` every pool
/// (traffic between pools is never masqueraded). Empty `nat`: the tables are removed.
pub fn render(nat: &[IpNet], all: &[IpNet]) -> String {
    let mut out = String::new();
    for (family, v6) in [("ip", false), ("ip6", true)] {
        // Creating then deleting makes the delete succeed whether or not the table existed.
        out.push_str(&format!(
            "table {family} tortie-nat\ndelete table {family} tortie-nat\n"
        ));
        let pick = |v: &[IpNet]| -> Vec<String> {
            v.iter()
                .filter(|n| n.addr().is_ipv6() == v6)
                .map(ToString::to_string)
                .collect()
        };
        let (nat, all) = (pick(nat), pick(all));
        if nat.is_empty() {
            continue;
        }
        let addr = if v6 { "ip6" } else { "ip" };
        out.push_str(&format!(
            "table {family} tortie-nat {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    {addr} saddr {{ {} }} {addr} daddr != {{ {} }} masquerade\n  }}\n}}\n",
            nat.join(", "),
            all.join(", ")
        ));
    }
    out
}

/// Applies [`render`] with `nft -f -` (one atomic transaction).
pub fn apply(nat: &[IpNet], all: &[IpNet]) -> anyhow::Result<()> {
    use std::io::Write;
    let script = render(nat, all);
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run nft (apt-get install nftables): {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "nft refused the NAT rules: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerades_only_from_nat_pools_to_outside_every_pool() {
        let nat: Vec<IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
        let all: Vec<IpNet> = vec![
            "10.244.0.0/16".parse().unwrap(),
            "10.245.0.0/16".parse().unwrap(),
            "fd00:10::/48".parse().unwrap(),
        ];
        let s = render(&nat, &all);
        assert!(
            s.contains(
                "ip saddr { 10.244.0.0/16 } ip daddr != { 10.244.0.0/16, 10.245.0.0/16 } masquerade"
            ),
            "{s}"
        );
        // No IPv6 NAT pool: the ip6 table is only cleared.
        assert!(!s.contains("table ip6 tortie-nat {"), "{s}");
        assert!(s.contains("delete table ip6 tortie-nat"));
        let none = render(&[], &all);
        assert!(!none.contains("masquerade"));
    }
}
