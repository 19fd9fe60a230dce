//! Test driver run as separate processes by the IPAM acceptance tests (one process = one node).
//!
//! - `ipam-stress burst URL NODE COUNT`: COUNT allocations at once (one IPv4 address each, handle
//!   `burst.<NODE>.<i>`); prints one JSON line per address.
//! - `ipam-stress churn URL NODE LIVE_FILE`: finishes half-done claims of NODE, then allocates
//!   forever, appending (and syncing) each acknowledged handle to LIVE_FILE and releasing every
//!   other one — until killed.

use std::io::Write;
use std::sync::Arc;

use tortie_datastore::Datastore;
use tortie_ipam::{AllocateRequest, Ipam};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["burst", url, node, count] => burst(url, node, count.parse()?).await,
        ["churn", url, node, live] => churn(url, node, live).await,
        _ => Err("usage: ipam-stress burst URL NODE COUNT | churn URL NODE LIVE_FILE".into()),
    }
}

fn request(handle: String, node: &str) -> AllocateRequest {
    AllocateRequest {
        handle_id: handle,
        node: node.to_string(),
        num_ipv4: 1,
        ..Default::default()
    }
}

async fn burst(url: &str, node: &str, count: usize) -> Result<(), Box<dyn std::error::Error>> {
    let ipam = Arc::new(Ipam::new(Datastore::open(url).await?));
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let ipam = ipam.clone();
            let handle = format!("burst.{node}.{i}");
            let req = request(handle.clone(), node);
            tokio::spawn(async move { ipam.allocate(&req).await.map(|got| (handle, got)) })
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for t in tasks {
        let (handle, got) = t.await??;
        for a in got {
            writeln!(
                out,
                "{{\"handle\":\"{handle}\",\"ip\":\"{}\",\"seq\":{}}}",
                a.ip, a.sequence_number
            )?;
        }
    }
    Ok(())
}

async fn churn(url: &str, node: &str, live_path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let ipam = Ipam::new(Datastore::open(url).await?);
    ipam.recover_node(node).await?;
    let mut live = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(live_path)?;
    let pid = std::process::id();
    for i in 0u64.. {
        let handle = format!("churn.{pid}.{i}");
        ipam.allocate(&request(handle.clone(), node)).await?;
        if i % 2 == 0 {
            // Owned by a "pod" that lives on: record it durably.
            writeln!(live, "{handle}")?;
            live.sync_data()?;
        } else {
            ipam.release(&handle).await?;
        }
    }
    Ok(())
}
