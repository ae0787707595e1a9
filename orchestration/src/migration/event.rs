//! Inputs of the whole-migration machine.

use crate::drivers::{HypervisorEvent, StorageEvent};
use crate::pe::{Phase as PePhase, Role};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Something that happened to a migration: a driver finished an action, a driver
/// reported on its own, an agent was polled, or an operator spoke. Deadlines come in
/// through [`crate::migration::Migration::handle_timeout`] instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum Event {
    /// Begin: from `planned`, prepare both agents.
    Start,
    /// The command with this `seq` finished successfully. Duplicates are ignored.
    Done {
        /// `Command::seq`.
        seq: u64,
    },
    /// The command with this `seq` failed. A forward action's failure rolls back (or,
    /// past the point of no return, stalls); an undo's failure is recorded and the
    /// rollback goes on.
    Failed {
        /// `Command::seq`.
        seq: u64,
        /// The driver's error, for the record.
        error: String,
    },
    /// Reported by the hypervisor during `StartMigration`.
    Hypervisor(HypervisorEvent),
    /// Reported by the storage driver after `StorageStartAsync`.
    Storage(StorageEvent),
    /// A poll of an agent's `GET /v1/migrations/{id}` saw this phase.
    Agent {
        /// Which agent.
        which: Role,
        /// Its phase.
        phase: PePhase,
    },
    /// Operator: roll back (refused past the point of no return).
    Abort,
    /// Operator: tear down now, converged or not (after the destination announced).
    Complete,
    /// Operator: after a stall, try the stalled phase again.
    Retry,
}

impl Event {
    /// The event's name without its data, for errors and logs.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Start => EventKind::Start,
            Event::Done { .. } => EventKind::Done,
            Event::Failed { .. } => EventKind::Failed,
            Event::Hypervisor(_) => EventKind::Hypervisor,
            Event::Storage(_) => EventKind::Storage,
            Event::Agent { .. } => EventKind::Agent,
            Event::Abort => EventKind::Abort,
            Event::Complete => EventKind::Complete,
            Event::Retry => EventKind::Retry,
        }
    }
}

/// [`Event`] without data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// See [`Event::Start`].
    Start,
    /// See [`Event::Done`].
    Done,
    /// See [`Event::Failed`].
    Failed,
    /// See [`Event::Hypervisor`].
    Hypervisor,
    /// See [`Event::Storage`].
    Storage,
    /// See [`Event::Agent`].
    Agent,
    /// See [`Event::Abort`].
    Abort,
    /// See [`Event::Complete`].
    Complete,
    /// See [`Event::Retry`].
    Retry,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Start => "start",
            EventKind::Done => "done",
            EventKind::Failed => "failed",
            EventKind::Hypervisor => "hypervisor",
            EventKind::Storage => "storage",
            EventKind::Agent => "agent",
            EventKind::Abort => "abort",
            EventKind::Complete => "complete",
            EventKind::Retry => "retry",
        })
    }
}
