//! The README's first command in miniature: `tortie-lab up` gives 3 nodes × 3 pods with an
//! all-green matrix and the ToR holding each node's block (next hop: its owner); `down` leaves
//! the machine's namespaces, links and routes exactly as before.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tortie_e2e::testkit::{must, workspace_bin};

/// What `down` must restore: the root namespace's links and routes, and lab namespaces (other
/// tests' namespaces come and go meanwhile, so only ours are compared).
fn snapshot(prefix: &str) -> String {
    let netns: Vec<String> = must("ip netns list")
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    format!(
        "{}\n{}\n{}\n{netns:?}",
        must("ip -o link show | sed 's/ state [A-Z]*.*//'"),
        must("ip route show table all"),
        must("ip -6 route show table all"),
    )
}

#[test]
fn lab_up_is_all_green_and_down_restores_the_machine() {
    let dir = tempfile::Builder::new()
        .prefix("tortie-lab-test-")
        .tempdir()
        .unwrap();
    let lab_dir = dir.path().join("lab");
    let before = snapshot("tlg-");
    let lab = |args: &[&str]| run_lab(&lab_dir, "g", args);
    let up = lab(&["up", "--nodes", "3", "--pods-per-node", "3"]);
    let out = String::from_utf8_lossy(&up.stdout).to_string();
    let result = std::panic::catch_unwind(|| {
        assert!(
            up.status.success(),
            "{out}\n{}",
            String::from_utf8_lossy(&up.stderr)
        );
        assert!(out.contains("81 of 81 connections ok"), "{out}");
        // The ToR holds each node's block, via that node.
        let tor: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.contains("ToR routes"))
            .skip(1)
            .take_while(|l| l.starts_with("  10.244."))
            .collect();
        assert_eq!(tor.len(), 3, "{out}");
        for i in 1..=3 {
            assert!(
                tor.iter()
                    .any(|l| l.ends_with(&format!("via 198.18.0.{i}"))),
                "{out}"
            );
        }
        // A second look: `check` re-runs the matrix.
        assert!(lab(&["check"]).status.success());
        // Every node's status from one node: `tortiectl node status --all`.
        let all = lab(&[
            "exec",
            "node-1",
            "--",
            workspace_bin("tortiectl").to_str().unwrap(),
            "--datastore",
            &format!("sqlite://{}", lab_dir.join("datastore.db").display()),
            "node",
            "status",
            "--all",
        ]);
        let all = String::from_utf8_lossy(&all.stdout).to_string();
        for i in 1..=3 {
            assert!(
                all.contains(&format!("node-{i} (198.18.0.{i}): ready")),
                "{all}"
            );
        }
        assert_eq!(all.matches("node-to-node mesh").count(), 6, "{all}");
    });
    let down = lab(&["down"]);
    assert!(down.status.success());
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert_eq!(before, snapshot("tlg-"), "the machine is not as it was");
    assert!(!lab_dir.exists());
}

