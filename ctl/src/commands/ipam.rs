//! `tortiectl ipam show|check|release|configure`: IPAM utilisation, leaks and repairs, read
//! straight from the datastore through the `ipam` crate (no agent needed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::json;
use tortie_api::{BlockAffinitySpec, IPAMBlockSpec, IPPoolSpec};
use tortie_ipam::{Ipam, block};

use crate::cli::{IpamArgs, IpamCommand, IpamOutput};
use crate::output::render_json;
use crate::table::plain;
use crate::{CtlError, Ctx};

/// Runs `ipam …`.
pub async fn run(ctx: &mut Ctx<'_>, args: &IpamArgs) -> Result<(), CtlError> {
    match &args.command {
        IpamCommand::Show {
            show_blocks,
            show_borrowed,
            ip,
            output,
        } => {
            let ipam = Ipam::new(ctx.existing_datastore().await?);
            match ip {
                Some(ip) => show_ip(ctx, &ipam, *ip, *output).await,
                None => show(ctx, &ipam, *show_blocks, *show_borrowed, *output).await,
            }
        }
        IpamCommand::Check {
            live_handles,
            output,
        } => {
            let ipam = Ipam::new(ctx.existing_datastore().await?);
            let live = match live_handles {
                Some(path) => Some(read_live_handles(path)?),
                None => None,
            };
            let problems = ipam.check(live.as_ref()).await.map_err(CtlError::failure)?;
            match output {
                IpamOutput::Json => {
                    ctx.out(render_json(&json!({ "problems": problems })).trim_end())?
                }
                IpamOutput::Table => {
                    if !problems.is_empty() {
                        let rows = problems
                            .iter()
                            .map(|p| vec![p.kind.to_string(), p.detail.clone()])
                            .collect();
                        ctx.out(plain(&["PROBLEM", "DETAIL"], rows).trim_end())?;
                    }
                    let allocations = ipam.allocations().await.map_err(CtlError::failure)?.len();
                    ctx.out(format!(
                        "{} problem{} found ({allocations} allocated addresses checked{})",
                        problems.len(),
                        if problems.len() == 1 { "" } else { "s" },
                        if live.is_some() {
                            ", against the live-handle report"
                        } else {
                            ""
                        },
                    ))?;
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(CtlError::reported())
            }
        }
        IpamCommand::Release {
            ip,
            sequence,
            handle,
            output,
        } => {
            let ipam = Ipam::new(ctx.existing_datastore().await?);
            let freed = match (ip, handle) {
                (Some(ip), None) => ipam.release_addresses(&[(*ip, *sequence)]).await,
                (None, Some(h)) => ipam.release(h).await,
                _ => return Err(CtlError::usage("give exactly one of --ip and --handle")),
            }
            .map_err(CtlError::failure)?;
            match output {
                IpamOutput::Json => ctx.out(render_json(&json!({ "released": freed })).trim_end()),
                IpamOutput::Table if freed.is_empty() => {
                    ctx.out("nothing to release (already free)")
                }
                IpamOutput::Table => {
                    for ip in freed {
                        ctx.out(format!("released {ip}"))?;
                    }
                    Ok(())
                }
            }
        }
        IpamCommand::Configure {
            strict_affinity,
            max_blocks_per_host,
            output,
        } => {
            let ipam = Ipam::new(ctx.datastore().await?);
            let cfg = ipam
                .configure(*strict_affinity, *max_blocks_per_host)
                .await
                .map_err(CtlError::failure)?;
            match output {
                IpamOutput::Json => ctx
                    .out(render_json(&serde_json::to_value(&cfg).expect("serializes")).trim_end()),
                IpamOutput::Table => ctx.out(format!(
                    "strictAffinity: {}\nmaxBlocksPerHost: {}{}\nautoAllocateBlocks: {}",
                    cfg.strict_affinity,
                    cfg.max_blocks_per_host,
                    if cfg.max_blocks_per_host == 0 {
                        " (unlimited)"
                    } else {
                        ""
                    },
                    cfg.auto_allocate_blocks
                )),
            }
        }
    }
}

fn read_live_handles(path: &std::path::Path) -> Result<BTreeSet<String>, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::failure(format!("{}: {e}", path.display())))?;
    if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).map_err(|e| {
            CtlError::failure(format!(
                "{}: not a JSON list of handle IDs: {e}",
                path.display()
            ))
        })
    } else {
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// Size of a CIDR, as text (IPv6 pools overflow any machine integer but u128).
fn size_of(prefix_len: u8, max: u8) -> u128 {
    let bits = u32::from(max - prefix_len);
    if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    }
}

