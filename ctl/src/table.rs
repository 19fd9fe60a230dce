//! `get -o table|wide`: columns per kind, printed like kubectl/calicoctl (no borders, left
//! aligned, three spaces between columns).

use comfy_table::{Table, presets};
use serde::Serialize;
use serde_json::Value;
use tortie_api::{AnyResource, BGPConfiguration, DEFAULT_AS_NUMBER, Kind};

/// What some columns need besides the objects themselves.
#[derive(Debug, Clone, Default)]
pub struct TableContext {
    /// The stored `BGPConfiguration`s, for a node's inherited AS number.
    pub bgp_configurations: Vec<BGPConfiguration>,
}

impl TableContext {
    /// The AS number a node without its own inherits: its `node.<name>` configuration, else the
    /// `default` configuration, else the built-in default.
    fn inherited_asn(&self, node: &str) -> u32 {
        let find = |name: &str| {
            self.bgp_configurations
                .iter()
                .find(|c| c.metadata.name == name)
                .and_then(|c| c.spec.as_number)
        };
        find(&format!("node.{node}"))
            .or_else(|| find("default"))
            .map_or(DEFAULT_AS_NUMBER, |a| a.0)
    }
}

/// The column headers of a kind.
pub fn headers(kind: Kind, wide: bool) -> Vec<&'static str> {
    let (base, extra): (&[&str], &[&str]) = match kind {
        Kind::IPPool => (
            &[
                "NAME",
                "CIDR",
                "BLOCKSIZE",
                "NAT",
                "VXLAN",
                "DISABLED",
                "SELECTOR",
            ],
            &["DISABLEBGPEXPORT", "ALLOWEDUSES"],
        ),
        Kind::BGPPeer => (
            &["NAME", "PEERIP", "NODE", "ASN"],
            &["PEERSELECTOR", "HOLDTIME", "KEEPALIVE", "FILTERS"],
        ),
        Kind::BGPConfiguration => (
            &[
                "NAME",
                "LOGSEVERITY",
                "MESHENABLED",
                "ASNUMBER",
                "LISTENPORT",
            ],
            &[
                "SERVICECLUSTERIPS",
                "SERVICEEXTERNALIPS",
                "SERVICELOADBALANCERIPS",
            ],
        ),
        Kind::BGPFilter => (
            &["NAME", "EXPORTV4", "IMPORTV4", "EXPORTV6", "IMPORTV6"],
            &[],
        ),
        Kind::Node => (
            &["NAME", "ASN", "IPV4", "IPV6"],
            &["ROUTEREFLECTORCLUSTERID"],
        ),
        Kind::IPAMConfiguration => (
            &["NAME", "STRICTAFFINITY", "MAXBLOCKSPERHOST", "AUTOALLOCATE"],
            &[],
        ),
        Kind::IPReservation => (&["NAME", "CIDRS"], &[]),
        Kind::IPAMBlock => (&["NAME", "CIDR", "AFFINITY", "ALLOCATED"], &[]),
        Kind::BlockAffinity => (&["NAME", "NODE", "CIDR", "STATE"], &[]),
        Kind::IPAMHandle => (&["NAME", "HANDLEID", "ADDRESSES", "BLOCKS"], &[]),
    };
    let mut h = base.to_vec();
    if wide {
        h.extend_from_slice(extra);
    }
    h
}

