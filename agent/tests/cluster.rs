//! The agent's Kubernetes lookups against the fake API server: the node address from the
//! Kubernetes Node's `InternalIP` (`kubernetes-internal-ip`), and kubeadm's pod subnet.

use tortie_agent::cluster::Cluster;
use tortie_datastore::testing::FakeApiServer;

fn post(api: &FakeApiServer, path: &str, body: serde_json::Value) {
    let out = api.request("POST", path, &body.to_string()).unwrap();
    assert!(out.contains("resourceVersion"), "{out}");
}

#[tokio::test]
async fn node_address_and_pod_subnet_come_from_the_api() {
    let api = FakeApiServer::start().unwrap();
    post(
        &api,
        "/api/v1/nodes",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "w1"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "w1"},
                {"type": "ExternalIP", "address": "203.0.113.9"},
                {"type": "InternalIP", "address": "198.18.7.1"},
                {"type": "InternalIP", "address": "fd00:18:7::1"}
            ]}
        }),
    );
    let cluster = Cluster::for_datastore(&api.url()).await.unwrap().unwrap();
    assert_eq!(
        cluster.internal_ip("w1", false).await.unwrap(),
        Some("198.18.7.1".parse().unwrap())
    );
    assert_eq!(
        cluster.internal_ip("w1", true).await.unwrap(),
        Some("fd00:18:7::1".parse().unwrap())
    );
    // The method end to end: no interface here holds 198.18.7.1 (the test does not add one;
    // it only reads this namespace's addresses), so the address comes with a host prefix.
    let addr = tortie_agent::node_address("kubernetes-internal-ip", false, Some(&cluster), "w1")
        .await
        .unwrap();
    assert_eq!(addr.0.to_string(), "198.18.7.1/32");
    // A node Kubernetes does not know is an error that names it.
    let err = tortie_agent::node_address("kubernetes-internal-ip", false, Some(&cluster), "w9")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"w9\""), "{err}");
    // Without the Kubernetes datastore the method cannot work, and says so.
    let err = tortie_agent::node_address("kubernetes-internal-ip", false, None, "w1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kubernetes:"), "{err}");

    // kubeadm's ClusterConfiguration: absent, then present.
    assert!(cluster.kubeadm_pod_subnets().await.unwrap().is_empty());
    post(
        &api,
        "/api/v1/namespaces/kube-system/configmaps",
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": "networking:\n  podSubnet: 10.32.0.0/12,fd00:32::/56\n"}
        }),
    );
    assert_eq!(
        cluster.kubeadm_pod_subnets().await.unwrap(),
        vec!["10.32.0.0/12".to_string(), "fd00:32::/56".to_string()]
    );
}
