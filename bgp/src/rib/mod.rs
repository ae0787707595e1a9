//! Routing information bases: what peers sent us (Adj-RIB-In), what we originate and
//! what each peer was sent (Adj-RIB-Out), and how changes become UPDATEs (packing).

pub mod adj_in;
pub mod adj_out;
pub mod packing;

pub use adj_in::{AdjRibIn, RibChange};
pub use adj_out::{AdjRibOut, Origins};
pub use packing::{end_of_rib, pack, Outgoing};
