//! Decoding, defaulting and validating resources as users write them.

use proptest::prelude::*;
use tortie_api::documents::{decode_documents, parse_documents, to_yaml};
use tortie_api::{AnyResource, Kind};

/// Decodes one document and validates it; the error text on failure.
fn check(yaml: &str) -> Result<AnyResource, String> {
    let mut docs = decode_documents(yaml).map_err(|e| e.error.to_string())?;
    assert_eq!(docs.len(), 1);
    let mut r = docs.remove(0);
    r.apply_defaults();
    r.validate().map_err(|e| e.to_string())?;
    Ok(r)
}

fn pool(spec: &str) -> String {
    format!("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata:\n  name: p\nspec:\n{spec}")
}

fn peer(spec: &str) -> String {
    format!("apiVersion: tortie.io/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n{spec}")
}

#[test]
fn pool_defaults_are_filled_in() {
    let AnyResource::IPPool(p) = check(&pool("  cidr: 10.244.0.0/16\n")).unwrap() else {
        panic!("kind")
    };
    assert_eq!(p.spec.block_size, Some(26));
    assert_eq!(p.spec.node_selector.as_str(), "all()");
    assert_eq!(
        serde_json::to_value(&p.spec.allowed_uses).unwrap(),
        serde_json::json!(["Workload", "Tunnel"])
    );
    let AnyResource::IPPool(p6) = check(&pool("  cidr: fd00:10::/48\n")).unwrap() else {
        panic!("kind")
    };
    assert_eq!(p6.spec.block_size, Some(122));
}

