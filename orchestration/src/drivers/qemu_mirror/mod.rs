//! [`QemuMirrorStorage`]: the [`Storage`] driver for `kind = "qemu-mirror"`. It mirrors
//! the guest disk of the source QEMU into an NBD export of the destination QEMU (or
//! qemu-storage-daemon), over QMP on both sides:
//!
//! | step | destination | source |
//! |---|---|---|
//! | `start_async` | `nbd-server-start`, `block-export-add` (writable) | `blockdev-add` (nbd client node), `blockdev-mirror` `sync: full`, `copy-mode: background`; `Ready` on `BLOCK_JOB_READY` |
//! | `switch_sync` | — | `block-job-change` `copy-mode: write-blocking` (QEMU ≥ 8.2), or cancel + `blockdev-mirror` `sync: none`, `write-blocking` (QEMU 7.2) |
//! | `wait_in_sync` | — | poll `query-block-jobs` until `actively-synced` and `offset == len`; `InSync` |
//! | `cutover` | `block-export-del`, `nbd-server-stop` | `block-job-cancel` on the READY job, `blockdev-del` |
//! | `abort` | `block-export-del`, `nbd-server-stop` | `block-job-cancel force`, `blockdev-del` |
//!
//! Every step reads QEMU's state first, so a repeated call (after an orchestrator
//! restart, with a new driver instance) attaches to what runs instead of failing. The
//! source's disk is only ever read by the mirror: abort leaves it as it is.
//!
//! Limitation of the QEMU 7.2 path ([`SwitchMethod::RestartJob`]): between the
//! cancel of the background job and the start of the write-blocking one, guest writes
//! are not mirrored. The caller pauses the guest around `switch_sync` when there is one;
//! the `sync: none` job then only carries writes made after it started.

mod jobs;
mod target;

pub use jobs::JobInfo;
pub use target::{NbdServer, NbdTarget};

use super::qmp::{Endpoint, Event, QmpError};
use super::storage::{Storage, StorageError, StorageEvent};
use super::EventSink;
use crate::migration::{QemuMirrorPlan, SwitchMethod};
use jobs::{parse_jobs, Monitor};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// How often job state is polled while waiting for it to change.
const POLL: Duration = Duration::from_millis(50);
/// How long a cancelled job or a deleted export may take to go away.
const GONE_DEADLINE: Duration = Duration::from_secs(60);

/// Mirror progress, from `query-block-jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorProgress {
    /// Bytes copied.
    pub offset: u64,
    /// Bytes to copy so far.
    pub len: u64,
    /// The bulk copy is done.
    pub ready: bool,
    /// Write-blocking and drained (`None` on QEMU before 8.2).
    pub actively_synced: Option<bool>,
}

/// The QEMU block-mirror storage driver. Build one per migration with
/// [`QemuMirrorStorage::new`]; needs a tokio runtime (it spawns the task that turns
/// QMP events into [`StorageEvent`]s).
pub struct QemuMirrorStorage {
    device: String,
    job: String,
    sync_job: String,
    target_node: String,
    export_id: String,
    destination_node: String,
    target: NbdTarget,
    listen: NbdServer,
    method: SwitchMethod,
    source: Monitor,
    destination: Monitor,
    shared: Arc<Shared>,
    resolved_method: tokio::sync::OnceCell<SwitchMethod>,
}

