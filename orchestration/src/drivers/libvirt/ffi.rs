//! Every `unsafe` call of the libvirt driver, each with the invariant it relies on.
//!
//! `virt` 0.4 covers connections, lookups and `virDomainMigrateToURI3`; it lacks domain
//! events and `virDomainAbortJob`, and its job-stats call is unsound (it builds a `Vec`
//! from libvirt's memory, and from NULL when no job runs). Those few calls go through
//! `virt::sys` here, behind safe functions.
//!
//! Invariants kept by this module:
//! - a `virConnectPtr`/`virDomainPtr` passed to libvirt comes from a live `virt::Connect`
//!   / `virt::Domain` borrowed for the whole call, so libvirt holds a reference;
//! - typed-parameter arrays libvirt allocates are read only within `nparams` and freed
//!   once with `virTypedParamsFree`;
//! - an event callback's opaque pointer is a `Box<EventTarget>` leaked at registration
//!   and reclaimed only by libvirt's free callback, which libvirt calls exactly once,
//!   after the last callback invocation (on deregistration or connection close).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::mpsc::Sender;
use std::sync::OnceLock;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

use super::job::JobStats;

/// A domain event as the driver consumes it: which connection saw it, for which domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DomainEvent {
    /// The tag given at registration (source or destination side).
    pub side: Side,
    /// The domain's name.
    pub domain: String,
    /// What happened.
    pub kind: DomainEventKind,
}

/// Which libvirtd reported an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The host the VM leaves.
    Source,
    /// The host the VM goes to.
    Destination,
}

/// The events the driver listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DomainEventKind {
    /// VIR_DOMAIN_EVENT_ID_LIFECYCLE: (event, detail) as libvirt numbers them.
    Lifecycle { event: i32, detail: i32 },
    /// VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION.
    MigrationIteration { iteration: i32 },
    /// VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, with the job's final statistics.
    JobCompleted(JobStats),
    /// A QEMU monitor event relayed by libvirt (libvirt-qemu), with QEMU's own
    /// timestamp of it: when the guest really stopped or resumed, however late the
    /// event reached us.
    QemuMonitor {
        /// QEMU's event name (`STOP`, `RESUME`).
        event: String,
        /// QEMU's timestamp, µs since the Unix epoch.
        at_us: u64,
    },
}

struct EventTarget {
    side: Side,
    tx: Sender<DomainEvent>,
}

static EVENT_LOOP: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers libvirt's default event loop and starts the thread that runs it, once per
/// process. Must precede opening the connections whose events we want.
pub(crate) fn ensure_event_loop() -> Result<(), String> {
    EVENT_LOOP
        .get_or_init(|| {
            // libvirt prints every error to stderr unless a handler is set; the driver
            // reports them as typed errors instead.
            // SAFETY: a NULL user pointer and a handler that ignores its arguments.
            unsafe { sys::virSetErrorFunc(std::ptr::null_mut(), Some(quiet_errors)) };
            // SAFETY: no arguments; libvirt allows registering the default implementation
            // once before connections are opened, which the OnceLock guarantees.
            let rc = unsafe { sys::virEventRegisterDefaultImpl() };
            if rc < 0 {
                return Err(last_error());
            }
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| loop {
                    // SAFETY: the default implementation was registered above; running
                    // it from one dedicated thread is how libvirt expects it to be used.
                    if unsafe { sys::virEventRunDefaultImpl() } < 0 {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                })
                .map(|_| ())
                .map_err(|e| format!("cannot start the libvirt event thread: {e}"))
        })
        .clone()
}

unsafe extern "C" fn quiet_errors(_user: *mut c_void, _error: sys::virErrorPtr) {}

