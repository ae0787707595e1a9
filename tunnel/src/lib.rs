//! Kernel state migroute owns, over netlink, inside a chosen network namespace:
//! VXLAN/GRE tunnels, host-route overrides in migroute's own table and rule, ownership
//! listing and reconcile after a crash, and per-tunnel counters.
//!
//! Everything takes a [`NetlinkHandle`], opened in one namespace. Message builders are
//! pure functions returning [`Request`]s; the handle is the only place that sends.
//! The numbers that make migroute's state recognisable (protocol 245, table 4245, rule
//! priority 4245, link prefix `mr-`) are in [`ids`].

pub mod counters;
pub mod error;
pub mod gre;
pub mod handle;
pub mod ids;
pub mod link;
pub mod netns;
pub mod override_route;
pub mod ownership;
pub mod reconcile;
pub mod request;
pub mod rule;
pub mod tunnel;
pub mod vxlan;

pub use counters::Counters;
pub use error::{Error, Result};
pub use gre::GreSpec;
pub use handle::NetlinkHandle;
pub use ids::{Prefix, LINK_PREFIX, PROTOCOL, RULE_PRIORITY, TABLE};
pub use netns::Netns;
pub use override_route::Override;
pub use ownership::{GcReport, Owned};
pub use reconcile::{Desired, Plan};
pub use request::Request;
pub use tunnel::{Inside, TunnelKind, TunnelSpec};
pub use vxlan::VxlanSpec;
