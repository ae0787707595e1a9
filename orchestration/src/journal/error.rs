//! Journal errors.

use crate::migration::ReplayError as MigrationReplayError;
use crate::pe::ReplayError;
use std::path::PathBuf;
use thiserror::Error;

/// What can go wrong with the journal. Any of these means the agent must not act: an
/// action that cannot be journaled must not be taken.
#[derive(Debug, Error)]
pub enum JournalError {
    /// The database file cannot be opened or created.
    #[error("journal {path}: cannot open")]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's reason (boxed: redb's errors are large).
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// A read or write failed.
    #[error("journal {path}: {op} failed")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What we were doing.
        op: &'static str,
        /// redb's reason (boxed: redb's errors are large).
        #[source]
        source: Box<redb::Error>,
    },
    /// Written by a migroute with another record format.
    #[error("journal {path}: record format {found}, this migroute reads {supported}")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// Format found in the file.
        found: u64,
        /// Format this build reads and writes.
        supported: u64,
    },
    /// A record that does not decode, or whose key disagrees with its content.
    #[error("journal {path}: record ({migration}, {seq}) is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Migration id from the key.
        migration: String,
        /// Seq from the key.
        seq: u64,
        /// Why it does not decode.
        reason: String,
    },
    /// A command with this key is already journaled with different content: the
    /// executor's contract was broken, and overwriting history would hide it.
    #[error("journal {path}: ({migration}, {seq}) already holds another command")]
    SeqTaken {
        /// The file.
        path: PathBuf,
        /// Migration id.
        migration: String,
        /// Seq.
        seq: u64,
    },
    /// The records decode but do not fold into machines.
    #[error("journal {path}: cannot rebuild migrations")]
    Replay {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ReplayError,
    },
    /// The orchestrator's records decode but do not fold into a whole-migration machine.
    #[error("journal {path}: cannot rebuild orchestrated migration")]
    MigrationReplay {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: MigrationReplayError,
    },
}
