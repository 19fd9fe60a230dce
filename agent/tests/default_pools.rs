//! Default pools from the environment, only into an empty datastore.
use std::collections::BTreeMap;

#[tokio::test]
async fn default_pools_come_from_the_environment_once() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tortie_datastore::Datastore::open(&format!(
        "sqlite://{}",
        dir.path().join("ds.db").display()
    ))
    .await
    .unwrap();
    let env: BTreeMap<&str, &str> = BTreeMap::from([
        ("TORTIE_IPV4POOL_CIDR", "10.250.0.0/16"),
        ("TORTIE_IPV4POOL_BLOCK_SIZE", "28"),
        ("TORTIE_IPV4POOL_NAT_OUTGOING", "true"),
        ("TORTIE_IPV6POOL_CIDR", "fd00:250::/48"),
        ("TORTIE_IPV6POOL_VXLAN", "Always"),
    ]);
    let get = |k: &str| env.get(k).map(|v| v.to_string());
    let made = tortie_agent::default_pools(&ds, get).await.unwrap();
    assert_eq!(made, ["default-ipv4-ippool", "default-ipv6-ippool"]);
    let v4 = ds
        .get::<tortie_api::IPPoolSpec>("default-ipv4-ippool")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v4.spec.block_size, Some(28));
    assert!(v4.spec.nat_outgoing);
    let v6 = ds
        .get::<tortie_api::IPPoolSpec>("default-ipv6-ippool")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v6.spec.vxlan_mode, tortie_api::EncapMode::Always);
    // Pools exist now: nothing more is made, even with other values.
    assert!(
        tortie_agent::default_pools(&ds, |_| Some("10.251.0.0/16".into()))
            .await
            .unwrap()
            .is_empty()
    );
    // A bad value names the variable.
    let dir2 = tempfile::tempdir().unwrap();
    let ds2 = tortie_datastore::Datastore::open(&format!(
        "sqlite://{}",
        dir2.path().join("ds.db").display()
    ))
    .await
    .unwrap();
    let e = tortie_agent::default_pools(&ds2, |k| {
        (k == "TORTIE_IPV4POOL_CIDR").then(|| "10.250.0.0/33".to_string())
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("TORTIE_IPV4POOL"), "{e}");
}