/// libvirt's message for the last error of this thread.
pub(crate) fn last_error() -> String {
    // SAFETY: returns a pointer to a thread-local string owned by libvirt (never NULL:
    // "no error" is a message too), valid until the next libvirt call on this thread;
    // we copy it at once.
    let p = unsafe { sys::virGetLastErrorMessage() };
    if p.is_null() {
        return "unknown libvirt error".into();
    }
    // SAFETY: non-NULL, NUL-terminated, see above.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Domain state and reason (`virDomainGetState`).
pub(crate) fn domain_state(dom: &Domain) -> Result<(u32, i32), String> {
    let mut state: c_int = 0;
    let mut reason: c_int = 0;
    // SAFETY: `dom` is live for the call; both out-pointers point to our locals.
    let rc = unsafe { sys::virDomainGetState(dom.as_ptr(), &mut state, &mut reason, 0) };
    if rc < 0 {
        return Err(last_error());
    }
    Ok((state as u32, reason))
}

/// Aborts the domain's current job (`virDomainAbortJob`).
pub(crate) fn abort_job(dom: &Domain) -> Result<(), String> {
    // SAFETY: `dom` is live for the call.
    if unsafe { sys::virDomainAbortJob(dom.as_ptr()) } < 0 {
        return Err(last_error());
    }
    Ok(())
}

/// The domain's current job statistics (`virDomainGetJobStats`), or with
/// `completed` those of the last completed job.
pub(crate) fn job_stats(dom: &Domain, completed: bool) -> Result<JobStats, String> {
    let mut job_type: c_int = 0;
    let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
    let mut nparams: c_int = 0;
    let flags = if completed {
        sys::VIR_DOMAIN_JOB_STATS_COMPLETED
    } else {
        0
    };
    // SAFETY: `dom` is live; the out-pointers point to our locals; libvirt allocates
    // `params` (or leaves it NULL with nparams 0).
    let rc = unsafe {
        sys::virDomainGetJobStats(
            dom.as_ptr(),
            &mut job_type,
            &mut params,
            &mut nparams,
            flags as c_uint,
        )
    };
    if rc < 0 {
        return Err(last_error());
    }
    // SAFETY: libvirt returned `nparams` initialised parameters at `params`.
    let stats = unsafe { read_params(job_type, params, nparams) };
    // SAFETY: `params` was allocated by libvirt for `nparams` entries and is freed once;
    // NULL with 0 is accepted.
    unsafe { sys::virTypedParamsFree(params, nparams) };
    Ok(stats)
}

/// Reads job statistics out of a typed-parameter array.
///
/// # Safety
/// `params` points to `nparams` initialised parameters (or is NULL with 0), which stay
/// valid for the call.
unsafe fn read_params(
    job_type: c_int,
    params: sys::virTypedParameterPtr,
    nparams: c_int,
) -> JobStats {
    let mut stats = JobStats {
        job_type,
        ..JobStats::default()
    };
    if params.is_null() || nparams <= 0 {
        return stats;
    }
    // SAFETY: per the contract, `params` holds `nparams` parameters.
    let slice = unsafe { std::slice::from_raw_parts(params, nparams as usize) };
    for p in slice {
        // SAFETY: libvirt NUL-terminates `field` within its fixed-size array.
        let name = unsafe { CStr::from_ptr(p.field.as_ptr() as *const c_char) };
        let Ok(name) = name.to_str() else { continue };
        // SAFETY: the union member read matches the parameter's declared type.
        let value: Option<u64> = unsafe {
            match p.type_ as u32 {
                sys::VIR_TYPED_PARAM_INT => u64::try_from(p.value.i).ok(),
                sys::VIR_TYPED_PARAM_UINT => Some(u64::from(p.value.ui)),
                sys::VIR_TYPED_PARAM_LLONG => u64::try_from(p.value.l).ok(),
                sys::VIR_TYPED_PARAM_ULLONG => Some(p.value.ul),
                _ => None,
            }
        };
        if let Some(v) = value {
            stats.set(name, v);
        }
    }
    stats
}

/// A registered domain-event callback; dropping it deregisters the callback.
pub(crate) struct EventRegistration {
    conn: Connect,
    id: c_int,
    /// Registered through libvirt-qemu's monitor-event API (its own deregister).
    qemu_monitor: bool,
}

impl Drop for EventRegistration {
    fn drop(&mut self) {
        // SAFETY: `id` came from a successful registration of this kind on this
        // connection, which we keep open (our own reference); libvirt then calls the
        // free callback.
        unsafe {
            if self.qemu_monitor {
                virConnectDomainQemuMonitorEventDeregister(self.conn.as_ptr(), self.id);
            } else {
                sys::virConnectDomainEventDeregisterAny(self.conn.as_ptr(), self.id);
            }
        }
    }
}

/// libvirt-qemu's monitor-event callback (`virConnectDomainQemuMonitorEventCallback`).
type QemuMonitorEventCallback = Option<
    unsafe extern "C" fn(
        sys::virConnectPtr,
        sys::virDomainPtr,
        *const c_char,
        std::ffi::c_longlong,
        c_uint,
        *const c_char,
        *mut c_void,
    ),
>;

// libvirt-qemu.h: not in the `virt-sys` bindings.
#[link(name = "virt-qemu")]
extern "C" {
    fn virConnectDomainQemuMonitorEventRegister(
        conn: sys::virConnectPtr,
        dom: sys::virDomainPtr,
        event: *const c_char,
        cb: QemuMonitorEventCallback,
        opaque: *mut c_void,
        freecb: sys::virFreeCallback,
        flags: c_uint,
    ) -> c_int;
    fn virConnectDomainQemuMonitorEventDeregister(
        conn: sys::virConnectPtr,
        callback_id: c_int,
    ) -> c_int;
}

/// Registers for QEMU monitor event `event` (e.g. `STOP`) of any domain on `conn`,
/// sent to `tx` tagged with `side`, with QEMU's timestamp. Needs [`ensure_event_loop`].
pub(crate) fn register_qemu_monitor(
    conn: &Connect,
    event: &std::ffi::CStr,
    side: Side,
    tx: Sender<DomainEvent>,
) -> Result<EventRegistration, String> {
    let opaque = Box::into_raw(Box::new(EventTarget { side, tx })) as *mut c_void;
    // SAFETY: `conn` is live; dom NULL means every domain; `event` is NUL-terminated
    // and libvirt copies it; `opaque` is a leaked Box that only `free_target`
    // reclaims, which libvirt calls once when the callback goes.
    let id = unsafe {
        virConnectDomainQemuMonitorEventRegister(
            conn.as_ptr(),
            std::ptr::null_mut(),
            event.as_ptr(),
            Some(on_qemu_monitor),
            opaque,
            Some(free_target),
            0,
        )
    };
    if id < 0 {
        let e = last_error();
        // SAFETY: registration failed, so libvirt did not take `opaque`: reclaim it.
        drop(unsafe { Box::from_raw(opaque as *mut EventTarget) });
        return Err(e);
    }
    Ok(EventRegistration {
        conn: conn.clone(),
        id,
        qemu_monitor: true,
    })
}

/// Which event to register for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EventId {
    Lifecycle,
    MigrationIteration,
    JobCompleted,
}

