//! The agent inside a Kubernetes cluster (datastore `kubernetes:`): what it learns from the
//! Kubernetes API besides tortie's own resources.
//!
//! - The node's address from its Kubernetes `Node` (`InternalIP`), for
//!   `--ip-autodetection-method kubernetes-internal-ip`.
//! - The default pool, when `TORTIE_IPV4POOL_CIDR` is not set: kubeadm's `podSubnet` from the
//!   `kube-system/kubeadm-config` ConfigMap, else 192.168.0.0/16 (Calico's order).
//! - **IPAM GC against pods**: each agent judges the allocations made on its own node (and
//!   those of deleted nodes): one made for a pod (the CNI plugin records its namespace, name
//!   and UID) is gone when no pod of that namespace and name is on this node, or one is with
//!   another UID (recreated under the same name), or its node was deleted. The decision is
//!   taken on a snapshot listed at the start of each pass (this node's pods, by field
//!   selector, so the load on the API server does not grow with the cluster; all node
//!   names). GC releases only what stayed gone for the whole grace period, and a pod exists in
//!   the API before its sandbox is networked, so a fresh snapshot always holds the owner of an
//!   allocation older than the grace period: a live pod's address is never released.
//! - The pod's addresses written back as the annotation `tortie.io/podIPs`, reconciled each
//!   pass for this node's pods.
//! - The Kubernetes Node's labels copied onto the tortie `Node`, so that `kubectl label node`
//!   drives `BGPPeer.nodeSelector` as in Calico (where the two are one object). Labels set on
//!   the tortie `Node` itself are kept; the keys that came from Kubernetes are remembered in
//!   the annotation `tortie.io/labels-from-kubernetes`, so a label removed there goes here too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use tortie_ipam::gc::{AllocationInfo, Liveness, OwnerCheck};

/// The annotation with a pod's addresses, comma-separated.
pub const POD_IPS_ANNOTATION: &str = "tortie.io/podIPs";
/// The annotation listing (comma-separated) the label keys copied from the Kubernetes Node.
pub const SYNCED_LABELS_ANNOTATION: &str = "tortie.io/labels-from-kubernetes";

/// A Kubernetes API client for the agent's own calls.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
}

impl Cluster {
    /// The cluster a `kubernetes…` datastore URL points at; `None` for other datastores.
    pub async fn for_datastore(url: &str) -> anyhow::Result<Option<Cluster>> {
        if !url.starts_with("kubernetes") {
            return Ok(None);
        }
        let config = tortie_datastore::kubernetes::config_for(url).await?;
        Ok(Some(Cluster {
            client: kube::Client::try_from(config)?,
        }))
    }

