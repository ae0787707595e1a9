//! [`DrbdStorage`]: the [`Storage`] driver for `kind = "drbd"`. A DRBD 9 resource is
//! replicated between the source host and the destination host; the driver commands it
//! with `drbdadm`, run on each host through the plan's command prefix (`ssh
//! root@host-b`, or nothing to run it where the orchestrator runs).
//!
//! Asynchronous replication is protocol A with the source Primary; `switch_sync` moves
//! to protocol C; `wait_in_sync` polls `drbdadm status` until the destination's disk is
//! UpToDate; `cutover` demotes the source and promotes the destination while the VM is
//! paused (one Primary at a time: no dual-primary); `abort` makes the source the only
//! Primary again, in protocol A. The command lines come from the pure planner in
//! [`steps`], the status from the pure parser in [`status`]; this module only runs them.
//! Every call reads the source's status first, so a repeated call after a restart
//! carries on from where the resource is.
//!
//! **Tested at the command level only**: the CI kernel has no DRBD module, so
//! `orchestration/tests/drbd_commands.rs` runs this driver against a fake `drbdadm`
//! (first on `PATH`) that records its command lines and prints real DRBD 9 status
//! text, and asserts the exact command sequence of each call. That DRBD itself accepts
//! a protocol change on a connected resource, and promotes the destination once the
//! source is Secondary, is DRBD 9's documented behaviour, not something CI observed.

pub mod status;
pub mod steps;
mod watch;

pub use status::{parse_status, ReplicationProgress, ResourceStatus, Role, StatusError};
pub use steps::{Host, Refusal, Step, DRBDADM};
pub use watch::Watch;

use super::storage::{Storage, StorageError, StorageEvent};
use super::EventSink;
use crate::migration::StoragePlan;
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the status is read while waiting, by default.
const POLL: Duration = Duration::from_millis(500);
/// How long replication may be broken before `Failed` is reported, by default.
const GRACE: Duration = Duration::from_secs(5);