/// State shared with the event task.
struct Shared {
    /// Jobs this driver cancels on purpose: their end is no failure.
    ending: Mutex<HashSet<String>>,
    sink: Mutex<Option<Arc<dyn EventSink<StorageEvent>>>>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for QemuMirrorStorage {
    fn drop(&mut self) {
        if let Some(h) = self.shared.watcher.lock().expect("watcher lock").take() {
            h.abort();
        }
    }
}

impl std::fmt::Debug for QemuMirrorStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuMirrorStorage")
            .field("device", &self.device)
            .field("job", &self.job)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn is_gone(e: &QmpError) -> bool {
    // What QEMU says when asked to stop something that is not there.
    e.desc().is_some_and(|d| {
        d.contains("not found")
            || d.contains("not running")
            || d.contains("No active block job")
            || d.contains("Cannot find")
            || d.contains("Failed to find")
    })
}

/// QEMU refuses node names of 32 characters or more ("Node name too long").
const MAX_NODE_NAME: usize = 31;

/// The name of the source's NBD client node for job `job`: `<job>-target`, or, when
/// that is too long for QEMU (a libvirt guest's disk node is e.g. `libvirt-1-format`,
/// so the default job is `migroute-libvirt-1-format`), `migroute-t-` and a hash of
/// the job id. Deterministic, so a restarted driver finds the node it created.
fn target_node_name(job: &str) -> String {
    let plain = format!("{job}-target");
    if plain.len() <= MAX_NODE_NAME {
        return plain;
    }
    // FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not).
    let hash = job.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("migroute-t-{hash:016x}")
}

/// The [`StorageEvent`] a QMP event of the source means, if any. `job` is the
/// background mirror, `sync_job` its write-blocking restart (QEMU 7.2), `ending` says
/// whether the driver cancelled a job itself. Only the background job's
/// `BLOCK_JOB_READY` is `Ready` (the bulk copy is done): the restart, a `sync: none`
/// job, is READY at once, and reporting that again would tell the caller twice.
fn storage_event(
    ev: &Event,
    job: &str,
    sync_job: &str,
    ending: impl Fn(&str) -> bool,
) -> Option<StorageEvent> {
    let id = ev.data.get("device").and_then(Value::as_str)?;
    if id != job && id != sync_job {
        return None;
    }
    match ev.name.as_str() {
        "BLOCK_JOB_READY" if id == job => Some(StorageEvent::Ready),
        "BLOCK_JOB_ERROR" => {
            let action = ev.data.get("action").and_then(Value::as_str);
            (action != Some("ignore")).then(|| StorageEvent::Failed {
                error: format!(
                    "mirror job {id}: I/O error on {} ({})",
                    ev.data["operation"].as_str().unwrap_or("?"),
                    action.unwrap_or("?")
                ),
            })
        }
        "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_CANCELLED" => {
            if let Some(err) = ev.data.get("error").and_then(Value::as_str) {
                Some(StorageEvent::Failed {
                    error: format!("mirror job {id}: {err}"),
                })
            } else {
                (!ending(id)).then(|| StorageEvent::Failed {
                    error: format!("mirror job {id} ended ({})", ev.name),
                })
            }
        }
        _ => None,
    }
}

impl QemuMirrorStorage {
    /// Builds the driver from the plan's `[storage]` section (validated: a bad target or
    /// monitor address is refused here too). Connects lazily, on the first call.
    pub fn new(plan: &QemuMirrorPlan) -> Result<Self, StorageError> {
        let device = plan.device.clone();
        let bad = |reason: String| StorageError::Operation {
            device: device.clone(),
            op: "configure",
            reason,
        };
        let target = NbdTarget::parse(&plan.target).map_err(bad)?;
        let listen = match &plan.nbd_listen {
            Some(l) => NbdTarget::parse_listen(l).map_err(bad)?,
            None => target.server.clone(),
        };
        let endpoint = |s: &str| {
            Endpoint::parse(s)
                .ok_or_else(|| bad(format!("{s:?} is not unix:/path, /path or tcp:host:port")))
        };
        let job = plan.job_id();
        Ok(QemuMirrorStorage {
            source: Monitor::new("source", endpoint(&plan.source_qmp)?),
            destination: Monitor::new("destination", endpoint(&plan.destination_qmp)?),
            sync_job: format!("{job}-sync"),
            target_node: target_node_name(&job),
            export_id: job.clone(),
            job,
            destination_node: plan.destination_node().to_string(),
            device: device.clone(),
            target,
            listen,
            method: plan.switch_method,
            shared: Arc::new(Shared {
                ending: Mutex::new(HashSet::new()),
                sink: Mutex::new(None),
                watcher: Mutex::new(None),
            }),
            resolved_method: tokio::sync::OnceCell::new(),
        })
    }

    // ---- helpers ----

    fn err(&self, op: &'static str, side: &Monitor, e: QmpError) -> StorageError {
        match e {
            QmpError::Command { .. } => StorageError::Operation {
                device: self.device.clone(),
                op,
                reason: format!("{} QEMU: {e}", side.side),
            },
            _ => StorageError::Connect {
                device: self.device.clone(),
                reason: format!("{} QEMU: {e}", side.side),
            },
        }
    }

