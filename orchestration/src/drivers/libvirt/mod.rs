//! The libvirt [`Hypervisor`]: a live, peer-to-peer, pre-copy migration of one domain
//! (optionally copying its disks), reported from libvirt's job statistics and domain
//! events. Built with feature `libvirt`.
//!
//! libvirt only *reports* the suspend (observe-style quiesce), so the gate is dropped.
//! Every libvirt call blocks: each [`Hypervisor`] call runs on its own thread, and
//! libvirt's default event loop runs once per process on a thread of its own
//! ([`ffi::ensure_event_loop`]). A peer-to-peer migration runs inside the source's
//! libvirtd: if the orchestrator dies, it goes on, and the next `migrate` attaches to
//! it.

mod ffi;
mod follow;
mod job;
mod session;
mod watch;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use job::JobStats;
pub use watch::{HostWatch, Lifecycle, LifecycleEvent, WatchError};

/// When the phases of a libvirt migration began, wall clock (epoch ms), as the driver
/// saw them: with copied disks libvirt first mirrors the disks (the storage copy), then
/// streams memory while the mirror keeps the copies in step. The pause itself is the
/// orchestrator's (suspend and resume events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrationTimeline {
    /// The migrate call was issued (or an earlier one's job attached to).
    pub started_ms: Option<u64>,
    /// The first statistics showing memory moving: the disk copy is done (libvirt
    /// starts memory only once every disk mirror is in step). Resolution: the poll
    /// interval, or a pre-copy iteration event.
    pub memory_started_ms: Option<u64>,
    /// QEMU's timestamp of the guest's stop at the source (its `STOP` event), µs since
    /// the epoch: the real start of the pause. libvirt's lifecycle event for it comes
    /// late, because QEMU's monitor waits for the stop-and-copy to release its main
    /// loop.
    pub guest_stopped_us: Option<u64>,
    /// QEMU's timestamp of the guest's resume at the destination (`RESUME`).
    pub guest_resumed_us: Option<u64>,
}

/// The wall clock in epoch ms.
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

use super::{EventSink, Hypervisor, HypervisorError, HypervisorEvent, QuiesceGate};
use crate::migration::{CopyStorage, HypervisorPlan, MigrationPlan, StoragePlan};

/// What the driver needs to know, from the plan's `[hypervisor]` section (`kind =
/// "libvirt"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtConfig {
    /// How the orchestrator reaches the source's libvirtd.
    pub source_uri: String,
    /// How the orchestrator reaches the destination's libvirtd.
    pub destination_uri: String,
    /// How the source's libvirtd reaches the destination's (peer-to-peer); defaults to
    /// `destination_uri`.
    pub peer_uri: Option<String>,
    /// The domain's name.
    pub domain: String,
    /// Stop-and-copy downtime libvirt may use.
    pub max_downtime_ms: Option<u64>,
    /// Where the migration data stream goes (e.g. `tcp://10.0.0.2`).
    pub migrate_uri: Option<String>,
    /// Where the destination listens for it.
    pub listen_address: Option<String>,
    /// Bandwidth cap, MiB/s.
    pub bandwidth_mib_s: Option<u64>,
    /// Which disks libvirt copies.
    pub copy_storage: CopyStorage,
    /// Guest writes wait for the destination during the disk copy (from a plan's
    /// `[storage] kind = "libvirt-copy"`), so the copy converges under a busy guest.
    pub synchronous_writes: bool,
    /// Encrypt the stream with libvirt's TLS.
    pub tls: bool,
    /// How often job statistics are polled for `Progress`.
    pub poll_interval: Duration,
}