/// The DRBD storage driver. Build one per migration with [`DrbdStorage::from_plan`];
/// needs a tokio runtime (it spawns the task that polls the status after
/// `start_async`).
pub struct DrbdStorage {
    resource: String,
    source: Vec<String>,
    destination: Vec<String>,
    poll: Duration,
    watch_every: Duration,
    grace: Duration,
    sink: Mutex<Option<Arc<dyn EventSink<StorageEvent>>>>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for DrbdStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrbdStorage")
            .field("resource", &self.resource)
            .field("source", &self.source)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

impl Drop for DrbdStorage {
    fn drop(&mut self) {
        self.stop_watching();
    }
}

/// Runs one command line; `Err((connect, reason))`, `connect` when the host itself was
/// not reached (the program cannot start, or ssh's own failure, exit status 255).
async fn run(argv: &[String]) -> Result<String, (bool, String)> {
    let line = argv.join(" ");
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| (true, format!("cannot run `{line}`: {e}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ssh = Path::new(&argv[0]).file_name().is_some_and(|n| n == "ssh");
    Err((
        ssh && out.status.code() == Some(255),
        format!("`{line}` failed ({}): {}", out.status, stderr.trim()),
    ))
}

/// Whether `program` can be started from here: a path to an executable file, or a
/// name found on `PATH`.
fn runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
}

impl DrbdStorage {
    /// A driver for `resource`; each host's commands run under its prefix (empty: here).
    pub fn new(
        resource: impl Into<String>,
        source_command: Vec<String>,
        destination_command: Vec<String>,
    ) -> Self {
        DrbdStorage {
            resource: resource.into(),
            source: source_command,
            destination: destination_command,
            poll: POLL,
            watch_every: POLL,
            grace: GRACE,
            sink: Mutex::new(None),
            watcher: Mutex::new(None),
        }
    }

    /// The driver of a plan's `[storage] kind = "drbd"`; `None` for another kind.
    pub fn from_plan(plan: &StoragePlan) -> Option<Self> {
        match plan {
            StoragePlan::Drbd {
                resource,
                source_command,
                destination_command,
            } => Some(DrbdStorage::new(
                resource,
                source_command.clone(),
                destination_command.clone(),
            )),
            _ => None,
        }
    }

    /// Sets how often `wait_in_sync` reads the status, how often the watcher started
    /// by `start_async` does, and how long the watcher tolerates a break before
    /// reporting `Failed` (defaults 500 ms, 500 ms, 5 s).
    pub fn with_timing(mut self, poll: Duration, watch_every: Duration, grace: Duration) -> Self {
        self.poll = poll;
        self.watch_every = watch_every;
        self.grace = grace;
        self
    }

    /// The first host whose command cannot start from here (`drbdadm` itself when the
    /// host is local, else the prefix's program, e.g. `ssh`), with the program: a plan
    /// naming it would fail at its first storage step, so the orchestrator refuses it
    /// before journaling anything.
    pub fn missing_program(&self) -> Option<(Host, String)> {
        [
            (Host::Source, &self.source),
            (Host::Destination, &self.destination),
        ]
        .into_iter()
        .find_map(|(host, prefix)| {
            let program = prefix.first().map_or(DRBDADM, String::as_str);
            (!runnable(program)).then(|| (host, program.to_string()))
        })
    }

    fn prefix(&self, host: Host) -> &[String] {
        match host {
            Host::Source => &self.source,
            Host::Destination => &self.destination,
        }
    }

    fn op_err(&self, op: &'static str, reason: impl Into<String>) -> StorageError {
        StorageError::Operation {
            device: self.resource.clone(),
            op,
            reason: reason.into(),
        }
    }

    fn refused(&self, op: &'static str, r: Refusal) -> StorageError {
        match r {
            Refusal::OutOfOrder { needs } => StorageError::OutOfOrder {
                device: self.resource.clone(),
                op,
                needs,
            },
            Refusal::Broken(reason) => self.op_err(op, reason),
        }
    }

    async fn exec(&self, op: &'static str, step: &Step) -> Result<String, StorageError> {
        let argv = step.argv(self.prefix(step.host));
        run(&argv).await.map_err(|(connect, reason)| {
            let reason = format!("{:?} host: {reason}", step.host);
            if connect {
                StorageError::Connect {
                    device: self.resource.clone(),
                    reason,
                }
            } else {
                self.op_err(op, reason)
            }
        })
    }

    async fn status_for(
        &self,
        op: &'static str,
        host: Host,
    ) -> Result<ResourceStatus, StorageError> {
        let text = self.exec(op, &Step::status(host, &self.resource)).await?;
        parse_status(&text, &self.resource).map_err(|e| self.op_err(op, e.to_string()))
    }

    /// The resource as `host` sees it.
    pub async fn status(&self, host: Host) -> Result<ResourceStatus, StorageError> {
        self.status_for("status", host).await
    }

    /// Replication progress, from the source's status.
    pub async fn progress(&self) -> Result<ReplicationProgress, StorageError> {
        Ok(self.status(Host::Source).await?.progress())
    }

    async fn run_steps(&self, op: &'static str, steps: &[Step]) -> Result<(), StorageError> {
        for step in steps {
            self.exec(op, step).await?;
        }
        Ok(())
    }

    fn stop_watching(&self) {
        if let Some(h) = self.watcher.lock().expect("watcher lock").take() {
            h.abort();
        }
    }

    /// Spawns (or replaces) the task polling the source's status into events.
    fn watch(&self, sink: Arc<dyn EventSink<StorageEvent>>, ready: bool) {
        let mut watch = Watch::new(self.grace);
        if ready {
            watch.set_ready();
        }
        let argv = Step::status(Host::Source, &self.resource).argv(&self.source);
        let resource = self.resource.clone();
        let poll = self.watch_every;
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(poll).await;
                let status = run(&argv)
                    .await
                    .map_err(|(_, reason)| reason)
                    .and_then(|text| parse_status(&text, &resource).map_err(|e| e.to_string()));
                if let Some(e) =
                    watch.observe(start.elapsed(), status.as_ref().map_err(Clone::clone))
                {
                    sink.emit(e);
                }
            }
        });
        if let Some(old) = self.watcher.lock().expect("watcher lock").replace(task) {
            old.abort();
        }
    }

    // ---- the steps ----

    async fn do_start(&self, sink: Arc<dyn EventSink<StorageEvent>>) -> Result<(), StorageError> {
        const OP: &str = "start-async";
        *self.sink.lock().expect("sink lock") = Some(sink.clone());
        let s = self.status_for(OP, Host::Source).await?;
        let steps = steps::start(&self.resource, &s).map_err(|r| self.refused(OP, r))?;
        self.run_steps(OP, &steps).await?;
        let ready = s.progress().in_sync;
        if ready {
            sink.emit(StorageEvent::Ready);
        }
        self.watch(sink, ready);
        Ok(())
    }

    async fn do_switch_sync(&self) -> Result<(), StorageError> {
        const OP: &str = "switch-sync";
        let s = self.status_for(OP, Host::Source).await?;
        let steps = steps::switch_sync(&self.resource, &s).map_err(|r| self.refused(OP, r))?;
        self.run_steps(OP, &steps).await
    }

    async fn do_wait_in_sync(&self) -> Result<(), StorageError> {
        const OP: &str = "wait-in-sync";
        // Bounded by the machine's `storage_sync_ms`, not here; a broken connection is
        // the watcher's to report.
        loop {
            let s = self.status_for(OP, Host::Source).await?;
            if steps::in_sync(&s).map_err(|r| self.refused(OP, r))? {
                let sink = self.sink.lock().expect("sink lock").clone();
                if let Some(sink) = sink {
                    sink.emit(StorageEvent::InSync);
                }
                return Ok(());
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn do_cutover(&self) -> Result<(), StorageError> {
        const OP: &str = "cutover";
        let s = self.status_for(OP, Host::Source).await?;
        let steps = steps::cutover(&self.resource, &s).map_err(|r| self.refused(OP, r))?;
        // The source is about to step down: that is no replication failure.
        self.stop_watching();
        self.run_steps(OP, &steps).await
    }

    async fn do_abort(&self) -> Result<(), StorageError> {
        const OP: &str = "abort";
        self.stop_watching();
        let s = self.status_for(OP, Host::Source).await?;
        self.run_steps(OP, &steps::abort(&self.resource, &s)).await
    }
}

impl Storage for DrbdStorage {
    fn start_async<S>(&self, events: S) -> impl Future<Output = Result<(), StorageError>> + Send
    where
        S: EventSink<StorageEvent>,
    {
        self.do_start(Arc::new(events))
    }

    fn switch_sync(&self) -> impl Future<Output = Result<(), StorageError>> + Send {
        self.do_switch_sync()
    }

    fn wait_in_sync(&self) -> impl Future<Output = Result<(), StorageError>> + Send {
        self.do_wait_in_sync()
    }

    fn cutover(&self) -> impl Future<Output = Result<(), StorageError>> + Send {
        self.do_cutover()
    }

    fn abort(&self) -> impl Future<Output = Result<(), StorageError>> + Send {
        self.do_abort()
    }
}
