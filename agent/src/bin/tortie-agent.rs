//! `tortie-agent`: serves IPAM for this node on a unix socket and completes deferred releases.
//! Stops on SIGTERM or SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tortie_datastore::Datastore;
use tortie_ipam::Ipam;
use tortie_ipam::server::{IpamService, SocketConfig, serve_unix};

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
        .init();
    let args = Args::parse();
    let ds = Datastore::open(&args.datastore).await?;
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
    let socket = SocketConfig::root_only(&args.socket);
    let service = IpamService::new(ipam, args.node.clone(), socket.allowed_uids.clone());
    tracing::info!(socket = %args.socket.display(), node = %args.node, "serving IPAM");
    serve_unix(service, &socket, async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    Ok(())
}
