//! `tortie-agent`: serves IPAM for this node on a unix socket and completes deferred releases.
//! Stops on SIGTERM or SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tortie_datastore::Datastore;
use tortie_ipam::Ipam;
use tortie_ipam::server::{IpamService, SocketConfig};

#[derive(Parser)]
#[command(version, about = "tortie per-node agent")]
struct Args {
    /// Datastore URL (`sqlite:///path/to/file.db`, `etcd://host:port`).
    #[arg(long, env = "TORTIE_DATASTORE")]
    datastore: String,
    /// This node's name.
    #[arg(long, env = "TORTIE_NODENAME")]
    node: String,
    /// The gRPC socket the CNI plugin calls.
    #[arg(long, default_value = "/var/run/tortie/agent.sock")]
    socket: PathBuf,
    /// The CNI plugin's `dataDir` (where it leaves deferred releases).
    #[arg(long, default_value = "/var/lib/tortie/cni")]
    cni_data_dir: PathBuf,
    /// Pod MTU published to the CNI plugin (0: the smallest MTU of this host's up links).
    #[arg(long, default_value_t = 0)]
    mtu: u32,
    /// Protocol number of pod host routes published to the CNI plugin.
    #[arg(long, default_value_t = 80)]
    route_protocol: u8,
    /// This node's IPv4 address with prefix length (default: first found, Calico's rules).
    #[arg(long)]
    ip: Option<String>,
    /// This node's IPv6 address with prefix length (dual stack: next hop of its IPv6 blocks).
    #[arg(long)]
    ip6: Option<String>,
    /// How to find the node's IPv6 address when --ip6 is not given (same methods as for
    /// IPv4); without either, the node is IPv4-only.
    #[arg(long, env = "TORTIE_IP6_AUTODETECTION_METHOD")]
    ip6_autodetection_method: Option<String>,
    /// How to find the node's IPv4 address when --ip is not given: first-found,
    /// interface=REGEX, skip-interface=REGEX, cidr=CIDR[,CIDR…], can-reach=IP.
    #[arg(
        long,
        env = "TORTIE_IP_AUTODETECTION_METHOD",
        default_value = "first-found"
    )]
    ip_autodetection_method: String,
    /// This node's AS when its Node resource does not set one.
    #[arg(long = "as")]
    as_number: Option<u32>,
    /// BGP listen address.
    #[arg(long, default_value = "0.0.0.0:179")]
    bgp_listen: std::net::SocketAddr,
    /// Serve IPAM only: no BGP, no kernel routes (CNI-only tests, other routing daemons).
    #[arg(long)]
    no_bgp: bool,
    /// The control loop runs on every datastore change (watches) and at least this often.
    #[arg(long, default_value_t = 2000)]
    poll_ms: u64,
    /// Full kernel route resync interval.
    #[arg(long, default_value_t = 90)]
    resync_s: u64,
    /// Pods younger than this are left to the CNI plugin; older ones get a missing route back.
    #[arg(long, default_value_t = 10)]
    pod_route_grace_s: u64,
    /// IPAM garbage collection interval (0: off).
    #[arg(long, default_value_t = 5)]
    gc_interval_s: u64,
    /// How long an allocation's owner must be gone before GC releases it.
    #[arg(long, default_value_t = 10)]
    gc_grace_s: u64,
    /// Health and metrics (`/livez`, `/readyz`, `/metrics`); empty: off.
    #[arg(long, default_value = "127.0.0.1:9099")]
    health_listen: String,
    /// How often to look for deferred releases.
    #[arg(long, default_value_t = 5000)]
    sweep_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: log files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let ds = Datastore::open(&args.datastore).await?;
    let ds_for_routing = ds.clone();
    // In a Kubernetes cluster: default pool from kubeadm, pod-aware GC, pod annotations.
    let cluster = tortie_agent::cluster::Cluster::for_datastore(&args.datastore).await?;
    let made = match &cluster {
        Some(c) => {
            let subnets = c.kubeadm_pod_subnets().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "kubeadm-config not readable; default pool from the environment or 192.168.0.0/16");
                Vec::new()
            });
            let env = tortie_agent::cluster::default_pool_env(|k| std::env::var(k).ok(), &subnets);
            tortie_agent::default_pools(&ds, env).await?
        }
        None => tortie_agent::default_pools(&ds, |k| std::env::var(k).ok()).await?,
    };
    if !made.is_empty() {
        tracing::info!(pools = ?made, "created default pools from the environment");
    }
    let ds_for_labels = ds.clone();
    let ipam = Ipam::new(ds);
    // Claims a crash left half-done are finished or rolled back before we serve.
    ipam.recover_node(&args.node).await?;
    let settings = tortie_agent::publish_node_settings(
        &args.cni_data_dir,
        (args.mtu != 0).then_some(args.mtu),
        args.route_protocol,
    )
    .await?;
    tracing::info!(?settings, "published for the CNI plugin");
    let swept = tortie_agent::sweep_pending_releases(&ipam, &args.cni_data_dir).await;
    tracing::info!(swept, "deferred releases completed at start-up");
    {
        let ipam = ipam.clone();
        let dir = args.cni_data_dir.clone();
        let every = Duration::from_millis(args.sweep_interval_ms.max(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                tortie_agent::sweep_pending_releases(&ipam, &dir).await;
            }
        });
    }
    if args.gc_interval_s > 0 {
        let ipam = ipam.clone();
        let owners = tortie_agent::LocalOwners {
            node: args.node.clone(),
            cni_data_dir: args.cni_data_dir.clone(),
        };
        let every = Duration::from_secs(args.gc_interval_s);
        let grace = Duration::from_secs(args.gc_grace_s);
        let cluster = cluster.clone();
        let node = args.node.clone();
        tokio::spawn(async move {
            let mut state = tortie_ipam::gc::GcState::default();
            loop {
                tokio::time::sleep(every).await;
                // In a cluster, pods decide (a snapshot taken before the pass reads any
                // allocation); standalone, the CNI plugin's attachment records do.
                let pass = match &cluster {
                    Some(c) => match c.snapshot(&node).await {
                        // No pod at all is more likely a view we must not trust (our own
                        // DaemonSet pod runs here) than a reason to free every address.
                        Ok(snap) if snap.pods.is_empty() => {
                            tracing::warn!(
                                "the Kubernetes API lists no pod on this node; IPAM GC skipped"
                            );
                            continue;
                        }
                        Ok(snap) => {
                            if let Err(e) = tortie_agent::cluster::sync_node_labels(
                                &ds_for_labels,
                                &node,
                                &snap,
                            )
                            .await
                            {
                                tracing::warn!(error = %e, "Node labels not copied from Kubernetes");
                            }
                            if let Ok(allocs) = ipam.allocations().await
                                && let Err(e) = c.annotate_pods(&node, &snap, &allocs).await
                            {
                                tracing::warn!(error = %e, "pod annotations not written");
                            }
                            ipam.gc_pass(&mut state, &snap, grace).await
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "pods not listed; IPAM GC skipped");
                            continue;
                        }
                    },
                    None => ipam.gc_pass(&mut state, &owners, grace).await,
                };
                match pass {
                    Ok(r) if !r.released_handles.is_empty() || !r.released_blocks.is_empty() => {
                        tracing::info!(handles = ?r.released_handles, blocks = ?r.released_blocks, "IPAM GC released")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "IPAM GC pass failed"),
                }
            }
        });
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let shared = tortie_agent::status::Shared::default();
    let metrics = tortie_agent::health::Metrics::default();
    let metrics_for_grpc = metrics.grpc.clone();
    if !args.health_listen.is_empty() {
        match tokio::net::TcpListener::bind(&args.health_listen).await {
            Ok(l) => {
                tokio::spawn(tortie_agent::health::serve(
                    l,
                    shared.clone(),
                    metrics.clone(),
                    std::time::Instant::now(),
                ));
            }
            // Probes are optional: a busy port must not keep the node off the network.
            Err(e) => {
                tracing::warn!(listen = %args.health_listen, error = %e, "health endpoint not served")
            }
        }
    }
    let routing = if args.no_bgp {
        // IPAM only: ready as soon as it serves.
        let mut s = shared.write().expect("not poisoned");
        s.ready = true;
        s.datastore_ok = true;
        None
    } else {
        tortie_agent::enable_forwarding()?;
        let address = match &args.ip {
            Some(a) => a
                .parse::<tortie_api::values::InterfaceAddress>()
                .map_err(|e| anyhow::anyhow!("--ip: {e}"))?,
            None => tortie_agent::node_address(
                &args.ip_autodetection_method,
                false,
                cluster.as_ref(),
                &args.node,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}; give --ip"))?,
        };
        let address6 = match (&args.ip6, &args.ip6_autodetection_method) {
            (None, Some(m)) => Some(
                tortie_agent::node_address(m, true, cluster.as_ref(), &args.node)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}; give --ip6"))?,
            ),
            _ => None,
        };
        let address6 = match &args.ip6 {
            None => address6,
            Some(a) => Some(
                a.parse::<tortie_api::values::InterfaceAddress>()
                    .ok()
                    .filter(|a| a.addr().is_ipv6())
                    .ok_or_else(|| anyhow::anyhow!("--ip6: {a:?} is not an IPv6 address/prefix"))?,
            ),
        };
        let cfg = tortie_agent::daemon::Config {
            node: args.node.clone(),
            address,
            address6,
            as_number: args.as_number,
            bgp_listen: args.bgp_listen,
            route_protocol: args.route_protocol,
            poll: Duration::from_millis(args.poll_ms.max(50)),
            resync: Duration::from_secs(args.resync_s.max(1)),
            graceful_restart_time: 120,
            restart_settle: Duration::from_secs(60),
            cni_data_dir: args.cni_data_dir.clone(),
            pod_route_grace: Duration::from_secs(args.pod_route_grace_s),
        };
        let ds = ds_for_routing;
        let shared_for_loop = shared.clone();
        let rx = stop_rx.clone();
        Some(tokio::spawn(async move {
            if let Err(e) =
                tortie_agent::daemon::run(cfg, ds, shared_for_loop, metrics, stopped(rx)).await
            {
                tracing::error!(error = %e, "routing stopped");
            }
        }))
    };
    let socket = SocketConfig::root_only(&args.socket);
    let service = IpamService::new(ipam, args.node.clone(), socket.allowed_uids.clone());
    tracing::info!(socket = %args.socket.display(), node = %args.node, "serving IPAM");
    // One socket, two services: IPAM for the CNI plugin, status for tortiectl.
    let listener = tortie_ipam::server::bind(&socket.path, socket.mode)?;
    tonic::transport::Server::builder()
        .layer(tortie_agent::health::GrpcTiming(metrics_for_grpc))
        .add_service(tortie_proto::ipam::v1::ipam_server::IpamServer::new(
            service,
        ))
        .add_service(tortie_proto::agent::v1::agent_server::AgentServer::new(
            tortie_agent::status::AgentService { shared },
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            stopped(stop_rx),
        )
        .await?;
    if let Some(r) = routing {
        let _ = r.await;
    }
    Ok(())
}
