//! `IPPool`: a range that pod addresses come from, sliced into blocks.

use serde::{Deserialize, Serialize};

use crate::error::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Kind, Spec};
use crate::values::{Cidr, LabelSelector};

/// Default block prefix length for IPv4 pools (64 addresses).
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Default block prefix length for IPv6 pools (64 addresses).
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

/// When to encapsulate pod traffic in VXLAN.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum EncapMode {
    /// Plain routed traffic (BGP carries the blocks).
    #[default]
    Never,
    /// Always VXLAN between nodes.
    Always,
    /// VXLAN only towards nodes in another subnet.
    CrossSubnet,
}

/// What addresses of a pool may be used for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum AllowedUse {
    /// Pod addresses.
    Workload,
    /// Tunnel (VTEP) addresses of nodes.
    Tunnel,
}

/// `IPPool.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolSpec {
    /// The pool's range. Immutable.
    pub cidr: Cidr,
    /// Prefix length of each block; 26 (IPv4) or 122 (IPv6) when absent. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    /// VXLAN encapsulation.
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    /// Masquerade traffic from the pool to destinations outside every pool.
    #[serde(default)]
    pub nat_outgoing: bool,
    /// No new allocations; existing ones stay.
    #[serde(default)]
    pub disabled: bool,
    /// Never advertise this pool's blocks over BGP.
    #[serde(default, rename = "disableBGPExport")]
    pub disable_bgp_export: bool,
    /// Which nodes may allocate from the pool.
    #[serde(default = "LabelSelector::all")]
    pub node_selector: LabelSelector,
    /// Workload and/or Tunnel; both when empty.
    #[serde(default)]
    pub allowed_uses: Vec<AllowedUse>,
}

impl IPPoolSpec {
    /// A pool with defaults for everything but the range.
    pub fn new(cidr: Cidr) -> Self {
        let mut spec = IPPoolSpec {
            cidr,
            block_size: None,
            vxlan_mode: EncapMode::Never,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
            node_selector: LabelSelector::all(),
            allowed_uses: Vec::new(),
        };
        spec.apply_defaults(&ObjectMeta::default());
        spec
    }

    /// The block prefix length, defaulted by family.
    pub fn effective_block_size(&self) -> u8 {
        self.block_size.unwrap_or(if self.cidr.is_ipv4() {
            DEFAULT_BLOCK_SIZE_V4
        } else {
            DEFAULT_BLOCK_SIZE_V6
        })
    }
}

impl Spec for IPPoolSpec {
    const KIND: Kind = Kind::IPPool;

    fn apply_defaults(&mut self, _meta: &ObjectMeta) {
        self.block_size = Some(self.effective_block_size());
        if self.allowed_uses.is_empty() {
            self.allowed_uses = vec![AllowedUse::Workload, AllowedUse::Tunnel];
        }
        self.allowed_uses.sort();
        self.allowed_uses.dedup();
    }

    fn validate(&self, _meta: &ObjectMeta, errs: &mut FieldErrors) {
        let cidr = self.cidr;
        let link_local: Cidr = if cidr.is_ipv4() {
            "169.254.0.0/16".parse().expect("constant")
        } else {
            "fe80::/10".parse().expect("constant")
        };
        if cidr.overlaps(&link_local) {
            errs.push(
                "spec.cidr",
                format!("\"{cidr}\" overlaps the link-local range {link_local}"),
            );
        }
        let bs = self.effective_block_size();
        let (lo, hi) = if cidr.is_ipv4() { (20, 32) } else { (116, 128) };
        if !(lo..=hi).contains(&bs) {
            errs.push(
                "spec.blockSize",
                format!("{bs} is out of range: {lo} to {hi} for this address family"),
            );
        } else if bs < cidr.prefix_len() {
            errs.push(
                "spec.blockSize",
                format!(
                    "{bs} is larger than the pool \"{cidr}\": the pool must hold at least one block"
                ),
            );
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        if self.cidr != old.cidr {
            errs.push(
                "spec.cidr",
                format!(
                    "\"{}\" may not change (was \"{}\"): create a new pool instead",
                    self.cidr, old.cidr
                ),
            );
        }
        if self.effective_block_size() != old.effective_block_size() {
            errs.push(
                "spec.blockSize",
                format!(
                    "{} may not change (was {}): existing blocks are never re-sliced",
                    self.effective_block_size(),
                    old.effective_block_size()
                ),
            );
        }
    }
}
