//! `Node`: a machine of the cluster as BGP sees it.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::{Kind, Spec};
use crate::values::{AsNumber, InterfaceAddress};

/// `Node.spec.bgp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBgpSpec {
    /// IPv4 address with prefix length, e.g. `198.18.0.10/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<InterfaceAddress>,
    /// IPv6 address with prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<InterfaceAddress>,
    /// This node's AS when not the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// Set to make this node a route reflector (RFC 4456 cluster ID).
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
}

/// `Node.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// BGP settings; absent on nodes that do not run BGP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    /// The node's VXLAN tunnel endpoint address (allocated by the agent from a VXLAN pool).
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<std::net::Ipv4Addr>,
    /// MAC address of the node's VXLAN device.
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<String>,
}

impl Spec for NodeSpec {
    const KIND: Kind = Kind::Node;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut FieldErrors) {
        let Some(bgp) = &self.bgp else { return };
        if let Some(a) = bgp.ipv4_address
            && !a.addr().is_ipv4()
        {
            errs.push(
                "spec.bgp.ipv4Address",
                format!("\"{a}\" is not an IPv4 address"),
            );
        }
        if let Some(a) = bgp.ipv6_address
            && !a.addr().is_ipv6()
        {
            errs.push(
                "spec.bgp.ipv6Address",
                format!("\"{a}\" is not an IPv6 address"),
            );
        }
    }
}