async fn show(
    ctx: &mut Ctx<'_>,
    ipam: &Ipam,
    show_blocks: bool,
    show_borrowed: bool,
    output: IpamOutput,
) -> Result<(), CtlError> {
    let ds = ipam.datastore();
    let pools = ds
        .list::<IPPoolSpec>(None)
        .await
        .map_err(CtlError::failure)?
        .items;
    let blocks = ds
        .list::<IPAMBlockSpec>(None)
        .await
        .map_err(CtlError::failure)?
        .items;
    let affinities = ds
        .list::<BlockAffinitySpec>(None)
        .await
        .map_err(CtlError::failure)?
        .items;
    let allocations = ipam.allocations().await.map_err(CtlError::failure)?;

    let mut pool_rows = Vec::new();
    let mut json_pools = Vec::new();
    for p in &pools {
        let net = p.spec.cidr.net();
        let total = size_of(net.prefix_len(), net.max_prefix_len());
        let in_use = allocations.iter().filter(|a| net.contains(&a.ip)).count() as u128;
        let mine: Vec<_> = blocks
            .iter()
            .filter(|b| net.contains(&b.spec.cidr.net()))
            .collect();
        pool_rows.push(vec![
            "IP Pool".into(),
            p.spec.cidr.to_string(),
            total.to_string(),
            format!("{in_use} ({:.0}%)", 100.0 * in_use as f64 / total as f64),
            (total - in_use).to_string(),
        ]);
        let block_json: Vec<_> = mine
            .iter()
            .map(|b| {
                let used = b.spec.allocations.len();
                let len = block::block_len(b.spec.cidr) as usize;
                if show_blocks {
                    pool_rows.push(vec![
                        "Block".into(),
                        b.spec.cidr.to_string(),
                        len.to_string(),
                        format!("{used} ({:.0}%)", 100.0 * used as f64 / len as f64),
                        (len - used).to_string(),
                    ]);
                }
                let state = affinities
                    .iter()
                    .find(|a| a.spec.cidr == b.spec.cidr && b.spec.affinity.as_deref() == Some(format!("host:{}", a.spec.node).as_str()))
                    .map(|a| format!("{:?}", a.spec.state));
                json!({"cidr": b.spec.cidr, "affinity": b.spec.affinity, "affinityState": state, "total": len, "inUse": used, "free": len - used})
            })
            .collect();
        json_pools.push(json!({
            "name": p.metadata.name, "cidr": p.spec.cidr, "blockSize": p.spec.effective_block_size(),
            "total": total.to_string(), "inUse": in_use.to_string(), "free": (total - in_use).to_string(),
            "blocks": block_json,
        }));
    }
    let borrowed: Vec<_> = allocations.iter().filter(|a| a.is_borrowed()).collect();
    match output {
        IpamOutput::Json => {
            let mut v = json!({ "pools": json_pools });
            if show_borrowed {
                v["borrowed"] = serde_json::to_value(&borrowed).expect("serializes");
            }
            ctx.out(render_json(&v).trim_end())
        }
        IpamOutput::Table => {
            ctx.out(
                plain(
                    &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
                    pool_rows,
                )
                .trim_end(),
            )?;
            if show_borrowed {
                let rows = borrowed
                    .iter()
                    .map(|a| {
                        vec![
                            a.ip.to_string(),
                            a.attributes.get("node").cloned().unwrap_or_default(),
                            a.block.to_string(),
                            a.block_affinity.clone().unwrap_or_else(|| "(none)".into()),
                            a.handle_id.clone(),
                        ]
                    })
                    .collect();
                ctx.out("")?;
                ctx.out(
                    plain(
                        &["IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "HANDLE"],
                        rows,
                    )
                    .trim_end(),
                )?;
            }
            Ok(())
        }
    }
}

async fn show_ip(
    ctx: &mut Ctx<'_>,
    ipam: &Ipam,
    ip: IpAddr,
    output: IpamOutput,
) -> Result<(), CtlError> {
    let blk = ipam.block_of(ip).await.map_err(CtlError::failure)?;
    let holder = blk.as_ref().and_then(|b| {
        let ordinal = block::ordinal_of(b.spec.cidr, ip)?;
        b.spec.allocations.get(&ordinal).map(|a| (b, a))
    });
    match (output, holder) {
        (IpamOutput::Json, None) => ctx.out(render_json(&json!({"ip": ip, "allocated": false})).trim_end()),
        (IpamOutput::Json, Some((b, a))) => ctx.out(
            render_json(&json!({
                "ip": ip, "allocated": true, "block": b.spec.cidr, "blockAffinity": b.spec.affinity,
                "handleID": a.handle_id, "sequenceNumber": a.sequence_number, "attributes": a.attributes,
            }))
            .trim_end(),
        ),
        (IpamOutput::Table, None) => ctx.out(format!("IP {ip} is not allocated")),
        (IpamOutput::Table, Some((b, a))) => {
            ctx.out(format!("IP {ip} is in use"))?;
            ctx.out(format!("  Handle:          {}", a.handle_id))?;
            ctx.out(format!("  Block:           {} ({})", b.spec.cidr, b.spec.affinity.as_deref().unwrap_or("no affinity")))?;
            ctx.out(format!("  Sequence number: {}", a.sequence_number))?;
            let attrs: BTreeMap<_, _> = a.attributes.iter().collect();
            for (k, v) in attrs {
                ctx.out(format!("  {k}: {v}"))?;
            }
            Ok(())
        }
    }
}
