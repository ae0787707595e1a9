//! The blocking side of the driver: connections, lookups, the migrate call and the
//! follow loop that feeds the [`Follower`]. Runs on a thread of its own per call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::{Domain, MigrateParameters};
use virt::sys;

use super::ffi::{self, DomainEvent, DomainEventKind, EventId, Side};
use super::follow::{Finish, Follower, Observation, Outcome, Step};
use super::job::JobStats;
use super::{epoch_ms, LibvirtConfig, MigrationTimeline};
use crate::drivers::{HypervisorError, HypervisorEvent};
use crate::migration::CopyStorage;

/// libvirt's error number for "domain not found".
pub(super) const ERR_NO_DOMAIN: i32 = 42;

fn connect(cfg: &LibvirtConfig, uri: &str) -> Result<Connect, HypervisorError> {
    Connect::open(Some(uri)).map_err(|e| HypervisorError::Connect {
        vm: cfg.domain.clone(),
        uri: uri.to_owned(),
        reason: e.to_string(),
    })
}

fn job_err(cfg: &LibvirtConfig, what: &str, reason: impl std::fmt::Display) -> HypervisorError {
    HypervisorError::Job {
        vm: cfg.domain.clone(),
        reason: format!("{what}: {reason}"),
    }
}

/// The domain on `conn`, `None` when libvirt has no such domain.
fn lookup(cfg: &LibvirtConfig, conn: &Connect) -> Result<Option<Domain>, HypervisorError> {
    match Domain::lookup_by_name(conn, &cfg.domain) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.code() as i32 == ERR_NO_DOMAIN => Ok(None),
        Err(e) => Err(job_err(cfg, "domain lookup", e)),
    }
}

/// Whether the domain runs (not paused for an incoming migration) on `conn`.
fn running(cfg: &LibvirtConfig, conn: &Connect) -> Result<bool, HypervisorError> {
    let Some(dom) = lookup(cfg, conn)? else {
        return Ok(false);
    };
    let (state, _) = ffi::domain_state(&dom).map_err(|e| job_err(cfg, "domain state", e))?;
    Ok(state == sys::VIR_DOMAIN_RUNNING)
}

/// Whether the domain is active (running or paused) on `conn`.
fn active(cfg: &LibvirtConfig, conn: &Connect) -> Result<bool, HypervisorError> {
    match lookup(cfg, conn)? {
        Some(d) => d.is_active().map_err(|e| job_err(cfg, "domain state", e)),
        None => Ok(false),
    }
}

/// Whether the VM runs at the destination and no longer at the source.
fn moved(cfg: &LibvirtConfig, src: &Connect, dst: &Connect) -> Result<bool, HypervisorError> {
    Ok(running(cfg, dst)? && !active(cfg, src)?)
}

fn flags(cfg: &LibvirtConfig) -> u32 {
    let mut f = sys::VIR_MIGRATE_LIVE
        | sys::VIR_MIGRATE_PEER2PEER
        | sys::VIR_MIGRATE_PERSIST_DEST
        | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
    f |= match cfg.copy_storage {
        CopyStorage::None => 0,
        CopyStorage::All => sys::VIR_MIGRATE_NON_SHARED_DISK,
        CopyStorage::Inc => sys::VIR_MIGRATE_NON_SHARED_INC,
    };
    if cfg.tls {
        f |= sys::VIR_MIGRATE_TLS;
    }
    if cfg.synchronous_writes && !matches!(cfg.copy_storage, CopyStorage::None) {
        f |= VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES;
    }
    f
}

/// libvirt ≥ 8.0's flag (libvirt-domain.h: `1 << 18`), newer than the `virt-sys`
/// bindings: the disk mirror runs write-blocking, so guest writes wait for the copy.
const VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES: u32 = 1 << 18;

fn params(cfg: &LibvirtConfig) -> MigrateParameters {
    MigrateParameters {
        uri: cfg.migrate_uri.clone(),
        listen_address: cfg.listen_address.clone(),
        bandwidth: cfg.bandwidth_mib_s,
        ..MigrateParameters::default()
    }
}

/// Applies the plan's bandwidth and downtime to a running job (a job we attach to was
/// started by an earlier orchestrator, perhaps with other settings).
fn apply_settings(cfg: &LibvirtConfig, dom: &Domain) -> Result<(), String> {
    if let Some(ms) = cfg.max_downtime_ms {
        dom.migrate_set_max_downtime(ms, 0)
            .map_err(|e| format!("max downtime: {e}"))?;
    }
    if let Some(bw) = cfg.bandwidth_mib_s {
        dom.migrate_set_max_speed(bw, 0)
            .map_err(|e| format!("max speed: {e}"))?;
    }
    Ok(())
}

