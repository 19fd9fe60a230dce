//! Health and metrics over plain HTTP on a configurable address (`--health-listen`, Calico's
//! port 9099 by default, on localhost):
//!
//! - `/livez`: 200 while the process serves at all.
//! - `/readyz`: 200 when the datastore answered in the last control-loop step, BGP has
//!   converged, and — in the first 30 s — every peer is Established, later at least one (a node
//!   with no peers configured is ready once the datastore answers). 503 otherwise, with why.
//! - `/status`: the agent's status as JSON (what `tortiectl node status --all` reads from each
//!   node; bind `--health-listen` to the node's address for that).
//! - `/metrics`: Prometheus text (prometheus-client): peers by state, prefixes received per
//!   peer, routes programmed, blocks owned, IPAM utilisation per pool, control-loop (reconcile)
//!   latency, gRPC latency per method.
//!
//! The HTTP handling is deliberately minimal (one GET per connection); it is a probe endpoint,
//! not a web server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::status::Shared;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// gRPC latency per method (`/tortie.ipam.v1.Ipam/Allocate`, …).
pub type GrpcLatency = Family<Vec<(String, String)>, Histogram, fn() -> Histogram>;

/// Metrics fed directly (the rest is derived from the status snapshot).
#[derive(Clone)]
pub struct Metrics {
    /// Seconds per control-loop step (datastore reads, BGP updates, kernel reconcile).
    pub reconcile: Histogram,
    /// Seconds per gRPC call on the agent's socket, by method.
    pub grpc: GrpcLatency,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconcile: latency_histogram(),
            grpc: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// A tower layer timing every gRPC call into [`Metrics::grpc`].
#[derive(Clone)]
pub struct GrpcTiming(pub GrpcLatency);

impl<S> tower::Layer<S> for GrpcTiming {
    type Service = Timed<S>;
    fn layer(&self, inner: S) -> Timed<S> {
        Timed {
            inner,
            latency: self.0.clone(),
        }
    }
}

/// The service [`GrpcTiming`] wraps around.
#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
    latency: GrpcLatency,
}

impl<S, B> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let started = Instant::now();
        let fut = self.inner.call(req);
        let latency = self.latency.clone();
        Box::pin(async move {
            let out = fut.await;
            latency
                .get_or_create(&vec![("method".into(), method)])
                .observe(started.elapsed().as_secs_f64());
            out
        })
    }
}

/// Whether the agent is ready, and if not why.
pub fn readiness(shared: &Shared, uptime: Duration) -> Result<(), String> {
    let s = shared.read().expect("not poisoned");
    if !s.datastore_ok {
        return Err("the datastore did not answer in the last step".into());
    }
    if !s.ready {
        return Err("BGP has not converged yet".into());
    }
    let up = s.peers.iter().filter(|p| p.state == "Established").count();
    if uptime < Duration::from_secs(30) && up < s.peers.len() {
        return Err(format!("{up} of {} peers Established", s.peers.len()));
    }
    if !s.peers.is_empty() && up == 0 {
        return Err("no peer Established".into());
    }
    Ok(())
}