#[test]
fn errors_name_the_field_and_the_value() {
    let cases = [
        (pool("  cidr: 10.0.0.0/33\n"), r#"spec.cidr: "10.0.0.0/33" is not a valid CIDR"#),
        (pool("  cidr: 10.0.0.1/16\n"), r#"spec.cidr: "10.0.0.1/16" is not strictly masked"#),
        (pool("  cidr: 169.254.0.0/24\n"), "spec.cidr: \"169.254.0.0/24\" overlaps the link-local"),
        (pool("  cidr: fe80::/64\n"), "spec.cidr: \"fe80::/64\" overlaps the link-local"),
        (pool("  cidr: 10.0.0.0/16\n  blockSize: 33\n"), "spec.blockSize: 33 is out of range: 20 to 32"),
        (pool("  cidr: 10.0.0.0/28\n"), "spec.blockSize: 26 is larger than the pool"),
        (pool("  cidr: 10.0.0.0/16\n  nodeSelector: \"rack ==\"\n"), "spec.nodeSelector: \"rack ==\" is not a valid selector"),
        (pool("  cidr: 10.0.0.0/16\n  foo: 1\n"), "spec.foo: unknown field"),
        (pool("  cidr: 10.0.0.0/16\n  vxlanMode: Sometimes\n"), "spec.vxlanMode: unknown variant `Sometimes`"),
        (
            "apiVersion: tortie.io/v1\nkind: IPPool\nmetadata:\n  name: p\n  colour: red\nspec:\n  cidr: 10.0.0.0/16\n".into(),
            "metadata.colour: unknown field",
        ),
        (
            "apiVersion: tortie.io/v1\nkind: IPPool\nmetadata:\n  name: Bad_Name\nspec:\n  cidr: 10.0.0.0/16\n".into(),
            "metadata.name: \"Bad_Name\" is not a valid name",
        ),
        ("apiVersion: tortie.io/v1\nkind: IPPol\nmetadata:\n  name: p\n".into(), "kind: \"IPPol\" is not a known kind"),
        ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n".into(), "apiVersion: \"projectcalico.org/v3\" is not supported"),
        (peer("  peerIP: 198.18.0.1\n"), "spec.asNumber: is required with spec.peerIP"),
        (peer("  peerIP: 198.18.0.1\n  asNumber: 0\n"), "spec.asNumber: \"0\" is not a valid AS number"),
        (peer("  peerIP: 198.18.0.1\n  asNumber: 4294967296\n"), "spec.asNumber: \"4294967296\" is not a valid AS number"),
        (peer("  peerIP: 198.18.0.1\n  asNumber: 1.10\n"), "spec.asNumber: 1.1 is not a valid AS number: write asdot notation in quotes"),
        (peer("  peerIP: 198.18.0.1\n  asNumber: [1]\n"), "spec.asNumber: is not a valid AS number"),
        (peer("  peerIP: 198.18.0.300\n  asNumber: 65001\n"), "spec.peerIP: \"198.18.0.300\" is not a valid peer address"),
        (peer("  asNumber: 65001\n"), "spec.peerIP: set spec.peerIP or spec.peerSelector"),
        (peer("  peerIP: 198.18.0.1\n  asNumber: 65001\n  holdTime: 2s\n"), "spec.holdTime: \"2s\" must be 0 or between 3s and 65535s"),
        (peer("  peerIP: 198.18.0.1\n  asNumber: 65001\n  holdTime: 9s\n  keepaliveTime: 9s\n"), "spec.keepaliveTime: \"9s\" must be shorter"),
        (peer("  peerSelector: \"global()\"\n"), "spec.peerSelector: \"global()\" is not a valid selector"),
        (peer("  peerIP: 198.18.0.1\n  asNumber: 65001\n  password: {}\n"), "spec.password: set exactly one of secretKeyRef and file"),
        (
            "apiVersion: tortie.io/v1\nkind: BGPConfiguration\nmetadata:\n  name: global\nspec: {}\n".into(),
            "metadata.name: \"global\": must be \"default\" or \"node.<nodename>\"",
        ),
        (
            "apiVersion: tortie.io/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  communities:\n  - name: c\n    value: 70000:1\n".into(),
            "spec.communities[0].value: \"70000:1\" is not a community",
        ),
        (
            "apiVersion: tortie.io/v1\nkind: BGPFilter\nmetadata:\n  name: f\nspec:\n  exportV4:\n  - cidr: fd00::/64\n    matchOperator: In\n    action: Accept\n".into(),
            "spec.exportV4[0].cidr: \"fd00::/64\" is not an IPv4 CIDR",
        ),
        (
            "apiVersion: tortie.io/v1\nkind: BGPFilter\nmetadata:\n  name: f\nspec:\n  importV4:\n  - cidr: 10.0.0.0/8\n    matchOperator: In\n    prefixLength: {min: 28, max: 24}\n    action: Reject\n".into(),
            "spec.importV4[0].prefixLength: min 28 is greater than max 24",
        ),
        (
            "apiVersion: tortie.io/v1\nkind: IPAMConfiguration\nmetadata:\n  name: other\nspec: {}\n".into(),
            "metadata.name: \"other\": IPAMConfiguration is a singleton",
        ),
        (
            "apiVersion: tortie.io/v1\nkind: Node\nmetadata:\n  name: n\nspec:\n  bgp:\n    ipv4Address: fd00::1/64\n".into(),
            "spec.bgp.ipv4Address: \"fd00::1/64\" is not an IPv4 address",
        ),
    ];
    for (yaml, want) in cases {
        let err = check(&yaml).expect_err(&yaml);
        assert!(
            err.contains(want),
            "for\n{yaml}\nwant {want:?}\ngot  {err:?}"
        );
    }
}

#[test]
fn valid_resources_of_every_user_kind() {
    let ok = [
        peer("  peerIP: \"[fd00::1]:1179\"\n  asNumber: \"1.10\"\n  holdTime: 90s\n  keepaliveTime: 30s\n  nextHopMode: Self\n"),
        peer("  nodeSelector: rack == 'r1'\n  peerSelector: route-reflector == 'true'\n"),
        "apiVersion: tortie.io/v1\nkind: BGPConfiguration\nmetadata:\n  name: node.worker-1\nspec:\n  asNumber: 65010\n".into(),
        "apiVersion: tortie.io/v1\nkind: IPReservation\nmetadata:\n  name: r\nspec:\n  reservedCIDRs: [10.244.0.0/30]\n".into(),
        "apiVersion: tortie.io/v1\nkind: Node\nmetadata:\n  name: n\n  labels: {rack: r1, on: off, y: n}\nspec:\n  bgp:\n    ipv4Address: 198.18.0.10/24\n    routeReflectorClusterID: 244.0.0.1\n".into(),
    ];
    for yaml in ok {
        check(&yaml).unwrap_or_else(|e| panic!("{yaml}\n{e}"));
    }
    // BGPConfiguration defaults only on the cluster-wide object.
    let AnyResource::BGPConfiguration(c) = check(
        "apiVersion: tortie.io/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec: {}\n",
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(c.spec.as_number.map(|a| a.0), Some(64512));
    assert_eq!(c.spec.node_to_node_mesh_enabled, Some(true));
    assert_eq!(c.spec.listen_port, Some(179));
}

#[test]
fn immutable_pool_fields() {
    let old = check(&pool("  cidr: 10.0.0.0/16\n")).unwrap();
    let bigger_blocks = check(&pool("  cidr: 10.0.0.0/16\n  blockSize: 24\n")).unwrap();
    let err = bigger_blocks.validate_update(&old).unwrap_err().to_string();
    assert!(
        err.contains("spec.blockSize: 24 may not change (was 26)"),
        "{err}"
    );
    let moved = check(&pool("  cidr: 10.1.0.0/16\n")).unwrap();
    assert!(
        moved
            .validate_update(&old)
            .unwrap_err()
            .to_string()
            .contains("spec.cidr")
    );
    let nat = check(&pool("  cidr: 10.0.0.0/16\n  natOutgoing: true\n")).unwrap();
    assert!(nat.validate_update(&old).is_ok());
}

#[test]
fn multi_document_yaml_and_json() {
    let yaml = "---\n".to_string()
        + &pool("  cidr: 10.0.0.0/16\n")
        + "\n---\n"
        + &peer("  peerIP: 198.18.0.1\n  asNumber: 65001\n")
        + "\n---\n";
    let docs = decode_documents(&yaml).unwrap();
    assert_eq!(
        docs.iter().map(|d| d.kind()).collect::<Vec<_>>(),
        [Kind::IPPool, Kind::BGPPeer]
    );
    let json =
        serde_json::to_string(&docs.iter().map(|d| d.to_json()).collect::<Vec<_>>()).unwrap();
    assert_eq!(decode_documents(&json).unwrap(), docs);
    // The failing document is named by position.
    let bad = yaml.replace("198.18.0.1", "not-an-ip");
    let err = decode_documents(&bad).unwrap_err();
    assert_eq!(err.index, 1);
    assert!(
        err.to_string().starts_with("document 1: spec.peerIP"),
        "{err}"
    );
    assert!(parse_documents("a: [").is_err());
}

fn arb_pool() -> impl Strategy<Value = AnyResource> {
    (
        any::<[u8; 2]>(),
        16u8..=24,
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec!["all()", "rack == 'a'", "has(x) && y not in {'1', '2'}"]),
        prop::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..3),
    )
        .prop_map(|(net, len, nat, disabled, sel, labels)| {
            let cidr = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, net[0], net[1], 0), len)
                .unwrap()
                .trunc();
            let yaml = pool(&format!(
                "  cidr: {cidr}\n  natOutgoing: {nat}\n  disabled: {disabled}\n  nodeSelector: \"{sel}\"\n"
            ));
            let mut r = check(&yaml).unwrap();
            r.meta_mut().labels = labels;
            r
        })
}

proptest! {
    /// YAML and JSON both round-trip every resource.
    #[test]
    fn yaml_and_json_round_trip(r in arb_pool()) {
        let yaml = to_yaml(std::slice::from_ref(&r));
        prop_assert_eq!(&decode_documents(&yaml).unwrap()[0], &r);
        let json = serde_json::to_string(&r.to_json()).unwrap();
        prop_assert_eq!(&decode_documents(&json).unwrap()[0], &r);
    }

    /// Arbitrary text never panics the decoder.
    #[test]
    fn decoding_never_panics(text in ".{0,400}") {
        let _ = decode_documents(&text);
        let _ = decode_documents(&pool(&format!("  cidr: {text}\n")));
    }
}
