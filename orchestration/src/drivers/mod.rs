//! Driver traits: what the orchestrator's runtime calls to carry out the whole-migration
//! machine's actions, shaped for the real drivers (libvirt, QEMU block mirror, the
//! agent's REST API, DRBD, the netns lab).
//!
//! No async runtime here: methods return `impl Future + Send` (not `async fn`, so that
//! callers on a multi-threaded runtime can rely on `Send`), and long-running work
//! reports progress through an [`EventSink`] the runtime passes in — typically a closure
//! around a channel sender that feeds [`crate::migration::Event`]s back into the
//! machine. Every error is typed and names what it concerns.
//!
//! # Contract shared by all drivers
//!
//! - **Idempotent**: after a crash the machine issues outstanding actions again, and a
//!   rollback undoes actions that may never have run. Starting what already runs,
//!   aborting what does not exist, cutting over what already cut over: all succeed.
//! - **One driver, one queue**: the runtime carries out the commands of one driver in
//!   the order they were issued; different drivers may run concurrently.
//! - A driver instance serves one migration; the runtime builds it from the plan's
//!   section (`[hypervisor]`, `[storage]`, `[source]`/`[destination]`).
//!
//! Mapping from [`crate::migration::Action`] to calls:
//!
//! | action | call | `Done` when |
//! |---|---|---|
//! | `PrepareAgent{which}` | [`PeAgent::prepare`] with [`MigrationPlan::agent_spec`](crate::migration::MigrationPlan::agent_spec) | 200/201 |
//! | `SwitchoverDestination`, `SwitchoverSource` | [`PeAgent::switchover`] | 200: override/delivery in place |
//! | `AnnounceDestination`, `AnnounceSource` | [`PeAgent::announce`] | 200 |
//! | `CompleteAgents` | [`PeAgent::complete`] on both | both 200 |
//! | `AbortAgent{which}` | [`PeAgent::abort`] | 200 or 404 |
//! | `StorageStartAsync` | [`Storage::start_async`] | replication running (READY comes as an event) |
//! | `StorageSwitchSync` | [`Storage::switch_sync`] | synchronous mode on |
//! | `StorageWaitInSync` | [`Storage::wait_in_sync`] | in sync |
//! | `StorageCutover` | [`Storage::cutover`] | destination primary |
//! | `StorageAbort` | [`Storage::abort`] | back as before |
//! | `StartMigration` | [`Hypervisor::migrate`] | migration finished (= `Completed`) |
//! | `AckQuiesce` | release the [`QuiesceGate`] with [`GateDecision::Resume`] | released |
//! | `CancelMigration` | release the gate with [`GateDecision::Cancel`], then [`Hypervisor::cancel`] | VM runs at the source |
//!
//! While [`Migration::polls_agents`](crate::migration::Migration::polls_agents), the
//! runtime also calls [`PeAgent::status`] on both agents every few seconds and feeds
//! the phases in as [`Event::Agent`](crate::migration::Event::Agent).

mod agent;
pub mod drbd;
mod hypervisor;
mod none_storage;
pub mod qemu_mirror;
pub mod qmp;
mod storage;

pub use agent::{AgentError, AgentOp, AgentStatus, PeAgent, LIST_PATH};
#[cfg(feature = "libvirt")]
pub mod libvirt;
pub use drbd::DrbdStorage;
pub use hypervisor::{
    GateDecision, Hypervisor, HypervisorError, HypervisorEvent, MigrationProgress, QuiesceGate,
    ResumeImmediately,
};
pub use none_storage::NoneStorage;
pub use qemu_mirror::QemuMirrorStorage;
pub use storage::{Storage, StorageError, StorageEvent};

/// Where a driver reports what happens during a long-running call. The runtime
/// implements it by sending into a channel; it must not block (drivers call it from
/// their own tasks and callbacks, e.g. libvirt's event loop).
pub trait EventSink<E>: Send + Sync + 'static {
    /// Reports one event.
    fn emit(&self, event: E);
}

impl<E, F> EventSink<E> for F
where
    F: Fn(E) + Send + Sync + 'static,
{
    fn emit(&self, event: E) {
        self(event)
    }
}

#[cfg(test)]
mod tests;