    fn op_err(&self, op: &'static str, reason: impl Into<String>) -> StorageError {
        StorageError::Operation {
            device: self.device.clone(),
            op,
            reason: reason.into(),
        }
    }

    async fn exec(
        &self,
        op: &'static str,
        side: &Monitor,
        command: &str,
        args: Value,
    ) -> Result<Value, StorageError> {
        side.execute(command, args)
            .await
            .map_err(|e| self.err(op, side, e))
    }

    /// Our jobs at the source (background and/or write-blocking).
    async fn our_jobs(&self, op: &'static str) -> Result<Vec<JobInfo>, StorageError> {
        let v = self
            .exec(op, &self.source, "query-block-jobs", Value::Null)
            .await?;
        let jobs = parse_jobs(v).map_err(|r| self.op_err(op, r))?;
        Ok(jobs
            .into_iter()
            .filter(|j| j.id == self.job || j.id == self.sync_job)
            .collect())
    }

    /// The job currently mirroring (the write-blocking restart wins over the original).
    async fn active_job(&self, op: &'static str) -> Result<Option<JobInfo>, StorageError> {
        let mut jobs = self.our_jobs(op).await?;
        jobs.sort_by_key(|j| j.id != self.sync_job);
        Ok(jobs.into_iter().next())
    }

    /// The source's NBD client node the mirror writes through: `<job>-target`, or a
    /// hashed name when that is longer than QEMU allows.
    pub fn target_node(&self) -> &str {
        &self.target_node
    }

    /// Current progress of the mirror, `None` when no job runs.
    pub async fn progress(&self) -> Result<Option<MirrorProgress>, StorageError> {
        Ok(self.active_job("progress").await?.map(|j| MirrorProgress {
            offset: j.offset,
            len: j.len,
            ready: j.ready,
            actively_synced: j.actively_synced,
        }))
    }