/// Maps a libvirt domain event to the follower's observation, if it concerns us;
/// QEMU's own stop and resume times go into the timeline.
fn observe(
    cfg: &LibvirtConfig,
    ev: DomainEvent,
    completed: &mut Option<JobStats>,
    timeline: &Mutex<MigrationTimeline>,
    attached: bool,
) -> Option<Observation> {
    if ev.domain != cfg.domain {
        return None;
    }
    match (ev.side, ev.kind) {
        (side, DomainEventKind::QemuMonitor { event, at_us }) => {
            let mut t = timeline.lock().unwrap_or_else(|e| e.into_inner());
            match (side, event.as_str()) {
                // The last stop at the source (a failed attempt's would be earlier).
                (Side::Source, "STOP") => t.guest_stopped_us = Some(at_us),
                (Side::Destination, "RESUME") => {
                    t.guest_resumed_us.get_or_insert(at_us);
                }
                _ => {}
            }
            None
        }
        (Side::Source, DomainEventKind::Lifecycle { event, detail })
            if event as u32 == sys::VIR_DOMAIN_EVENT_SUSPENDED
                && detail as u32 == sys::VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED =>
        {
            Some(Observation::SourceSuspended)
        }
        // The source stopped after its migration. When our own migrate call runs,
        // its return is what tells the outcome: libvirt's confirm phase may still be
        // settling both sides (seen: the destination not yet reported running).
        (Side::Source, DomainEventKind::Lifecycle { event, detail })
            if attached
                && event as u32 == sys::VIR_DOMAIN_EVENT_STOPPED
                && detail as u32 == sys::VIR_DOMAIN_EVENT_STOPPED_MIGRATED =>
        {
            Some(Observation::Finished(Finish::Ended))
        }
        (Side::Destination, DomainEventKind::Lifecycle { event, detail })
            if event as u32 == sys::VIR_DOMAIN_EVENT_RESUMED
                && detail as u32 == sys::VIR_DOMAIN_EVENT_RESUMED_MIGRATED =>
        {
            Some(Observation::DestinationResumed)
        }
        (Side::Source, DomainEventKind::JobCompleted(stats)) => {
            *completed = Some(stats);
            None
        }
        _ => None,
    }
}

/// Runs (or attaches to) the migration and follows it to its end. Returns libvirt's
/// statistics of the completed job when it saw them.
pub(crate) fn migrate(
    cfg: &LibvirtConfig,
    cancel: &AtomicBool,
    abandoned: &AtomicBool,
    timeline: &Mutex<MigrationTimeline>,
    emit: &dyn Fn(HypervisorEvent),
) -> Result<Option<JobStats>, HypervisorError> {
    ffi::ensure_event_loop().map_err(|e| job_err(cfg, "libvirt event loop", e))?;
    let src = connect(cfg, &cfg.source_uri)?;
    let dst = connect(cfg, &cfg.destination_uri)?;
    let (tx, rx) = mpsc::channel();
    let _registrations = [
        ffi::register(&src, EventId::Lifecycle, Side::Source, tx.clone()),
        ffi::register(&src, EventId::JobCompleted, Side::Source, tx.clone()),
        ffi::register(&src, EventId::MigrationIteration, Side::Source, tx.clone()),
        ffi::register(&dst, EventId::Lifecycle, Side::Destination, tx.clone()),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| job_err(cfg, "event registration", e))?;
    // QEMU's own stop and resume times, for the pause window: optional (a connection
    // whose policy forbids monitor events still migrates; the report then falls back
    // to the lifecycle events).
    let _monitor_events: Vec<_> = [
        ffi::register_qemu_monitor(&src, c"STOP", Side::Source, tx.clone()),
        ffi::register_qemu_monitor(&dst, c"RESUME", Side::Destination, tx),
    ]
    .into_iter()
    .filter_map(Result::ok)
    .collect();

    let Some(dom) = lookup(cfg, &src)? else {
        if running(cfg, &dst)? {
            // Already moved (a repeated call after a restart).
            emit(HypervisorEvent::Resumed);
            emit(HypervisorEvent::Completed);
            return Ok(None);
        }
        return Err(HypervisorError::NotFound {
            vm: cfg.domain.clone(),
        });
    };
    if !dom
        .is_active()
        .map_err(|e| job_err(cfg, "domain state", e))?
        && running(cfg, &dst)?
    {
        emit(HypervisorEvent::Resumed);
        emit(HypervisorEvent::Completed);
        return Ok(None);
    }

    let current = ffi::job_stats(&dom, false).map_err(|e| job_err(cfg, "job stats", e))?;
    let (call_tx, call_rx) = mpsc::channel();
    let attached = current.migrating_out();
    timeline
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .started_ms = Some(epoch_ms());
    let settings_applied = if attached {
        // An earlier orchestrator started it: follow it, with this plan's limits.
        apply_settings(cfg, &dom).is_ok()
    } else {
        // libvirt ≥ 3.7 keeps the downtime for the next migration; older ones refuse
        // it without a job, and the follow loop sets it once the job runs.
        cfg.max_downtime_ms
            .is_none_or(|ms| dom.migrate_set_max_downtime(ms, 0).is_ok())
    };
    if !attached {
        let (dom, peer, params, flags) = (
            dom.clone(),
            cfg.peer_uri
                .clone()
                .unwrap_or_else(|| cfg.destination_uri.clone()),
            params(cfg),
            flags(cfg),
        );
        std::thread::Builder::new()
            .name("libvirt-migrate".into())
            .spawn(move || {
                let r = dom
                    .migrate_to_uri3(Some(&peer), params, flags)
                    .map_err(|e| e.to_string());
                let _ = call_tx.send(r);
            })
            .map_err(|e| job_err(cfg, "migrate thread", e))?;
    }
    follow(
        cfg,
        &dom,
        &src,
        &dst,
        &rx,
        &call_rx,
        attached,
        settings_applied,
        cancel,
        abandoned,
        timeline,
        emit,
    )
}

