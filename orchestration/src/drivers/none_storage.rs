//! [`NoneStorage`]: the storage driver for VMs without storage to replicate.

use super::storage::{Storage, StorageError, StorageEvent};
use super::EventSink;
use std::future::{ready, Future};

/// Storage with nothing to replicate: every step is immediately done, and
/// `start_async` reports `Ready` and `InSync` at once. The machine skips the storage
/// phases for `kind = "none"`; this driver is for runtimes that prefer one code path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoneStorage;

impl Storage for NoneStorage {
    fn start_async<S>(&self, events: S) -> impl Future<Output = Result<(), StorageError>> + Send
    where
        S: EventSink<StorageEvent>,
    {
        events.emit(StorageEvent::Ready);
        events.emit(StorageEvent::InSync);
        ready(Ok(()))
    }

    fn switch_sync(&self) -> impl Future<Output = Result<(), StorageError>> + Send {
        ready(Ok(()))
    }

    fn wait_in_sync(&self) -> impl Future<Output = Result<(), StorageError>> + Send {
        ready(Ok(()))
    }

    fn cutover(&self) -> impl Future<Output = Result<(), StorageError>> + Send {
        ready(Ok(()))
    }

    fn abort(&self) -> impl Future<Output = Result<(), StorageError>> + Send {
        ready(Ok(()))
    }
}
