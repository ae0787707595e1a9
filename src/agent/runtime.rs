//! The owner task: the one place that holds the [`Registry`] and the [`Journal`].
//!
//! API calls, the machines' deadline and counter samples all arrive here and are
//! handled one at a time (single writer, so no locks around the machines). Each batch
//! of commands is carried out as `executor::execute` documents it, step for step but
//! async: journal the whole batch (one fsynced commit) → act → on failure drop the rest
//! of the migration's batch, report `ActionFailed`, rewind the journal to the failure
//! and append the answer (one commit), carry out the answer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use migroute_orchestration::journal::{Journal, JournalError};
use migroute_orchestration::pe::{
    Action, Command, Event, MigrationId, MigrationSpec, Notice, Phase, Record, Registry,
    RegistryError, Status,
};
use migroute_orchestration::Time;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use utoipa::ToSchema;

use super::announcer::RouteAnnouncer;
use super::effector::{perform, Dataplane, Effects, PeerNotifier};
use super::metrics::Metrics;
use super::now;
use super::vm_seen::Heard;

/// A request to the owner task.
#[derive(Debug)]
pub enum Request {
    /// `PUT /v1/migrations/{id}`.
    Prepare {
        /// The id.
        id: MigrationId,
        /// The body.
        spec: MigrationSpec,
        /// Answer.
        reply: oneshot::Sender<Result<Applied, AgentError>>,
    },
    /// `POST /v1/migrations/{id}/{event}`.
    Event {
        /// The id.
        id: MigrationId,
        /// What happened.
        event: Event,
        /// Answer.
        reply: oneshot::Sender<Result<Applied, AgentError>>,
    },
    /// `GET /v1/migrations/{id}`.
    Get {
        /// The id.
        id: MigrationId,
        /// Answer.
        reply: oneshot::Sender<Option<Status>>,
    },
    /// `GET /v1/migrations`.
    List {
        /// Answer.
        reply: oneshot::Sender<Vec<Status>>,
    },
    /// The VM announced itself on the VM-facing interface (RARP, gratuitous ARP,
    /// unsolicited neighbour advertisement).
    VmSeen {
        /// What was heard.
        heard: Heard,
    },
    /// The speaker has (or no longer has) an established session.
    BgpSession {
        /// At least one session established.
        up: bool,
    },
}

/// What a request did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// `PUT` only: a new migration (201) rather than the same body again (200).
    pub created: bool,
    /// The migration afterwards.
    pub status: Status,
    /// Commands whose effect failed in this request: (seq, error).
    pub failed: Vec<(u64, String)>,
}

/// Why a request was not carried out.
#[derive(Debug, Clone, Error)]
pub enum AgentError {
    /// Refused by the registry (400/404/409).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The journal refused to record; nothing more is done until restart.
    #[error("journal: {0}")]
    Journal(String),
    /// The owner task is gone (shutting down).
    #[error("agent is shutting down")]
    Stopped,
}

/// One transition or notice, as `GET /v1/events` streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AgentEvent {
    /// The migration.
    pub migration: String,
    /// Journal sequence number of the record.
    pub seq: u64,
    /// `phase`, `error` or `notice`.
    pub kind: String,
    /// The phase entered (`phase`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// What went wrong (`error`) or the notice (`notice`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Epoch milliseconds.
    pub at_ms: u64,
}

/// The API's way to the owner task. Cloneable; the task ends when it is told to shut
/// down.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    tx: mpsc::Sender<Request>,
}

