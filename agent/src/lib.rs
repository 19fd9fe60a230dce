//! # tortie-agent: the per-node daemon
//!
//! Today (issue 5) it serves the node's IPAM over the gRPC unix socket the CNI plugin calls, and
//! finishes the releases the plugin deferred while the agent was down. The BGP wiring and the
//! kernel route reconciler come with issue 6.

use std::path::Path;

use tortie_ipam::Ipam;

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
            Err(e) => tracing::warn!(%handle, error = %e, "deferred release failed; will retry"),
        }
    }
    done
}