    async fn node_exists(&self, op: &'static str, name: &str) -> Result<bool, StorageError> {
        let v = self
            .exec(
                op,
                &self.source,
                "query-named-block-nodes",
                json!({"flat": true}),
            )
            .await?;
        Ok(v.as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n.get("node-name").and_then(Value::as_str) == Some(name))
        }))
    }

    async fn export_exists(&self, op: &'static str) -> Result<bool, StorageError> {
        let v = self
            .exec(op, &self.destination, "query-block-exports", Value::Null)
            .await?;
        Ok(v.as_array().is_some_and(|ex| {
            ex.iter()
                .any(|e| e.get("id").and_then(Value::as_str) == Some(&self.export_id))
        }))
    }

    async fn other_exports(&self, op: &'static str) -> Result<usize, StorageError> {
        let v = self
            .exec(op, &self.destination, "query-block-exports", Value::Null)
            .await?;
        Ok(v.as_array().map_or(0, |ex| {
            ex.iter()
                .filter(|e| e.get("id").and_then(Value::as_str) != Some(&self.export_id))
                .count()
        }))
    }

    fn mark_ending(&self, job: &str) {
        self.shared
            .ending
            .lock()
            .expect("ending lock")
            .insert(job.to_string());
    }

    /// Cancels `job` (gracefully unless `force`) and waits until it is gone.
    async fn cancel_and_wait(
        &self,
        op: &'static str,
        job: &str,
        force: bool,
    ) -> Result<(), StorageError> {
        self.mark_ending(job);
        match self
            .source
            .execute("block-job-cancel", json!({"device": job, "force": force}))
            .await
        {
            Ok(_) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(self.err(op, &self.source, e)),
        }
        let deadline = tokio::time::Instant::now() + GONE_DEADLINE;
        loop {
            let jobs = self.our_jobs(op).await?;
            match jobs.iter().find(|j| j.id == job) {
                None => return Ok(()),
                Some(j) if j.status == "concluded" => {
                    // Only with auto-dismiss off (not ours): dismiss it ourselves.
                    let _ = self.source.execute("job-dismiss", json!({"id": job})).await;
                }
                Some(_) => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(self.op_err(
                    op,
                    format!("job {job} still there {GONE_DEADLINE:?} after block-job-cancel"),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Removes the export at the destination and, if it was the last one, stops the
    /// NBD server: the destination is as before `start_async`.
    async fn remove_export(&self, op: &'static str) -> Result<(), StorageError> {
        if self.export_exists(op).await? {
            match self
                .destination
                .execute(
                    "block-export-del",
                    json!({"id": self.export_id, "mode": "hard"}),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if is_gone(&e) || e.desc().is_some_and(|d| d.contains("shutting down")) => {}
                Err(e) => return Err(self.err(op, &self.destination, e)),
            }
            let deadline = tokio::time::Instant::now() + GONE_DEADLINE;
            while self.export_exists(op).await? {
                if tokio::time::Instant::now() > deadline {
                    return Err(self.op_err(
                        op,
                        format!("destination export {} does not go away", self.export_id),
                    ));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        if self.other_exports(op).await? == 0 {
            match self
                .destination
                .execute("nbd-server-stop", Value::Null)
                .await
            {
                Ok(_) => {}
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(self.err(op, &self.destination, e)),
            }
        }
        Ok(())
    }

    /// Deletes the source's NBD client node once no job uses it.
    async fn remove_target_node(&self, op: &'static str) -> Result<(), StorageError> {
        if !self.node_exists(op, &self.target_node).await? {
            return Ok(());
        }
        match self
            .source
            .execute("blockdev-del", json!({"node-name": self.target_node}))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(self.err(op, &self.source, e)),
        }
    }

    /// The switch method, probing the source's QAPI schema for `block-job-change` when
    /// the plan says `auto`.
    pub async fn switch_method(&self) -> Result<SwitchMethod, StorageError> {
        if self.method != SwitchMethod::Auto {
            return Ok(self.method);
        }
        self.resolved_method
            .get_or_try_init(|| async {
                let schema = self
                    .exec("switch-sync", &self.source, "query-qmp-schema", Value::Null)
                    .await?;
                let has_change = schema.as_array().is_some_and(|entries| {
                    entries.iter().any(|e| {
                        e.get("name").and_then(Value::as_str) == Some("block-job-change")
                            && e.get("meta-type").and_then(Value::as_str) == Some("command")
                    })
                });
                Ok(if has_change {
                    SwitchMethod::ChangeJob
                } else {
                    SwitchMethod::RestartJob
                })
            })
            .await
            .copied()
    }

    fn emit(&self, e: StorageEvent) {
        let sink = self.shared.sink.lock().expect("sink lock").clone();
        if let Some(s) = sink {
            s.emit(e);
        }
    }

    /// Spawns (or replaces) the task turning the source's job events into
    /// [`StorageEvent`]s. Subscribes before returning, so nothing after it is missed.
    async fn watch(&self, op: &'static str) -> Result<(), StorageError> {
        let client = self
            .source
            .client()
            .await
            .map_err(|e| self.err(op, &self.source, e))?;
        let mut rx = client.subscribe();
        let shared = self.shared.clone();
        let (job, sync_job) = (self.job.clone(), self.sync_job.clone());
        let task = tokio::spawn(async move {
            let emit = |e: StorageEvent| {
                let sink = shared.sink.lock().expect("sink lock").clone();
                if let Some(s) = sink {
                    s.emit(e);
                }
            };
            let ending = |job: &str| shared.ending.lock().expect("ending lock").contains(job);
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => {
                        if !(ending(&job) && ending(&sync_job)) {
                            emit(StorageEvent::Failed {
                                error: "source QMP connection lost".into(),
                            });
                        }
                        return;
                    }
                };
                if let Some(e) = storage_event(&ev, &job, &sync_job, ending) {
                    emit(e);
                }
            }
        });
        if let Some(old) = self
            .shared
            .watcher
            .lock()
            .expect("watcher lock")
            .replace(task)
        {
            old.abort();
        }
        Ok(())
    }

    // ---- the steps ----

    async fn do_start(&self, sink: Arc<dyn EventSink<StorageEvent>>) -> Result<(), StorageError> {
        const OP: &str = "start-async";
        *self.shared.sink.lock().expect("sink lock") = Some(sink);
        // Destination: NBD server and a writable export of the disk node.
        if !self.export_exists(OP).await? {
            match self
                .destination
                .execute(
                    "nbd-server-start",
                    json!({"addr": self.listen.socket_address_legacy()}),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.desc().is_some_and(|d| d.contains("already running")) => {}
                Err(e) => return Err(self.err(OP, &self.destination, e)),
            }
            self.exec(
                OP,
                &self.destination,
                "block-export-add",
                json!({
                    "type": "nbd",
                    "id": self.export_id,
                    "node-name": self.destination_node,
                    "name": self.target.export,
                    "writable": true,
                }),
            )
            .await?;
        }
        // Source: events first, then attach to or start the mirror.
        self.watch(OP).await?;
        if let Some(job) = self.active_job(OP).await? {
            // The write-blocking restart only exists once the bulk copy was READY.
            if job.ready || job.id == self.sync_job {
                self.emit(StorageEvent::Ready);
            }
            return Ok(());
        }
        if !self.node_exists(OP, &self.target_node).await? {
            self.exec(
                OP,
                &self.source,
                "blockdev-add",
                json!({
                    "driver": "nbd",
                    "node-name": self.target_node,
                    "server": self.target.server.socket_address(),
                    "export": self.target.export,
                }),
            )
            .await?;
        }
        self.shared
            .ending
            .lock()
            .expect("ending lock")
            .remove(&self.job);
        self.exec(
            OP,
            &self.source,
            "blockdev-mirror",
            json!({
                "job-id": self.job,
                "device": self.device,
                "target": self.target_node,
                "sync": "full",
                "copy-mode": "background",
            }),
        )
        .await?;
        Ok(())
    }

    async fn do_switch_sync(&self) -> Result<(), StorageError> {
        const OP: &str = "switch-sync";
        let jobs = self.our_jobs(OP).await?;
        if jobs.iter().any(|j| j.id == self.sync_job) {
            return Ok(()); // restarted earlier: already write-blocking
        }
        let background = jobs.into_iter().find(|j| j.id == self.job);
        match self.switch_method().await? {
            SwitchMethod::ChangeJob | SwitchMethod::Auto => {
                if background.is_none() {
                    return Err(StorageError::OutOfOrder {
                        device: self.device.clone(),
                        op: OP,
                        needs: "start-async",
                    });
                }
                // Changing to the mode the job already has is accepted by QEMU.
                self.exec(
                    OP,
                    &self.source,
                    "block-job-change",
                    json!({"id": self.job, "type": "mirror", "copy-mode": "write-blocking"}),
                )
                .await?;
            }
            SwitchMethod::RestartJob => {
                match background {
                    Some(j) if !j.ready => {
                        // Cancelling a mirror before READY would leave the target
                        // half-copied, and `sync: none` would never fill it.
                        return Err(StorageError::OutOfOrder {
                            device: self.device.clone(),
                            op: OP,
                            needs: "the mirror READY",
                        });
                    }
                    Some(_) => self.cancel_and_wait(OP, &self.job, false).await?,
                    // A crash between cancel and restart leaves only the target node.
                    None if self.node_exists(OP, &self.target_node).await? => {}
                    None => {
                        return Err(StorageError::OutOfOrder {
                            device: self.device.clone(),
                            op: OP,
                            needs: "start-async",
                        })
                    }
                }
                self.shared
                    .ending
                    .lock()
                    .expect("ending lock")
                    .remove(&self.sync_job);
                self.exec(
                    OP,
                    &self.source,
                    "blockdev-mirror",
                    json!({
                        "job-id": self.sync_job,
                        "device": self.device,
                        "target": self.target_node,
                        "sync": "none",
                        "copy-mode": "write-blocking",
                    }),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn do_wait_in_sync(&self) -> Result<(), StorageError> {
        const OP: &str = "wait-in-sync";
        // Bounded by the machine's `storage_sync_ms`, not here.
        loop {
            let Some(j) = self.active_job(OP).await? else {
                return Err(StorageError::OutOfOrder {
                    device: self.device.clone(),
                    op: OP,
                    needs: "start-async",
                });
            };
            if let Some(e) = &j.error {
                return Err(self.op_err(OP, format!("mirror job {}: {e}", j.id)));
            }
            let synced = match j.actively_synced {
                Some(s) => s,
                // QEMU < 8.2: only the restarted job is known to be write-blocking.
                None => j.id == self.sync_job,
            };
            if j.ready && synced && j.offset == j.len {
                self.emit(StorageEvent::InSync);
                return Ok(());
            }
            tokio::time::sleep(POLL * 2).await;
        }
    }

    async fn do_cutover(&self) -> Result<(), StorageError> {
        const OP: &str = "cutover";
        match self.active_job(OP).await? {
            Some(j) if !j.ready => {
                return Err(StorageError::OutOfOrder {
                    device: self.device.clone(),
                    op: OP,
                    needs: "wait-in-sync",
                })
            }
            // A READY mirror that is cancelled (not forced) first copies what is still
            // dirty, then ends *without* pivoting: the destination is a consistent copy
            // as of this moment and the source stays the guest's disk. That is what a
            // cutover needs — `block-job-complete` would instead switch the source VM
            // to write into the remote NBD export, so a later abort (allowed until the
            // VM resumes at the destination) could no longer fall back to the source.
            Some(j) => self.cancel_and_wait(OP, &j.id, false).await?,
            // Nothing runs: already cut over (after a restart this is indistinguishable
            // from never started, which the machine never asks for).
            None => {}
        }
        self.remove_target_node(OP).await?;
        // The destination QEMU now owns the disk: no remote writer may stay attached.
        self.remove_export(OP).await
    }

    async fn do_abort(&self) -> Result<(), StorageError> {
        const OP: &str = "abort";
        for job in self.our_jobs(OP).await? {
            // Forced: a READY job would otherwise finish its copy first.
            self.cancel_and_wait(OP, &job.id, true).await?;
        }
        self.remove_target_node(OP).await?;
        self.remove_export(OP).await
    }
}

impl Storage for QemuMirrorStorage {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_node_names_fit_qemu() {
        assert_eq!(target_node_name("migroute-vda"), "migroute-vda-target");
        let long = target_node_name("migroute-libvirt-1-format");
        assert!(long.len() <= MAX_NODE_NAME, "{long}");
        assert!(long.starts_with("migroute-t-"), "{long}");
        // Stable: a restarted driver must find the node it created.
        assert_eq!(long, target_node_name("migroute-libvirt-1-format"));
        assert_ne!(long, target_node_name("migroute-libvirt-2-format"));
        // 31 characters still fit as they are; 32 do not.
        let job = "j".repeat(MAX_NODE_NAME - "-target".len());
        assert_eq!(target_node_name(&job), format!("{job}-target"));
        assert!(target_node_name(&format!("{job}j")).starts_with("migroute-t-"));
    }

    fn event(name: &str, data: Value) -> Event {
        Event {
            name: name.into(),
            data,
            timestamp: None,
        }
    }

    #[test]
    fn only_the_background_jobs_ready_is_reported() {
        let never = |_: &str| false;
        let ready = |id: &str| event("BLOCK_JOB_READY", json!({"device": id}));
        assert_eq!(
            storage_event(&ready("m"), "m", "m-sync", never),
            Some(StorageEvent::Ready)
        );
        // The write-blocking restart (QEMU 7.2) is READY at once: not a second Ready.
        assert_eq!(storage_event(&ready("m-sync"), "m", "m-sync", never), None);
        assert_eq!(storage_event(&ready("other"), "m", "m-sync", never), None);
    }

    #[test]
    fn job_ends_fail_unless_the_driver_ended_them() {
        let cancelled = |id: &str| event("BLOCK_JOB_CANCELLED", json!({"device": id}));
        let ours = |j: &str| j == "m";
        assert_eq!(storage_event(&cancelled("m"), "m", "m-sync", ours), None);
        assert!(matches!(
            storage_event(&cancelled("m-sync"), "m", "m-sync", ours),
            Some(StorageEvent::Failed { .. })
        ));
        let failed = event(
            "BLOCK_JOB_COMPLETED",
            json!({"device": "m", "error": "Input/output error"}),
        );
        assert_eq!(
            storage_event(&failed, "m", "m-sync", ours),
            Some(StorageEvent::Failed {
                error: "mirror job m: Input/output error".into()
            })
        );
        let ignored = event(
            "BLOCK_JOB_ERROR",
            json!({"device": "m", "operation": "write", "action": "ignore"}),
        );
        assert_eq!(storage_event(&ignored, "m", "m-sync", ours), None);
        let stopped = event(
            "BLOCK_JOB_ERROR",
            json!({"device": "m-sync", "operation": "write", "action": "report"}),
        );
        assert!(matches!(
            storage_event(&stopped, "m", "m-sync", ours),
            Some(StorageEvent::Failed { .. })
        ));
    }
}
