//! Migration logic as sans-IO state machines: the per-PE machine an agent runs and the
//! whole-migration machine the orchestrator runs, plus the journal and the hypervisor,
//! storage and PE-agent driver traits. It knows nothing of BGP or netlink: it emits
//! actions (`CreateTunnel`, `InstallOverride`, `Announce`, …) that callers carry out.
//!
//! The contract, as in quinn-proto: no networking, no clock reads, deterministic. Time
//! comes in as a [`Time`] argument, output goes out as plain-data [`pe::Command`]s that
//! the caller journals ([`journal::Journal`]) *before* carrying them out
//! ([`executor::execute`]), so that a restart rebuilds every machine from the journal
//! ([`pe::Registry::restore`]) and replays or compensates instead of guessing.

pub mod drivers;
pub mod executor;
pub mod journal;
pub mod migration;
pub mod pe;
mod time;

pub use time::Time;
