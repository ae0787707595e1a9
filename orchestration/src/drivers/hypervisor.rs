//! [`Hypervisor`]: moves the VM's memory and CPU, reporting as it goes.

use super::EventSink;
use serde::{Deserialize, Serialize};
use std::future::Future;
use thiserror::Error;

/// Pre-copy progress, as libvirt's job info reports it. Observations only: the machine
/// keeps the latest for the status, never journals it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationProgress {
    /// Bytes to transfer in total (memory plus, with NBD, disks), as estimated now.
    pub total_bytes: u64,
    /// Bytes transferred so far.
    pub processed_bytes: u64,
    /// Bytes still to transfer.
    pub remaining_bytes: u64,
    /// Pre-copy iteration (libvirt's "memory iteration"), from 1.
    pub iteration: u32,
    /// Guest pages dirtied per second, if known: tells whether pre-copy converges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_rate_pages: Option<u64>,
}

/// What a hypervisor reports during [`Hypervisor::migrate`].
///
/// `Resumed` means resumed **at the destination**. A VM that resumes at the source
/// because the migration failed is reported as `Failed`: the machine must never take a
/// resume at the source for the point of no return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum HypervisorEvent {
    /// Pre-copy goes on.
    Progress(MigrationProgress),
    /// The VM is paused for stop-and-copy (libvirt: lifecycle SUSPENDED/MIGRATED; the
    /// lab: its quiesce hook). The pause window starts.
    Suspended,
    /// The VM runs at the destination (libvirt: RESUMED/MIGRATED on the destination).
    Resumed,
    /// The migration job finished: the VM runs at the destination and the source is
    /// cleaned.
    Completed,
    /// The migration failed; the VM still runs (or runs again) at the source.
    Failed {
        /// The hypervisor's reason.
        error: String,
    },
}

/// The runtime's answer at the quiesce point of a [`QuiesceStyle::Hook`]
/// hypervisor.
///
/// [`QuiesceStyle::Hook`]: crate::migration::QuiesceStyle::Hook
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateDecision {
    /// The override is in place: finish the move and resume at the destination.
    Resume,
    /// Roll back: resume the VM at the source.
    Cancel,
}

/// The quiesce hook, held by a hook-style hypervisor: at the quiesce point it reports
/// `Suspended`, then awaits [`quiesced`](Self::quiesced) and obeys the decision. The
/// runtime implements it with a one-shot channel that `AckQuiesce` (→ `Resume`) or
/// `CancelMigration` (→ `Cancel`) completes. Observe-style hypervisors never call it.
pub trait QuiesceGate: Send + 'static {
    /// Waits for the orchestrator's decision. If the runtime goes away without
    /// deciding, implementations answer [`GateDecision::Cancel`]: the safe side.
    fn quiesced(&mut self) -> impl Future<Output = GateDecision> + Send;
}

/// A gate that resumes at once: for observe-style hypervisors and for tests of a
/// hook-style one without an orchestrator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumeImmediately;

impl QuiesceGate for ResumeImmediately {
    fn quiesced(&mut self) -> impl Future<Output = GateDecision> + Send {
        std::future::ready(GateDecision::Resume)
    }
}

/// Why a hypervisor call failed. Each names the VM (domain or lab node).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HypervisorError {
    /// The hypervisor cannot be reached (libvirt connection, lab runner).
    #[error("vm {vm}: cannot reach hypervisor at {uri}: {reason}")]
    Connect {
        /// The VM.
        vm: String,
        /// Where we tried.
        uri: String,
        /// Why not.
        reason: String,
    },
    /// The VM is not where the plan says.
    #[error("vm {vm}: not found at the source")]
    NotFound {
        /// The VM.
        vm: String,
    },
    /// The migration job failed; the VM runs at the source.
    #[error("vm {vm}: migration failed: {reason}")]
    Job {
        /// The VM.
        vm: String,
        /// The hypervisor's reason.
        reason: String,
    },
    /// The migration was cancelled (by [`Hypervisor::cancel`] or the gate); the VM runs
    /// at the source.
    #[error("vm {vm}: migration cancelled")]
    Cancelled {
        /// The VM.
        vm: String,
    },
    /// Cancel came too late: the VM already runs at the destination. The runtime
    /// reports this to the machine as [`HypervisorEvent::Resumed`] (then `Completed`),
    /// which turns the rollback into going forward.
    #[error("vm {vm}: already running at the destination, cannot cancel")]
    AlreadyCompleted {
        /// The VM.
        vm: String,
    },
}

/// Moves one VM (the driver is built for one migration from the plan's `[hypervisor]`).
pub trait Hypervisor: Send + Sync {
    /// Runs the live migration to its end. Reports [`HypervisorEvent`]s through
    /// `events` as they happen (`Progress` …, `Suspended`, `Resumed`, `Completed`, or
    /// `Failed`) and returns `Ok` once the VM runs at the destination.
    ///
    /// A hook-style driver, after reporting `Suspended`, awaits `gate` and only then
    /// moves and resumes the VM (or resumes it at the source on `Cancel`, returning
    /// [`HypervisorError::Cancelled`]). An observe-style driver drops `gate`.
    ///
    /// Idempotent: if the VM is already migrating to the target, attach to that job; if
    /// it already runs there, report `Resumed` and `Completed` and return `Ok`.
    fn migrate<S, G>(
        &self,
        events: S,
        gate: G,
    ) -> impl Future<Output = Result<(), HypervisorError>> + Send
    where
        S: EventSink<HypervisorEvent>,
        G: QuiesceGate;

    /// Stops the migration so that the VM runs at the source. `Ok` when there is no
    /// migration (never started, already failed); [`HypervisorError::AlreadyCompleted`]
    /// when the VM already runs at the destination.
    fn cancel(&self) -> impl Future<Output = Result<(), HypervisorError>> + Send;
}