impl AgentHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Prepare.
    pub async fn prepare(
        &self,
        id: MigrationId,
        spec: MigrationSpec,
    ) -> Result<Applied, AgentError> {
        self.ask(|reply| Request::Prepare { id, spec, reply })
            .await
            .unwrap_or(Err(AgentError::Stopped))
    }

    /// Switchover, announce, complete, abort.
    pub async fn event(&self, id: MigrationId, event: Event) -> Result<Applied, AgentError> {
        self.ask(|reply| Request::Event { id, event, reply })
            .await
            .unwrap_or(Err(AgentError::Stopped))
    }

    /// One migration.
    pub async fn get(&self, id: MigrationId) -> Result<Option<Status>, AgentError> {
        self.ask(|reply| Request::Get { id, reply })
            .await
            .ok_or(AgentError::Stopped)
    }

    /// BGP sessions came up or went down.
    pub async fn bgp_session(&self, up: bool) -> Result<(), AgentError> {
        self.tx
            .send(Request::BgpSession { up })
            .await
            .map_err(|_| AgentError::Stopped)
    }

    /// The VM was heard (see [`super::vm_seen`]). Fire and forget: frames keep coming.
    pub async fn vm_seen(&self, heard: Heard) -> Result<(), AgentError> {
        self.tx
            .send(Request::VmSeen { heard })
            .await
            .map_err(|_| AgentError::Stopped)
    }

    /// All migrations.
    pub async fn list(&self) -> Result<Vec<Status>, AgentError> {
        self.ask(|reply| Request::List { reply })
            .await
            .ok_or(AgentError::Stopped)
    }
}

/// The owner of the machines, the journal and the data plane.
pub struct Owner<D: Dataplane> {
    pub(crate) registry: Registry,
    journal: Journal,
    pub(crate) dataplane: D,
    pub(crate) announcer: Arc<dyn RouteAnnouncer>,
    notifier: PeerNotifier,
    events: broadcast::Sender<AgentEvent>,
    metrics: Arc<Metrics>,
    counter_poll: Duration,
    /// Phase each migration is in and since when, for phase durations.
    last_phase: HashMap<MigrationId, (Phase, Time)>,
    /// The journal failed: stop taking requests (a restart replays from the journal).
    fatal: Option<String>,
}

/// Everything [`Owner::new`] needs.
pub struct OwnerParts<D: Dataplane> {
    /// Restored (or empty) registry.
    pub registry: Registry,
    /// Its journal.
    pub journal: Journal,
    /// Kernel.
    pub dataplane: D,
    /// BGP.
    pub announcer: Arc<dyn RouteAnnouncer>,
    /// Peer API client.
    pub notifier: PeerNotifier,
    /// SSE fan-out.
    pub events: broadcast::Sender<AgentEvent>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Counter poll interval.
    pub counter_poll: Duration,
}

impl<D: Dataplane> Owner<D> {
    /// Takes ownership of everything.
    pub fn new(p: OwnerParts<D>) -> Self {
        let last_phase = p
            .registry
            .iter()
            .filter_map(|m| {
                m.transitions()
                    .last()
                    .map(|t| (m.id().clone(), (t.phase, t.at)))
            })
            .collect();
        let owner = Owner {
            registry: p.registry,
            journal: p.journal,
            dataplane: p.dataplane,
            announcer: p.announcer,
            notifier: p.notifier,
            events: p.events,
            metrics: p.metrics,
            counter_poll: p.counter_poll,
            last_phase,
            fatal: None,
        };
        owner.update_phase_metrics();
        owner
    }

    /// A handle plus the receiving end the run loop needs.
    pub fn channel() -> (AgentHandle, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(1024);
        (AgentHandle { tx }, rx)
    }

