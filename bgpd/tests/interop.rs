//! Interop with Debian's BIRD 2, FRR 8 and GoBGP 3, each case in its own throw-away network
//! namespaces (see `common`). Needs root and `apt-get install bird2 frr gobgpd`.

mod common;

use std::time::Duration;

use common::{Lab, Ns, control, tortie_bgpd, wait_for};

const T: Duration = Duration::from_secs(60);

/// A tortie-bgpd config.
fn tortie_conf(
    asn: u32,
    rid: &str,
    listen: &[&str],
    peers: &[String],
    originate: &[&str],
    extra_speaker: &str,
) -> String {
    let mut s = format!(
        "[speaker]\nasn = {asn}\nrouter_id = \"{rid}\"\nlisten = [{}]\ngraceful_restart_time = 120\n{extra_speaker}\n",
        listen
            .iter()
            .map(|l| format!("\"{l}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in peers {
        s.push_str("\n[[peer]]\n");
        s.push_str(p);
        s.push('\n');
    }
    for o in originate {
        s.push_str(&format!("\n[[originate]]\nprefix = \"{o}\"\ncommunities = [\"64512:100\"]\nlarge_communities = [\"64512:1:2\"]\n"));
    }
    s
}

struct Tortie {
    pid: u32,
    control: std::path::PathBuf,
}

fn start_tortie(lab: &mut Lab, ns: &Ns, name: &str, conf: &str, restarting: bool) -> Tortie {
    let conf_path = lab.write(&format!("{name}.toml"), conf);
    let control = lab.path(&format!("{name}.sock"));
    let mut argv = vec![
        tortie_bgpd(),
        "--config",
        conf_path.to_str().unwrap(),
        "--control",
        control.to_str().unwrap(),
    ];
    if restarting {
        argv.push("--restarting");
    }
    let pid = lab.spawn(ns, &argv, &format!("{name}.log"));
    wait_for(Duration::from_secs(10), "tortie control socket", || {
        control.exists().then_some(())
    });
    Tortie { pid, control }
}

fn tortie_state(t: &Tortie, peer: &str) -> Option<String> {
    let v = control(&t.control, "status")?;
    v.as_array()?
        .iter()
        .find(|p| p["address"] == peer)
        .map(|p| p["state"].as_str().unwrap_or("").to_string())
}

fn tortie_route(t: &Tortie, prefix: &str) -> Option<Vec<String>> {
    let v = control(&t.control, "routes")?;
    v.as_array()?
        .iter()
        .find(|r| r["prefix"] == prefix)
        .map(|r| {
            r["nextHops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_string())
                .collect()
        })
}

// ===== BIRD =====

fn bird_conf(rid: &str, protocols: &str) -> String {
    format!(
        "router id {rid};\nlog stderr all;\nprotocol device {{ }}\n\
         protocol static s4 {{ ipv4; route 10.99.0.0/24 blackhole; }}\n\
         protocol static s6 {{ ipv6; route fd00:99::/64 blackhole; }}\n{protocols}\n"
    )
}

fn birdc(ns: &Ns, ctl: &std::path::Path, cmd: &str) -> String {
    ns.try_sh(&format!("birdc -s {} {cmd}", ctl.display()))
        .unwrap_or_default()
}

fn start_bird(lab: &mut Lab, ns: &Ns, name: &str, conf: &str) -> (u32, std::path::PathBuf) {
    let conf_path = lab.write(&format!("{name}.conf"), conf);
    let ctl = lab.path(&format!("{name}.ctl"));
    let pid = lab.spawn(
        ns,
        &[
            "bird",
            "-f",
            "-c",
            conf_path.to_str().unwrap(),
            "-s",
            ctl.to_str().unwrap(),
        ],
        &format!("{name}.log"),
    );
    wait_for(Duration::from_secs(10), "bird control socket", || {
        ctl.exists().then_some(())
    });
    (pid, ctl)
}

#[test]
fn bird_ebgp_both_families_refresh_restart_and_shutdown() {
    if !common::have(&["/usr/sbin/bird"]) {
        panic!("bird2 is not installed (apt-get install bird2)");
    }
    let mut lab = Lab::new();
    let (a, b) = (lab.ns("t"), lab.ns("b"));
    lab.link(
        &a,
        &["198.18.0.1/24", "fd00:198:18::1/64"],
        &b,
        &["198.18.0.2/24", "fd00:198:18::2/64"],
    );
    let conf = tortie_conf(
        64512,
        "198.18.0.1",
        &["0.0.0.0:179", "[::]:179"],
        &[
            "address = \"198.18.0.2\"\nasn = 65001\nfamilies = [\"ipv4\"]".into(),
            "address = \"fd00:198:18::2\"\nasn = 65001\nfamilies = [\"ipv6\"]".into(),
        ],
        &["10.244.1.0/26", "fd00:10::/122"],
        "",
    );
    let mut t = start_tortie(&mut lab, &a, "tortie", &conf, false);
    let bird = bird_conf(
        "198.18.0.2",
        "protocol bgp t4 { local 198.18.0.2 as 65001; neighbor 198.18.0.1 as 64512; graceful restart on; \
           ipv4 { import all; export where source = RTS_STATIC; }; }\n\
         protocol bgp t6 { local fd00:198:18::2 as 65001; neighbor fd00:198:18::1 as 64512; graceful restart on; \
           ipv6 { import all; export where source = RTS_STATIC; }; }",
    );
    let (_bird_pid, ctl) = start_bird(&mut lab, &b, "bird", &bird);

    // Sessions up on both transports.
    wait_for(T, "BIRD t4 and t6 Established", || {
        let p = birdc(&b, &ctl, "show protocols");
        (p.lines()
            .filter(|l| (l.starts_with("t4") || l.starts_with("t6")) && l.contains("Established"))
            .count()
            == 2)
            .then_some(())
    });
    wait_for(T, "tortie sees both sessions Established", || {
        (tortie_state(&t, "198.18.0.2").as_deref() == Some("Established")
            && tortie_state(&t, "fd00:198:18::2").as_deref() == Some("Established"))
        .then_some(())
    });

    // Ours in BIRD, with AS path, next hop, communities.
    let r = wait_for(T, "10.244.1.0/26 in BIRD", || {
        let r = birdc(&b, &ctl, "show route 10.244.1.0/26 all");
        r.contains("10.244.1.0/26").then_some(r)
    });
    assert!(r.contains("BGP.as_path: 64512"), "{r}");
    assert!(r.contains("BGP.next_hop: 198.18.0.1"), "{r}");
    assert!(r.contains("(64512,100)"), "standard community: {r}");
    assert!(r.contains("(64512, 1, 2)"), "large community: {r}");
    let r6 = wait_for(T, "fd00:10::/122 in BIRD", || {
        let r = birdc(&b, &ctl, "show route fd00:10::/122 all");
        r.contains("fd00:10::/122").then_some(r)
    });
    assert!(r6.contains("BGP.next_hop: fd00:198:18::1"), "{r6}");

    // BIRD's in ours, with BIRD's address as next hop.
    assert_eq!(
        wait_for(T, "10.99.0.0/24 in tortie", || tortie_route(
            &t,
            "10.99.0.0/24"
        )),
        vec!["198.18.0.2"]
    );
    assert_eq!(
        wait_for(T, "fd00:99::/64 in tortie", || tortie_route(
            &t,
            "fd00:99::/64"
        )),
        vec!["fd00:198:18::2"]
    );

    // Route refresh: BIRD asks (`reload in`), we answer; the session stays up.
    let before = lab.log("tortie.log").len();
    assert!(
        birdc(&b, &ctl, "reload in t4").contains("reload"),
        "birdc reload"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(birdc(&b, &ctl, "show protocols t4").contains("Established"));
    assert!(!lab.log("tortie.log")[before..].contains("session down"));

    // Graceful restart: SIGTERM leaves without NOTIFICATION; BIRD keeps our route (stale) and
    // never withdraws it; the restarted speaker's End-of-RIB ends the stale phase.
    lab.signal(t.pid, "-TERM");
    let r = wait_for(T, "BIRD in graceful-restart helper mode", || {
        let p = birdc(&b, &ctl, "show protocols all t4");
        (p.contains("Graceful restart") || !p.contains("Established")).then_some(p)
    });
    let _ = r;
    let during = birdc(&b, &ctl, "show route 10.244.1.0/26");
    assert!(
        during.contains("10.244.1.0/26"),
        "route withdrawn during restart:\n{during}\n{}",
        lab.log("bird.log")
    );
    t = start_tortie(&mut lab, &a, "tortie2", &conf, true);
    wait_for(T, "t4 Established again", || {
        birdc(&b, &ctl, "show protocols t4")
            .contains("Established")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let after = birdc(&b, &ctl, "show route 10.244.1.0/26 all");
    assert!(
        after.contains("10.244.1.0/26") && !after.contains("stale"),
        "{after}"
    );
    let blog = lab.log("bird.log");
    assert!(
        !blog.contains("10.244.1.0/26") || !blog.to_lowercase().contains("withdraw"),
        "BIRD logged a withdrawal: {blog}"
    );

    // Shutdown NOTIFICATION with an RFC 8203 message, logged by BIRD with the right code.
    // The daemon exits right after sending, so the reply itself may not arrive.
    let _ = control(&t.control, "shutdown maintenance window");
    wait_for(T, "BIRD logs the administrative shutdown", || {
        let l = lab.log("bird.log");
        (l.contains("Administrative shutdown") && l.contains("maintenance window")).then_some(())
    });
}

#[test]
fn tortie_reflects_between_two_bird_clients() {
    let mut lab = Lab::new();
    let (rr, c1, c2) = (lab.ns("r"), lab.ns("c1"), lab.ns("c2"));
    lab.link(&rr, &["198.18.1.1/24"], &c1, &["198.18.1.2/24"]);
    lab.link(&rr, &["198.18.2.1/24"], &c2, &["198.18.2.2/24"]);
    let conf = tortie_conf(
        64512,
        "198.18.1.1",
        &["0.0.0.0:179"],
        &[
            "address = \"198.18.1.2\"\nasn = 64512\nrr_client = true\nfamilies = [\"ipv4\"]".into(),
            "address = \"198.18.2.2\"\nasn = 64512\nrr_client = true\nfamilies = [\"ipv4\"]".into(),
        ],
        &[],
        "cluster_id = \"244.0.0.1\"",
    );
    let t = start_tortie(&mut lab, &rr, "rr", &conf, false);
    // iBGP next hops resolve recursively in BIRD: each client reaches the other's subnet via
    // the reflector.
    let client = |rid: &str, local: &str, nbr: &str, net: &str, other: &str| {
        format!(
            "router id {rid};\nlog stderr all;\nprotocol device {{ }}\nprotocol static s4 {{ ipv4; route {net} blackhole; route {other} via {nbr}; }}\n\
             protocol bgp reflector {{ local {local} as 64512; neighbor {nbr} as 64512; ipv4 {{ import all; export where net ~ [ 10.0.0.0/8+ ]; }}; }}\n"
        )
    };
    let (_, ctl1) = start_bird(
        &mut lab,
        &c1,
        "c1",
        &client(
            "198.18.1.2",
            "198.18.1.2",
            "198.18.1.1",
            "10.91.0.0/24",
            "198.18.2.0/24",
        ),
    );
    let (_, ctl2) = start_bird(
        &mut lab,
        &c2,
        "c2",
        &client(
            "198.18.2.2",
            "198.18.2.2",
            "198.18.2.1",
            "10.92.0.0/24",
            "198.18.1.0/24",
        ),
    );
    // Each client learns the other's route through the reflector, next hop unchanged, with
    // ORIGINATOR_ID and CLUSTER_LIST.
    let r = wait_for(T, "c2 learns c1's route", || {
        let r = birdc(&c2, &ctl2, "show route 10.91.0.0/24 all");
        r.contains("10.91.0.0/24").then_some(r)
    });
    assert!(r.contains("BGP.originator_id: 198.18.1.2"), "{r}");
    assert!(r.contains("BGP.cluster_list: 244.0.0.1"), "{r}");
    assert!(r.contains("BGP.next_hop: 198.18.1.2"), "{r}");
    let r = wait_for(T, "c1 learns c2's route", || {
        let r = birdc(&c1, &ctl1, "show route 10.92.0.0/24 all");
        r.contains("10.92.0.0/24").then_some(r)
    });
    assert!(r.contains("BGP.originator_id: 198.18.2.2"), "{r}");
    assert!(tortie_route(&t, "10.91.0.0/24").is_some());
}

// ===== FRR =====

/// Starts FRR's zebra and bgpd (`-n`: no FIB) in `ns` with `bgpd_conf`; returns a `vtysh -c` runner.
fn start_frr<'a>(lab: &mut Lab, ns: &'a Ns, bgpd_conf: &str) -> impl Fn(&str) -> String + 'a {
    let dir = lab.dir.path().to_str().unwrap().to_string();
    // FRR's daemons run as user frr and must reach their files.
    let _ = std::process::Command::new("chown")
        .args(["frr:frr", &dir])
        .status();
    lab.write("zebra.conf", "hostname frr\n");
    lab.write("bgpd.conf", bgpd_conf);
    let f = format!("-z {dir}/zserv.api --vty_socket {dir} -u frr -g frr");
    let zebra = format!("exec /usr/lib/frr/zebra {f} -i {dir}/zebra.pid -f {dir}/zebra.conf");
    lab.spawn(ns, &["sh", "-c", &zebra], "zebra.log");
    std::thread::sleep(Duration::from_secs(1));
    let bgpd = format!("exec /usr/lib/frr/bgpd {f} -n -i {dir}/bgpd.pid -f {dir}/bgpd.conf");
    lab.spawn(ns, &["sh", "-c", &bgpd], "bgpd.log");
    move |cmd: &str| {
        ns.try_sh(&format!("vtysh --vty_socket {dir} -c '{cmd}'"))
            .unwrap_or_default()
    }
}

#[test]
fn frr_ebgp_routes_both_ways_and_shutdown() {
    if !common::have(&["/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"]) {
        panic!("frr is not installed (apt-get install frr)");
    }
    let mut lab = Lab::new();
    let (a, b) = (lab.ns("t"), lab.ns("f"));
    lab.link(&a, &["198.18.3.1/24"], &b, &["198.18.3.2/24"]);
    let conf = tortie_conf(
        64512,
        "198.18.3.1",
        &["0.0.0.0:179"],
        &["address = \"198.18.3.2\"\nasn = 65002\nfamilies = [\"ipv4\"]".into()],
        &["10.244.3.0/26"],
        "",
    );
    let t = start_tortie(&mut lab, &a, "tortie", &conf, false);
    let vtysh = start_frr(
        &mut lab,
        &b,
        "hostname frr\nrouter bgp 65002\n bgp router-id 198.18.3.2\n no bgp ebgp-requires-policy\n no bgp network import-check\n \
         neighbor 198.18.3.1 remote-as 64512\n address-family ipv4 unicast\n  network 10.98.0.0/24\n exit-address-family\n",
    );
    wait_for(T, "FRR session Established", || {
        vtysh("show bgp neighbors 198.18.3.1 json")
            .contains("\"bgpState\":\"Established\"")
            .then_some(())
    });
    let r = wait_for(T, "10.244.3.0/26 in FRR", || {
        let r = vtysh("show bgp ipv4 unicast 10.244.3.0/26 json");
        r.contains("64512").then_some(r)
    });
    assert!(r.contains("198.18.3.1"), "{r}");
    assert!(r.contains("64512:100"), "communities: {r}");
    assert_eq!(
        wait_for(T, "10.98.0.0/24 in tortie", || tortie_route(
            &t,
            "10.98.0.0/24"
        )),
        vec!["198.18.3.2"]
    );
    control(&t.control, "shutdown bye from tortie");
    wait_for(T, "FRR records the administrative shutdown", || {
        let n = vtysh("show bgp neighbors 198.18.3.1");
        (n.contains("Administrative Shutdown")
            || n.contains("Administratively Shutdown")
            || n.contains("Cease/Administrative"))
        .then_some(())
    });
}

// ===== GoBGP =====

#[test]
fn gobgp_ebgp_routes_both_ways_and_shutdown() {
    if !common::have(&["/usr/bin/gobgpd"]) {
        panic!("gobgpd is not installed (apt-get install gobgpd)");
    }
    let mut lab = Lab::new();
    let (a, b) = (lab.ns("t"), lab.ns("g"));
    lab.link(&a, &["198.18.4.1/24"], &b, &["198.18.4.2/24"]);
    let conf = tortie_conf(
        64512,
        "198.18.4.1",
        &["0.0.0.0:179"],
        &["address = \"198.18.4.2\"\nasn = 65003\nfamilies = [\"ipv4\"]".into()],
        &["10.244.4.0/26"],
        "",
    );
    let t = start_tortie(&mut lab, &a, "tortie", &conf, false);
    let g = lab.write(
        "gobgpd.toml",
        "[global.config]\n  as = 65003\n  router-id = \"198.18.4.2\"\n  port = 179\n\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"198.18.4.1\"\n    peer-as = 64512\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n",
    );
    lab.spawn(
        &b,
        &[
            "gobgpd",
            "-f",
            g.to_str().unwrap(),
            "--api-hosts",
            "127.0.0.1:50051",
            "--log-level",
            "info",
        ],
        "gobgpd.log",
    );
    let gobgp = |args: &str| {
        b.try_sh(&format!("gobgp -p 50051 {args}"))
            .unwrap_or_default()
    };
    wait_for(T, "gobgpd API", || {
        (!gobgp("global").is_empty()).then_some(())
    });
    gobgp("global rib add 10.97.0.0/24 -a ipv4");
    wait_for(T, "GoBGP session Established", || {
        gobgp("neighbor 198.18.4.1")
            .to_lowercase()
            .contains("bgp state = established")
            .then_some(())
    });
    let r = wait_for(T, "10.244.4.0/26 in GoBGP", || {
        let r = gobgp("global rib -a ipv4 10.244.4.0/26");
        r.contains("10.244.4.0/26").then_some(r)
    });
    assert!(r.contains("198.18.4.1") && r.contains("64512"), "{r}");
    assert_eq!(
        wait_for(T, "10.97.0.0/24 in tortie", || tortie_route(
            &t,
            "10.97.0.0/24"
        )),
        vec!["198.18.4.2"]
    );
    control(&t.control, "shutdown gobgp interop done");
    wait_for(T, "GoBGP logs the NOTIFICATION", || {
        let l = lab.log("gobgpd.log");
        (l.contains("Notification") || l.contains("notification")).then_some(())
    });
}

#[test]
fn frr_ibgp_over_ipv6_transport() {
    if !common::have(&["/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"]) {
        panic!("frr is not installed (apt-get install frr)");
    }
    let mut lab = Lab::new();
    let (a, b) = (lab.ns("t"), lab.ns("f"));
    lab.link(&a, &["fd00:198:5::1/64"], &b, &["fd00:198:5::2/64"]);
    let conf = tortie_conf(
        64512,
        "198.18.5.1",
        &["[::]:179"],
        &["address = \"fd00:198:5::2\"\nasn = 64512\nfamilies = [\"ipv6\"]".into()],
        &["fd00:10:5::/122"],
        "",
    );
    let t = start_tortie(&mut lab, &a, "tortie", &conf, false);
    let vtysh = start_frr(
        &mut lab,
        &b,
        "hostname frr\nrouter bgp 64512\n bgp router-id 198.18.5.2\n no bgp default ipv4-unicast\n no bgp network import-check\n \
         neighbor fd00:198:5::1 remote-as 64512\n address-family ipv6 unicast\n  neighbor fd00:198:5::1 activate\n  network fd00:98::/64\n exit-address-family\n",
    );
    wait_for(T, "FRR iBGP session over IPv6 Established", || {
        vtysh("show bgp neighbors fd00:198:5::1 json")
            .contains("\"bgpState\":\"Established\"")
            .then_some(())
    });
    // iBGP: no AS prepended, LOCAL_PREF present, our global address as next hop.
    let r = wait_for(T, "fd00:10:5::/122 in FRR", || {
        let r = vtysh("show bgp ipv6 unicast fd00:10:5::/122 json");
        r.contains("fd00:10:5::/122").then_some(r)
    });
    assert!(r.contains("fd00:198:5::1"), "{r}");
    assert!(
        r.contains("\"locPrf\":100") || r.contains("\"localpref\":100"),
        "{r}"
    );
    assert!(
        r.contains("\"internal\"") || r.contains("iBGP") || r.contains("\"pathFrom\":\"internal\""),
        "{r}"
    );
    assert_eq!(
        wait_for(T, "fd00:98::/64 in tortie", || tortie_route(
            &t,
            "fd00:98::/64"
        )),
        vec!["fd00:198:5::2"]
    );
}

// ===== Security: TCP-MD5 (RFC 2385) and GTSM (RFC 5082) against BIRD =====

#[test]
fn md5_and_ttl_security_against_bird() {
    let mut lab = Lab::new();
    let t = lab.ns("t");
    let good = lab.ns("g"); // right MD5 key, GTSM, direct neighbour
    let wrong = lab.ns("w"); // wrong MD5 key
    let router = lab.ns("r"); // one IP hop between tortie and the two below
    let (near, far) = (lab.ns("h2"), lab.ns("h1"));
    lab.link(&t, &["198.18.3.1/24"], &good, &["198.18.3.2/24"]);
    lab.link(&t, &["198.18.4.1/24"], &wrong, &["198.18.4.2/24"]);
    lab.link(&t, &["198.18.5.1/24"], &router, &["198.18.5.2/24"]);
    lab.link(&router, &["198.18.6.1/24"], &near, &["198.18.6.2/24"]);
    lab.link(&router, &["198.18.7.1/24"], &far, &["198.18.7.2/24"]);
    router.sh("sysctl -qw net.ipv4.ip_forward=1");
    t.sh("ip route add 198.18.6.0/23 via 198.18.5.2");
    near.sh("ip route add default via 198.18.6.1");
    far.sh("ip route add default via 198.18.7.1");

    let conf = tortie_conf(
        64512,
        "198.18.3.1",
        &["0.0.0.0:179"],
        &[
            "address = \"198.18.3.2\"\nasn = 65003\nfamilies = [\"ipv4\"]\npassword = \"tortie-md5\"\nttl_security = 1".into(),
            "address = \"198.18.4.2\"\nasn = 65004\nfamilies = [\"ipv4\"]\npassword = \"tortie-md5\"".into(),
            // Two hops away and allowed two: the session comes up.
            "address = \"198.18.6.2\"\nasn = 65006\nfamilies = [\"ipv4\"]\nttl_security = 2".into(),
            // Two hops away but allowed only one: its segments arrive with TTL 254 and are dropped.
            "address = \"198.18.7.2\"\nasn = 65007\nfamilies = [\"ipv4\"]\nttl_security = 1".into(),
        ],
        &["10.244.3.0/26"],
        "",
    );
    let tortie = start_tortie(&mut lab, &t, "tortie", &conf, false);
    let peer = |local: &str, asn: u32, extra: &str| {
        bird_conf(
            local,
            &format!(
                "protocol bgp t {{ local {local} as {asn}; neighbor 198.18.{}.1 as 64512; {extra} \
                   ipv4 {{ import all; export where source = RTS_STATIC; }}; }}",
                if local.starts_with("198.18.6") || local.starts_with("198.18.7") {
                    "5"
                } else {
                    &local[7..8]
                }
            ),
        )
    };
    let (_, ctl_good) = start_bird(
        &mut lab,
        &good,
        "good",
        &peer(
            "198.18.3.2",
            65003,
            "password \"tortie-md5\"; ttl security on;",
        ),
    );
    let (_, ctl_wrong) = start_bird(
        &mut lab,
        &wrong,
        "wrong",
        &peer("198.18.4.2", 65004, "password \"not-the-key\";"),
    );
    let (_, ctl_near) = start_bird(
        &mut lab,
        &near,
        "near",
        &peer("198.18.6.2", 65006, "multihop 2; ttl security on;"),
    );
    let (_, ctl_far) = start_bird(
        &mut lab,
        &far,
        "far",
        &peer("198.18.7.2", 65007, "multihop 2; ttl security on;"),
    );

    let established = |ns: &Ns, ctl: &std::path::Path| {
        birdc(ns, ctl, "show protocols t")
            .lines()
            .any(|l| l.starts_with("t ") && l.contains("Established"))
    };
    wait_for(
        T,
        "the right MD5 key and GTSM neighbour Established",
        || {
            (established(&good, &ctl_good)
                && tortie_state(&tortie, "198.18.3.2").as_deref() == Some("Established"))
            .then_some(())
        },
    );
    wait_for(
        T,
        "the two-hop neighbour allowed two hops Established",
        || {
            (established(&near, &ctl_near)
                && tortie_state(&tortie, "198.18.6.2").as_deref() == Some("Established"))
            .then_some(())
        },
    );
    // Routes really flow over the signed session.
    wait_for(T, "BIRD learns 10.244.3.0/26 over MD5", || {
        birdc(&good, &ctl_good, "show route 10.244.3.0/26")
            .contains("10.244.3.0/26")
            .then_some(())
    });
    // Several connect-retry rounds (5 s on our side, BIRD's own on its side) for the others.
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        !established(&wrong, &ctl_wrong),
        "a wrong MD5 key must not establish"
    );
    assert_ne!(
        tortie_state(&tortie, "198.18.4.2").as_deref(),
        Some("Established")
    );
    assert!(
        !established(&far, &ctl_far),
        "a neighbour further than ttl_security allows must not establish"
    );
    assert_ne!(
        tortie_state(&tortie, "198.18.7.2").as_deref(),
        Some("Established")
    );
    // The kernel, not the BGP layer, refused both: it counts MD5 failures and minimum-TTL drops
    // (or, for a far peer's inbound connection, tortie refused its SYN's TTL).
    let counter = |name: &str| -> u64 {
        t.sh(&format!("nstat -asz {name}"))
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        counter("TcpExtTCPMD5Failure") > 0,
        "no MD5 failures counted"
    );
    assert!(
        counter("TcpExtTCPMinTTLDrop") > 0
            || lab
                .log("tortie.log")
                .contains("connection refused by TTL security"),
        "nothing was dropped for its TTL"
    );
}
