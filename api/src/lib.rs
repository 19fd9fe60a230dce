//! # tortie-api: the resource model
//!
//! Every resource of group/version `tortie.io/v1` in the Kubernetes shape (`apiVersion`, `kind`,
//! `metadata`, `spec`), shared by the datastore, IPAM, the agent, the CNI plugin and `tortiectl`.
//!
//! Design:
//! - **Values validate while decoding.** CIDRs, AS numbers, durations, peer addresses and label
//!   selectors are newtypes ([`values`]) that parse from their text form, so a bad value fails
//!   decoding with the field's path and the value quoted. Unknown fields are rejected by name.
//! - **Cross-field rules** (block size vs. pool, peer IP vs. selector, …) live in each kind's
//!   [`Spec::validate`]; rules about *changes* (immutable `cidr`/`blockSize`) in
//!   [`Spec::validate_update`]. Rules that need other objects (pool overlap) belong to the
//!   datastore's shared client layer, which enforces them atomically.
//! - **Defaults are applied on read and on write** ([`Spec::apply_defaults`]), so what a user
//!   reads back is complete and older stored objects gain new defaults.

pub mod documents;
pub mod error;
pub mod kinds;
pub mod meta;
pub mod resource;
pub mod selector;
pub mod values;

pub use error::{FieldError, FieldErrors, ValidationError};
pub use kinds::*;
pub use meta::{Object, ObjectMeta};
pub use resource::{AnyResource, Kind, KindBinding, Spec};

/// The group/version of every resource.
pub const API_VERSION: &str = "tortie.io/v1";
/// The API group.
pub const GROUP: &str = "tortie.io";

/// `IPPool` resource.
pub type IPPool = Object<IPPoolSpec>;
/// `BGPConfiguration` resource.
pub type BGPConfiguration = Object<BGPConfigurationSpec>;
/// `BGPPeer` resource.
pub type BGPPeer = Object<BGPPeerSpec>;
/// `BGPFilter` resource.
pub type BGPFilter = Object<BGPFilterSpec>;
/// `Node` resource.
pub type Node = Object<NodeSpec>;
/// `IPAMConfiguration` resource.
pub type IPAMConfiguration = Object<IPAMConfigurationSpec>;
/// `IPReservation` resource.
pub type IPReservation = Object<IPReservationSpec>;
/// `IPAMBlock` resource (IPAM's own state).
pub type IPAMBlock = Object<IPAMBlockSpec>;
/// `BlockAffinity` resource (IPAM's own state).
pub type BlockAffinity = Object<BlockAffinitySpec>;
/// `IPAMHandle` resource (IPAM's own state).
pub type IPAMHandle = Object<IPAMHandleSpec>;
