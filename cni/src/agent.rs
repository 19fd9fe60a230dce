//! The agent's gRPC `Ipam` service, as the plugin uses it: one connection per invocation,
//! every call bounded by the configured timeout, gRPC status mapped to CNI error codes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use tonic::Code;
use tonic::transport::Channel;
use tortie_proto::ipam::v1 as pb;
use tortie_proto::ipam::v1::ipam_client::IpamClient;

use crate::spec::{CniError, code};

/// A connected client (cheap to clone: clones share the connection).
#[derive(Clone)]
pub struct Agent {
    client: IpamClient<Channel>,
    timeout: Duration,
}

/// Why the agent could not be used.
#[derive(Debug)]
pub enum AgentError {
    /// Not reachable (socket missing, refused, timed out): worth retrying later.
    Unreachable(String),
    /// It answered with an error.
    Refused(tonic::Status),
}

impl AgentError {
    /// As a CNI error.
    pub fn to_cni(&self, what: &str) -> CniError {
        match self {
            AgentError::Unreachable(why) => CniError::new(
                code::TRY_AGAIN,
                format!("tortie agent unreachable ({what})"),
                why.clone(),
            ),
            AgentError::Refused(s) => {
                let c = match s.code() {
                    Code::ResourceExhausted => code::ADDRESSES_EXHAUSTED,
                    Code::Unavailable | Code::DeadlineExceeded => code::TRY_AGAIN,
                    _ => code::IPAM,
                };
                CniError::new(c, format!("IPAM {what} failed"), s.message().to_string())
            }
        }
    }
}

fn status(s: tonic::Status) -> AgentError {
    match s.code() {
        // Transport-level failures surface as Unavailable/Unknown with no server behind them.
        Code::Unavailable if s.message().contains("transport") => {
            AgentError::Unreachable(s.message().to_string())
        }
        Code::DeadlineExceeded | Code::Cancelled => {
            AgentError::Unreachable(s.message().to_string())
        }
        _ => AgentError::Refused(s),
    }
}

impl Agent {
    /// Connects to the agent's socket.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Agent, AgentError> {
        if !socket.exists() {
            return Err(AgentError::Unreachable(format!(
                "{} does not exist (is tortie-agent running?)",
                socket.display()
            )));
        }
        let channel = tortie_proto::connect_unix(socket, timeout)
            .await
            .map_err(|e| AgentError::Unreachable(format!("{}: {e}", socket.display())))?;
        Ok(Agent {
            client: IpamClient::new(channel),
            timeout,
        })
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, AgentError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(status(s)),
            Err(_) => Err(AgentError::Unreachable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Allocates addresses for `handle`.
    pub async fn allocate(
        &mut self,
        handle: &str,
        attributes: HashMap<String, String>,
        v4: bool,
        v6: bool,
        pools: Vec<String>,
    ) -> Result<Vec<IpAddr>, AgentError> {
        let mut c = self.client.clone();
        let resp = self
            .bounded(c.allocate(pb::AllocateRequest {
                handle_id: handle.to_string(),
                attributes,
                num_ipv4: u32::from(v4),
                num_ipv6: u32::from(v6),
                pools,
                addresses: Vec::new(),
                usage: String::new(),
            }))
            .await?;
        resp.addresses
            .iter()
            .map(|a| {
                a.address.parse().map_err(|_| {
                    AgentError::Refused(tonic::Status::internal(format!(
                        "agent returned {:?}, not an address",
                        a.address
                    )))
                })
            })
            .collect()
    }

    /// Releases everything held by `handle` (nothing held is fine).
    pub async fn release(&mut self, handle: &str) -> Result<Vec<String>, AgentError> {
        let mut c = self.client.clone();
        Ok(self
            .bounded(c.release(pb::ReleaseRequest {
                handle_id: handle.to_string(),
            }))
            .await?
            .released)
    }

    /// The addresses `handle` holds.
    pub async fn get(&mut self, handle: &str) -> Result<Vec<IpAddr>, AgentError> {
        let mut c = self.client.clone();
        let resp = self
            .bounded(c.get(pb::GetRequest {
                handle_id: handle.to_string(),
            }))
            .await?;
        Ok(resp
            .addresses
            .iter()
            .filter_map(|a| a.address.parse().ok())
            .collect())
    }
}