/// Registers for `which` events of any domain on `conn` (the driver filters by name: at
/// the destination, the domain does not exist yet); they are sent to `tx` tagged with
/// `side`. Needs [`ensure_event_loop`] to have run before `conn` was opened.
pub(crate) fn register(
    conn: &Connect,
    which: EventId,
    side: Side,
    tx: Sender<DomainEvent>,
) -> Result<EventRegistration, String> {
    let (event_id, cb): (u32, sys::virConnectDomainEventGenericCallback) = match which {
        EventId::Lifecycle => (
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            // SAFETY: libvirt calls a LIFECYCLE callback with this exact signature; the
            // generic type is how the C API passes any callback (VIR_DOMAIN_EVENT_CALLBACK).
            Some(unsafe {
                std::mem::transmute::<
                    unsafe extern "C" fn(
                        sys::virConnectPtr,
                        sys::virDomainPtr,
                        c_int,
                        c_int,
                        *mut c_void,
                    ) -> c_int,
                    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
                >(on_lifecycle)
            }),
        ),
        EventId::MigrationIteration => (
            sys::VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION,
            // SAFETY: as above, for MIGRATION_ITERATION's signature.
            Some(unsafe {
                std::mem::transmute::<
                    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, *mut c_void),
                    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
                >(on_iteration)
            }),
        ),
        EventId::JobCompleted => (
            sys::VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
            // SAFETY: as above, for JOB_COMPLETED's signature.
            Some(unsafe {
                std::mem::transmute::<
                    unsafe extern "C" fn(
                        sys::virConnectPtr,
                        sys::virDomainPtr,
                        sys::virTypedParameterPtr,
                        c_int,
                        *mut c_void,
                    ),
                    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
                >(on_job_completed)
            }),
        ),
    };
    let opaque = Box::into_raw(Box::new(EventTarget { side, tx })) as *mut c_void;
    // SAFETY: `conn` is live; dom NULL means every domain; `opaque` is a leaked Box that
    // only `free_target` reclaims, which libvirt calls once when the callback goes.
    let id = unsafe {
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            event_id as c_int,
            cb,
            opaque,
            Some(free_target),
        )
    };
    if id < 0 {
        let e = last_error();
        // SAFETY: registration failed, so libvirt did not take `opaque`: reclaim it.
        drop(unsafe { Box::from_raw(opaque as *mut EventTarget) });
        return Err(e);
    }
    Ok(EventRegistration {
        conn: conn.clone(),
        id,
        qemu_monitor: false,
    })
}

