//! # tortie-cni: the `tortie` and `tortie-ipam` CNI plugins
//!
//! `tortie` gives a pod Calico's data plane (a `cali…` veth, /32 and /128 host routes, proxy
//! ARP, no bridge) with addresses from the agent's gRPC IPAM service; `tortie-ipam` is the IPAM
//! half alone, for other main plugins. Both speak CNI 0.3.0 to 1.1.0.
//!
//! | module | job |
//! |---|---|
//! | [`spec`] | the protocol: env, configuration, results per version, error codes (pure) |
//! | [`agent`] | the agent's IPAM service over its unix socket |
//! | [`dataplane`] | veth, addresses, routes, sysctls over rtnetlink; CHECK |
//! | [`state`] | per-attachment records and deferred releases on the node |
//! | [`plugin`] | the verbs, and the undo rules that keep the node clean |
//! | [`log`] | the log file |

pub mod agent;
pub mod dataplane;
pub mod log;
pub mod plugin;
pub mod spec;
pub mod state;
