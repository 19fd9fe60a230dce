//! `tortiectl ipam …` against both backends, on state made by the IPAM library.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Env, on_both_backends};
use tortie_datastore::Datastore;
use tortie_ipam::gc::{AllocationInfo, GcState, Liveness, OwnerCheck};
use tortie_ipam::{AllocateRequest, Ipam};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn pool_file(env: &Env) -> String {
    env.file(
        "pool.yaml",
        "apiVersion: tortie.io/v1\nkind: IPPool\nmetadata:\n  name: default-ipv4\nspec:\n  cidr: 10.244.0.0/16\n",
    )
}

struct NobodyLives;
impl OwnerCheck for NobodyLives {
    fn allocation(&self, _: &AllocationInfo) -> Liveness {
        Liveness::Gone
    }
    fn node_exists(&self, _: &str) -> bool {
        false
    }
}

/// Three nodes allocate 300 addresses each at the same time (each node its own datastore
/// connection); release everything; `tortiectl ipam check` is clean and GC returns the blocks.
#[test]
fn three_nodes_then_check_clean_and_blocks_return() {
    on_both_backends(|env| {
        env.ctl(&["apply", "-f", &pool_file(env)]).ok();
        let rt = rt();
        let handles: Vec<String> = rt.block_on(async {
            let mut tasks = Vec::new();
            for node in ["node-1", "node-2", "node-3"] {
                let ipam = Ipam::new(Datastore::open(&env.url).await.unwrap());
                for i in 0..300 {
                    let ipam = ipam.clone();
                    let req = AllocateRequest {
                        handle_id: format!("net.{node}.{i}"),
                        node: node.into(),
                        num_ipv4: 1,
                        ..Default::default()
                    };
                    tasks.push(tokio::spawn(async move {
                        ipam.allocate(&req).await.map(|a| (req.handle_id, a[0].ip))
                    }));
                }
            }
            let mut ips = BTreeSet::new();
            let mut handles = Vec::new();
            for t in tasks {
                let (h, ip) = t.await.unwrap().unwrap();
                assert!(ips.insert(ip), "{ip} twice");
                handles.push(h);
            }
            handles
        });
        let live = env.file("live.txt", &handles.join("\n"));
        env.ctl(&["ipam", "check", "--live-handles", &live])
            .ok()
            .stdout_has("0 problems found (900 allocated addresses checked");
        let show = env.ctl(&["ipam", "show", "-o", "json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
        assert_eq!(v["pools"][0]["inUse"], "900");

        rt.block_on(async {
            let ipam = Ipam::new(Datastore::open(&env.url).await.unwrap());
            for h in &handles {
                ipam.release(h).await.unwrap();
            }
        });
        env.ctl(&["ipam", "check"])
            .ok()
            .stdout_has("0 problems found (0 allocated");
        rt.block_on(async {
            let ipam = Ipam::new(Datastore::open(&env.url).await.unwrap());
            let mut gc = GcState::default();
            ipam.gc_pass(&mut gc, &NobodyLives, Duration::ZERO)
                .await
                .unwrap();
            ipam.gc_pass(&mut gc, &NobodyLives, Duration::ZERO)
                .await
                .unwrap();
        });
        let show = env
            .ctl(&["ipam", "show", "--show-blocks", "-o", "json"])
            .ok();
        let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
        assert_eq!(
            v["pools"][0]["blocks"].as_array().unwrap().len(),
            0,
            "blocks went back: {v}"
        );
        env.ctl(&["get", "blockaffinities"])
            .ok()
            .stderr_has("No blockaffinities found.");
    });
}

#[test]
fn show_release_configure_and_problems() {
    on_both_backends(|env| {
        env.ctl(&["apply", "-f", &pool_file(env)]).ok();
        env.ctl(&[
            "ipam",
            "configure",
            "--strict-affinity",
            "true",
            "--max-blocks-per-host",
            "0",
        ])
        .ok()
        .stdout_has("strictAffinity: true")
        .stdout_has("maxBlocksPerHost: 0 (unlimited)");
        let rt = rt();
        let (a, b) = rt.block_on(async {
            let ipam = Ipam::new(Datastore::open(&env.url).await.unwrap());
            let req = |h: &str| AllocateRequest {
                handle_id: h.into(),
                node: "node-1".into(),
                num_ipv4: 1,
                ..Default::default()
            };
            (
                ipam.allocate(&req("net.a")).await.unwrap()[0].clone(),
                ipam.allocate(&req("net.b")).await.unwrap()[0].clone(),
            )
        });
        let table = env.ctl(&["ipam", "show", "--show-blocks"]).ok();
        table
            .stdout_has("GROUPING")
            .stdout_has("IP Pool")
            .stdout_has("10.244.0.0/16")
            .stdout_has("Block");
        env.ctl(&["ipam", "show", "--ip", &a.ip.to_string()])
            .ok()
            .stdout_has("is in use")
            .stdout_has("Handle:          net.a")
            .stdout_has("node: node-1");
        env.ctl(&["ipam", "show", "--ip", "10.244.255.255"])
            .ok()
            .stdout_has("is not allocated");

        // A stale sequence number never frees the address.
        let stale = (a.sequence_number + 100).to_string();
        env.ctl(&[
            "ipam",
            "release",
            "--ip",
            &a.ip.to_string(),
            "--sequence",
            &stale,
        ])
        .code(1)
        .stderr_has("sequence number")
        .stderr_has("stale");
        env.ctl(&[
            "ipam",
            "release",
            "--ip",
            &a.ip.to_string(),
            "--sequence",
            &a.sequence_number.to_string(),
            "-o",
            "json",
        ])
        .ok()
        .stdout_has(&a.ip.to_string());
        env.ctl(&["ipam", "release", "--handle", "net.b"])
            .ok()
            .stdout_has(&format!("released {}", b.ip));
        env.ctl(&["ipam", "release", "--handle", "net.b"])
            .ok()
            .stdout_has("nothing to release");
        env.ctl(&["ipam", "release"]).code(2);

        // Damage: a handle whose block vanished, and an affinity without its block.
        rt.block_on(async {
            let ipam = Ipam::new(Datastore::open(&env.url).await.unwrap());
            let req = AllocateRequest {
                handle_id: "net.c".into(),
                node: "node-1".into(),
                num_ipv4: 1,
                ..Default::default()
            };
            let c = ipam.allocate(&req).await.unwrap();
            let block = tortie_ipam::names::block_name(c[0].block);
            let ds = ipam.datastore();
            ds.delete::<tortie_api::IPAMBlockSpec>(&block, None)
                .await
                .unwrap();
        });
        let check = env.ctl(&["ipam", "check"]).code(1);
        check
            .stdout_has("affinity-without-block")
            .stdout_has("index-mismatch");
        let json = env.ctl(&["ipam", "check", "-o", "json"]).code(1);
        let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert!(v["problems"].as_array().unwrap().len() >= 2, "{v}");
    });
}
