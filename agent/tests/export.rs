//! What a node announces: `export_set`.
use std::collections::BTreeSet;

use serde_json::json;
use tortie_agent::daemon::export_set;

#[test]
fn blocks_services_and_communities() {
    let pool = |name: &str, v: serde_json::Value| {
        tortie_api::Object::new(
            name,
            serde_json::from_value::<tortie_api::IPPoolSpec>(v).unwrap(),
        )
    };
    let pools = vec![
        pool("main", json!({"cidr": "10.244.0.0/16"})),
        pool(
            "hidden",
            json!({"cidr": "10.250.0.0/16", "disableBGPExport": true}),
        ),
    ];
    let cluster: tortie_api::BGPConfigurationSpec = serde_json::from_value(json!({
        "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
        "communities": [{"name": "rack", "value": "65000:100"}],
        "prefixAdvertisements": [
            {"cidr": "10.244.0.0/16", "communities": ["rack", "65000:1:2"]},
            {"cidr": "10.96.0.0/12", "communities": ["64512:7"]}
        ]
    }))
    .unwrap();
    let blocks: BTreeSet<ipnet::IpNet> = ["10.244.1.0/26", "10.250.0.0/26"]
        .iter()
        .map(|b| b.parse().unwrap())
        .collect();
    let nh: std::net::IpAddr = "198.18.0.1".parse().unwrap();
    let out = export_set(nh, None, &blocks, &pools, &cluster);
    let keys: Vec<String> = out.keys().map(ToString::to_string).collect();
    assert_eq!(
        keys,
        ["10.96.0.0/12", "10.244.1.0/26"],
        "no block of a disableBGPExport pool"
    );
    let block = &out[&"10.244.1.0/26".parse().unwrap()];
    assert_eq!(block.next_hop, Some(nh));
    assert_eq!(block.communities, vec![(65000 << 16) | 100]);
    assert_eq!(block.large_communities, vec![(65000, 1, 2)]);
    let svc = &out[&"10.96.0.0/12".parse().unwrap()];
    assert_eq!(svc.communities, vec![(64512 << 16) | 7]);
}

#[test]
fn bgp_filters_become_per_family_policies() {
    use std::collections::BTreeMap;
    let filter: tortie_api::BGPFilterSpec = serde_json::from_value(json!({
        "exportV4": [
            {"cidr": "10.244.0.0/16", "matchOperator": "In", "prefixLength": {"min": 26}, "action": "Accept"},
            {"cidr": "10.0.0.0/8", "matchOperator": "NotIn", "action": "Accept"},
            {"action": "Reject"}
        ],
        "importV6": [{"cidr": "fd00:bad::/32", "matchOperator": "In", "action": "Reject"}]
    }))
    .unwrap();
    let filters = BTreeMap::from([("tor".to_string(), filter)]);
    let names = vec!["tor".to_string(), "missing".to_string()];
    let export = tortie_agent::daemon::filter_policy(&filters, &names, true);
    let p = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    assert!(export.accepts(&p("10.244.1.0/26")));
    assert!(
        !export.accepts(&p("10.244.0.0/24")),
        "too short: falls to the reject-all v4 rule"
    );
    assert!(export.accepts(&p("192.0.2.0/24")), "outside 10/8");
    assert!(!export.accepts(&p("10.9.0.0/16")), "in 10/8, not the pool");
    assert!(
        export.accepts(&p("fd00::/64")),
        "IPv4 rules say nothing about IPv6"
    );
    let import = tortie_agent::daemon::filter_policy(&filters, &names, false);
    assert!(!import.accepts(&p("fd00:bad::/48")));
    assert!(import.accepts(&p("fd00:1::/48")));
    assert!(import.accepts(&p("10.0.0.0/8")), "no import rule for IPv4");
}