fn render_metrics(shared: &Shared, metrics: &Metrics) -> String {
    let mut registry = Registry::with_prefix("tortie");
    let s = shared.read().expect("not poisoned").clone();
    let by_state = Family::<Vec<(String, String)>, Gauge>::default();
    for state in [
        "Idle",
        "Connect",
        "Active",
        "OpenSent",
        "OpenConfirm",
        "Established",
    ] {
        let n = s.peers.iter().filter(|p| p.state == state).count();
        by_state
            .get_or_create(&vec![("state".into(), state.into())])
            .set(n as i64);
    }
    registry.register("bgp_peers", "BGP peers by FSM state", by_state);
    let prefixes = Family::<Vec<(String, String)>, Gauge>::default();
    for p in &s.peers {
        prefixes
            .get_or_create(&vec![("peer".into(), p.address.to_string())])
            .set(p.accepted as i64);
    }
    registry.register(
        "bgp_prefixes_accepted",
        "Prefixes accepted from each peer",
        prefixes,
    );
    let routes: Gauge = Gauge::default();
    routes.set(s.kernel.len() as i64);
    registry.register(
        "routes_programmed",
        "Kernel routes with our protocol number",
        routes,
    );
    let blocks: Gauge = Gauge::default();
    blocks.set(s.blocks.len() as i64);
    registry.register("blocks_owned", "IPAM blocks affine to this node", blocks);
    let in_use = Family::<Vec<(String, String)>, Gauge>::default();
    let size = Family::<Vec<(String, String)>, Gauge>::default();
    for (pool, (used, total)) in &s.pools {
        in_use
            .get_or_create(&vec![("pool".into(), pool.clone())])
            .set(*used as i64);
        size.get_or_create(&vec![("pool".into(), pool.clone())])
            .set(i64::try_from(*total).unwrap_or(i64::MAX));
    }
    registry.register(
        "ipam_addresses_in_use",
        "Allocated addresses per IP pool (cluster-wide)",
        in_use,
    );
    registry.register("ipam_pool_size", "Addresses per IP pool", size);
    registry.register(
        "reconcile_seconds",
        "Duration of one control-loop step",
        metrics.reconcile.clone(),
    );
    registry.register(
        "grpc_seconds",
        "Duration of gRPC calls on the agent's socket, by method",
        metrics.grpc.clone(),
    );
    let mut out = String::new();
    let _ = encode(&mut out, &registry);
    out
}

/// The status report as JSON, the same fields as `tortie.agent.v1.Agent/Status`, for
/// `tortiectl node status --all` (which reads every node's over HTTP).
fn status_json(shared: &Shared) -> String {
    let s = shared.read().expect("not poisoned").clone();
    serde_json::json!({
        "node": s.node,
        "address": s.address,
        "asNumber": s.as_number,
        "ready": s.ready && s.datastore_ok,
        "blocks": s.blocks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "routesProgrammed": s.kernel.len(),
        "peers": s.peers.iter().map(|p| serde_json::json!({
            "address": p.address.to_string(),
            "type": p.kind,
            "state": p.state,
            "sinceUnix": p.since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "lastError": p.last_error,
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Serves until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Shared,
    metrics: Metrics,
    started: Instant,
) {
    let shared = Arc::new(shared);
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let (shared, metrics) = (shared.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("");
            let (code, body, kind) = match path {
                "/livez" => (200, "ok\n".to_string(), "text/plain"),
                "/readyz" => match readiness(&shared, started.elapsed()) {
                    Ok(()) => (200, "ok\n".to_string(), "text/plain"),
                    Err(why) => (503, format!("not ready: {why}\n"), "text/plain"),
                },
                "/status" => (200, status_json(&shared), "application/json"),
                "/metrics" => (
                    200,
                    render_metrics(&shared, &metrics),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                _ => (404, "not found\n".to_string(), "text/plain"),
            };
            let reason = match code {
                200 => "OK",
                503 => "Service Unavailable",
                _ => "Not Found",
            };
            let response = format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::PeerSnapshot;

    fn peer(state: &str) -> PeerSnapshot {
        PeerSnapshot {
            address: "198.18.0.1".parse().unwrap(),
            kind: "global".into(),
            remote_as: 65000,
            state: state.into(),
            since: std::time::SystemTime::now(),
            received: 0,
            accepted: 0,
            advertised: 0,
            last_error: String::new(),
        }
    }

    #[test]
    fn readiness_follows_the_issue_rules() {
        let shared = Shared::default();
        assert!(readiness(&shared, Duration::ZERO).is_err(), "no step yet");
        {
            let mut s = shared.write().unwrap();
            s.datastore_ok = true;
            s.ready = true;
        }
        assert!(
            readiness(&shared, Duration::ZERO).is_ok(),
            "no peers configured"
        );
        shared.write().unwrap().peers = vec![peer("Established"), peer("Active")];
        let early = readiness(&shared, Duration::from_secs(5)).unwrap_err();
        assert!(early.contains("1 of 2"), "{early}");
        assert!(
            readiness(&shared, Duration::from_secs(31)).is_ok(),
            "later: one is enough"
        );
        shared.write().unwrap().peers = vec![peer("Active")];
        assert!(readiness(&shared, Duration::from_secs(31)).is_err());
        shared.write().unwrap().datastore_ok = false;
        assert!(
            readiness(&shared, Duration::from_secs(31))
                .unwrap_err()
                .contains("datastore")
        );
    }
}