    /// Why the owner stopped taking requests, if it did.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// Serves requests, the deadline and counter samples until `shutdown` resolves or
    /// every handle is dropped. The request in progress is always finished: the select
    /// only chooses between requests, never interrupts one.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Self {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.counter_poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.registry.poll_timeout().map(|t| {
                let wait = t.as_millis().saturating_sub(now().as_millis()).max(1);
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            let watching = self.registry.counter_watch().next().is_some();
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                req = rx.recv() => match req {
                    Some(r) => self.handle_request(r).await,
                    None => break,
                },
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    let now = now();
                    let cmds = self.registry.handle_timeout(now);
                    self.run_logged(cmds, now).await;
                }
                _ = ticker.tick(), if watching => self.sample_counters().await,
            }
            if self.fatal.is_some() {
                break;
            }
        }
        self
    }

    async fn handle_request(&mut self, req: Request) {
        if let Some(f) = &self.fatal {
            let e = AgentError::Journal(f.clone());
            match req {
                Request::Prepare { reply, .. } | Request::Event { reply, .. } => {
                    let _ = reply.send(Err(e));
                }
                Request::Get { id, reply } => {
                    let _ = reply.send(self.registry.get(&id).map(|m| m.status()));
                }
                Request::List { reply } => {
                    let _ = reply.send(self.registry.iter().map(|m| m.status()).collect());
                }
                Request::BgpSession { .. } | Request::VmSeen { .. } => {}
            }
            return;
        }
        match req {
            Request::Prepare { id, spec, reply } => {
                let now = now();
                let r = match self.registry.prepare(id.clone(), spec, now) {
                    Err(e) => Err(e.into()),
                    Ok(p) => self.apply(&id, p.created, p.commands, now).await,
                };
                let _ = reply.send(r);
            }
            Request::Event { id, event, reply } => {
                let now = now();
                let r = match self.registry.handle(&id, event, now) {
                    Err(e) => Err(e.into()),
                    Ok(cmds) => self.apply(&id, false, cmds, now).await,
                };
                let _ = reply.send(r);
            }
            Request::Get { id, reply } => {
                let _ = reply.send(self.registry.get(&id).map(|m| m.status()));
            }
            Request::List { reply } => {
                let _ = reply.send(self.registry.iter().map(|m| m.status()).collect());
            }
            Request::VmSeen { heard } => {
                let now = now();
                let found = match heard {
                    Heard::Mac(mac) => self.registry.vm_seen_mac(mac, now),
                    Heard::Addr(addr) => self.registry.vm_seen(addr, now),
                };
                match found {
                    Ok(cmds) if cmds.is_empty() => {}
                    Ok(cmds) => {
                        tracing::info!(?heard, "VM seen here: announcing");
                        self.run_logged(cmds, now).await;
                    }
                    // Not one of ours (another VM's announcement), or a phase that
                    // refuses it: nothing to do.
                    Err(e) => tracing::debug!(?heard, error = %e, "VM announcement ignored"),
                }
            }
            Request::BgpSession { up } => {
                tracing::info!(up, "BGP sessions");
                let now = now();
                let cmds = self.registry.bgp_session(up, now);
                self.run_logged(cmds, now).await;
            }
        }
    }

    async fn apply(
        &mut self,
        id: &MigrationId,
        created: bool,
        cmds: Vec<Command>,
        now: Time,
    ) -> Result<Applied, AgentError> {
        let failed = self
            .run_batch(cmds, now)
            .await
            .map_err(|e| AgentError::Journal(e.to_string()))?;
        let status = self
            .registry
            .get(id)
            .map(|m| m.status())
            .ok_or_else(|| AgentError::Registry(RegistryError::NotFound(id.clone())))?;
        Ok(Applied {
            created,
            status,
            failed,
        })
    }

    async fn run_logged(&mut self, cmds: Vec<Command>, now: Time) {
        if let Err(e) = self.run_batch(cmds, now).await {
            tracing::error!(error = %e, "journal failed; no more actions until restart");
        }
    }

    /// Journals and carries out `commands` (the executor's contract); returns the
    /// failed ones as (seq, error). The batch goes to disk in one commit before
    /// anything runs: one fsync per request instead of one per command is most of the
    /// switchover's latency. A journal failure stops everything: an action that is not
    /// journaled must not be taken.
    pub(crate) async fn run_batch(
        &mut self,
        commands: Vec<Command>,
        now: Time,
    ) -> Result<Vec<(u64, String)>, JournalError> {
        if let Err(e) = self.journal.append_batch(&commands) {
            self.fatal = Some(e.to_string());
            self.metrics.observe_commands(0, 0);
            return Err(e);
        }
        let mut queue: VecDeque<Command> = commands.into();
        let mut failed = Vec::new();
        let mut journaled = 0;
        while let Some(cmd) = queue.pop_front() {
            journaled += 1;
            self.publish(&cmd);
            if matches!(cmd.action, Action::Persist(_)) {
                continue;
            }
            let Some((tunnel, role)) = self
                .registry
                .get(&cmd.migration)
                .map(|m| (m.spec().tunnel_spec(), m.role()))
            else {
                continue;
            };
            let mut fx = Effects {
                dataplane: &mut self.dataplane,
                announcer: &*self.announcer,
                notifier: &self.notifier,
            };
            if let Err(e) = perform(&mut fx, &cmd, &tunnel, role).await {
                let error = e.to_string();
                tracing::warn!(migration = %cmd.migration, seq = cmd.seq, %error, "action failed");
                queue.retain(|c| c.migration != cmd.migration);
                match self.registry.handle(
                    &cmd.migration,
                    Event::ActionFailed {
                        seq: cmd.seq,
                        error: error.clone(),
                    },
                    now,
                ) {
                    Ok(answer) => {
                        // The dropped tail was journaled with the batch; the machine
                        // has forgotten it, so the journal must too before the answer
                        // (numbered from the failed seq on) goes in.
                        if let Err(e) = self.journal.rewind(&cmd.migration, cmd.seq, &answer) {
                            self.fatal = Some(e.to_string());
                            self.metrics.observe_commands(journaled, failed.len() + 1);
                            return Err(e);
                        }
                        queue.extend(answer);
                    }
                    Err(e) => tracing::error!(error = %e, "machine refused the failure report"),
                }
                failed.push((cmd.seq, error));
            }
        }
        self.metrics.observe_commands(journaled, failed.len());
        self.update_phase_metrics();
        Ok(failed)
    }

    fn publish(&mut self, cmd: &Command) {
        let event =
            |kind: &str, phase: Option<Phase>, detail: Option<String>, at: Time| AgentEvent {
                migration: cmd.migration.to_string(),
                seq: cmd.seq,
                kind: kind.to_owned(),
                phase: phase.map(|p| p.to_string()),
                detail,
                at_ms: at.as_millis(),
            };
        let ev = match &cmd.action {
            Action::Persist(Record::Created { at, .. }) => {
                self.last_phase
                    .insert(cmd.migration.clone(), (Phase::Prepared, *at));
                event("phase", Some(Phase::Prepared), None, *at)
            }
            Action::Persist(Record::Phase { phase, at }) => {
                if let Some((prev, since)) =
                    self.last_phase.insert(cmd.migration.clone(), (*phase, *at))
                {
                    self.metrics.observe_phase(prev, at.millis_since(since));
                }
                tracing::info!(migration = %cmd.migration, phase = %phase, "transition");
                event("phase", Some(*phase), None, *at)
            }
            Action::Persist(Record::Error { error, at, .. }) => {
                event("error", None, Some(error.clone()), *at)
            }
            Action::Notify(n) => {
                let detail = match n {
                    Notice::SwitchOverPeer { api_url } => format!("switchover-peer {api_url}"),
                    Notice::Stalled => "stalled".into(),
                    Notice::TornDown => "torn-down".into(),
                    Notice::Aborted { reason } => match reason {
                        Some(r) => format!("aborted: {r}"),
                        None => "aborted".into(),
                    },
                };
                event("notice", None, Some(detail), now())
            }
            _ => return,
        };
        // No subscribers is fine.
        let _ = self.events.send(ev);
    }

    fn update_phase_metrics(&self) {
        let mut counts: HashMap<Phase, u64> = HashMap::new();
        for m in self.registry.iter() {
            *counts.entry(m.phase()).or_default() += 1;
        }
        self.metrics.set_phases(counts);
    }

    async fn sample_counters(&mut self) {
        let watch: Vec<_> = self
            .registry
            .counter_watch()
            .filter_map(|id| {
                self.registry
                    .get(id)
                    .map(|m| (id.clone(), m.spec().tunnel_spec()))
            })
            .collect();
        for (id, tunnel) in watch {
            match self.dataplane.tunnel_packets(&tunnel).await {
                Ok(packets) => {
                    let now = now();
                    match self
                        .registry
                        .handle(&id, Event::TunnelCounters { packets }, now)
                    {
                        Ok(cmds) => self.run_logged(cmds, now).await,
                        Err(e) => tracing::debug!(error = %e, "counter sample refused"),
                    }
                }
                // A counter we cannot read never looks quiet: skip the sample.
                Err(e) => tracing::debug!(migration = %id, error = %e, "counter read failed"),
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
