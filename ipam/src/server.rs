//! The `tortie.ipam.v1.Ipam` gRPC service, served on a unix socket. The agent mounts it; the CNI
//! plugin calls it.
//!
//! Access control is two-fold: the socket file is created with mode 0600 (owner only) and each
//! call's peer credentials (`SO_PEERCRED`) must name an allowed user (root only by default), so a
//! socket whose mode was loosened by mistake still refuses other users with `PERMISSION_DENIED`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use tortie_api::AllowedUse;
use tortie_proto::ipam::v1 as pb;
use tortie_proto::ipam::v1::ipam_server::{Ipam as IpamRpc, IpamServer};

use crate::{AllocateRequest, Allocated, Ipam, IpamError};

/// Socket settings.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// Where the socket lives, e.g. `/var/run/tortie/agent.sock`.
    pub path: PathBuf,
    /// File mode of the socket (0600 by default).
    pub mode: u32,
    /// User IDs allowed to call (root only by default).
    pub allowed_uids: BTreeSet<u32>,
}

impl SocketConfig {
    /// Root-only socket at `path`.
    pub fn root_only(path: impl Into<PathBuf>) -> Self {
        SocketConfig {
            path: path.into(),
            mode: 0o600,
            allowed_uids: BTreeSet::from([0]),
        }
    }
}

/// The service: IPAM for one node.
#[derive(Clone)]
pub struct IpamService {
    ipam: Ipam,
    node: String,
    allowed_uids: BTreeSet<u32>,
}

impl IpamService {
    /// Serves `ipam` for `node`.
    pub fn new(ipam: Ipam, node: impl Into<String>, allowed_uids: BTreeSet<u32>) -> Self {
        IpamService {
            ipam,
            node: node.into(),
            allowed_uids,
        }
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let uid = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| c.uid());
        match uid {
            Some(uid) if self.allowed_uids.contains(&uid) => Ok(()),
            Some(uid) => Err(Status::permission_denied(format!(
                "uid {uid} may not use the IPAM service (allowed: {:?})",
                self.allowed_uids
            ))),
            None => Err(Status::permission_denied(
                "caller credentials unknown: only local unix-socket callers are served",
            )),
        }
    }
}

/// Maps IPAM errors to gRPC codes a client can act on.
pub fn status_of(e: IpamError) -> Status {
    let msg = e.to_string();
    match e {
        IpamError::InvalidRequest(_) => Status::invalid_argument(msg),
        IpamError::NoPool { .. } | IpamError::StaleSequence { .. } => {
            Status::failed_precondition(msg)
        }
        IpamError::Exhausted(_) => Status::resource_exhausted(msg),
        IpamError::AddressInUse(_) => Status::already_exists(msg),
        IpamError::Contended => Status::unavailable(msg),
        IpamError::Datastore(d) if d.is_transient() => {
            Status::unavailable(format!("datastore: {d}"))
        }
        IpamError::Datastore(_) => Status::internal(msg),
    }
}

fn to_pb(a: Allocated) -> pb::Address {
    pb::Address {
        address: a.ip.to_string(),
        block: a.block.to_string(),
        pool: a.pool,
        sequence_number: a.sequence_number,
    }
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr, Status> {
    s.parse()
        .map_err(|_| Status::invalid_argument(format!("{field}: {s:?} is not an IP address")))
}

#[tonic::async_trait]
impl IpamRpc for IpamService {
    async fn allocate(
        &self,
        req: Request<pb::AllocateRequest>,
    ) -> Result<Response<pb::AllocateResponse>, Status> {
        self.authorize(&req)?;
        let r = req.into_inner();
        let usage = match r.usage.as_str() {
            "" | "Workload" => AllowedUse::Workload,
            "Tunnel" => AllowedUse::Tunnel,
            other => {
                return Err(Status::invalid_argument(format!(
                    "usage: {other:?} is not Workload or Tunnel"
                )));
            }
        };
        let addresses = r
            .addresses
            .iter()
            .map(|a| parse_ip("addresses", a))
            .collect::<Result<_, _>>()?;
        let request = AllocateRequest {
            handle_id: r.handle_id,
            node: self.node.clone(),
            attributes: r.attributes.into_iter().collect(),
            num_ipv4: r.num_ipv4,
            num_ipv6: r.num_ipv6,
            pools: r.pools,
            addresses,
            usage: Some(usage),
        };
        let got = self.ipam.allocate(&request).await.map_err(status_of)?;
        Ok(Response::new(pb::AllocateResponse {
            addresses: got.into_iter().map(to_pb).collect(),
        }))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.authorize(&req)?;
        let handle = req.into_inner().handle_id;
        if handle.is_empty() {
            return Err(Status::invalid_argument("handle_id is required"));
        }
        let freed = self.ipam.release(&handle).await.map_err(status_of)?;
        Ok(Response::new(pb::ReleaseResponse {
            released: freed.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn release_addresses(
        &self,
        req: Request<pb::ReleaseAddressesRequest>,
    ) -> Result<Response<pb::ReleaseAddressesResponse>, Status> {
        self.authorize(&req)?;
        let addrs = req
            .into_inner()
            .addresses
            .iter()
            .map(|a| Ok((parse_ip("addresses", &a.address)?, a.sequence_number)))
            .collect::<Result<Vec<_>, Status>>()?;
        let freed = self
            .ipam
            .release_addresses(&addrs)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ReleaseAddressesResponse {
            released: freed.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.authorize(&req)?;
        let got = self
            .ipam
            .get(&req.into_inner().handle_id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::GetResponse {
            addresses: got.into_iter().map(to_pb).collect(),
        }))
    }
}

/// Binds the socket (replacing a stale one), sets its mode, and serves until `shutdown`.
pub async fn serve_unix(
    service: IpamService,
    socket: &SocketConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = bind(&socket.path, socket.mode)?;
    tonic::transport::Server::builder()
        .add_service(IpamServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// Creates the socket with `mode`. A directory we create for it is owner-only (0700), so that
/// between `bind` and `chmod` nobody else can reach the socket.
pub fn bind(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}
