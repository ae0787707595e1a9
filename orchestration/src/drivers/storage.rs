//! [`Storage`]: replication of the VM's disks to the destination (paper §3.1, "requiring
//! storage migration"): asynchronous first, synchronous just before the move, cutover
//! at the switchover.

use super::EventSink;
use serde::{Deserialize, Serialize};
use std::future::Future;
use thiserror::Error;

/// What a storage driver reports after [`Storage::start_async`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum StorageEvent {
    /// The bulk copy is done (QEMU mirror: `BLOCK_JOB_READY`; DRBD: peer up to date).
    Ready,
    /// Synchronous and drained (QEMU mirror: actively-synced; DRBD: protocol C, no
    /// out-of-sync blocks).
    InSync,
    /// Replication broke (job error, peer gone).
    Failed {
        /// The backend's reason.
        error: String,
    },
}

/// Why a storage call failed. Each names the replicated device or resource.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorageError {
    /// The backend (QEMU monitor, drbdadm) cannot be reached.
    #[error("storage {device}: cannot reach backend: {reason}")]
    Connect {
        /// Device or resource.
        device: String,
        /// Why not.
        reason: String,
    },
    /// The backend refused or failed the operation.
    #[error("storage {device}: {op} failed: {reason}")]
    Operation {
        /// Device or resource.
        device: String,
        /// `start-async`, `switch-sync`, `wait-in-sync`, `cutover` or `abort`.
        op: &'static str,
        /// The backend's reason.
        reason: String,
    },
    /// The operation needs an earlier step that has not happened (e.g. cutover before
    /// in sync): a bug in the caller, never retried.
    #[error("storage {device}: {op} needs {needs} first")]
    OutOfOrder {
        /// Device or resource.
        device: String,
        /// The refused operation.
        op: &'static str,
        /// What must come first.
        needs: &'static str,
    },
}

/// Replicates one VM's storage (the driver is built for one migration from the plan's
/// `[storage]`). Every method is idempotent.
pub trait Storage: Send + Sync {
    /// Starts asynchronous replication to the destination; returns once it runs.
    /// `events` stays with the driver for the rest of the migration: `Ready` when the
    /// bulk copy is done, `InSync` once synchronous and drained, `Failed` if it breaks.
    fn start_async<S>(&self, events: S) -> impl Future<Output = Result<(), StorageError>> + Send
    where
        S: EventSink<StorageEvent>;

    /// Switches to synchronous replication: pending writes drain, new writes wait for
    /// the destination.
    fn switch_sync(&self) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Returns once replication is synchronous and nothing is pending.
    fn wait_in_sync(&self) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Makes the destination's copy primary (final flush): called inside the pause
    /// window, with the VM suspended.
    fn cutover(&self) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Stops replication and leaves the source primary, whatever was done before
    /// (including a cutover, as long as the VM has not resumed at the destination).
    fn abort(&self) -> impl Future<Output = Result<(), StorageError>> + Send;
}
