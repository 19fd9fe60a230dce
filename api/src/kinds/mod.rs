//! One module per group of kinds.

mod bgp;
mod ipam;
mod ippool;
mod node;

pub use bgp::*;
pub use ipam::*;
pub use ippool::*;
pub use node::*;
