//! The lab runner: containerlab topology files brought up in plain network namespaces
//! (one per node, veth per link) with FRR, BIRD and GoBGP daemons, plus the traffic
//! probe the migration scenarios measure with.
//!
//! The same `*.clab.yml` file works under containerlab (Docker) and here (no Docker):
//! nodes are `kind: linux`, their daemon is named by `image` or the `migroute.daemon`
//! label, its config comes from `binds`, and node set-up is containerlab's `exec:`.

mod cmd;
pub mod daemons;
pub mod error;
pub mod guest_agent;
pub mod kvm;
pub mod lab;
pub mod link_move;
pub mod netns;
pub mod preflight;
pub mod probe;
pub mod scenario;
pub mod state;
pub mod status;
pub mod topology;
pub mod wait;

pub use error::{LabError, TopologyError};
pub use lab::{DownReport, Lab, UpReport};
pub use link_move::{MoveOptions, MoveReport};
pub use status::LabStatus;
pub use topology::{Daemon, Topology};
