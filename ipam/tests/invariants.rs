//! Property test: random sequences of allocate / release / release-by-address / GC from three
//! simulated nodes keep IPAM's invariants, on SQLite and on etcd.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;
use tortie_datastore::Datastore;
use tortie_ipam::gc::{AllocationInfo, GcState, Liveness, OwnerCheck};
use tortie_ipam::{AllocateRequest, Ipam, IpamError};

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        node: u8,
        handle: u8,
        v4: u32,
        v6: u32,
    },
    Release {
        handle: u8,
    },
    ReleaseAddress {
        handle: u8,
        pick: usize,
        stale: bool,
    },
    Gc,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..3, 0u8..12, 0u32..4, 0u32..3).prop_map(|(node, handle, v4, v6)| Op::Allocate { node, handle, v4, v6 }),
        3 => (0u8..12).prop_map(|handle| Op::Release { handle }),
        1 => (0u8..12, 0usize..4, any::<bool>()).prop_map(|(handle, pick, stale)| Op::ReleaseAddress { handle, pick, stale }),
        1 => Just(Op::Gc),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    strict: bool,
    max_blocks: u32,
}

fn setup() -> impl Strategy<Value = Setup> {
    (any::<bool>(), 0u32..3).prop_map(|(strict, max_blocks)| Setup { strict, max_blocks })
}

/// Owners: a handle is alive iff the model still holds it.
struct ModelOwners<'a>(&'a BTreeMap<String, BTreeMap<IpAddr, u64>>);

impl OwnerCheck for ModelOwners<'_> {
    fn allocation(&self, a: &AllocationInfo) -> Liveness {
        if self.0.contains_key(&a.handle_id) {
            Liveness::Alive
        } else {
            Liveness::Gone
        }
    }
}

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

