//! # tortie-bgpd: a BGP-4 speaker
//!
//! Layers, each testable on its own:
//!
//! ```text
//!   wire      bytes ⇄ Message, with decode/encode contexts from the negotiated capabilities
//!             (the only module that knows the bytes; netgauze-bgp-pkt cross-checks it in tests)
//!   fsm       RFC 4271 §8 session state machine, sans I/O: step(event) -> outputs
//!   rib       Adj-RIB-In, Loc-RIB (§9.1 decision process), Adj-RIB-Out; interned attributes
//!   speaker   tokio driver: one task per peer, bounded channels, the RIB task
//! ```

pub mod config;
pub mod fsm;
pub mod policy;
pub mod rib;
pub mod speaker;
pub mod types;
pub mod wire;

pub use types::*;