unsafe extern "C" fn free_target(opaque: *mut c_void) {
    // SAFETY: `opaque` is the Box leaked in `register`; libvirt calls this once.
    drop(unsafe { Box::from_raw(opaque as *mut EventTarget) });
}

/// # Safety
/// `dom` is valid for the call; `opaque` is the live `EventTarget` of `register`.
unsafe fn send(dom: sys::virDomainPtr, opaque: *mut c_void, kind: DomainEventKind) {
    // SAFETY: the EventTarget lives until `free_target`, which libvirt calls only after
    // the last callback; we only borrow it.
    let target = unsafe { &*(opaque as *const EventTarget) };
    // SAFETY: `dom` is valid during the callback; the name is owned by it and copied.
    let name = unsafe { sys::virDomainGetName(dom) };
    if name.is_null() {
        return;
    }
    // SAFETY: non-NULL, NUL-terminated, owned by `dom`.
    let domain = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    // A closed receiver means nobody follows this migration any more: drop the event.
    let _ = target.tx.send(DomainEvent {
        side: target.side,
        domain,
        kind,
    });
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: libvirt passes a valid domain and our opaque pointer.
    unsafe { send(dom, opaque, DomainEventKind::Lifecycle { event, detail }) };
    0
}

unsafe extern "C" fn on_iteration(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    iteration: c_int,
    opaque: *mut c_void,
) {
    // SAFETY: as in `on_lifecycle`.
    unsafe {
        send(
            dom,
            opaque,
            DomainEventKind::MigrationIteration { iteration },
        )
    };
}

unsafe extern "C" fn on_job_completed(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    params: sys::virTypedParameterPtr,
    nparams: c_int,
    opaque: *mut c_void,
) {
    // SAFETY: libvirt passes `nparams` parameters valid for the callback (and frees them
    // itself afterwards).
    let stats = unsafe { read_params(sys::VIR_DOMAIN_JOB_COMPLETED as c_int, params, nparams) };
    // SAFETY: as in `on_lifecycle`.
    unsafe { send(dom, opaque, DomainEventKind::JobCompleted(stats)) };
}

unsafe extern "C" fn on_qemu_monitor(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: *const c_char,
    seconds: std::ffi::c_longlong,
    micros: c_uint,
    _details: *const c_char,
    opaque: *mut c_void,
) {
    if event.is_null() {
        return;
    }
    // SAFETY: libvirt passes a NUL-terminated event name valid for the callback.
    let event = unsafe { CStr::from_ptr(event) }
        .to_string_lossy()
        .into_owned();
    let at_us = u64::try_from(seconds).unwrap_or(0) * 1_000_000 + u64::from(micros);
    // SAFETY: as in `on_lifecycle`.
    unsafe { send(dom, opaque, DomainEventKind::QemuMonitor { event, at_us }) };
}