async fn run_case(ds: &Datastore, setup: &Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    common::wipe(ds).await;
    // Small pools so that claiming, exhaustion and borrowing all happen: 4 blocks of 8 each.
    common::add_pool(ds, "v4", "10.0.0.0/27", 29).await;
    common::add_pool(ds, "v6", "fd00::/123", 125).await;
    common::add_reservation(ds, "gw", &["10.0.0.0/31", "fd00::8/128"]).await;
    let ipam = Ipam::new(ds.clone());
    ipam.configure(Some(setup.strict), Some(setup.max_blocks))
        .await
        .unwrap();
    let reserved: Vec<ipnet::IpNet> = ["10.0.0.0/31", "fd00::8/128"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let pools: Vec<ipnet::IpNet> = ["10.0.0.0/27", "fd00::/123"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();

    let mut model: BTreeMap<String, BTreeMap<IpAddr, u64>> = BTreeMap::new();
    let mut gc = GcState::default();
    for op in ops {
        match op {
            Op::Allocate {
                node,
                handle,
                v4,
                v6,
            } => {
                let req = AllocateRequest {
                    handle_id: format!("net.h{handle}"),
                    node: NODES[*node as usize].into(),
                    num_ipv4: *v4,
                    num_ipv6: *v6,
                    ..Default::default()
                };
                match ipam.allocate(&req).await {
                    Ok(got) => {
                        prop_assert_eq!(got.iter().filter(|a| a.ip.is_ipv4()).count() as u32, *v4);
                        prop_assert_eq!(got.iter().filter(|a| a.ip.is_ipv6()).count() as u32, *v6);
                        let entry = model.entry(req.handle_id.clone()).or_default();
                        for a in got {
                            prop_assert!(
                                entry.insert(a.ip, a.sequence_number).is_none(),
                                "{} handed out twice",
                                a.ip
                            );
                        }
                    }
                    Err(IpamError::Exhausted(_)) | Err(IpamError::InvalidRequest(_)) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("allocate: {e}"))),
                }
            }
            Op::Release { handle } => {
                let id = format!("net.h{handle}");
                let mut freed = ipam.release(&id).await.unwrap();
                freed.sort();
                let want: Vec<IpAddr> = model
                    .remove(&id)
                    .map(|m| m.into_keys().collect())
                    .unwrap_or_default();
                prop_assert_eq!(freed, want);
            }
            Op::ReleaseAddress {
                handle,
                pick,
                stale,
            } => {
                let id = format!("net.h{handle}");
                let Some(addrs) = model.get_mut(&id) else {
                    continue;
                };
                let Some((&ip, &seq)) = addrs.iter().nth(*pick % addrs.len().max(1)) else {
                    continue;
                };
                if *stale {
                    let r = ipam.release_addresses(&[(ip, Some(seq + 1000))]).await;
                    prop_assert!(matches!(r, Err(IpamError::StaleSequence { .. })), "{r:?}");
                } else {
                    prop_assert_eq!(
                        ipam.release_addresses(&[(ip, Some(seq))]).await.unwrap(),
                        vec![ip]
                    );
                    addrs.remove(&ip);
                    if addrs.is_empty() {
                        model.remove(&id);
                    }
                }
            }
            Op::Gc => {
                let report = ipam
                    .gc_pass(&mut gc, &ModelOwners(&model), Duration::ZERO)
                    .await
                    .unwrap();
                prop_assert!(
                    report.released_handles.is_empty(),
                    "GC freed live handles: {report:?}"
                );
            }
        }
        // Invariants after every step.
        for (handle, addrs) in &model {
            let got: BTreeMap<IpAddr, u64> = ipam
                .get(handle)
                .await
                .unwrap()
                .into_iter()
                .map(|a| (a.ip, a.sequence_number))
                .collect();
            prop_assert_eq!(&got, addrs, "handle {}", handle);
        }
        let all = ipam.allocations().await.unwrap();
        let mut seen = BTreeSet::new();
        for a in &all {
            prop_assert!(seen.insert(a.ip), "{} allocated twice", a.ip);
            prop_assert!(
                pools.iter().any(|p| p.contains(&a.ip)),
                "{} outside the pools",
                a.ip
            );
            prop_assert!(
                !reserved.iter().any(|r| r.contains(&a.ip)),
                "{} is reserved",
                a.ip
            );
            prop_assert!(
                model
                    .get(&a.handle_id)
                    .is_some_and(|m| m.contains_key(&a.ip)),
                "{} held by {} unknown to the model",
                a.ip,
                a.handle_id
            );
        }
        prop_assert_eq!(all.len(), model.values().map(|m| m.len()).sum::<usize>());
        let live: BTreeSet<String> = model.keys().cloned().collect();
        let problems = ipam.check(Some(&live)).await.unwrap();
        prop_assert!(problems.is_empty(), "{problems:?}");
        if setup.strict {
            prop_assert!(
                all.iter().all(|a| !a.is_borrowed()),
                "borrowed under strictAffinity"
            );
        }
    }
    // Releasing everything and two GC passes give every block but each node's last back.
    for handle in model.keys() {
        ipam.release(handle).await.unwrap();
    }
    let owners = ModelOwners(&BTreeMap::new());
    ipam.gc_pass(&mut gc, &owners, Duration::ZERO)
        .await
        .unwrap();
    ipam.gc_pass(&mut gc, &owners, Duration::ZERO)
        .await
        .unwrap();
    prop_assert!(ipam.allocations().await.unwrap().is_empty());
    prop_assert!(ipam.check(Some(&BTreeSet::new())).await.unwrap().is_empty());
    for node in NODES {
        prop_assert!(
            ipam.node_affinities(node).await.unwrap().len() <= 2,
            "{node} kept more than one block per family"
        );
    }
    Ok(())
}

fn run(backend: common::Backend, cases: u32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ds = rt.block_on(Datastore::open(&backend.url())).unwrap();
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(s in setup(), ops in prop::collection::vec(op(), 1..40))| {
        rt.block_on(run_case(&ds, &s, &ops))?;
    });
}

#[test]
fn invariants_hold_on_sqlite() {
    run(common::Backend::sqlite(), 64);
}

#[test]
fn invariants_hold_on_etcd() {
    run(common::Backend::etcd(), 24);
}
