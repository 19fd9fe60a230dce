//! # tortie-proto: gRPC definitions
//!
//! `tortie.ipam.v1.Ipam` (the agent's IPAM service, called by the CNI plugin over a unix
//! socket) and `tortie.agent.v1.Agent` (its status, read by `tortiectl node`). Code is generated at build time from `proto/` with protox, so no `protoc` is needed.

/// `tortie.ipam.v1`.
pub mod ipam {
    /// Version 1.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("tortie.ipam.v1");
    }
}

/// `tortie.agent.v1`.
pub mod agent {
    /// Version 1.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("tortie.agent.v1");
    }
}

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Connects to a gRPC server on a unix socket.
pub async fn connect_unix(
    path: &Path,
    timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    // The authority is ignored for unix sockets; tonic reads the path from the URI.
    Endpoint::from_shared(format!("unix://{}", path.display()))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
}