fn run_lab(dir: &Path, name: &str, args: &[&str]) -> Output {
    Command::new(workspace_bin("tortie-lab"))
        .arg("--dir")
        .arg(dir)
        .args(["--name", name])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `f` on a lab that is taken down afterwards, even when `f` fails.
fn with_lab(name: &str, nodes: u32, pods: u32, f: impl FnOnce(&Path)) {
    let (nodes, pods) = (nodes.to_string(), pods.to_string());
    with_lab_opts(name, &["--nodes", &nodes, "--pods-per-node", &pods], f)
}

fn with_lab_opts(name: &str, opts: &[&str], f: impl FnOnce(&Path)) {
    let dir = tempfile::Builder::new()
        .prefix("tortie-lab-test-")
        .tempdir()
        .unwrap();
    let lab_dir = dir.path().join("lab");
    let mut args = vec!["up"];
    args.extend_from_slice(opts);
    let up = run_lab(&lab_dir, name, &args);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(up.status.success(), "{}", text(&up));
        f(&lab_dir)
    }));
    run_lab(&lab_dir, name, &["down"]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn tor_routes(dir: &Path, name: &str) -> String {
    text(&run_lab(dir, name, &["status"]))
        .lines()
        .skip_while(|l| !l.contains("ToR routes"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A node cut off the rack: the ToR withdraws its block within the hold time (9 s in the lab),
/// and the other nodes' pods keep reaching each other; back on the rack, all is green again.
#[test]
fn node_failure_and_recovery() {
    with_lab("f", 3, 2, |dir| {
        let routes = tor_routes(dir, "f");
        assert!(routes.contains("via 198.18.0.2"), "{routes}");
        let failed_at = Instant::now();
        assert!(run_lab(dir, "f", &["fail", "node-2"]).status.success());
        loop {
            let routes = tor_routes(dir, "f");
            if !routes.contains("via 198.18.0.2") {
                break;
            }
            assert!(
                failed_at.elapsed() < Duration::from_secs(15),
                "the ToR still routes to node-2 after the hold time: {routes}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let survivors = run_lab(dir, "f", &["check", "--nodes", "node-1,node-3"]);
        assert!(survivors.status.success(), "{}", text(&survivors));
        assert!(text(&survivors).contains("16 of 16 connections ok"));
        assert!(run_lab(dir, "f", &["recover", "node-2"]).status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !run_lab(dir, "f", &["check"]).status.success() {
            assert!(Instant::now() < deadline, "not green after recovery");
            std::thread::sleep(Duration::from_millis(500));
        }
        // The ToR's session comes back after its damped reconnect, and with it the route.
        while !tor_routes(dir, "f").contains("via 198.18.0.2") {
            assert!(
                Instant::now() < deadline,
                "the ToR did not re-learn node-2's block"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}

/// Pod churn: 200 ADD/DEL cycles spread over the nodes, then `tortiectl ipam check` is clean
/// (no leak, nothing inconsistent) and the matrix still green.
#[test]
fn pod_churn_leaves_no_leak() {
    with_lab("c", 3, 1, |dir| {
        for i in 0..200 {
            let node = format!("node-{}", i % 3 + 1);
            let pod = format!("churn{i}");
            let add = run_lab(dir, "c", &["pod", "add", &node, &pod]);
            assert!(add.status.success(), "add {i}: {}", text(&add));
            let del = run_lab(dir, "c", &["pod", "del", &node, &pod]);
            assert!(del.status.success(), "del {i}: {}", text(&del));
        }
        let check = Command::new(workspace_bin("tortiectl"))
            .args([
                "--datastore",
                &format!("sqlite://{}", dir.join("datastore.db").display()),
                "ipam",
                "check",
            ])
            .output()
            .unwrap();
        assert!(check.status.success(), "{}", text(&check));
        assert!(run_lab(dir, "c", &["check"]).status.success());
    });
}

/// The ToR as BIRD, FRR and GoBGP from Debian (tortie-bgpd is the default, tested above): each
/// ends up holding every node's block via that node, and the pods are all green.
#[test]
fn tor_ebgp_with_bird_frr_and_gobgp() {
    for (tor, name) in [("bird", "b"), ("frr", "r"), ("gobgp", "o")] {
        let dir = tempfile::Builder::new()
            .prefix("tortie-lab-test-")
            .tempdir()
            .unwrap();
        let lab_dir = dir.path().join("lab");
        let up = run_lab(
            &lab_dir,
            name,
            &["up", "--nodes", "2", "--pods-per-node", "2", "--tor", tor],
        );
        let out = text(&up);
        let routes = tor_routes(&lab_dir, name);
        run_lab(&lab_dir, name, &["down"]);
        assert!(up.status.success(), "{tor}: {out}");
        assert!(out.contains("16 of 16 connections ok"), "{tor}: {out}");
        for i in 1..=2 {
            assert!(
                routes.contains(&format!("via 198.18.0.{i}")),
                "{tor}: {routes}"
            );
        }
        assert!(routes.contains(&format!("ToR routes ({tor})")), "{routes}");
    }
}

/// The etcd variant, and a datastore outage: with etcd stopped, a pod ADD fails with a clear
/// error within the plugin's timeout, a pod DEL still succeeds (its release is deferred), and
/// when etcd is back the release completes (`ipam check` clean) and new pods come up.
#[test]
fn etcd_datastore_and_an_outage() {
    with_lab_opts(
        "e",
        &[
            "--nodes",
            "2",
            "--pods-per-node",
            "1",
            "--datastore",
            "etcd",
        ],
        |dir| {
            assert!(run_lab(dir, "e", &["check"]).status.success());
            assert!(run_lab(dir, "e", &["datastore", "stop"]).status.success());
            let t0 = Instant::now();
            let add = run_lab(dir, "e", &["pod", "add", "node-1", "late"]);
            let took = t0.elapsed();
            assert!(!add.status.success(), "ADD worked without a datastore");
            let err = text(&add);
            assert!(
                err.contains("IPAM") || err.contains("unreachable"),
                "not a clear error: {err}"
            );
            assert!(took < Duration::from_secs(15), "ADD took {took:?}");
            let del = run_lab(dir, "e", &["pod", "del", "node-1", "pod-1"]);
            assert!(
                del.status.success(),
                "DEL failed during the outage: {}",
                text(&del)
            );
            assert!(run_lab(dir, "e", &["datastore", "start"]).status.success());
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let check = run_lab(dir, "e", &["ctl", "--", "ipam", "check"]);
                let show = text(&run_lab(dir, "e", &["ctl", "--", "ipam", "show"]));
                // One pod left (node-2's): its address is the only one in use.
                if check.status.success() && show.contains("1 (0%)") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "not recovered: {}\n{show}",
                    text(&check)
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            let again = run_lab(dir, "e", &["pod", "add", "node-1", "again"]);
            assert!(again.status.success(), "{}", text(&again));
            assert!(run_lab(dir, "e", &["check"]).status.success());
        },
    );
}

/// Dual stack: an IPv6 underlay and pool next to the IPv4 ones; IPv6 blocks travel over the
/// IPv4 sessions (MP-BGP) with the owner's IPv6 address as next hop; every pod reaches every
/// other over both families.
#[test]
fn dual_stack() {
    with_lab_opts(
        "d",
        &["--nodes", "2", "--pods-per-node", "2", "--ipv6"],
        |dir| {
            let check = run_lab(dir, "d", &["check"]);
            let out = text(&check);
            assert!(check.status.success(), "{out}");
            assert!(out.contains("over IPv6"), "{out}");
            assert_eq!(out.matches("16 of 16 connections ok").count(), 2, "{out}");
            let routes = text(&run_lab(
                dir,
                "d",
                &[
                    "exec", "node-1", "--", "ip", "-6", "route", "show", "proto", "80",
                ],
            ));
            assert!(routes.contains("via fd00:198:18::2"), "{routes}");
            assert!(routes.contains("blackhole fd00:10:244:"), "{routes}");
        },
    );
}

/// Two racks (subnets) behind the ToR, pool in VXLAN CrossSubnet mode: pods reach each other;
/// a node reaches the other rack's blocks through the tunnel and its own rack's directly.
#[test]
fn vxlan_cross_subnet_across_two_racks() {
    with_lab_opts(
        "x",
        &["--nodes", "3", "--pods-per-node", "1", "--racks", "2"],
        |dir| {
            let check = run_lab(dir, "x", &["check"]);
            assert!(check.status.success(), "{}", text(&check));
            let routes = text(&run_lab(
                dir,
                "x",
                &["exec", "node-1", "--", "ip", "route", "show", "proto", "80"],
            ));
            // node-2 is on rack 2: tunnel; node-3 shares rack 1: direct.
            assert!(
                routes
                    .lines()
                    .any(|l| l.contains("dev vxlan.tortie") && l.contains("onlink")),
                "{routes}"
            );
            assert!(
                routes
                    .lines()
                    .any(|l| l.contains("via 198.18.0.3 dev eth0")),
                "{routes}"
            );
        },
    );
}

/// The lab's pods: (node, pod, namespace, IPv4 address) from its state file.
fn pods(dir: &Path) -> Vec<(String, String, String, String)> {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    serde_json::from_value(state["pods"].clone()).unwrap()
}

/// Route-reflector topology: mesh off, node-1 reflects, every pod reaches every other.
#[test]
fn route_reflector_topology() {
    with_lab_opts(
        "q",
        &["--nodes", "3", "--pods-per-node", "1", "--topology", "rr"],
        |dir| {
            let check = run_lab(dir, "q", &["check"]);
            assert!(check.status.success(), "{}", text(&check));
            let status = text(&run_lab(dir, "q", &["status"]));
            // node-2 peers with the reflector and the ToR only, not with node-3.
            let node2: String = status
                .split("\x1b[1mnode-3")
                .next()
                .unwrap()
                .split("\x1b[1mnode-2")
                .nth(1)
                .unwrap_or_default()
                .to_string();
            assert!(
                node2.contains("198.18.0.1 ") && node2.contains("route reflector"),
                "{status}"
            );
            assert!(!node2.contains("198.18.0.3 "), "{status}");
        },
    );
}

/// Agent restart with graceful restart under continuous pod-to-pod traffic (100 packets/s):
/// nothing lost.
#[test]
fn agent_restart_under_traffic_loses_nothing() {
    with_lab_opts("a", &["--nodes", "2", "--pods-per-node", "1"], |dir| {
        let pods = pods(dir);
        let (src_ns, dst_ip) = (&pods[1].2, &pods[0].3);
        let pinger = Command::new("ip")
            .args([
                "netns", "exec", src_ns, "ping", "-q", "-i", "0.01", "-c", "600", "-W", "1",
            ])
            .arg(dst_ip)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        assert!(
            run_lab(dir, "a", &["fail", "node-1", "--agent"])
                .status
                .success()
        );
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            run_lab(dir, "a", &["recover", "node-1", "--agent"])
                .status
                .success()
        );
        let out = pinger.wait_with_output().unwrap();
        let summary = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            summary.contains("600 packets transmitted, 600 received"),
            "packets lost across the agent restart: {summary}"
        );
        assert!(run_lab(dir, "a", &["check"]).status.success());
    });
}
