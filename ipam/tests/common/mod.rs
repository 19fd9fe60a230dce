//! Shared fixtures: a datastore per backend, pools, and a wipe between property-test cases.
#![allow(dead_code)]

use tortie_api::values::Cidr;
use tortie_api::{IPPoolSpec, IPReservationSpec, Kind, Object};
use tortie_datastore::testing::EtcdServer;
use tortie_datastore::{Change, Datastore};

/// A backend under test.
pub enum Backend {
    /// SQLite file in a temporary directory.
    Sqlite(tempfile::TempDir),
    /// Throw-away etcd.
    Etcd(EtcdServer),
}

impl Backend {
    pub fn sqlite() -> Self {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }
    pub fn etcd() -> Self {
        Backend::Etcd(EtcdServer::start().expect("etcd (apt-get install etcd-server)"))
    }
    pub fn url(&self) -> String {
        match self {
            Backend::Sqlite(d) => format!("sqlite://{}", d.path().join("store.db").display()),
            Backend::Etcd(e) => e.url(),
        }
    }
}

/// Deletes every object of every kind.
pub async fn wipe(ds: &Datastore) {
    for kind in Kind::ALL {
        let items = ds.list_any(*kind, None).await.unwrap().items;
        if items.is_empty() {
            continue;
        }
        let changes = items
            .into_iter()
            .map(|r| Change::Delete {
                kind: *kind,
                name: r.meta().name.clone(),
                precondition: None,
            })
            .collect();
        ds.write_all(changes).await.unwrap();
    }
}

pub async fn add_pool(ds: &Datastore, name: &str, cidr: &str, block_size: u8) {
    let mut spec = IPPoolSpec::new(cidr.parse::<Cidr>().unwrap());
    spec.block_size = Some(block_size);
    ds.create(Object::new(name, spec)).await.unwrap();
}

pub async fn add_reservation(ds: &Datastore, name: &str, cidrs: &[&str]) {
    let spec = IPReservationSpec {
        reserved_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
    };
    ds.create(Object::new(name, spec)).await.unwrap();
}