    /// The `podSubnet` of kubeadm's ClusterConfiguration (comma-separated for dual stack),
    /// if this cluster was made by kubeadm.
    pub async fn kubeadm_pod_subnets(&self) -> anyhow::Result<Vec<String>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), "kube-system");
        let Some(cm) = api.get_opt("kubeadm-config").await? else {
            return Ok(Vec::new());
        };
        let Some(text) = cm.data.as_ref().and_then(|d| d.get("ClusterConfiguration")) else {
            return Ok(Vec::new());
        };
        Ok(pod_subnets_of(text))
    }

    /// The node's `InternalIP` of one family.
    pub async fn internal_ip(&self, node: &str, ipv6: bool) -> anyhow::Result<Option<IpAddr>> {
        let api: Api<Node> = Api::all(self.client.clone());
        let Some(n) = api.get_opt(node).await? else {
            anyhow::bail!("Kubernetes has no Node {node:?}");
        };
        Ok(n.status
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .iter()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse::<IpAddr>().ok())
            .find(|ip| ip.is_ipv6() == ipv6))
    }

    /// `node`'s pods and every node's name, as they are now.
    pub async fn snapshot(&self, node: &str) -> anyhow::Result<Snapshot> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut snap = Snapshot {
            node: node.to_string(),
            ..Default::default()
        };
        let on_this_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        for p in pods.list(&on_this_node).await?.items {
            let (Some(ns), Some(name)) = (p.metadata.namespace.clone(), p.metadata.name.clone())
            else {
                continue;
            };
            snap.pods.insert(
                (ns, name),
                PodFacts {
                    uid: p.metadata.uid.clone().unwrap_or_default(),
                    annotation: p
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(POD_IPS_ANNOTATION).cloned()),
                },
            );
        }
        for n in nodes.list(&ListParams::default()).await?.items {
            if let Some(name) = n.metadata.name {
                if name == node {
                    snap.node_labels = n.metadata.labels.clone().unwrap_or_default();
                }
                snap.nodes.insert(name);
            }
        }
        Ok(snap)
    }

    /// Writes `tortie.io/podIPs` on this node's pods whose annotation is missing or differs
    /// from their allocations. Returns how many pods were patched.
    pub async fn annotate_pods(
        &self,
        node: &str,
        snapshot: &Snapshot,
        allocations: &[AllocationInfo],
    ) -> anyhow::Result<usize> {
        let mut wanted: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
        for a in allocations {
            if a.attributes
                .get(tortie_ipam::attr::NODE)
                .map(String::as_str)
                != Some(node)
            {
                continue;
            }
            let Some(key) = pod_of(a) else { continue };
            match snapshot.pods.get(&key) {
                Some(p) if uid_matches(a, p) => wanted.entry(key).or_default().push(a.ip),
                _ => {}
            }
        }
        let mut patched = 0;
        for ((ns, name), mut ips) in wanted {
            ips.sort();
            let text = ips
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(",");
            if snapshot.pods[&(ns.clone(), name.clone())]
                .annotation
                .as_deref()
                == Some(&text)
            {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let patch =
                serde_json::json!({"metadata": {"annotations": {POD_IPS_ANNOTATION: text}}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => patched += 1,
                // Deleted meanwhile: GC takes it from here.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(patched)
    }
}

/// What one pod is, for GC and annotations.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// Its UID.
    pub uid: String,
    /// Its current `tortie.io/podIPs`.
    pub annotation: Option<String>,
}

/// One node's pods by (namespace, name), and every node's name, listed at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The node whose pods these are.
    pub node: String,
    /// The pods.
    pub pods: HashMap<(String, String), PodFacts>,
    /// The nodes.
    pub nodes: HashSet<String>,
    /// The labels of this node's Kubernetes Node.
    pub node_labels: BTreeMap<String, String>,
}

/// The tortie `Node`'s labels and synced-keys annotation after copying `kubernetes` onto
/// `current` (see the module docs); `None` when nothing changes.
pub fn merged_labels(
    current: &BTreeMap<String, String>,
    synced_before: Option<&str>,
    kubernetes: &BTreeMap<String, String>,
) -> Option<(BTreeMap<String, String>, String)> {
    let before: HashSet<&str> = synced_before
        .unwrap_or("")
        .split(',')
        .filter(|k| !k.is_empty())
        .collect();
    let mut labels: BTreeMap<String, String> = current
        .iter()
        .filter(|(k, _)| !before.contains(k.as_str()) || kubernetes.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(kubernetes.iter().map(|(k, v)| (k.clone(), v.clone())));
    let synced = kubernetes.keys().cloned().collect::<Vec<_>>().join(",");
    (labels != *current || synced_before.unwrap_or("") != synced).then_some((labels, synced))
}

/// Copies the Kubernetes Node's labels onto our tortie `Node` (a compare-and-swap update;
/// a lost race is retried next pass). Returns whether it changed.
pub async fn sync_node_labels(
    ds: &tortie_datastore::Datastore,
    node: &str,
    snapshot: &Snapshot,
) -> anyhow::Result<bool> {
    let Some(mut ours) = ds.get::<tortie_api::NodeSpec>(node).await? else {
        return Ok(false);
    };
    let Some((labels, synced)) = merged_labels(
        &ours.metadata.labels,
        ours.metadata
            .annotations
            .get(SYNCED_LABELS_ANNOTATION)
            .map(String::as_str),
        &snapshot.node_labels,
    ) else {
        return Ok(false);
    };
    ours.metadata.labels = labels;
    ours.metadata
        .annotations
        .insert(SYNCED_LABELS_ANNOTATION.to_string(), synced);
    ds.update(ours).await?;
    Ok(true)
}

fn pod_of(a: &AllocationInfo) -> Option<(String, String)> {
    Some((
        a.attributes.get("namespace")?.clone(),
        a.attributes.get("pod")?.clone(),
    ))
}

fn uid_matches(a: &AllocationInfo, p: &PodFacts) -> bool {
    match a.attributes.get("podUID") {
        Some(uid) if !uid.is_empty() && !p.uid.is_empty() => *uid == p.uid,
        _ => true,
    }
}

impl OwnerCheck for Snapshot {
    fn allocation(&self, a: &AllocationInfo) -> Liveness {
        match a.attributes.get(tortie_ipam::attr::NODE) {
            Some(node) if !self.nodes.contains(node) => return Liveness::Gone,
            // Another node's: its own agent judges it.
            Some(node) if *node != self.node => return Liveness::Unknown,
            Some(_) => {}
            None => return Liveness::Unknown,
        }
        let Some(key) = pod_of(a) else {
            // Tunnel addresses and anything not made for a pod: not ours to judge.
            return Liveness::Unknown;
        };
        match self.pods.get(&key) {
            Some(p) if uid_matches(a, p) => Liveness::Alive,
            _ => Liveness::Gone,
        }
    }

    fn node_exists(&self, node: &str) -> bool {
        self.nodes.contains(node)
    }
}

/// `networking.podSubnet` of a kubeadm ClusterConfiguration document.
pub fn pod_subnets_of(cluster_configuration: &str) -> Vec<String> {
    let Ok(doc) = serde_saphyr::from_str::<serde_json::Value>(cluster_configuration) else {
        return Vec::new();
    };
    doc.pointer("/networking/podSubnet")
        .and_then(|v| v.as_str())
        .map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The environment for [`crate::default_pools`] in a cluster: `TORTIE_IPV4POOL_CIDR` from
/// the process environment, else kubeadm's IPv4 `podSubnet`, else 192.168.0.0/16; the IPv6
/// pool from the environment, else kubeadm's IPv6 `podSubnet` (dual stack), else none.
pub fn default_pool_env(
    env: impl Fn(&str) -> Option<String>,
    kubeadm_subnets: &[String],
) -> impl Fn(&str) -> Option<String> {
    let v4 = env("TORTIE_IPV4POOL_CIDR").or_else(|| {
        Some(
            kubeadm_subnets
                .iter()
                .find(|s| !s.contains(':'))
                .cloned()
                .unwrap_or_else(|| "192.168.0.0/16".to_string()),
        )
    });
    let v6 = env("TORTIE_IPV6POOL_CIDR")
        .or_else(|| kubeadm_subnets.iter().find(|s| s.contains(':')).cloned());
    let rest: HashMap<String, String> = [
        "TORTIE_IPV4POOL_BLOCK_SIZE",
        "TORTIE_IPV4POOL_NAT_OUTGOING",
        "TORTIE_IPV4POOL_VXLAN",
        "TORTIE_IPV6POOL_BLOCK_SIZE",
        "TORTIE_IPV6POOL_NAT_OUTGOING",
        "TORTIE_IPV6POOL_VXLAN",
    ]
    .iter()
    .filter_map(|k| env(k).map(|v| (k.to_string(), v)))
    .collect();
    move |k: &str| match k {
        "TORTIE_IPV4POOL_CIDR" => v4.clone(),
        "TORTIE_IPV6POOL_CIDR" => v6.clone(),
        other => rest.get(other).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(attrs: &[(&str, &str)]) -> AllocationInfo {
        AllocationInfo {
            ip: "10.0.0.1".parse().unwrap(),
            block: "10.0.0.0/26".parse().unwrap(),
            block_affinity: None,
            handle_id: "k8s-pod-network.abc".into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sequence_number: 0,
        }
    }

    #[test]
    fn pods_decide_liveness() {
        let mut snap = Snapshot {
            node: "n1".into(),
            ..Default::default()
        };
        snap.nodes.insert("n1".into());
        snap.nodes.insert("n2".into());
        snap.pods.insert(
            ("shop".into(), "web".into()),
            PodFacts {
                uid: "u1".into(),
                annotation: None,
            },
        );
        let live = alloc(&[
            ("node", "n1"),
            ("namespace", "shop"),
            ("pod", "web"),
            ("podUID", "u1"),
        ]);
        assert_eq!(snap.allocation(&live), Liveness::Alive);
        let recreated = alloc(&[
            ("node", "n1"),
            ("namespace", "shop"),
            ("pod", "web"),
            ("podUID", "u0"),
        ]);
        assert_eq!(snap.allocation(&recreated), Liveness::Gone);
        let deleted = alloc(&[("node", "n1"), ("namespace", "shop"), ("pod", "gone")]);
        assert_eq!(snap.allocation(&deleted), Liveness::Gone);
        let node_gone = alloc(&[("node", "n9"), ("namespace", "shop"), ("pod", "web")]);
        assert_eq!(snap.allocation(&node_gone), Liveness::Gone);
        let tunnel = alloc(&[("node", "n1"), ("type", "vxlanTunnelAddress")]);
        assert_eq!(snap.allocation(&tunnel), Liveness::Unknown);
        // Another live node's pod is not in this node's list, and not ours to judge.
        let elsewhere = alloc(&[("node", "n2"), ("namespace", "shop"), ("pod", "db")]);
        assert_eq!(snap.allocation(&elsewhere), Liveness::Unknown);
        assert!(!snap.node_exists("n9"));
    }

    #[test]
    fn kubernetes_labels_are_copied_and_their_removals_followed() {
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // First sync: Kubernetes labels join the ones set with tortiectl.
        let (labels, synced) = merged_labels(
            &m(&[("route-reflector", "true")]),
            None,
            &m(&[("rack", "r1"), ("kubernetes.io/hostname", "w1")]),
        )
        .unwrap();
        assert_eq!(
            labels,
            m(&[
                ("kubernetes.io/hostname", "w1"),
                ("rack", "r1"),
                ("route-reflector", "true")
            ])
        );
        assert_eq!(synced, "kubernetes.io/hostname,rack");
        // Nothing new: no write.
        assert!(
            merged_labels(
                &labels,
                Some(&synced),
                &m(&[("rack", "r1"), ("kubernetes.io/hostname", "w1")])
            )
            .is_none()
        );
        // `kubectl label node w1 rack-` removes it here; the tortiectl label stays.
        let (labels, synced) = merged_labels(
            &labels,
            Some(&synced),
            &m(&[("kubernetes.io/hostname", "w1")]),
        )
        .unwrap();
        assert_eq!(
            labels,
            m(&[
                ("kubernetes.io/hostname", "w1"),
                ("route-reflector", "true")
            ])
        );
        assert_eq!(synced, "kubernetes.io/hostname");
    }

    #[test]
    fn default_pool_follows_env_then_kubeadm_then_calico() {
        let none = |_: &str| None;
        let kubeadm = vec!["10.244.0.0/16".to_string(), "fd00:10:244::/56".to_string()];
        let e = default_pool_env(none, &kubeadm);
        assert_eq!(e("TORTIE_IPV4POOL_CIDR").as_deref(), Some("10.244.0.0/16"));
        assert_eq!(
            e("TORTIE_IPV6POOL_CIDR").as_deref(),
            Some("fd00:10:244::/56")
        );
        let e = default_pool_env(none, &[]);
        assert_eq!(e("TORTIE_IPV4POOL_CIDR").as_deref(), Some("192.168.0.0/16"));
        assert_eq!(e("TORTIE_IPV6POOL_CIDR"), None);
        let env = |k: &str| (k == "TORTIE_IPV4POOL_CIDR").then(|| "172.16.0.0/16".to_string());
        let e = default_pool_env(env, &kubeadm);
        assert_eq!(e("TORTIE_IPV4POOL_CIDR").as_deref(), Some("172.16.0.0/16"));
    }

    #[test]
    fn kubeadm_cluster_configuration_is_read() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nnetworking:\n  dnsDomain: cluster.local\n  podSubnet: 10.244.0.0/16,fd00:10:244::/56\n  serviceSubnet: 10.96.0.0/12\n";
        assert_eq!(
            pod_subnets_of(text),
            vec!["10.244.0.0/16".to_string(), "fd00:10:244::/56".to_string()]
        );
        assert!(pod_subnets_of("networking: {}\n").is_empty());
        assert!(pod_subnets_of(": not yaml").is_empty());
    }
}
