//! What the agent reports about itself: a snapshot the control loop refreshes after every step,
//! served as `tortie.agent.v1.Agent` on the agent's unix socket (next to IPAM) for
//! `tortiectl node status` and `tortiectl node routes`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use ipnet::IpNet;
use tonic::{Request, Response, Status};
use tortie_proto::agent::v1 as pb;

use crate::routes::Target;

/// One peer as reported.
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    /// Address.
    pub address: IpAddr,
    /// Calico's peer type words.
    pub kind: String,
    /// Remote AS.
    pub remote_as: u32,
    /// FSM state.
    pub state: String,
    /// Since.
    pub since: SystemTime,
    /// Prefixes received / accepted / advertised.
    pub received: u64,
    /// Accepted by import policy.
    pub accepted: u64,
    /// Advertised to the peer.
    pub advertised: u64,
    /// Why it last went down.
    pub last_error: String,
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// Our AS.
    pub as_number: u32,
    /// Peers.
    pub peers: Vec<PeerSnapshot>,
    /// Blocks this node owns.
    pub blocks: Vec<IpNet>,
    /// Prefix → BGP best next hops.
    pub bgp: BTreeMap<IpNet, Vec<IpAddr>>,
    /// Prefix → what the kernel has (our protocol).
    pub kernel: BTreeMap<IpNet, Target>,
    /// BGP converged (graceful restart over, or never restarting).
    pub ready: bool,
    /// The datastore answered in the last control-loop step.
    pub datastore_ok: bool,
    /// Per pool: name → (addresses in use, addresses in the pool), refreshed each resync.
    pub pools: BTreeMap<String, (u64, u128)>,
}

/// Shared between the control loop (writer) and the gRPC service (readers).
pub type Shared = Arc<RwLock<Snapshot>>;

fn kernel_text(t: &Target) -> String {
    match t {
        Target::Blackhole => "blackhole".into(),
        Target::Via(hops) => format!(
            "via {}",
            hops.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Target::Device(i) => format!("dev #{i}"),
        Target::Onlink(gw, _) => format!("via {gw} dev {} onlink", crate::vxlan::DEVICE),
    }
}

/// The gRPC service.
pub struct AgentService {
    /// The snapshot.
    pub shared: Shared,
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.shared.read().expect("not poisoned").clone();
        Ok(Response::new(pb::StatusResponse {
            node: s.node,
            address: s.address,
            as_number: s.as_number,
            peers: s
                .peers
                .iter()
                .map(|p| pb::Peer {
                    address: p.address.to_string(),
                    r#type: p.kind.clone(),
                    remote_as: p.remote_as,
                    state: p.state.clone(),
                    since_unix: p
                        .since
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                    prefixes_received: p.received,
                    prefixes_accepted: p.accepted,
                    prefixes_advertised: p.advertised,
                    last_error: p.last_error.clone(),
                })
                .collect(),
            blocks: s.blocks.iter().map(ToString::to_string).collect(),
            routes_programmed: s.kernel.len() as u64,
            ready: s.ready && s.datastore_ok,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn routes(
        &self,
        _req: Request<pb::RoutesRequest>,
    ) -> Result<Response<pb::RoutesResponse>, Status> {
        let s = self.shared.read().expect("not poisoned").clone();
        let mut prefixes: Vec<IpNet> = s.bgp.keys().chain(s.kernel.keys()).copied().collect();
        prefixes.extend(s.blocks.iter().copied());
        prefixes.sort();
        prefixes.dedup();
        Ok(Response::new(pb::RoutesResponse {
            routes: prefixes
                .iter()
                .map(|p| pb::Route {
                    prefix: p.to_string(),
                    bgp_next_hops: s
                        .bgp
                        .get(p)
                        .map(|h| h.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    kernel: s.kernel.get(p).map(kernel_text).unwrap_or_default(),
                })
                .collect(),
        }))
    }
}