impl LibvirtConfig {
    /// The configuration of a plan whose hypervisor is libvirt (`None` otherwise). The
    /// domain is the section's `domain`, else the VM's name.
    pub fn from_plan(plan: &MigrationPlan) -> Option<Self> {
        let HypervisorPlan::Libvirt {
            source_uri,
            destination_uri,
            domain,
            max_downtime_ms,
            peer_uri,
            migrate_uri,
            listen_address,
            bandwidth_mib_s,
            copy_storage,
            tls,
        } = &plan.hypervisor
        else {
            return None;
        };
        Some(Self {
            source_uri: source_uri.clone(),
            destination_uri: destination_uri.clone(),
            peer_uri: peer_uri.clone(),
            domain: domain.clone().unwrap_or_else(|| plan.vm.name.clone()),
            max_downtime_ms: *max_downtime_ms,
            migrate_uri: migrate_uri.clone(),
            listen_address: listen_address.clone(),
            bandwidth_mib_s: *bandwidth_mib_s,
            // `[storage] kind = "libvirt-copy"` means libvirt copies the disks: whole
            // ones unless the hypervisor section says `inc`.
            copy_storage: match (&plan.storage, copy_storage) {
                (StoragePlan::LibvirtCopy { .. }, CopyStorage::None) => CopyStorage::All,
                (_, c) => *c,
            },
            synchronous_writes: matches!(
                plan.storage,
                StoragePlan::LibvirtCopy {
                    synchronous_writes: true
                }
            ),
            tls: *tls,
            poll_interval: Duration::from_millis(200),
        })
    }
}

/// The libvirt driver for one migration (see the module documentation).
#[derive(Debug, Clone)]
pub struct LibvirtHypervisor {
    config: Arc<LibvirtConfig>,
    cancel: Arc<AtomicBool>,
    completed: Arc<Mutex<Option<JobStats>>>,
    timeline: Arc<Mutex<MigrationTimeline>>,
}

impl LibvirtHypervisor {
    /// A driver for the migration `config` describes. Connects lazily, in each call.
    pub fn new(config: LibvirtConfig) -> Self {
        Self {
            config: Arc::new(config),
            cancel: Arc::new(AtomicBool::new(false)),
            completed: Arc::new(Mutex::new(None)),
            timeline: Arc::new(Mutex::new(MigrationTimeline::default())),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LibvirtConfig {
        &self.config
    }

    /// libvirt's statistics of the finished migration job (downtime, bytes, time), once
    /// `migrate` has seen it complete: for reports.
    pub fn completed_stats(&self) -> Option<JobStats> {
        self.completed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// When the migration's phases began, as far as `migrate` has seen them.
    pub fn timeline(&self) -> MigrationTimeline {
        *self.timeline.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn vm(&self) -> String {
        self.config.domain.clone()
    }
}

/// Runs `f` on a thread of its own and resolves with its result.
fn blocking<T: Send + 'static>(
    vm: String,
    f: impl FnOnce() -> Result<T, HypervisorError> + Send + 'static,
) -> impl Future<Output = Result<T, HypervisorError>> + Send {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("libvirt-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    async move {
        if let Err(e) = spawned {
            return Err(HypervisorError::Job {
                vm,
                reason: format!("cannot start a thread for libvirt: {e}"),
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(HypervisorError::Job {
                vm,
                reason: "the libvirt call's thread panicked".into(),
            })
        })
    }
}

/// Tells the migration thread that nobody awaits it any more (the future was dropped,
/// as when the orchestrator goes away): it stops following; libvirt's job goes on.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Hypervisor for LibvirtHypervisor {
    fn migrate<S, G>(
        &self,
        events: S,
        gate: G,
    ) -> impl Future<Output = Result<(), HypervisorError>> + Send
    where
        S: EventSink<HypervisorEvent>,
        G: QuiesceGate,
    {
        // Observe style: libvirt resumes at the destination on its own.
        drop(gate);
        let abandoned = Arc::new(AtomicBool::new(false));
        let guard = Abandon(abandoned.clone());
        let (config, cancel, completed, timeline) = (
            self.config.clone(),
            self.cancel.clone(),
            self.completed.clone(),
            self.timeline.clone(),
        );
        let call = blocking(self.vm(), move || {
            let stats =
                session::migrate(&config, &cancel, &abandoned, &timeline, &|e| events.emit(e))?;
            if let Some(s) = stats {
                *completed.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
            }
            Ok(())
        });
        async move {
            let _guard = guard;
            call.await
        }
    }

    fn cancel(&self) -> impl Future<Output = Result<(), HypervisorError>> + Send {
        let (config, cancel) = (self.config.clone(), self.cancel.clone());
        blocking(self.vm(), move || session::cancel(&config, &cancel))
    }
}
