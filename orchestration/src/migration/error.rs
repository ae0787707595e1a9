//! Errors of the whole-migration machine. Each names the migration.

use super::event::EventKind;
use super::phase::Phase;
use super::plan::PlanError;
use crate::pe::MigrationId;
use thiserror::Error;

/// An input the machine refuses; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MigrationError {
    /// The plan does not validate.
    #[error("migration plan is invalid")]
    Plan(#[from] PlanError),
    /// The event makes no sense in this phase (e.g. `retry` while not stalled).
    #[error("migration {id}: {event} is not allowed in phase {phase}")]
    InvalidEvent {
        /// The migration.
        id: MigrationId,
        /// Its phase.
        phase: Phase,
        /// The refused event.
        event: EventKind,
    },
    /// Abort refused: the VM runs at the destination, and undoing the network would
    /// cut it off. Migrate it back with a new migration instead.
    #[error(
        "migration {id}: cannot abort in phase {phase}: the vm already runs at the destination"
    )]
    PastPointOfNoReturn {
        /// The migration.
        id: MigrationId,
        /// Its phase.
        phase: Phase,
    },
    /// `Done`/`Failed` for a seq the machine never issued.
    #[error("migration {id}: no command {seq} was issued")]
    UnknownCommand {
        /// The migration.
        id: MigrationId,
        /// The reported seq.
        seq: u64,
    },
}

/// A journal that cannot be folded back into a machine.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// No commands.
    #[error("no commands to rebuild a migration from")]
    Empty,
    /// The first command must be the `Created` record, at seq 0.
    #[error("migration {id}: journal starts at seq {seq} without a creation record")]
    MissingCreation {
        /// The migration.
        id: MigrationId,
        /// Seq of the offending command.
        seq: u64,
    },
    /// A second `Created` record.
    #[error("migration {id}: second creation record at seq {seq}")]
    DuplicateCreation {
        /// The migration.
        id: MigrationId,
        /// Seq of the offending command.
        seq: u64,
    },
    /// Commands numbered 0, 1, 2, … without gaps, all of one migration.
    #[error("migration {id}: expected seq {expected}, found {found}")]
    Gap {
        /// The migration.
        id: MigrationId,
        /// The next seq.
        expected: u64,
        /// What the journal holds.
        found: u64,
    },
    /// The journaled plan does not pass today's validation.
    #[error("migration {id}: journaled plan is invalid")]
    InvalidPlan {
        /// The migration.
        id: MigrationId,
        /// Why.
        #[source]
        source: PlanError,
    },
}
