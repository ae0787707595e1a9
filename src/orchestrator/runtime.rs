//! The async driver of one whole migration ([`Migration`]), after quinn's
//! `ConnectionDriver`: one owner task holds the machine; everything else (driver calls,
//! agent polls, the hypervisor's long-running job) runs in tasks that only send
//! [`Event`]s back. The owner follows the machine's runtime contract
//! (`migroute_orchestration::migration`, "Runtime contract"):
//!
//! 1. every command is appended to the journal (fsynced) **before** it is carried out;
//! 2. `Notify` goes to the observer, `Persist` is done once journaled;
//! 3. other actions go to one FIFO per driver (source agent, destination agent,
//!    hypervisor, storage) and are answered with `Done{seq}`/`Failed{seq}`. The
//!    hypervisor's `StartMigration` is long-running, so it runs beside its FIFO: the
//!    quiesce gate (`AckQuiesce`, `CancelMigration`) must not wait behind it;
//! 4. driver reports become `Event::Hypervisor`/`Event::Storage`; while
//!    [`Migration::polls_agents`], both agents are polled;
//! 5. one timer at [`Migration::poll_timeout`].
//!
//! Restart is [`recover`]: the journal folded back into machines, each resumed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use migroute_orchestration::drivers::{
    AgentError, GateDecision, Hypervisor, HypervisorError, HypervisorEvent, PeAgent, QuiesceGate,
    Storage,
};
use migroute_orchestration::journal::{Journal, JournalError};
use migroute_orchestration::migration::{
    Action, Command, Event, Migration, MigrationError, Notice, Phase, Record, Report, Status,
};
use migroute_orchestration::pe::{MigrationId, Role};
use migroute_orchestration::Time;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// Wall-clock milliseconds since the Unix epoch: the journal outlives the process, so
/// a monotonic clock would mean nothing after a restart.
pub fn now() -> Time {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Time::from_millis(ms)
}

/// What the runtime tells its observer (the CLI's progress bars and JSON lines, the
/// service's SSE stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "update", rename_all = "kebab-case")]
pub enum Update {
    /// The migration entered a phase.
    Phase {
        /// The migration.
        id: MigrationId,
        /// The phase.
        phase: Phase,
        /// When (epoch ms).
        at: Time,
    },
    /// A command failed (the machine decides what follows).
    Failed {
        /// The migration.
        id: MigrationId,
        /// The command's seq.
        seq: u64,
        /// The driver's error.
        error: String,
    },
    /// The machine's message for the operator.
    Notice {
        /// The migration.
        id: MigrationId,
        /// The notice.
        notice: Notice,
    },
}

/// Receives every [`Update`]; must not block (it runs on the owner task).
pub type Observer = Arc<dyn Fn(&Update) + Send + Sync>;

/// The drivers of one migration, built from its plan.
pub struct Drivers<H, S, A> {
    /// `[hypervisor]`.
    pub hypervisor: Arc<H>,
    /// `[storage]`.
    pub storage: Arc<S>,
    /// `[source]`.
    pub source: Arc<A>,
    /// `[destination]`.
    pub destination: Arc<A>,
}

/// Knobs of the runtime itself (the plan holds the migration's own timeouts).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How often both agents are polled while the machine waits for convergence.
    pub agent_poll: Duration,
    /// Return when the migration stalls (the one-shot CLI) instead of waiting for an
    /// operator's `retry`/`complete` (the service).
    pub stop_on_stall: bool,
    /// Extra attempts of an agent call that failed transiently (unreachable, timeout,
    /// 5xx): the agent API is idempotent, and a blip should not roll a migration back.
    pub agent_retries: u32,
    /// Pause between those attempts.
    pub retry_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agent_poll: Duration::from_millis(500),
            stop_on_stall: true,
            agent_retries: 2,
            retry_backoff: Duration::from_millis(200),
        }
    }
}

/// An operator's request to a running migration (`abort`, `complete`, `retry`), with
/// the machine's verdict sent back.
pub type OperatorRequest = (Event, oneshot::Sender<Result<(), MigrationError>>);

