//! Phases of the whole-migration machine.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a whole migration stands. Entered (and journaled) before the actions it needs
/// are issued, so after a crash the phase says what had been decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Journaled, not started: nothing exists anywhere yet.
    Planned,
    /// Both agents are being prepared (tunnels between the PEs).
    Preparing,
    /// Asynchronous storage replication runs until the bulk copy is done.
    StorageAsync,
    /// Storage switches to synchronous replication and drains until in sync.
    Presync,
    /// The destination delivers from the tunnel; the hypervisor pre-copies memory
    /// until it suspends the VM.
    Migrating,
    /// The VM is suspended: the source installs its override (and storage cuts over)
    /// inside the pause window.
    SwitchingOver,
    /// The override is acknowledged; waiting for the VM to resume at the destination.
    Resuming,
    /// The VM runs at the destination (point of no return): the agents announce.
    Announcing,
    /// Announced; waiting for the agents to report convergence.
    Converging,
    /// Converged: both agents are told to complete.
    TearingDown,
    /// Done: the VM and its routes live at the destination.
    Completed,
    /// Past the point of no return something failed or timed out; nothing is undone
    /// (that would black-hole the VM) and an operator must `retry` or `complete`.
    Stalled,
    /// Undoing in reverse: cancel the migration, then abort storage and both agents.
    RollingBack,
    /// Everything undone; the VM runs at the source as before.
    RolledBack,
}

impl Phase {
    /// Final phases: nothing more happens.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Completed | Phase::RolledBack)
    }

    /// Forward phases: the migration is still moving towards `Completed`.
    pub fn is_forward(self) -> bool {
        !matches!(
            self,
            Phase::Planned
                | Phase::Completed
                | Phase::Stalled
                | Phase::RollingBack
                | Phase::RolledBack
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Planned => "planned",
            Phase::Preparing => "preparing",
            Phase::StorageAsync => "storage-async",
            Phase::Presync => "presync",
            Phase::Migrating => "migrating",
            Phase::SwitchingOver => "switching-over",
            Phase::Resuming => "resuming",
            Phase::Announcing => "announcing",
            Phase::Converging => "converging",
            Phase::TearingDown => "tearing-down",
            Phase::Completed => "completed",
            Phase::Stalled => "stalled",
            Phase::RollingBack => "rolling-back",
            Phase::RolledBack => "rolled-back",
        })
    }
}
