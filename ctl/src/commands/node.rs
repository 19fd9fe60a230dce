//! `tortiectl node status` and `tortiectl node routes`: what the local agent reports over its
//! unix socket (`tortie.agent.v1.Agent`), in calicoctl's layout.

use std::time::Duration;

use tortie_proto::agent::v1 as pb;
use tortie_proto::agent::v1::agent_client::AgentClient;

use crate::cli::{NodeArgs, NodeCommand};
use crate::table::plain;
use crate::{CtlError, Ctx};

async fn client(
    socket: &std::path::Path,
) -> Result<AgentClient<tonic::transport::Channel>, CtlError> {
    let channel = tortie_proto::connect_unix(socket, Duration::from_secs(5))
        .await
        .map_err(|e| {
            CtlError::failure(format!(
                "tortie-agent is not reachable on {} ({e}); is it running on this node?",
                socket.display()
            ))
        })?;
    Ok(AgentClient::new(channel))
}

/// Calico's STATE column: `up` when Established, `start` otherwise.
fn state_word(fsm: &str) -> &'static str {
    if fsm == "Established" { "up" } else { "start" }
}

fn since(unix: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(unix, 0)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Runs `node …`.
pub async fn run(ctx: &mut Ctx<'_>, args: &NodeArgs) -> Result<(), CtlError> {
    match &args.command {
        NodeCommand::Status { socket } => {
            let s = client(socket)
                .await?
                .status(pb::StatusRequest {})
                .await
                .map_err(|e| CtlError::failure(format!("agent status: {}", e.message())))?
                .into_inner();
            let mut out = format!(
                "tortie-agent {} on node {} ({}, AS {}) is running; {}.\n",
                s.version,
                s.node,
                s.address,
                s.as_number,
                if s.ready {
                    "ready"
                } else {
                    "not ready yet (BGP converging)"
                }
            );
            for (family, v6) in [("IPv4", false), ("IPv6", true)] {
                let rows: Vec<Vec<String>> = s
                    .peers
                    .iter()
                    .filter(|p| p.address.contains(':') == v6)
                    .map(|p| {
                        let mut info = p.state.clone();
                        if p.state != "Established" && !p.last_error.is_empty() {
                            info.push_str(&format!(" ({})", p.last_error));
                        }
                        vec![
                            p.address.clone(),
                            p.r#type.clone(),
                            state_word(&p.state).to_string(),
                            since(p.since_unix),
                            info,
                        ]
                    })
                    .collect();
                out.push_str(&format!("\n{family} BGP status\n"));
                if rows.is_empty() {
                    out.push_str(&format!("No {family} peers found.\n"));
                } else {
                    out.push_str(&plain(
                        &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
                        rows,
                    ));
                }
            }
            out.push_str(&format!(
                "\nBlocks: {}\nRoutes programmed: {}\n",
                if s.blocks.is_empty() {
                    "none".to_string()
                } else {
                    s.blocks.join(", ")
                },
                s.routes_programmed
            ));
            ctx.io
                .stdout
                .write_all(out.as_bytes())
                .map_err(CtlError::failure)?;
            Ok(())
        }
        NodeCommand::Routes { socket } => {
            let r = client(socket)
                .await?
                .routes(pb::RoutesRequest {})
                .await
                .map_err(|e| CtlError::failure(format!("agent routes: {}", e.message())))?
                .into_inner();
            let rows = r
                .routes
                .iter()
                .map(|r| {
                    vec![
                        r.prefix.clone(),
                        if r.bgp_next_hops.is_empty() {
                            "-".to_string()
                        } else {
                            r.bgp_next_hops.join(",")
                        },
                        if r.kernel.is_empty() {
                            "(missing)".to_string()
                        } else {
                            r.kernel.clone()
                        },
                    ]
                })
                .collect();
            let out = plain(&["PREFIX", "BGP BEST NEXT HOPS", "KERNEL"], rows);
            ctx.io
                .stdout
                .write_all(out.as_bytes())
                .map_err(CtlError::failure)?;
            Ok(())
        }
    }
}
