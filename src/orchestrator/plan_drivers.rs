//! The drivers a plan can name, as one type each: the runtime is generic over its
//! hypervisor and storage (their methods return `impl Future`, so they are not object
//! safe), and a plan picks the kind at run time. Each enum forwards to the driver the
//! plan chose.

use migroute_orchestration::drivers::{
    DrbdStorage, EventSink, Hypervisor, HypervisorError, HypervisorEvent, NoneStorage,
    QemuMirrorStorage, QuiesceGate, Storage, StorageError, StorageEvent,
};

#[cfg(feature = "libvirt")]
use migroute_orchestration::drivers::libvirt::LibvirtHypervisor;

use super::lab_hypervisor::{LabHypervisor, PauseWindow};

/// The libvirt part of `migrate`'s report, as JSON (the driver's types exist only in
/// builds with the `libvirt` feature).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LibvirtReport {
    /// libvirt's statistics of the completed job (`JobStats`), if it reported them.
    pub job: Option<serde_json::Value>,
    /// When the migrate call started and when memory began to move
    /// (`MigrationTimeline`).
    pub timeline: serde_json::Value,
}

/// The plan's `[hypervisor]`.
pub enum PlanHypervisor {
    /// `kind = "lab"`.
    Lab(Box<LabHypervisor>),
    /// `kind = "libvirt"` (built with the `libvirt` feature).
    #[cfg(feature = "libvirt")]
    Libvirt(LibvirtHypervisor),
}

impl PlanHypervisor {
    /// The pause window the lab hypervisor measured, for the report; libvirt's is the
    /// orchestrator's suspend and resume marks (its events), and its own downtime is
    /// in [`libvirt_report`](Self::libvirt_report).
    pub fn pause_window(&self) -> Option<PauseWindow> {
        match self {
            PlanHypervisor::Lab(h) => h.pause_window(),
            #[cfg(feature = "libvirt")]
            PlanHypervisor::Libvirt(_) => None,
        }
    }

    /// What libvirt said of the finished job (bytes copied, its downtime) and when the
    /// disk copy gave way to memory: `None` for other hypervisors.
    pub fn libvirt_report(&self) -> Option<LibvirtReport> {
        match self {
            PlanHypervisor::Lab(_) => None,
            #[cfg(feature = "libvirt")]
            PlanHypervisor::Libvirt(h) => Some(LibvirtReport {
                job: h
                    .completed_stats()
                    .map(|s| serde_json::to_value(s).unwrap_or_default()),
                timeline: serde_json::to_value(h.timeline()).unwrap_or_default(),
            }),
        }
    }
}

impl Hypervisor for PlanHypervisor {
    async fn migrate<S, G>(&self, events: S, gate: G) -> Result<(), HypervisorError>
    where
        S: EventSink<HypervisorEvent>,
        G: QuiesceGate,
    {
        match self {
            PlanHypervisor::Lab(h) => h.migrate(events, gate).await,
            #[cfg(feature = "libvirt")]
            PlanHypervisor::Libvirt(h) => h.migrate(events, gate).await,
        }
    }

    async fn cancel(&self) -> Result<(), HypervisorError> {
        match self {
            PlanHypervisor::Lab(h) => h.cancel().await,
            #[cfg(feature = "libvirt")]
            PlanHypervisor::Libvirt(h) => h.cancel().await,
        }
    }
}

/// The plan's `[storage]`.
pub enum PlanStorage {
    /// `kind = "none"`, and `libvirt-copy` (libvirt copies the disks itself during
    /// the migration, so there is nothing to drive here).
    None(NoneStorage),
    /// `kind = "qemu-mirror"`.
    QemuMirror(Box<QemuMirrorStorage>),
    /// `kind = "drbd"`.
    Drbd(Box<DrbdStorage>),
}

/// Forwards one `Storage` call to the chosen driver.
macro_rules! forward {
    ($self:ident, $call:ident($($arg:expr),*)) => {
        match $self {
            PlanStorage::None(s) => s.$call($($arg),*).await,
            PlanStorage::QemuMirror(s) => s.$call($($arg),*).await,
            PlanStorage::Drbd(s) => s.$call($($arg),*).await,
        }
    };
}

impl Storage for PlanStorage {
    async fn start_async<S>(&self, events: S) -> Result<(), StorageError>
    where
        S: EventSink<StorageEvent>,
    {
        forward!(self, start_async(events))
    }

    async fn switch_sync(&self) -> Result<(), StorageError> {
        forward!(self, switch_sync())
    }

    async fn wait_in_sync(&self) -> Result<(), StorageError> {
        forward!(self, wait_in_sync())
    }

    async fn cutover(&self) -> Result<(), StorageError> {
        forward!(self, cutover())
    }

    async fn abort(&self) -> Result<(), StorageError> {
        forward!(self, abort())
    }
}
