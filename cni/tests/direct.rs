//! The plugin run directly (env + stdin, as a runtime does) against a real agent, each test in
//! its own throw-away namespaces: connectivity, DEL idempotence, DEL with the agent down, CHECK,
//! GC, STATUS, VERSION, bad configurations, and a burst of parallel ADDs.

mod common;

use std::path::Path;

use common::{Node, ip_of, must, ping};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn add_gives_connectivity_and_del_is_idempotent() {
    let mut n = Node::new(true).await;
    n.start_agent();
    let (p1, p2) = (n.pod("a"), n.pod("b"));
    let r1 = n.cni("ADD", "ctr-a", &p1, &n.conf("1.0.0"));
    assert!(r1.ok, "{}", r1.stdout);
    let r2 = n.cni("ADD", "ctr-b", &p2, &n.conf("1.0.0"));
    assert!(r2.ok, "{}", r2.stdout);
    let (a4, a6, b4, b6) = (
        ip_of(&r1.json, 0),
        ip_of(&r1.json, 1),
        ip_of(&r2.json, 0),
        ip_of(&r2.json, 1),
    );
    assert_ne!(a4, b4);
    // The result: host veth then eth0 with the sandbox; addresses on eth0.
    let host_if = r1.json["interfaces"][0]["name"].as_str().unwrap();
    assert_eq!(host_if, tortie_cni::spec::host_veth_name("default.ctr-a"));
    assert_eq!(r1.json["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(r1.json["interfaces"][1]["name"], "eth0");
    assert_eq!(r1.json["interfaces"][1]["sandbox"], p1.as_str());
    assert_eq!(r1.json["ips"][0]["interface"], 1);
    assert!(
        r1.json["ips"][0]["address"]
            .as_str()
            .unwrap()
            .ends_with("/32")
    );
    assert!(
        r1.json["ips"][1]["address"]
            .as_str()
            .unwrap()
            .ends_with("/128")
    );
    // The data plane, as Calico lays it out.
    let ns1 = p1.rsplit('/').next().unwrap();
    let routes = must(&format!("ip -n {ns1} route"));
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("169.254.1.1 dev eth0 scope link"),
        "{routes}"
    );
    let routes6 = must(&format!("ip -n {ns1} -6 route"));
    assert!(
        routes6.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{routes6}"
    );
    let host_routes = n.pod_routes();
    assert!(
        host_routes
            .iter()
            .any(|r| r.starts_with(&format!("{a4} dev {host_if}"))),
        "{host_routes:?}"
    );
    let (_, proxy) = n.in_host(&format!("cat /proc/sys/net/ipv4/conf/{host_if}/proxy_arp"));
    assert_eq!(proxy.trim(), "1");
    // Pod ↔ pod and host → pod, both families.
    assert!(ping(&p1, &b4), "pod a → pod b (IPv4)");
    assert!(ping(&p2, &a4), "pod b → pod a (IPv4)");
    assert!(ping(&p1, &b6), "pod a → pod b (IPv6)");
    assert!(n.in_host(&format!("ping -c1 -W2 {a4}")).0, "host → pod");
    assert!(
        n.in_host(&format!("ping -c1 -W2 {a6}")).0,
        "host → pod (IPv6)"
    );

    // DEL twice; then DEL of the other pod without a netns (containerd's second DEL).
    for _ in 0..2 {
        let d = n.cni("DEL", "ctr-a", &p1, &n.conf("1.0.0"));
        assert!(d.ok, "{}", d.stdout);
    }
    let d = n.cni("DEL", "ctr-b", "", &n.conf("1.0.0"));
    assert!(d.ok, "{}", d.stdout);
    // DEL for a container never seen.
    let d = n.cni("DEL", "never-seen", "", &n.conf("1.0.0"));
    assert!(d.ok, "{}", d.stdout);
    assert!(n.cali_links().is_empty(), "{:?}", n.cali_links());
    assert!(n.pod_routes().is_empty(), "{:?}", n.pod_routes());
    assert!(n.allocated("k8s-pod-network.ctr-a").await.is_empty());
    assert!(n.allocated("k8s-pod-network.ctr-b").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn results_are_written_in_the_configured_version() {
    let mut n = Node::new(false).await;
    n.start_agent();
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let p = n.pod(&format!("v{i}"));
        let cid = format!("ver-{i}");
        let r = n.cni("ADD", &cid, &p, &n.conf(v));
        assert!(r.ok, "{v}: {}", r.stdout);
        assert_eq!(r.json["cniVersion"], *v);
        assert_eq!(
            r.json["ips"][0].get("version").is_some(),
            v.starts_with("0."),
            "{v}: {}",
            r.json
        );
        assert!(n.cni("DEL", &cid, &p, &n.conf(v)).ok);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn del_with_the_agent_down_is_finished_when_it_returns() {
    let mut n = Node::new(false).await;
    n.start_agent();
    let p = n.pod("a");
    let r = n.cni("ADD", "ctr-a", &p, &n.conf("1.0.0"));
    assert!(r.ok, "{}", r.stdout);
    let ip = ip_of(&r.json, 0);
    n.stop_agent();
    let d = n.cni("DEL", "ctr-a", &p, &n.conf("1.0.0"));
    assert!(
        d.ok,
        "DEL must not fail while the agent is down: {}",
        d.stdout
    );
    assert!(n.cali_links().is_empty());
    assert_eq!(n.pending_releases(), 1);
    // Still held in the datastore: nothing released it yet.
    assert_eq!(
        n.allocated("k8s-pod-network.ctr-a").await,
        vec![ip.parse::<std::net::IpAddr>().unwrap()]
    );
    n.start_agent();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !n.allocated("k8s-pod-network.ctr-a").await.is_empty() || n.pending_releases() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "release not completed: {}",
            n.agent_log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_finds_each_kind_of_damage() {
    let mut n = Node::new(false).await;
    n.start_agent();
    type Damage = (&'static str, &'static str);
    let cases: [Damage; 5] = [
        ("none", ""),
        ("route", "host route missing"),
        ("address", "address missing in the container"),
        ("down", "container interface down"),
        ("released", "allocation released"),
    ];
    for (i, (damage, want)) in cases.iter().enumerate() {
        let p = n.pod(&format!("c{i}"));
        let ns = p.rsplit('/').next().unwrap().to_string();
        let cid = format!("chk-{i}");
        let r = n.cni("ADD", &cid, &p, &n.conf("1.0.0"));
        assert!(r.ok, "{}", r.stdout);
        let ip = ip_of(&r.json, 0);
        let host_if = r.json["interfaces"][0]["name"]
            .as_str()
            .unwrap()
            .to_string();
        match *damage {
            "route" => must(&format!("ip -n {} route del {ip}/32 dev {host_if}", n.host)),
            "address" => must(&format!("ip -n {ns} addr del {ip}/32 dev eth0")),
            "down" => must(&format!("ip -n {ns} link set eth0 down")),
            "released" => {
                let ds = tortie_datastore::Datastore::open(&n.datastore_url())
                    .await
                    .unwrap();
                tortie_ipam::Ipam::new(ds)
                    .release(&format!("k8s-pod-network.{cid}"))
                    .await
                    .unwrap();
                String::new()
            }
            _ => String::new(),
        };
        let mut conf = n.conf("1.0.0");
        conf["prevResult"] = r.json.clone();
        let c = n.cni("CHECK", &cid, &p, &conf);
        if want.is_empty() {
            assert!(c.ok, "intact pod: {}", c.stdout);
        } else {
            assert!(!c.ok, "{damage}: CHECK passed");
            assert_eq!(c.json["code"], 104, "{damage}: {}", c.stdout);
            assert_eq!(c.json["msg"], *want, "{damage}: {}", c.stdout);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_attachments_that_are_not_valid() {
    let mut n = Node::new(false).await;
    n.start_agent();
    let (p1, p2) = (n.pod("a"), n.pod("b"));
    assert!(n.cni("ADD", "keep", &p1, &n.conf("1.1.0")).ok);
    assert!(n.cni("ADD", "stale", &p2, &n.conf("1.1.0")).ok);
    let mut conf = n.conf("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let g = n.cni("GC", "", "", &conf);
    assert!(g.ok, "{}", g.stdout);
    assert_eq!(
        n.cali_links(),
        vec![tortie_cni::spec::host_veth_name("default.keep")]
    );
    assert!(n.allocated("k8s-pod-network.stale").await.is_empty());
    assert_eq!(n.allocated("k8s-pod-network.keep").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_version() {
    let mut n = Node::new(false).await;
    let s = n.cni("STATUS", "", "", &n.conf("1.1.0"));
    assert!(!s.ok);
    assert_eq!(s.json["code"], 50, "{}", s.stdout);
    n.start_agent();
    let s = n.cni("STATUS", "", "", &n.conf("1.1.0"));
    assert!(s.ok, "{}", s.stdout);
    // VERSION with the junk environment libcni sends.
    let v = n.run(
        Path::new(env!("CARGO_BIN_EXE_tortie")),
        &[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_CONTAINERID", ""),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
        ],
        &json!({"cniVersion": "1.0.0"}),
    );
    assert!(v.ok, "{}", v.stdout);
    assert_eq!(
        v.json["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_right_code_and_leaves_nothing() {
    let mut n = Node::new(false).await;
    n.start_agent();
    let p = n.pod("a");
    let good = n.conf("1.0.0");
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let cases: Vec<(&str, serde_json::Value, &str, u64)> = vec![
        ("not JSON", json!("{"), &p, 6),
        ("version 0.2.0", with("cniVersion", json!("0.2.0")), &p, 1),
        ("no name", with("name", json!("")), &p, 7),
        ("MTU 100", with("mtu", json!(100)), &p, 7),
        (
            "host-local IPAM",
            with("ipam", json!({"type": "host-local"})),
            &p,
            7,
        ),
        (
            "relative agent socket",
            with("agentSocket", json!("agent.sock")),
            &p,
            7,
        ),
        ("no netns", good.clone(), "", 4),
        (
            "netns gone",
            good.clone(),
            "/run/netns/does-not-exist-tortie",
            3,
        ),
        (
            "agent socket missing",
            with("agentSocket", json!("/nonexistent/tortie.sock")),
            &p,
            11,
        ),
        (
            "pool that does not exist",
            with(
                "ipam",
                json!({"type": "tortie-ipam", "ipv4Pools": ["no-such-pool"]}),
            ),
            &p,
            100,
        ),
    ];
    for (name, conf, netns, code) in cases {
        // "not JSON" is sent as raw text.
        let stdin = if name == "not JSON" {
            json!(null)
        } else {
            conf
        };
        let r = if name == "not JSON" {
            n.run(
                Path::new(env!("CARGO_BIN_EXE_tortie")),
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "bad"),
                    ("CNI_NETNS", netns),
                    ("CNI_IFNAME", "eth0"),
                ],
                &json!("this is not a configuration"),
            )
        } else {
            n.cni("ADD", "bad", netns, &stdin)
        };
        assert!(!r.ok, "{name}: succeeded");
        assert_eq!(r.json["code"], code, "{name}: {}", r.stdout);
        assert!(!r.json["msg"].as_str().unwrap_or("").is_empty(), "{name}");
        assert!(
            n.cali_links().is_empty(),
            "{name}: left {:?}",
            n.cali_links()
        );
        assert!(
            n.allocated("k8s-pod-network.bad").await.is_empty(),
            "{name}: left an allocation"
        );
        assert!(
            tortie_cni::state::State::new(n.data_dir()).all().is_empty(),
            "{name}: left a record"
        );
    }
    // The interface name is already taken in the container: refused before anything is made.
    let ns = p.rsplit('/').next().unwrap();
    must(&format!(
        "ip -n {ns} link add eth0 type veth peer name eth0p"
    ));
    let r = n.cni("ADD", "bad", &p, &good);
    assert_eq!(r.json["code"], 103, "{}", r.stdout);
    assert!(n.cali_links().is_empty());
    assert!(n.allocated("k8s-pod-network.bad").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_after_allocation_undoes_everything() {
    let mut n = Node::new(true).await;
    n.start_agent();
    let p = n.pod("a");
    let ns = p.rsplit('/').next().unwrap();
    // IPv6 off inside the pod: adding its IPv6 address fails after both were allocated and the
    // veth was made.
    must(&format!(
        "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
    ));
    let r = n.cni("ADD", "undo", &p, &n.conf("1.0.0"));
    assert!(!r.ok, "{}", r.stdout);
    assert_eq!(r.json["code"], 102, "{}", r.stdout);
    assert!(n.cali_links().is_empty(), "{:?}", n.cali_links());
    assert!(n.pod_routes().is_empty());
    assert!(
        must(&format!("ip -n {ns} -o link")).lines().count() == 1,
        "only lo is left"
    );
    assert!(n.allocated("k8s-pod-network.undo").await.is_empty());
    assert!(tortie_cni::state::State::new(n.data_dir()).all().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_parallel_adds_and_dels() {
    const N: usize = 100;
    let mut n = Node::new(false).await;
    n.start_agent();
    let pods: Vec<String> = (0..N).map(|i| n.pod(&format!("p{i}"))).collect();
    let n = std::sync::Arc::new(n);
    let adds: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (n, p) = (n.clone(), p.clone());
            std::thread::spawn(move || n.cni("ADD", &format!("burst-{i}"), &p, &n.conf("1.0.0")))
        })
        .collect();
    let mut ips = std::collections::BTreeSet::new();
    for h in adds {
        let r = h.join().unwrap();
        assert!(r.ok, "{}", r.stdout);
        ips.insert(ip_of(&r.json, 0));
    }
    assert_eq!(ips.len(), N, "distinct addresses");
    assert_eq!(n.cali_links().len(), N);
    let dels: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (n, p) = (n.clone(), p.clone());
            std::thread::spawn(move || n.cni("DEL", &format!("burst-{i}"), &p, &n.conf("1.0.0")))
        })
        .collect();
    for h in dels {
        let r = h.join().unwrap();
        assert!(r.ok, "{}", r.stdout);
    }
    assert!(n.cali_links().is_empty());
    assert!(n.pod_routes().is_empty());
    for i in 0..N {
        assert!(
            n.allocated(&format!("k8s-pod-network.burst-{i}"))
                .await
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tortie_ipam_alone() {
    let mut n = Node::new(false).await;
    n.start_agent();
    let bin = Path::new(env!("CARGO_BIN_EXE_tortie-ipam"));
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "ipam-only"),
            ("CNI_NETNS", "/run/netns/whatever"),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let r = n.run(bin, &env("ADD"), &n.conf("0.4.0"));
    assert!(r.ok, "{}", r.stdout);
    assert_eq!(r.json["ips"][0]["version"], "4");
    assert!(n.run(bin, &env("CHECK"), &n.conf("0.4.0")).ok);
    assert_eq!(n.allocated("k8s-pod-network.ipam-only").await.len(), 1);
    assert!(n.run(bin, &env("DEL"), &n.conf("0.4.0")).ok);
    assert!(n.run(bin, &env("DEL"), &n.conf("0.4.0")).ok);
    assert!(n.allocated("k8s-pod-network.ipam-only").await.is_empty());
    let c = n.run(bin, &env("CHECK"), &n.conf("0.4.0"));
    assert_eq!(c.json["code"], 104, "{}", c.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn mtu_and_route_protocol_come_from_the_agent_unless_configured() {
    let mut n = Node::new(false).await;
    // The agent takes the host's uplink MTU and the protocol number it is told.
    must(&format!(
        "ip -n {0} link set up0 mtu 9000 && ip -n {0} link set up1 mtu 9000",
        n.host
    ));
    n.agent_args = vec!["--route-protocol".into(), "81".into()];
    n.start_agent();
    let p = n.pod("a");
    let ns = p.rsplit('/').next().unwrap().to_string();
    let r = n.cni("ADD", "mtu-a", &p, &n.conf("1.0.0"));
    assert!(r.ok, "{}", r.stdout);
    let host_if = r.json["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(must(&format!("ip -n {ns} link show eth0")).contains("mtu 9000"));
    assert!(must(&format!("ip -n {} link show {host_if}", n.host)).contains("mtu 9000"));
    let routes = must(&format!("ip -n {} route show dev {host_if}", n.host));
    assert!(routes.contains("proto 81"), "{routes}");
    // The configuration wins over the agent.
    let p2 = n.pod("b");
    let ns2 = p2.rsplit('/').next().unwrap().to_string();
    let mut conf = n.conf("1.0.0");
    conf["mtu"] = json!(1400);
    conf["routeProtocol"] = json!(90);
    let r = n.cni("ADD", "mtu-b", &p2, &conf);
    assert!(r.ok, "{}", r.stdout);
    let host_if = r.json["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(must(&format!("ip -n {ns2} link show eth0")).contains("mtu 1400"));
    let routes = must(&format!("ip -n {} route show dev {host_if}", n.host));
    assert!(routes.contains("proto 90"), "{routes}");
}