/// Why the runtime stopped before the migration reached a final phase.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The journal refused a command: nothing may be carried out unjournaled.
    #[error("migration {id}: journal: {source}")]
    Journal {
        /// The migration.
        id: MigrationId,
        /// The journal's error.
        #[source]
        source: JournalError,
    },
    /// The journal task died (panic or shutdown).
    #[error("migration {id}: journal task failed: {reason}")]
    JournalTask {
        /// The migration.
        id: MigrationId,
        /// Why.
        reason: String,
    },
}

/// A job in a driver's FIFO: it answers the machine itself, through the inbox.
type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the owner task receives.
enum Msg {
    Event(Event),
    /// Both agents were polled; another poll may start.
    PollDone,
}

/// One FIFO: a task that runs its jobs one after the other.
struct Queue {
    tx: mpsc::UnboundedSender<Job>,
}

impl Queue {
    fn spawn(tasks: &mut JoinSet<()>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        tasks.spawn(async move {
            while let Some(job) = rx.recv().await {
                job.await;
            }
        });
        Queue { tx }
    }

    fn push(&self, job: impl Future<Output = ()> + Send + 'static) {
        // The worker lives as long as the owner task; a send can only fail once the
        // runtime is shutting down, when answers no longer matter.
        let _ = self.tx.send(Box::pin(job));
    }
}

/// The hook-style hypervisor's quiesce gate: a one-shot channel completed by
/// `AckQuiesce` (resume) or `CancelMigration` (cancel). A dropped sender means the
/// runtime went away: cancel, the safe side.
pub struct Gate(Option<oneshot::Receiver<GateDecision>>);

impl Gate {
    /// A gate and the sender that decides it.
    pub fn new() -> (oneshot::Sender<GateDecision>, Gate) {
        let (tx, rx) = oneshot::channel();
        (tx, Gate(Some(rx)))
    }
}

impl QuiesceGate for Gate {
    fn quiesced(&mut self) -> impl Future<Output = GateDecision> + Send {
        let rx = self.0.take();
        async move {
            match rx {
                Some(rx) => rx.await.unwrap_or(GateDecision::Cancel),
                None => GateDecision::Cancel,
            }
        }
    }
}

/// Runs one migration to a final phase (or to a stall, with
/// [`Options::stop_on_stall`]). `first` are the commands the machine returned when it
/// was created, restored-and-resumed, or started; they are journaled and carried out
/// first. Returns the machine's report.
pub async fn drive<H, S, A>(
    machine: Migration,
    first: Vec<Command>,
    journal: Arc<Journal>,
    drivers: Drivers<H, S, A>,
    opts: Options,
    observer: Observer,
    operator: mpsc::Receiver<OperatorRequest>,
) -> Result<Report, RuntimeError>
where
    H: Hypervisor + 'static,
    S: Storage + 'static,
    A: PeAgent + 'static,
{
    drive_published(
        machine, first, journal, drivers, opts, observer, operator, None,
    )
    .await
}

/// [`drive`], also publishing the machine's [`Status`] after every step (the service's
/// `GET /v1/migrations/{id}`).
#[allow(clippy::too_many_arguments)]
pub async fn drive_published<H, S, A>(
    machine: Migration,
    first: Vec<Command>,
    journal: Arc<Journal>,
    drivers: Drivers<H, S, A>,
    opts: Options,
    observer: Observer,
    operator: mpsc::Receiver<OperatorRequest>,
    status: Option<watch::Sender<Status>>,
) -> Result<Report, RuntimeError>
where
    H: Hypervisor + 'static,
    S: Storage + 'static,
    A: PeAgent + 'static,
{
    let mut owner = Owner::new(machine, journal, drivers, opts, observer);
    owner.status = status;
    let result = owner.run(first, operator).await;
    owner.tasks.shutdown().await;
    result?;
    Ok(owner.machine.report())
}

struct Owner<H, S, A> {
    machine: Migration,
    journal: Arc<Journal>,
    drivers: Drivers<H, S, A>,
    opts: Options,
    observer: Observer,
    inbox_tx: mpsc::UnboundedSender<Msg>,
    inbox: mpsc::UnboundedReceiver<Msg>,
    tasks: JoinSet<()>,
    source_q: Queue,
    destination_q: Queue,
    hypervisor_q: Queue,
    storage_q: Queue,
    gate: Option<oneshot::Sender<GateDecision>>,
    polling: bool,
    status: Option<watch::Sender<Status>>,
}

