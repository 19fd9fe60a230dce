//! # tortie-agent: the per-node daemon
//!
//! It serves the node's IPAM over the gRPC unix socket the CNI plugin calls (and finishes the
//! releases the plugin deferred while it was down), runs the embedded BGP speaker wired from the
//! datastore ([`daemon`]), reconciles kernel routes ([`routes`] is the pure plan, [`kernel`]
//! and [`nexthop`] the netlink driver), VXLAN ([`vxlan`]) and natOutgoing ([`nat`]), reports
//! status and health ([`status`], [`health`]), and in a Kubernetes cluster learns pods, nodes
//! and kubeadm's pod subnet from the API ([`cluster`]). docs/agent.md tells the whole story.

pub mod autodetect;
pub mod cluster;
pub mod daemon;
pub mod health;
pub mod kernel;
pub mod nat;
pub mod nexthop;
pub mod routes;
pub mod status;
pub mod vxlan;

use std::path::Path;

use tortie_cni::spec::NodeSettings;
use tortie_ipam::Ipam;

/// Writes `<cni_data_dir>/node.json` (MTU, route protocol) for the CNI plugin; an MTU of `None`
/// is taken from this host's up links. Written to a temporary file and renamed.
pub async fn publish_node_settings(
    cni_data_dir: &Path,
    mtu: Option<u32>,
    route_protocol: u8,
) -> anyhow::Result<NodeSettings> {
    let mtu = match mtu {
        Some(m) => Some(m),
        None => {
            let h = tortie_cni::dataplane::connect(None).map_err(|e| anyhow::anyhow!("{e}"))?;
            tortie_cni::dataplane::uplink_mtu(&h)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    let settings = NodeSettings {
        mtu,
        route_protocol: Some(route_protocol),
    };
    std::fs::create_dir_all(cni_data_dir)?;
    let tmp = cni_data_dir.join(format!(".{}.tmp", NodeSettings::FILE));
    std::fs::write(&tmp, serde_json::to_vec(&settings)?)?;
    std::fs::rename(&tmp, cni_data_dir.join(NodeSettings::FILE))?;
    Ok(settings)
}

/// Releases every pending release the CNI plugin left under `cni_data_dir`; returns how many
/// were completed. A release that fails stays pending for the next sweep.
pub async fn sweep_pending_releases(ipam: &Ipam, cni_data_dir: &Path) -> usize {
    let mut done = 0;
    for (handle, file) in tortie_cni::state::pending_releases_in(cni_data_dir) {
        match ipam.release(&handle).await {
            Ok(freed) => {
                tracing::info!(%handle, ?freed, "deferred release completed");
                if tortie_cni::state::finish_release(&file).is_ok() {
                    done += 1;
                }
            }
            // A request that can never succeed (a malformed handle) is dropped, not retried
            // forever.
            Err(tortie_ipam::IpamError::InvalidRequest(why)) => {
                tracing::warn!(%handle, %why, "deferred release is invalid; dropped");
                let _ = tortie_cni::state::finish_release(&file);
            }
            Err(e) => tracing::warn!(%handle, error = %e, "deferred release failed; will retry"),
        }
    }
    done
}

/// Standalone liveness for IPAM GC: an allocation made for this node is alive while the CNI
/// plugin still has its attachment record (DEL removes it; a pod whose DEL never came is
/// cleaned by the plugin's GC). Other nodes' allocations are not ours to judge.
pub struct LocalOwners {
    /// This node.
    pub node: String,
    /// The plugin's `dataDir`.
    pub cni_data_dir: std::path::PathBuf,
}

impl tortie_ipam::gc::OwnerCheck for LocalOwners {
    fn allocation(&self, a: &tortie_ipam::gc::AllocationInfo) -> tortie_ipam::gc::Liveness {
        use tortie_ipam::gc::Liveness;
        if a.attributes.get(tortie_ipam::attr::NODE) != Some(&self.node)
            || !a.attributes.contains_key("containerID")
        {
            return Liveness::Unknown;
        }
        if tortie_cni::state::State::new(&self.cni_data_dir)
            .load(&a.handle_id)
            .is_some()
        {
            Liveness::Alive
        } else {
            Liveness::Gone
        }
    }
}

/// Creates default pools from the environment when the datastore has none, as calico-node
/// does: `TORTIE_IPV4POOL_CIDR` (with `TORTIE_IPV4POOL_BLOCK_SIZE`,
/// `TORTIE_IPV4POOL_NAT_OUTGOING`, `TORTIE_IPV4POOL_VXLAN`) and the `IPV6` equivalents. Returns
/// the names created. Racing agents are fine: the datastore refuses the second create.
pub async fn default_pools(
    ds: &tortie_datastore::Datastore,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    if !ds
        .list::<tortie_api::IPPoolSpec>(None)
        .await?
        .items
        .is_empty()
    {
        return Ok(Vec::new());
    }
    let mut made = Vec::new();
    for (family, name) in [
        ("IPV4", "default-ipv4-ippool"),
        ("IPV6", "default-ipv6-ippool"),
    ] {
        let Some(cidr) = env(&format!("TORTIE_{family}POOL_CIDR")) else {
            continue;
        };
        let mut spec = serde_json::json!({ "cidr": cidr });
        if let Some(b) = env(&format!("TORTIE_{family}POOL_BLOCK_SIZE")) {
            spec["blockSize"] = serde_json::json!(b.parse::<u8>().map_err(|_| anyhow::anyhow!(
                "TORTIE_{family}POOL_BLOCK_SIZE: {b:?} is not a number"
            ))?);
        }
        if let Some(n) = env(&format!("TORTIE_{family}POOL_NAT_OUTGOING")) {
            spec["natOutgoing"] = serde_json::json!(n == "true");
        }
        if let Some(v) = env(&format!("TORTIE_{family}POOL_VXLAN")) {
            spec["vxlanMode"] = serde_json::json!(v);
        }
        let spec: tortie_api::IPPoolSpec = serde_json::from_value(spec)
            .map_err(|e| anyhow::anyhow!("TORTIE_{family}POOL_*: {e}"))?;
        match ds.create(tortie_api::Object::new(name, spec)).await {
            Ok(_) => made.push(name.to_string()),
            Err(e) if e.to_string().contains("exists") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(made)
}

/// IPv4 and IPv6 forwarding in the agent's own network namespace (the node's): pods are routed.
pub fn enable_forwarding() -> std::io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    if std::path::Path::new("/proc/sys/net/ipv6/conf/all/forwarding").exists() {
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

/// The node's address of one family found by `method` (see [`autodetect`]), with the reason
/// logged.
pub async fn detect_address(
    method: &str,
    ipv6: bool,
) -> anyhow::Result<tortie_api::values::InterfaceAddress> {
    let method = autodetect::Method::parse(method).map_err(|e| anyhow::anyhow!(e))?;
    let h = kernel::connect()?;
    let candidates = kernel::interface_addresses(&h).await?;
    let (net, why) =
        autodetect::choose_family(&method, &candidates, autodetect::source_towards, ipv6)
            .map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(address = %net, %why, ipv6, "node address autodetected");
    Ok(tortie_api::values::InterfaceAddress(net))
}

/// The node's address of one family: `kubernetes-internal-ip` takes the Kubernetes Node's
/// `InternalIP` (with the prefix length of the interface that holds it, else a host prefix);
/// every other method is [`detect_address`].
pub async fn node_address(
    method: &str,
    ipv6: bool,
    cluster: Option<&cluster::Cluster>,
    node: &str,
) -> anyhow::Result<tortie_api::values::InterfaceAddress> {
    if method != "kubernetes-internal-ip" {
        return detect_address(method, ipv6).await;
    }
    let cluster = cluster.ok_or_else(|| {
        anyhow::anyhow!("kubernetes-internal-ip needs the Kubernetes datastore (kubernetes:)")
    })?;
    let ip = cluster.internal_ip(node, ipv6).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "the Kubernetes Node {node:?} has no {} InternalIP",
            if ipv6 { "IPv6" } else { "IPv4" }
        )
    })?;
    let h = kernel::connect()?;
    let on_interface = kernel::interface_addresses(&h)
        .await?
        .into_iter()
        .find(|(_, net)| net.addr() == ip);
    let net = match &on_interface {
        Some((_, net)) => *net,
        None => ipnet::IpNet::from(ip),
    };
    tracing::info!(address = %net, interface = ?on_interface.map(|(i, _)| i), "node address from the Kubernetes Node's InternalIP");
    Ok(tortie_api::values::InterfaceAddress(net))
}
