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
        NodeCommand::Status {
            all: true, port, ..
        } => status_all(ctx, *port).await,
        NodeCommand::Status { socket, .. } => {
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

/// One node's `/status` over HTTP (a bare GET; the agent's endpoint is as small).
fn fetch_status(addr: std::net::SocketAddr) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    // One write: the agent answers after its first read and closes.
    let request = format!("GET /status HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let body = text.split("\r\n\r\n").nth(1).ok_or("no HTTP body")?;
    serde_json::from_str(body).map_err(|e| e.to_string())
}

async fn status_all(ctx: &mut Ctx<'_>, port: u16) -> Result<(), CtlError> {
    let ds = ctx.existing_datastore().await?;
    let nodes = ds
        .list::<tortie_api::NodeSpec>(None)
        .await
        .map_err(CtlError::failure)?
        .items;
    let mut out = String::new();
    for n in &nodes {
        let name = &n.metadata.name;
        let Some(addr) = n.spec.bgp.as_ref().and_then(|b| b.ipv4_address) else {
            out.push_str(&format!("\n{name}: no BGP address\n"));
            continue;
        };
        match fetch_status(std::net::SocketAddr::new(addr.addr(), port)) {
            Err(e) => out.push_str(&format!("\n{name} ({}): unreachable ({e})\n", addr.addr())),
            Ok(s) => {
                out.push_str(&format!(
                    "\n{name} ({}): {}\n",
                    addr.addr(),
                    if s["ready"] == true {
                        "ready"
                    } else {
                        "not ready"
                    }
                ));
                let rows = s["peers"]
                    .as_array()
                    .map(|peers| {
                        peers
                            .iter()
                            .map(|p| {
                                let state = p["state"].as_str().unwrap_or("");
                                vec![
                                    p["address"].as_str().unwrap_or("").to_string(),
                                    p["type"].as_str().unwrap_or("").to_string(),
                                    state_word(state).to_string(),
                                    since(p["sinceUnix"].as_i64().unwrap_or(0)),
                                    state.to_string(),
                                ]
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                out.push_str(&plain(
                    &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
                    rows,
                ));
            }
        }
    }
    ctx.io
        .stdout
        .write_all(out.as_bytes())
        .map_err(CtlError::failure)
}