impl<H, S, A> Owner<H, S, A>
where
    H: Hypervisor + 'static,
    S: Storage + 'static,
    A: PeAgent + 'static,
{
    fn new(
        machine: Migration,
        journal: Arc<Journal>,
        drivers: Drivers<H, S, A>,
        opts: Options,
        observer: Observer,
    ) -> Self {
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        Owner {
            source_q: Queue::spawn(&mut tasks),
            destination_q: Queue::spawn(&mut tasks),
            hypervisor_q: Queue::spawn(&mut tasks),
            storage_q: Queue::spawn(&mut tasks),
            machine,
            journal,
            drivers,
            opts,
            observer,
            inbox_tx,
            inbox,
            tasks,
            gate: None,
            polling: false,
            status: None,
        }
    }

    fn id(&self) -> MigrationId {
        self.machine.id().clone()
    }

    fn done(&self) -> bool {
        let phase = self.machine.phase();
        phase.is_final() || (self.opts.stop_on_stall && phase == Phase::Stalled)
    }

    async fn run(
        &mut self,
        first: Vec<Command>,
        mut operator: mpsc::Receiver<OperatorRequest>,
    ) -> Result<(), RuntimeError> {
        let mut poll = tokio::time::interval(self.opts.agent_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut operator_open = true;
        let mut cmds = first;
        loop {
            self.carry_out(cmds).await?;
            if let Some(tx) = &self.status {
                tx.send_replace(self.machine.status());
            }
            if self.done() {
                return Ok(());
            }
            let deadline = self.machine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => {
                        let ms = d.millis_since(now());
                        tokio::time::sleep(Duration::from_millis(ms)).await
                    }
                    None => std::future::pending().await,
                }
            };
            cmds = tokio::select! {
                Some(msg) = self.inbox.recv() => match msg {
                    Msg::Event(ev) => self.handle(ev),
                    Msg::PollDone => {
                        self.polling = false;
                        Vec::new()
                    }
                },
                _ = sleep => self.machine.handle_timeout(now()),
                _ = poll.tick() => {
                    if self.machine.polls_agents() && !self.polling {
                        self.poll_agents();
                    }
                    Vec::new()
                }
                req = operator.recv(), if operator_open => match req {
                    Some((ev, reply)) => match self.machine.handle(ev, now()) {
                        Ok(cmds) => {
                            let _ = reply.send(Ok(()));
                            cmds
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            Vec::new()
                        }
                    },
                    None => {
                        operator_open = false;
                        Vec::new()
                    }
                },
            };
        }
    }

    /// Feeds a driver's answer or report. A refused event (a late report, a phase
    /// that no longer takes it) changes nothing, so it is only logged.
    fn handle(&mut self, ev: Event) -> Vec<Command> {
        let kind = ev.kind();
        match self.machine.handle(ev, now()) {
            Ok(cmds) => cmds,
            Err(e) => {
                tracing::debug!(migration = %self.machine.id(), event = %kind, error = %e, "event refused");
                Vec::new()
            }
        }
    }

    /// Journals the batch in order (each append fsynced), then carries it out: every
    /// command is on disk before its side effect starts.
    async fn carry_out(&mut self, cmds: Vec<Command>) -> Result<(), RuntimeError> {
        if cmds.is_empty() {
            return Ok(());
        }
        let journal = self.journal.clone();
        let batch = cmds.clone();
        let id = self.id();
        tokio::task::spawn_blocking(move || {
            batch.iter().try_for_each(|c| journal.append_migration(c))
        })
        .await
        .map_err(|e| RuntimeError::JournalTask {
            id: id.clone(),
            reason: e.to_string(),
        })?
        .map_err(|source| RuntimeError::Journal { id, source })?;
        for cmd in cmds {
            self.dispatch(cmd);
        }
        Ok(())
    }

    fn answer_tx(&self) -> Answer {
        Answer(self.inbox_tx.clone())
    }

    fn dispatch(&mut self, cmd: Command) {
        let id = self.id();
        let seq = cmd.seq;
        let answer = self.answer_tx();
        tracing::debug!(migration = %id, seq, action = ?cmd.action, "carry out");
        match cmd.action {
            Action::Persist(Record::Phase { phase, at }) => {
                tracing::info!(migration = %id, %phase, "phase");
                (self.observer)(&Update::Phase { id, phase, at });
            }
            Action::Persist(Record::Failed { seq, error, .. }) => {
                tracing::warn!(migration = %id, seq, %error, "command failed");
                (self.observer)(&Update::Failed { id, seq, error });
            }
            Action::Persist(_) => {}
            Action::Notify(notice) => {
                tracing::info!(migration = %id, ?notice, "notice");
                (self.observer)(&Update::Notice { id, notice });
            }
            Action::PrepareAgent { which } => {
                let spec = self.machine.plan().agent_spec(which);
                let agent = self.agent(which);
                let opts = self.opts;
                self.queue(which).push(async move {
                    let (agent, id, spec) = (&agent, &id, &spec);
                    let r = retrying(opts, move || agent.prepare(id, spec)).await;
                    answer.result(seq, r);
                });
            }
            Action::SwitchoverDestination => {
                self.agent_call(Role::Destination, seq, AgentCall::Switchover)
            }
            Action::SwitchoverSource => self.agent_call(Role::Source, seq, AgentCall::Switchover),
            Action::AnnounceDestination => {
                self.agent_call(Role::Destination, seq, AgentCall::Announce)
            }
            Action::AnnounceSource => self.agent_call(Role::Source, seq, AgentCall::Announce),
            Action::AbortAgent { which } => self.agent_call(which, seq, AgentCall::Abort),
            Action::CompleteAgents => {
                let (src, dst) = (
                    self.drivers.source.clone(),
                    self.drivers.destination.clone(),
                );
                let opts = self.opts;
                self.tasks.spawn(async move {
                    let (src, dst, id) = (&src, &dst, &id);
                    let (a, b) = tokio::join!(
                        retrying(opts, move || src.complete(id)),
                        retrying(opts, move || dst.complete(id)),
                    );
                    answer.result(seq, a.and(b));
                });
            }
            Action::StorageStartAsync => {
                let storage = self.drivers.storage.clone();
                let sink = self.answer_tx();
                self.storage_q.push(async move {
                    let r = storage
                        .start_async(move |e| sink.event(Event::Storage(e)))
                        .await;
                    answer.result(seq, r);
                });
            }
            Action::StorageSwitchSync => {
                let storage = self.drivers.storage.clone();
                self.storage_q
                    .push(async move { answer.result(seq, storage.switch_sync().await) });
            }
            Action::StorageWaitInSync => {
                let storage = self.drivers.storage.clone();
                self.storage_q
                    .push(async move { answer.result(seq, storage.wait_in_sync().await) });
            }
            Action::StorageCutover => {
                let storage = self.drivers.storage.clone();
                self.storage_q
                    .push(async move { answer.result(seq, storage.cutover().await) });
            }
            Action::StorageAbort => {
                let storage = self.drivers.storage.clone();
                self.storage_q
                    .push(async move { answer.result(seq, storage.abort().await) });
            }
            Action::StartMigration => {
                // Long-running: beside the hypervisor's FIFO, so that the gate's
                // decision and a cancel never queue behind it.
                let (gate_tx, gate) = Gate::new();
                self.gate = Some(gate_tx);
                let hv = self.drivers.hypervisor.clone();
                let sink = self.answer_tx();
                self.tasks.spawn(async move {
                    let r = hv
                        .migrate(move |e| sink.event(Event::Hypervisor(e)), gate)
                        .await;
                    answer.result(seq, r);
                });
            }
            Action::AckQuiesce => match self.gate.take() {
                Some(gate) => {
                    let released = gate.send(GateDecision::Resume).is_ok();
                    if released {
                        answer.done(seq);
                    } else {
                        answer.failed(seq, "the hypervisor no longer waits at the quiesce point");
                    }
                }
                None => answer.failed(seq, "no migration waits at the quiesce point"),
            },
            Action::CancelMigration => {
                if let Some(gate) = self.gate.take() {
                    let _ = gate.send(GateDecision::Cancel);
                }
                let hv = self.drivers.hypervisor.clone();
                self.hypervisor_q.push(async move {
                    match hv.cancel().await {
                        Ok(()) => answer.done(seq),
                        Err(e @ HypervisorError::AlreadyCompleted { .. }) => {
                            // Too late: the VM runs at the destination. Said as the
                            // hypervisor's reports, this turns the rollback forward.
                            answer.event(Event::Hypervisor(HypervisorEvent::Resumed));
                            answer.event(Event::Hypervisor(HypervisorEvent::Completed));
                            answer.failed(seq, e);
                        }
                        Err(e) => answer.failed(seq, e),
                    }
                });
            }
        }
    }

    fn agent(&self, which: Role) -> Arc<A> {
        match which {
            Role::Source => self.drivers.source.clone(),
            Role::Destination => self.drivers.destination.clone(),
        }
    }

    fn queue(&self, which: Role) -> &Queue {
        match which {
            Role::Source => &self.source_q,
            Role::Destination => &self.destination_q,
        }
    }

    fn agent_call(&mut self, which: Role, seq: u64, call: AgentCall) {
        let agent = self.agent(which);
        let id = self.id();
        let answer = self.answer_tx();
        let opts = self.opts;
        self.queue(which).push(async move {
            let (agent, id) = (&agent, &id);
            let r = retrying(opts, move || async move {
                match call {
                    AgentCall::Switchover => agent.switchover(id).await,
                    AgentCall::Announce => agent.announce(id).await,
                    AgentCall::Abort => agent.abort(id).await,
                }
            })
            .await;
            answer.result(seq, r);
        });
    }

    /// One poll of both agents, concurrently; each phase seen becomes an
    /// `Event::Agent`. A failed poll is only logged: the converge deadline covers an
    /// agent that stays silent.
    fn poll_agents(&mut self) {
        self.polling = true;
        let id = self.id();
        let (src, dst) = (
            self.drivers.source.clone(),
            self.drivers.destination.clone(),
        );
        let answer = self.answer_tx();
        self.tasks.spawn(async move {
            let (a, b) = tokio::join!(src.status(&id), dst.status(&id));
            for (which, r) in [(Role::Source, a), (Role::Destination, b)] {
                match r {
                    Ok(st) => answer.event(Event::Agent {
                        which,
                        phase: st.phase,
                    }),
                    Err(e) => {
                        tracing::debug!(migration = %id, %which, error = %e, "agent poll failed")
                    }
                }
            }
            let _ = answer.0.send(Msg::PollDone);
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum AgentCall {
    Switchover,
    Announce,
    Abort,
}

/// The owner's inbox, as the drivers' tasks see it.
#[derive(Clone)]
struct Answer(mpsc::UnboundedSender<Msg>);

impl Answer {
    fn event(&self, ev: Event) {
        let _ = self.0.send(Msg::Event(ev));
    }

    fn done(&self, seq: u64) {
        self.event(Event::Done { seq });
    }

    fn failed(&self, seq: u64, error: impl std::fmt::Display) {
        self.event(Event::Failed {
            seq,
            error: error.to_string(),
        });
    }

    fn result<E: std::fmt::Display>(&self, seq: u64, r: Result<(), E>) {
        match r {
            Ok(()) => self.done(seq),
            Err(e) => self.failed(seq, e),
        }
    }
}

/// An agent call with [`Options::agent_retries`] extra attempts on transient errors.
async fn retrying<F, Fut, T>(opts: Options, mut call: F) -> Result<T, AgentError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AgentError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if e.is_transient() && attempt < opts.agent_retries => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "transient agent error, retrying");
                tokio::time::sleep(opts.retry_backoff).await;
            }
            r => return r,
        }
    }
}

/// Restart: every journaled migration that has not finished, restored and resumed,
/// with the commands [`Migration::resume`] returned (pass them to [`drive`] as
/// `first`). Finished ones are left alone. (The service's start-up; the one-shot
/// `migrate` resumes only its own plan's id.)
#[allow(dead_code)]
pub fn recover(
    journal: &Journal,
    now: Time,
) -> Result<Vec<(Migration, Vec<Command>)>, JournalError> {
    Ok(journal
        .load_migration_machines()?
        .into_iter()
        .filter(|m| !m.phase().is_final())
        .map(|mut m| {
            let cmds = m.resume(now);
            (m, cmds)
        })
        .collect())
}

#[cfg(test)]
mod tests;
