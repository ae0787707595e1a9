//! Errors of the per-PE machine and its registry. Each names the migration it concerns.

use super::event::EventKind;
use super::phase::{Phase, Role};
use super::spec::{MacAddr, MigrationId, SpecError};
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use thiserror::Error;

/// An event the machine refuses. Nothing changed (REST: 409).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeError {
    /// The event makes no sense in this phase, e.g. `announce` before `switchover`
    /// (traffic would reach the destination before the VM), or `complete` after abort.
    #[error("migration {id}: {event} is not allowed in phase {phase}")]
    InvalidEvent {
        /// The migration.
        id: MigrationId,
        /// Its phase.
        phase: Phase,
        /// The refused event.
        event: EventKind,
    },
    /// The event belongs to the other side, e.g. the VM seen at the source.
    #[error("migration {id}: {event} does not apply to the {role} side")]
    WrongRole {
        /// The migration.
        id: MigrationId,
        /// This PE's role.
        role: Role,
        /// The refused event.
        event: EventKind,
    },
    /// A failure was reported for a command that is not in the latest batch: the
    /// executor's contract (one batch at a time, stop at the first failure) was broken.
    #[error("migration {id}: failure reported for command {seq}, not in the latest batch")]
    UnknownCommand {
        /// The migration.
        id: MigrationId,
        /// The reported sequence number.
        seq: u64,
    },
}

/// A journal that cannot be folded back into a machine.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// No commands at all: nothing to rebuild.
    #[error("no commands to rebuild a migration from")]
    Empty,
    /// The first command of a migration must be its `Created` record.
    #[error("migration {id}: journal starts at seq {seq} without a creation record")]
    MissingCreation {
        /// The migration.
        id: MigrationId,
        /// Sequence number of the offending command.
        seq: u64,
    },
    /// A second `Created` record.
    #[error("migration {id}: second creation record at seq {seq}")]
    DuplicateCreation {
        /// The migration.
        id: MigrationId,
        /// Sequence number of the offending command.
        seq: u64,
    },
    /// Commands must be numbered 0, 1, 2, … without gaps.
    #[error("migration {id}: expected seq {expected}, found {found}")]
    Gap {
        /// The migration.
        id: MigrationId,
        /// The next sequence number.
        expected: u64,
        /// What the journal holds.
        found: u64,
    },
    /// The journaled spec does not pass today's validation.
    #[error("migration {id}: journaled spec is invalid")]
    InvalidSpec {
        /// The migration.
        id: MigrationId,
        /// Why.
        #[source]
        source: SpecError,
    },
}

/// Why a `PUT` conflicts with existing state (REST: 409 with `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictReason {
    /// The same id was prepared with a different body.
    DifferentBody,
    /// A live migration already moves this prefix.
    PrefixInUse(IpNetwork),
    /// A live migration already uses this tunnel (same kind, VNI/key and remote).
    TunnelInUse,
}

impl std::fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConflictReason::DifferentBody => f.write_str("same id, different body"),
            ConflictReason::PrefixInUse(p) => write!(f, "prefix {p} is in that live migration"),
            ConflictReason::TunnelInUse => f.write_str("its tunnel is in that live migration"),
        }
    }
}

/// Errors of [`crate::pe::Registry`], shaped for the REST layer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegistryError {
    /// 400: the request is malformed.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// 409: conflicts with migration `id` (which may be the requested id itself).
    #[error("conflict with migration {id}: {reason}")]
    Conflict {
        /// The conflicting migration.
        id: MigrationId,
        /// Why.
        reason: ConflictReason,
    },
    /// 404: no such migration.
    #[error("no migration {0}")]
    NotFound(MigrationId),
    /// 404: no live destination migration moves this address (VM seen).
    #[error("no live destination migration for {0}")]
    NoMigrationFor(IpAddr),
    /// 404: no live destination migration moves the VM with this MAC (RARP heard).
    #[error("no live destination migration for MAC {0}")]
    NoMigrationForMac(MacAddr),
    /// 409: the machine refused the event.
    #[error(transparent)]
    Machine(#[from] PeError),
}