#[allow(clippy::too_many_arguments)]
fn follow(
    cfg: &LibvirtConfig,
    dom: &Domain,
    src: &Connect,
    dst: &Connect,
    events: &Receiver<DomainEvent>,
    call: &Receiver<Result<(), String>>,
    attached: bool,
    mut settings_applied: bool,
    cancel: &AtomicBool,
    abandoned: &AtomicBool,
    timeline: &Mutex<MigrationTimeline>,
    emit: &dyn Fn(HypervisorEvent),
) -> Result<Option<JobStats>, HypervisorError> {
    let mut follower = Follower::default();
    let mut completed = None;
    let mut next_poll = Instant::now();
    let mut next_settings = Instant::now();
    let mut cancel_seen = false;
    let feed = |f: &mut Follower, o: Observation| {
        for e in f.handle(o) {
            emit(e);
        }
    };
    loop {
        if abandoned.load(Ordering::SeqCst) {
            return Err(job_err(cfg, "follow", "abandoned by the caller"));
        }
        if !cancel_seen && cancel.load(Ordering::SeqCst) {
            cancel_seen = true;
            feed(&mut follower, Observation::CancelRequested);
        }
        match follower.step() {
            Step::Done(Outcome::Completed) => {
                if completed.is_none() {
                    // The JOB_COMPLETED event may trail the call's return a little.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while completed.is_none() && Instant::now() < deadline {
                        if let Ok(ev) = events.recv_timeout(Duration::from_millis(100)) {
                            observe(cfg, ev, &mut completed, timeline, attached);
                        }
                    }
                }
                return Ok(completed);
            }
            Step::Done(Outcome::Cancelled) => {
                return Err(HypervisorError::Cancelled {
                    vm: cfg.domain.clone(),
                })
            }
            Step::Done(Outcome::Failed(reason)) => {
                return Err(HypervisorError::Job {
                    vm: cfg.domain.clone(),
                    reason,
                })
            }
            Step::CheckDestination => {
                // Let the destination's events in flight land first.
                while let Ok(ev) = events.recv_timeout(Duration::from_millis(200)) {
                    if let Some(o) = observe(cfg, ev, &mut completed, timeline, attached) {
                        feed(&mut follower, o);
                    }
                }
                if matches!(follower.step(), Step::CheckDestination) {
                    let running = moved(cfg, src, dst)?;
                    feed(&mut follower, Observation::DestinationState { running });
                }
                continue;
            }
            Step::Wait => {}
        }
        match call.try_recv() {
            Ok(r) => {
                let finish = match r {
                    Ok(()) => Finish::Ok,
                    Err(e) => Finish::Err(e),
                };
                feed(&mut follower, Observation::Finished(finish));
                continue;
            }
            // Our migrate thread died without answering: the destination tells.
            Err(TryRecvError::Disconnected) if !attached => {
                let e = "the migrate call ended without a result".to_owned();
                feed(&mut follower, Observation::Finished(Finish::Err(e)));
                continue;
            }
            Err(_) => {}
        }
        let timeout = next_poll.saturating_duration_since(Instant::now());
        match events.recv_timeout(timeout) {
            Ok(ev) => {
                if matches!(ev.kind, DomainEventKind::MigrationIteration { .. }) {
                    // A new pre-copy pass: report its statistics now.
                    next_poll = Instant::now();
                }
                if let Some(o) = observe(cfg, ev, &mut completed, timeline, attached) {
                    feed(&mut follower, o);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                next_poll = Instant::now() + cfg.poll_interval;
                match ffi::job_stats(dom, false) {
                    Ok(s) if s.active() => {
                        // A job we attached to keeps the limits it was started with
                        // (libvirt sets them again when the memory phase starts, after
                        // the disks): hold this plan's limits on it all along.
                        if !settings_applied || (attached && Instant::now() >= next_settings) {
                            settings_applied = apply_settings(cfg, dom).is_ok();
                            next_settings = Instant::now() + Duration::from_secs(1);
                        }
                        if s.memory_processed.is_some_and(|m| m > 0) {
                            let mut t = timeline.lock().unwrap_or_else(|e| e.into_inner());
                            t.memory_started_ms.get_or_insert_with(epoch_ms);
                        }
                        feed(&mut follower, Observation::Stats(Box::new(s)));
                    }
                    // The job we attached to is over: the destination tells how.
                    Ok(_) if attached => feed(&mut follower, Observation::Finished(Finish::Ended)),
                    Ok(_) => {}
                    // The source domain is gone (undefined after a migration).
                    Err(_) if attached => feed(&mut follower, Observation::Finished(Finish::Ended)),
                    Err(_) => {}
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(job_err(cfg, "events", "libvirt event channel closed"))
            }
        }
    }
}

/// Stops the migration so that the VM runs at the source.
pub(crate) fn cancel(cfg: &LibvirtConfig, flag: &AtomicBool) -> Result<(), HypervisorError> {
    flag.store(true, Ordering::SeqCst);
    let src = connect(cfg, &cfg.source_uri)?;
    let dst = connect(cfg, &cfg.destination_uri)?;
    if let Some(dom) = lookup(cfg, &src)? {
        let job = ffi::job_stats(&dom, false).map_err(|e| job_err(cfg, "job stats", e))?;
        if job.migrating_out() {
            match ffi::abort_job(&dom) {
                Ok(()) => return Ok(()),
                // Too late to abort? Then it may already run at the destination.
                Err(e) if !moved(cfg, &src, &dst)? => {
                    return Err(job_err(cfg, "abort job", e));
                }
                Err(_) => {}
            }
        }
    }
    if moved(cfg, &src, &dst)? {
        return Err(HypervisorError::AlreadyCompleted {
            vm: cfg.domain.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::MigrationPlan;

    fn plan(hypervisor_extra: &str, storage: &str) -> MigrationPlan {
        let text = format!(
            r#"{{"id": "m", "vm": {{"name": "vm1", "prefixes": ["10.10.0.5/32"]}},
            "source": {{"agent_url": "http://a:1", "tunnel_endpoint": "10.0.0.1"}},
            "destination": {{"agent_url": "http://b:1", "tunnel_endpoint": "10.0.0.2"}},
            "tunnel": {{"kind": "vxlan", "vni": 5}},
            "hypervisor": {{"kind": "libvirt", "source_uri": "qemu+tcp://a/system",
                            "destination_uri": "qemu+tcp://b/system"{hypervisor_extra}}},
            "storage": {storage}}}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    fn flags_of(hypervisor_extra: &str, storage: &str) -> u32 {
        flags(&LibvirtConfig::from_plan(&plan(hypervisor_extra, storage)).unwrap())
    }

    #[test]
    fn libvirt_copy_storage_copies_disks_and_may_make_writes_synchronous() {
        let none = flags_of("", r#"{"kind": "none"}"#);
        assert_eq!(none & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
        assert_eq!(none & VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES, 0);
        let copy = flags_of("", r#"{"kind": "libvirt-copy"}"#);
        assert_ne!(copy & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
        assert_eq!(copy & VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES, 0);
        let sync = flags_of(
            r#", "copy_storage": "inc""#,
            r#"{"kind": "libvirt-copy", "synchronous_writes": true}"#,
        );
        assert_ne!(sync & sys::VIR_MIGRATE_NON_SHARED_INC, 0);
        assert_eq!(sync & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
        assert_ne!(sync & VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES, 0);
        assert!(sync & sys::VIR_MIGRATE_LIVE != 0 && sync & sys::VIR_MIGRATE_PEER2PEER != 0);
    }
}