/// The text of an enum as written in documents (`Never`, `Workload`).
fn word<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// The cells of one object (base columns, then the wide ones).
fn row(r: &AnyResource, ctx: &TableContext) -> Vec<String> {
    let name = r.meta().name.clone();
    match r {
        AnyResource::IPPool(p) => {
            let s = &p.spec;
            vec![
                name,
                s.cidr.to_string(),
                s.effective_block_size().to_string(),
                s.nat_outgoing.to_string(),
                word(&s.vxlan_mode),
                s.disabled.to_string(),
                s.node_selector.to_string(),
                s.disable_bgp_export.to_string(),
                s.allowed_uses
                    .iter()
                    .map(word)
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        }
        AnyResource::BGPPeer(p) => {
            let s = &p.spec;
            let node = match (&s.node, &s.node_selector) {
                (Some(n), _) => n.clone(),
                (None, Some(sel)) => sel.to_string(),
                (None, None) => "(global)".to_string(),
            };
            vec![
                name,
                opt(s.peer_ip),
                node,
                opt(s.as_number),
                opt(s.peer_selector.as_ref()),
                opt(s.hold_time),
                opt(s.keepalive_time),
                s.filters.join(","),
            ]
        }
        AnyResource::BGPConfiguration(c) => {
            let s = &c.spec;
            let ranges = |v: &[tortie_api::ServiceRange]| {
                v.iter()
                    .map(|r| r.cidr.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                name,
                s.log_severity_screen.as_ref().map(word).unwrap_or_default(),
                opt(s.node_to_node_mesh_enabled),
                opt(s.as_number),
                opt(s.listen_port),
                ranges(&s.service_cluster_ips),
                ranges(&s.service_external_ips),
                ranges(&s.service_load_balancer_ips),
            ]
        }
        AnyResource::BGPFilter(f) => {
            let s = &f.spec;
            vec![
                name,
                s.export_v4.len().to_string(),
                s.import_v4.len().to_string(),
                s.export_v6.len().to_string(),
                s.import_v6.len().to_string(),
            ]
        }
        AnyResource::Node(n) => {
            let bgp = n.spec.bgp.as_ref();
            let asn = match bgp {
                Some(b) => match b.as_number {
                    Some(a) => a.to_string(),
                    None => format!("({})", ctx.inherited_asn(&name)),
                },
                None => String::new(),
            };
            vec![
                name,
                asn,
                opt(bgp.and_then(|b| b.ipv4_address)),
                opt(bgp.and_then(|b| b.ipv6_address)),
                opt(bgp.and_then(|b| b.route_reflector_cluster_id)),
            ]
        }
        AnyResource::IPAMConfiguration(c) => vec![
            name,
            c.spec.strict_affinity.to_string(),
            c.spec.max_blocks_per_host.to_string(),
            c.spec.auto_allocate_blocks.to_string(),
        ],
        AnyResource::IPReservation(r) => vec![name, join(&r.spec.reserved_cidrs)],
        // IPAM's own kinds are read through their JSON form: they are IPAM's business and their
        // shape may change without the CLI having to follow field by field.
        AnyResource::IPAMBlock(_) | AnyResource::BlockAffinity(_) | AnyResource::IPAMHandle(_) => {
            internal_row(r)
        }
    }
}

/// Rows of IPAM's kinds, from their JSON form.
fn internal_row(r: &AnyResource) -> Vec<String> {
    let v = r.to_json();
    let spec = &v["spec"];
    let text = |field: &str| match &spec[field] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let count = |field: &str| match &spec[field] {
        Value::Array(a) => a.iter().filter(|x| !x.is_null()).count(),
        Value::Object(o) => o.len(),
        _ => 0,
    };
    let name = r.meta().name.clone();
    match r.kind() {
        Kind::IPAMBlock => {
            let used = count("allocations");
            let free = count("unallocated");
            vec![
                name,
                text("cidr"),
                text("affinity"),
                format!("{used}/{}", used + free),
            ]
        }
        Kind::BlockAffinity => vec![name, text("node"), text("cidr"), text("state")],
        Kind::IPAMHandle => {
            let blocks = spec["block"].as_object();
            let addresses: u64 = blocks
                .map(|b| b.values().filter_map(Value::as_u64).sum())
                .unwrap_or_default();
            let names = blocks
                .map(|b| b.keys().cloned().collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![name, text("handleID"), addresses.to_string(), names]
        }
        _ => vec![name],
    }
}

/// Renders objects of one kind as a table (with a final newline).
pub fn render(kind: Kind, items: &[AnyResource], wide: bool, ctx: &TableContext) -> String {
    let headers = headers(kind, wide);
    let rows = items
        .iter()
        .map(|item| {
            let mut cells = row(item, ctx);
            cells.truncate(headers.len());
            cells
        })
        .collect();
    plain(&headers, rows)
}

/// A borderless table in tortiectl's style: left-aligned, three spaces between columns.
pub fn plain(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(headers.to_vec());
    for cells in rows {
        table.add_row(cells);
    }
    let last = headers.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 3 }));
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tortie_api::values::Cidr;
    use tortie_api::{IPPool, IPPoolSpec};

    #[test]
    fn pools_render_plain_columns() {
        let pool: AnyResource = IPPool::new(
            "default-ipv4",
            IPPoolSpec::new("10.244.0.0/16".parse::<Cidr>().unwrap()),
        )
        .into();
        let text = render(Kind::IPPool, &[pool], false, &TableContext::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "NAME           CIDR            BLOCKSIZE   NAT     VXLAN   DISABLED   SELECTOR",
                "default-ipv4   10.244.0.0/16   26          false   Never   false      all()",
            ]
        );
        let wide = render(Kind::IPPool, &[], true, &TableContext::default());
        assert!(
            wide.trim_end().ends_with("DISABLEBGPEXPORT   ALLOWEDUSES"),
            "{wide}"
        );
    }

    #[test]
    fn every_kind_has_a_row_for_every_header() {
        // Each kind's full row must have exactly as many cells as its wide headers.
        let mut samples: Vec<AnyResource> = vec![
            IPPool::new("p", IPPoolSpec::new("10.1.0.0/16".parse().unwrap())).into(),
            tortie_api::BGPPeer::new("x", Default::default()).into(),
            tortie_api::BGPConfiguration::new("default", Default::default()).into(),
            tortie_api::BGPFilter::new("f", Default::default()).into(),
            tortie_api::Node::new("n", Default::default()).into(),
            tortie_api::IPAMConfiguration::new("default", Default::default()).into(),
            tortie_api::IPReservation::new(
                "r",
                tortie_api::IPReservationSpec {
                    reserved_cidrs: vec![],
                },
            )
            .into(),
        ];
        // IPAM's kinds from documents, so that this test does not depend on their Rust shape.
        for (kind, spec) in [
            (
                "IPAMBlock",
                r#"{"cidr":"10.1.0.0/30","affinity":"host:n","allocations":{"0":{"handleID":"h","sequenceNumber":1}},"unallocated":[1,2,3]}"#,
            ),
            (
                "BlockAffinity",
                r#"{"node":"n","cidr":"10.1.0.0/26","state":"confirmed"}"#,
            ),
            (
                "IPAMHandle",
                r#"{"handleID":"h","block":{"10-1-0-0-30":1}}"#,
            ),
        ] {
            let doc = format!(
                r#"{{"apiVersion":"tortie.io/v1","kind":"{kind}","metadata":{{"name":"x"}},"spec":{spec}}}"#
            );
            let value: Value = serde_json::from_str(&doc).unwrap();
            let r = AnyResource::from_json(value).unwrap_or_else(|e| panic!("{kind}: {e}"));
            samples.push(r);
        }
        let block = samples
            .iter()
            .find(|s| s.kind() == Kind::IPAMBlock)
            .unwrap();
        assert_eq!(
            row(block, &TableContext::default()),
            vec!["x", "10.1.0.0/30", "host:n", "1/4"]
        );
        for s in &samples {
            assert_eq!(
                row(s, &TableContext::default()).len(),
                headers(s.kind(), true).len(),
                "{}",
                s.kind()
            );
        }
    }
}
