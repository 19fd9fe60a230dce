//! IPAM configuration (`IPAMConfiguration`, `IPReservation`) and IPAM's own state
//! (`IPAMBlock`, `BlockAffinity`, `IPAMHandle`), which the IPAM crate owns and users never edit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Kind, Spec};
use crate::values::Cidr;

/// Upper bound for `maxBlocksPerHost`, as Calico's.
pub const MAX_BLOCKS_PER_HOST_LIMIT: u32 = 1_000_000;

/// `IPAMConfiguration.spec` (singleton named `default`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMConfigurationSpec {
    /// Never borrow addresses from another node's block.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Blocks one node may own; **0 means unlimited**.
    #[serde(default)]
    pub max_blocks_per_host: u32,
    /// Claim new blocks when the node's blocks are full.
    #[serde(default = "yes")]
    pub auto_allocate_blocks: bool,
}

fn yes() -> bool {
    true
}

impl Default for IPAMConfigurationSpec {
    fn default() -> Self {
        IPAMConfigurationSpec {
            strict_affinity: false,
            max_blocks_per_host: 0,
            auto_allocate_blocks: true,
        }
    }
}

impl Spec for IPAMConfigurationSpec {
    const KIND: Kind = Kind::IPAMConfiguration;

    fn validate(&self, meta: &ObjectMeta, errs: &mut FieldErrors) {
        if meta.name != "default" {
            errs.push(
                "metadata.name",
                format!(
                    "{:?}: IPAMConfiguration is a singleton named \"default\"",
                    meta.name
                ),
            );
        }
        if self.max_blocks_per_host > MAX_BLOCKS_PER_HOST_LIMIT {
            errs.push(
                "spec.maxBlocksPerHost",
                format!(
                    "{} is out of range: 0 (unlimited) to {MAX_BLOCKS_PER_HOST_LIMIT}",
                    self.max_blocks_per_host
                ),
            );
        }
        if !self.strict_affinity && !self.auto_allocate_blocks {
            errs.push(
                "spec.autoAllocateBlocks",
                "false requires strictAffinity: true (borrowing needs blocks to borrow from)",
            );
        }
    }
}

/// `IPReservation.spec`: addresses IPAM must never hand out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPReservationSpec {
    /// Reserved ranges (single addresses as /32 or /128).
    #[serde(rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<Cidr>,
}

impl Spec for IPReservationSpec {
    const KIND: Kind = Kind::IPReservation;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut FieldErrors) {
        if self.reserved_cidrs.is_empty() {
            errs.push("spec.reservedCIDRs", "must list at least one CIDR");
        }
    }
}

/// Who holds one address of a block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allocation {
    /// `<network>.<containerID>` for pods, `vxlan-tunnel-addr-<node>` for tunnels.
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// `node`, `namespace`, `pod`, `interface`, `timestamp`, `type`, …
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// The block's sequence number when this address was handed out: a release by address
    /// must quote it, so a stale release cannot free the address after it was reused.
    pub sequence_number: u64,
}

/// `IPAMBlock.spec`: one block of a pool and which of its addresses are taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMBlockSpec {
    /// The block's range.
    pub cidr: Cidr,
    /// `host:<node>` when affine to a node; none for a block only borrowed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// Ordinal (offset in the block) → holder.
    #[serde(default)]
    pub allocations: BTreeMap<u32, Allocation>,
    /// Free ordinals, least recently freed first (a freed address goes to the back).
    #[serde(default)]
    pub unallocated: Vec<u32>,
    /// Bumped on every change of the block.
    #[serde(default)]
    pub sequence_number: u64,
}

impl Spec for IPAMBlockSpec {
    const KIND: Kind = Kind::IPAMBlock;
}

/// Life cycle of a block affinity (two-phase claim).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    /// Claimed; the block may not exist yet.
    #[default]
    Pending,
    /// Block exists and belongs to the node.
    Confirmed,
    /// Being released.
    PendingDeletion,
}

/// `BlockAffinity.spec`: node ↔ block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockAffinitySpec {
    /// Claim state.
    #[serde(default)]
    pub state: AffinityState,
    /// The node.
    pub node: String,
    /// The block.
    pub cidr: Cidr,
}

impl Spec for BlockAffinitySpec {
    const KIND: Kind = Kind::BlockAffinity;
}

/// `IPAMHandle.spec`: the index from a handle to the blocks holding its addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMHandleSpec {
    /// The handle itself.
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Block name → number of addresses of this handle in that block: the index that makes
    /// release by handle touch only those blocks.
    #[serde(default)]
    pub block: BTreeMap<String, u32>,
}

impl Spec for IPAMHandleSpec {
    const KIND: Kind = Kind::IPAMHandle;
}
