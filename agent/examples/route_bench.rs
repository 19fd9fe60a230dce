//! Installs N remote-block routes (/26 via one next hop) with the agent's reconciler in the
//! current network namespace, then checks them with a dump, then removes them. Prints timings
//! and the process's peak RSS as one JSON line. Run it inside a throw-away namespace
//! (agent/bench/routes.sh does).
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};
use tortie_agent::{kernel, routes};

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let via: IpAddr = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)));
    let idle = rss_kb("VmRSS:");
    let h = kernel::connect().unwrap();
    let desired: BTreeMap<IpNet, routes::Target> = (0..n)
        .map(|i| {
            let a = Ipv4Addr::from(0x0a00_0000u32 + (i << 6));
            (
                IpNet::V4(Ipv4Net::new(a, 26).unwrap()),
                routes::Target::via(vec![via]),
            )
        })
        .collect();
    let t0 = Instant::now();
    let actual = kernel::dump(&h, 80).await.unwrap();
    let ops = routes::plan(&desired, &actual);
    let failed = kernel::apply(&ops, 80).unwrap();
    let install = t0.elapsed();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first().map(|f| f.1.to_string())
    );
    let t1 = Instant::now();
    let after = kernel::dump(&h, 80).await.unwrap();
    let dump = t1.elapsed();
    assert_eq!(after.len(), n as usize, "kernel has all routes");
    let converged = routes::plan(&desired, &after).is_empty();
    let t2 = Instant::now();
    let failed = kernel::apply(&routes::plan(&BTreeMap::new(), &after), 80).unwrap();
    let remove = t2.elapsed();
    assert!(failed.is_empty());
    tortie_agent::nexthop::prune(80, &Default::default()).unwrap();
    println!(
        "{{\"routes\":{n},\"install_s\":{:.4},\"dump_s\":{:.4},\"remove_s\":{:.4},\"converged\":{converged},\"idle_rss_mb\":{:.1},\"peak_rss_mb\":{:.1}}}",
        install.as_secs_f64(),
        dump.as_secs_f64(),
        remove.as_secs_f64(),
        idle as f64 / 1024.0,
        rss_kb("VmHWM:") as f64 / 1024.0
    );
}
