//! [`Migration`]: one whole migration as the orchestrator sees it.

use super::command::{Action, Command, Fault, Notice, Observation, Record};
use super::error::{MigrationError, ReplayError};
use super::event::Event;
use super::phase::Phase;
use super::plan::{MigrationPlan, OnRestart, QuiesceStyle};
use super::timing::{phase_timings, Marks, PhaseTiming, Transition};
use crate::drivers::{HypervisorEvent, MigrationProgress, StorageEvent};
use crate::pe::{MigrationId, Phase as PePhase, Role};
use crate::Time;
use serde::Serialize;
use std::collections::BTreeMap;

const ROLES: [Role; 2] = [Role::Source, Role::Destination];

fn ix(r: Role) -> usize {
    match r {
        Role::Source => 0,
        Role::Destination => 1,
    }
}

/// The whole-migration state machine.
///
/// Method groups, as in quinn-proto's `Connection`:
/// - constructors: [`new`](Self::new) from a plan, [`restore`](Self::restore) from
///   journaled commands;
/// - getters: [`phase`](Self::phase), [`status`](Self::status),
///   [`report`](Self::report), [`polls_agents`](Self::polls_agents), …;
/// - `handle_*`: [`handle`](Self::handle) for an [`Event`],
///   [`handle_timeout`](Self::handle_timeout) once [`poll_timeout`](Self::poll_timeout)
///   has passed;
/// - [`resume`](Self::resume) right after a restore.
///
/// Every state-changing method returns the [`Command`]s to journal and carry out, in
/// order. The state is a fold over the commands (journal records included), so a
/// restored machine equals the live one that wrote the journal.
#[derive(Debug, Clone)]
pub struct Migration {
    plan: MigrationPlan,
    phase: Phase,
    phase_since: Time,
    stalled_from: Option<Phase>,
    transitions: Vec<Transition>,
    /// Issued commands still awaiting `Done`/`Failed`.
    pending: BTreeMap<u64, Action>,
    flags: Flags,
    touched: Touched,
    marks: Marks,
    agents: [Option<PePhase>; 2],
    errors: Vec<ErrorRecord>,
    log: Vec<Command>,
    /// Latest pre-copy progress: an observation, never journaled.
    progress: Option<MigrationProgress>,
}

/// Steps done (or observed), as journaled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Flags {
    /// Agents prepared (source, destination).
    pub prepared: [bool; 2],
    /// Storage replication runs.
    pub storage_started: bool,
    /// Storage bulk copy done.
    pub storage_ready: bool,
    /// Storage replication synchronous.
    pub sync_on: bool,
    /// Storage in sync.
    pub in_sync: bool,
    /// Destination delivers from the tunnel.
    pub dst_switched: bool,
    /// VM suspended.
    pub suspended: bool,
    /// Source override acknowledged.
    pub src_switched: bool,
    /// Storage cut over to the destination.
    pub cutover: bool,
    /// `AckQuiesce` issued.
    pub ack_issued: bool,
    /// VM runs at the destination.
    pub resumed: bool,
    /// Hypervisor job finished.
    pub hv_completed: bool,
    /// The migration failed at the hypervisor: the VM runs at the source.
    pub hv_failed: bool,
    /// Agents announced (source, destination).
    pub announced: [bool; 2],
    /// Both agents completed.
    pub agents_completed: bool,
    /// Rollback: cancel answered (done or failed).
    pub cancel_resolved: bool,
    /// Rollback: storage abort answered.
    pub storage_abort_resolved: bool,
    /// Rollback: agent abort answered (source, destination).
    pub abort_resolved: [bool; 2],
}

/// What has been asked of the world, from the moment it was journaled: a rollback
/// undoes all of it, done or half done (undo actions are idempotent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Touched {
    /// Agents asked to do something (source, destination).
    pub agents: [bool; 2],
    /// Storage asked to replicate.
    pub storage: bool,
    /// Hypervisor asked to migrate.
    pub migration: bool,
    /// An undo of storage or agents was issued: from then on a late resume at the
    /// destination cannot be turned back into going forward.
    pub undo_started: bool,
}

/// A failure, kept for the status and the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorRecord {
    /// The failed command, if an action failed.
    pub seq: Option<u64>,
    /// What went wrong.
    pub error: String,
    /// When it was reported.
    pub at: Time,
}

/// Snapshot of everything journaled: what `GET` on the orchestrator shows, and what
/// restore must reproduce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The migration.
    pub id: MigrationId,
    /// Current phase.
    pub phase: Phase,
    /// The phase a stall interrupted.
    pub stalled_from: Option<Phase>,
    /// Phases entered, in order.
    pub transitions: Vec<Transition>,
    /// Outstanding commands by seq.
    pub pending: Vec<(u64, Action)>,
    /// Steps done.
    pub flags: Flags,
    /// What a rollback must undo.
    pub touched: Touched,
    /// Pause-window instants.
    pub marks: Marks,
    /// Agents' phases as last polled (source, destination).
    pub agents: [Option<PePhase>; 2],
    /// Failures.
    pub errors: Vec<ErrorRecord>,
    /// The next deadline.
    pub next_deadline: Option<Time>,
}

/// The end-of-migration report for the lab scenario and the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The migration.
    pub id: MigrationId,
    /// Where it ended (or stands).
    pub phase: Phase,
    /// Start and end of every phase.
    pub phases: Vec<PhaseTiming>,
    /// Pause-window instants and the ordering verdict.
    pub marks: Marks,
    /// Suspend to resume.
    pub pause_ms: Option<u64>,
    /// Suspend to override acknowledged.
    pub switchover_ms: Option<u64>,
    /// Failures, in order.
    pub errors: Vec<ErrorRecord>,
}

impl Migration {
    /// A new migration in phase `planned`; the plan is validated and journaled (the
    /// returned command). Nothing happens until [`Event::Start`].
    pub fn new(plan: MigrationPlan, now: Time) -> Result<(Self, Vec<Command>), MigrationError> {
        plan.validate()?;
        let mut m = Migration::empty(plan.clone(), now);
        let mut out = Vec::new();
        let plan = Box::new(plan);
        m.emit(&mut out, Action::Persist(Record::Created { plan, at: now }));
        Ok((m, out))
    }

    /// Rebuilds a machine from its journaled commands (in seq order). Call
    /// [`resume`](Self::resume) next.
    pub fn restore(commands: &[Command]) -> Result<Self, ReplayError> {
        let Some(first) = commands.first() else {
            return Err(ReplayError::Empty);
        };
        let id = first.migration.clone();
        let (plan, at) = match &first.action {
            Action::Persist(Record::Created { plan, at }) if first.seq == 0 => {
                ((**plan).clone(), *at)
            }
            _ => return Err(ReplayError::MissingCreation { id, seq: first.seq }),
        };
        plan.validate().map_err(|source| ReplayError::InvalidPlan {
            id: id.clone(),
            source,
        })?;
        for (i, c) in commands.iter().enumerate() {
            let expected = i as u64;
            if c.migration != id || c.seq != expected {
                return Err(ReplayError::Gap {
                    id,
                    expected,
                    found: c.seq,
                });
            }
            if i > 0 && matches!(c.action, Action::Persist(Record::Created { .. })) {
                return Err(ReplayError::DuplicateCreation { id, seq: c.seq });
            }
        }
        let mut m = Migration::empty(plan, at);
        for c in commands {
            m.apply(c);
            m.log.push(c.clone());
        }
        Ok(m)
    }

    fn empty(plan: MigrationPlan, now: Time) -> Self {
        Migration {
            plan,
            phase: Phase::Planned,
            phase_since: now,
            stalled_from: None,
            transitions: Vec::new(),
            pending: BTreeMap::new(),
            flags: Flags::default(),
            touched: Touched::default(),
            marks: Marks::default(),
            agents: [None, None],
            errors: Vec::new(),
            log: Vec::new(),
            progress: None,
        }
    }

    // ---- getters ----

    /// The migration's id.
    pub fn id(&self) -> &MigrationId {
        &self.plan.id
    }

    /// The plan.
    pub fn plan(&self) -> &MigrationPlan {
        &self.plan
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How the hypervisor ties our switchover to its resume.
    pub fn quiesce_style(&self) -> QuiesceStyle {
        self.plan.hypervisor.quiesce_style()
    }

    /// Every command issued so far: what the journal holds for this migration.
    pub fn log(&self) -> &[Command] {
        &self.log
    }

    /// Latest pre-copy progress since this process started.
    pub fn progress(&self) -> Option<MigrationProgress> {
        self.progress
    }

    /// The VM runs at the destination: rolling back would cut it off, so from here on
    /// failures stall instead and `abort` is refused.
    pub fn past_point_of_no_return(&self) -> bool {
        self.flags.resumed || self.flags.hv_completed
    }

    /// Whether the runtime should poll both agents' `GET` (and feed
    /// [`Event::Agent`]): while waiting for convergence.
    pub fn polls_agents(&self) -> bool {
        matches!(self.phase, Phase::Converging)
            || (self.phase == Phase::Stalled && self.stalled_from == Some(Phase::Converging))
    }

    /// Snapshot of the journaled state.
    pub fn status(&self) -> Status {
        Status {
            id: self.plan.id.clone(),
            phase: self.phase,
            stalled_from: self.stalled_from,
            transitions: self.transitions.clone(),
            pending: self.pending.iter().map(|(s, a)| (*s, a.clone())).collect(),
            flags: self.flags.clone(),
            touched: self.touched.clone(),
            marks: self.marks,
            agents: self.agents,
            errors: self.errors.clone(),
            next_deadline: self.poll_timeout(),
        }
    }

    /// Per-phase timings and the pause-window verdict.
    pub fn report(&self) -> Report {
        Report {
            id: self.plan.id.clone(),
            phase: self.phase,
            phases: phase_timings(&self.transitions),
            marks: self.marks,
            pause_ms: self.marks.pause_ms(),
            switchover_ms: self.marks.switchover_ms(),
            errors: self.errors.clone(),
        }
    }

    /// The current phase's deadline: the one timer the runtime sets.
    pub fn poll_timeout(&self) -> Option<Time> {
        let ms = self.plan.timeout_of(self.phase)?;
        Some(self.phase_since.plus_millis(ms))
    }

    // ---- handle_* ----

    /// Feeds an event; returns the commands to journal and carry out, in order. An
    /// `Err` changes nothing. Repeated events are accepted and change nothing.
    pub fn handle(&mut self, event: Event, now: Time) -> Result<Vec<Command>, MigrationError> {
        let mut out = Vec::new();
        let refuse = |m: &Self, e: &Event| MigrationError::InvalidEvent {
            id: m.plan.id.clone(),
            phase: m.phase,
            event: e.kind(),
        };
        match &event {
            Event::Start => {
                if self.phase == Phase::Planned {
                    self.enter(&mut out, Phase::Preparing, now);
                }
            }
            Event::Done { seq } => {
                self.check_seq(*seq)?;
                if self.pending.contains_key(seq) {
                    self.record(&mut out, Record::Done { seq: *seq, at: now });
                }
            }
            Event::Failed { seq, error } => {
                self.check_seq(*seq)?;
                if let Some(action) = self.pending.get(seq).cloned() {
                    self.record(
                        &mut out,
                        Record::Failed {
                            seq: *seq,
                            error: error.clone(),
                            at: now,
                        },
                    );
                    if action.is_forward() {
                        self.leave_forward_path(&mut out, now);
                    }
                }
            }
            Event::Hypervisor(e) => self.hypervisor(&mut out, e, now),
            Event::Storage(e) => self.storage(&mut out, e, now),
            Event::Agent { which, phase } => {
                if self.agents[ix(*which)] != Some(*phase) && !self.phase.is_final() {
                    let what = Observation::Agent {
                        which: *which,
                        phase: *phase,
                    };
                    self.record(&mut out, Record::Observed { what, at: now });
                    let gave_up = matches!(phase, PePhase::Aborted | PePhase::Stalled);
                    if gave_up && self.phase.is_forward() {
                        self.fault(
                            &mut out,
                            Fault::Agent {
                                which: *which,
                                phase: *phase,
                            },
                            now,
                        );
                        self.leave_forward_path(&mut out, now);
                    }
                }
            }
            Event::Abort => match self.phase {
                Phase::RollingBack | Phase::RolledBack => {}
                p if p == Phase::Completed || self.past_point_of_no_return() => {
                    return Err(MigrationError::PastPointOfNoReturn {
                        id: self.plan.id.clone(),
                        phase: p,
                    })
                }
                _ => {
                    self.fault(&mut out, Fault::Operator, now);
                    self.enter(&mut out, Phase::RollingBack, now);
                }
            },
            Event::Complete => match self.phase {
                Phase::TearingDown | Phase::Completed => {}
                Phase::Converging | Phase::Stalled
                    if self.past_point_of_no_return() && self.flags.announced[1] =>
                {
                    self.enter(&mut out, Phase::TearingDown, now);
                }
                _ => return Err(refuse(self, &event)),
            },
            Event::Retry => match (self.phase, self.stalled_from) {
                (Phase::Stalled, Some(from)) => self.enter(&mut out, from, now),
                _ => return Err(refuse(self, &event)),
            },
        }
        self.drive(&mut out, now);
        Ok(out)
    }

    /// Fires the current phase's deadline if it has passed. Before the point of no
    /// return that rolls back; after it, it stalls (or, in the pause window, goes on
    /// to announce); during a rollback the step is given up and the next one starts.
    pub fn handle_timeout(&mut self, now: Time) -> Vec<Command> {
        let mut out = Vec::new();
        if self.poll_timeout().is_some_and(|d| now >= d) {
            let phase = self.phase;
            self.fault(&mut out, Fault::Timeout { phase }, now);
            if phase != Phase::RollingBack {
                self.leave_forward_path(&mut out, now);
            }
            self.drive(&mut out, now);
        }
        out
    }

    /// After [`restore`](Self::restore): forget what was outstanding and either go on
    /// (issuing again what the phase still needs: driver actions are idempotent) or roll
    /// back, per the plan's [`OnRestart`]. A hook-style hypervisor that had started is
    /// always rolled back before the point of no return: its quiesce hook lived in the
    /// process that died. A rollback in progress is finished.
    pub fn resume(&mut self, now: Time) -> Vec<Command> {
        let mut out = Vec::new();
        self.record(&mut out, Record::Restarted { at: now });
        let rollback = self.plan.policy.on_restart == OnRestart::Rollback
            || (self.quiesce_style() == QuiesceStyle::Hook && self.touched.migration);
        if self.phase.is_forward() && !self.past_point_of_no_return() && rollback {
            self.fault(&mut out, Fault::Restart, now);
            self.enter(&mut out, Phase::RollingBack, now);
        }
        self.drive(&mut out, now);
        out
    }

    // ---- inputs ----

    fn check_seq(&self, seq: u64) -> Result<(), MigrationError> {
        if seq >= self.log.len() as u64 {
            return Err(MigrationError::UnknownCommand {
                id: self.plan.id.clone(),
                seq,
            });
        }
        Ok(())
    }

    fn hypervisor(&mut self, out: &mut Vec<Command>, e: &HypervisorEvent, now: Time) {
        if self.phase.is_final() {
            return;
        }
        let f = &self.flags;
        let what = match e {
            HypervisorEvent::Progress(p) => {
                self.progress = Some(*p);
                return;
            }
            HypervisorEvent::Suspended if !f.suspended => Observation::Suspended,
            HypervisorEvent::Resumed if !f.resumed => Observation::Resumed,
            HypervisorEvent::Completed if !f.hv_completed => Observation::Completed,
            HypervisorEvent::Failed { .. } if !f.hv_failed && !self.past_point_of_no_return() => {
                Observation::MigrationFailed
            }
            HypervisorEvent::Failed { error } => {
                // Past the point of no return (say, cleaning the source failed): the
                // VM runs at the destination, so it is only worth recording.
                let cause = Fault::Hypervisor {
                    error: error.clone(),
                };
                let text = cause.to_string();
                if self.past_point_of_no_return() && !self.errors.iter().any(|r| r.error == text) {
                    self.fault(out, cause, now);
                }
                return;
            }
            _ => return,
        };
        let was_past = self.past_point_of_no_return();
        self.record(out, Record::Observed { what, at: now });
        if let HypervisorEvent::Failed { error } = e {
            self.fault(
                out,
                Fault::Hypervisor {
                    error: error.clone(),
                },
                now,
            );
            self.leave_forward_path(out, now);
        }
        if !was_past && self.past_point_of_no_return() && self.phase == Phase::RollingBack {
            if self.touched.undo_started {
                self.fault(out, Fault::ResumedDuringRollback, now);
                self.enter(out, Phase::Stalled, now);
                let reason = Fault::ResumedDuringRollback.to_string();
                self.emit(out, Action::Notify(Notice::Stalled { reason }));
            } else {
                // Only the cancel was outstanding and it lost the race: the VM lives
                // at the destination, so finish the switchover and go forward.
                self.enter(out, Phase::SwitchingOver, now);
            }
        }
    }

    fn storage(&mut self, out: &mut Vec<Command>, e: &StorageEvent, now: Time) {
        if !self.phase.is_forward() {
            return;
        }
        let what = match e {
            StorageEvent::Ready if !self.flags.storage_ready => Observation::StorageReady,
            // In sync only counts once synchronous mode was asked for and acknowledged.
            StorageEvent::InSync if !self.flags.in_sync && self.flags.sync_on => {
                Observation::StorageInSync
            }
            StorageEvent::Failed { error } => {
                let cause = Fault::Storage {
                    error: error.clone(),
                };
                if self.errors.last().map(|e| &e.error) == Some(&cause.to_string()) {
                    return; // the same report again
                }
                self.fault(out, cause, now);
                self.leave_forward_path(out, now);
                return;
            }
            _ => return,
        };
        self.record(out, Record::Observed { what, at: now });
    }

    /// A forward step failed or timed out: roll back before the point of no return;
    /// after it, go on to announce from the pause window (announcing is the remedy for
    /// a missing override) or stall elsewhere.
    fn leave_forward_path(&mut self, out: &mut Vec<Command>, now: Time) {
        if !self.phase.is_forward() {
            return;
        }
        if !self.past_point_of_no_return() {
            self.enter(out, Phase::RollingBack, now);
            return;
        }
        match self.phase {
            Phase::SwitchingOver | Phase::Resuming => self.enter(out, Phase::Announcing, now),
            _ => {
                let reason = self.reason();
                self.enter(out, Phase::Stalled, now);
                self.emit(out, Action::Notify(Notice::Stalled { reason }));
            }
        }
    }

    fn reason(&self) -> String {
        self.errors
            .last()
            .map(|e| e.error.clone())
            .unwrap_or_else(|| "unknown".into())
    }

    // ---- the plan of each phase ----

    /// Issues what the current phase still needs and moves on while phases complete.
    fn drive(&mut self, out: &mut Vec<Command>, now: Time) {
        loop {
            let before = self.phase;
            self.drive_phase(out, now);
            if self.phase == before {
                break;
            }
        }
    }

    fn drive_phase(&mut self, out: &mut Vec<Command>, now: Time) {
        let f = self.flags.clone();
        let storage = !self.plan.storage.is_none();
        let after_start = matches!(
            self.phase,
            Phase::SwitchingOver | Phase::Resuming | Phase::Announcing | Phase::Converging
        );
        if after_start && self.touched.migration && !f.hv_completed && !f.hv_failed {
            // Live, the job is still outstanding; after a restart this re-attaches to it
            // (or learns it already finished), since convergence waits for `Completed`.
            self.need(out, Action::StartMigration);
        }
        match self.phase {
            Phase::Planned | Phase::Completed | Phase::RolledBack | Phase::Stalled => {}
            Phase::Preparing => {
                for r in ROLES {
                    if !f.prepared[ix(r)] {
                        self.need(out, Action::PrepareAgent { which: r });
                    }
                }
                if f.prepared == [true, true] {
                    let next = if storage {
                        Phase::StorageAsync
                    } else {
                        Phase::Migrating
                    };
                    self.enter(out, next, now);
                }
            }
            Phase::StorageAsync => {
                if !f.storage_started {
                    self.need(out, Action::StorageStartAsync);
                } else if f.storage_ready {
                    self.enter(out, Phase::Presync, now);
                }
            }
            Phase::Presync => {
                if !f.sync_on {
                    self.need(out, Action::StorageSwitchSync);
                } else if !f.in_sync {
                    self.need(out, Action::StorageWaitInSync);
                } else {
                    self.enter(out, Phase::Migrating, now);
                }
            }
            Phase::Migrating => {
                if !f.dst_switched {
                    self.need(out, Action::SwitchoverDestination);
                } else if !f.hv_completed {
                    self.need(out, Action::StartMigration);
                }
                if f.suspended || self.past_point_of_no_return() {
                    self.enter(out, Phase::SwitchingOver, now);
                }
            }
            Phase::SwitchingOver => {
                if !f.src_switched {
                    self.need(out, Action::SwitchoverSource);
                }
                if storage && !f.cutover {
                    self.need(out, Action::StorageCutover);
                }
                let switched = f.src_switched && (!storage || f.cutover);
                if !switched {
                    return;
                }
                if self.past_point_of_no_return() {
                    self.enter(out, Phase::Announcing, now);
                } else {
                    if self.quiesce_style() == QuiesceStyle::Hook && !f.ack_issued {
                        self.emit(out, Action::AckQuiesce);
                    }
                    self.enter(out, Phase::Resuming, now);
                }
            }
            Phase::Resuming => {
                if self.past_point_of_no_return() {
                    self.enter(out, Phase::Announcing, now);
                }
            }
            Phase::Announcing => {
                if !f.announced[ix(Role::Destination)] {
                    self.need(out, Action::AnnounceDestination);
                } else if !f.announced[ix(Role::Source)] {
                    self.need(out, Action::AnnounceSource);
                } else {
                    self.enter(out, Phase::Converging, now);
                }
            }
            Phase::Converging => {
                let src = self.agents[ix(Role::Source)];
                let dst = self.agents[ix(Role::Destination)];
                let converged = src == Some(PePhase::TornDown)
                    && matches!(dst, Some(PePhase::Converging | PePhase::TornDown))
                    && f.hv_completed;
                if converged {
                    self.enter(out, Phase::TearingDown, now);
                }
            }
            Phase::TearingDown => {
                if !f.agents_completed {
                    self.need(out, Action::CompleteAgents);
                } else {
                    self.enter(out, Phase::Completed, now);
                    self.emit(out, Action::Notify(Notice::Completed));
                }
            }
            Phase::RollingBack => {
                // Step 1: the VM back at (or still at) the source.
                if self.touched.migration && !f.cancel_resolved && !f.hv_failed {
                    self.need(out, Action::CancelMigration);
                    return;
                }
                // Step 2, concurrently: storage and both agents.
                let mut waiting = false;
                if self.touched.storage && !f.storage_abort_resolved {
                    self.need(out, Action::StorageAbort);
                    waiting = true;
                }
                for r in ROLES {
                    if self.touched.agents[ix(r)] && !f.abort_resolved[ix(r)] {
                        self.need(out, Action::AbortAgent { which: r });
                        waiting = true;
                    }
                }
                if !waiting {
                    let reason = self.reason();
                    self.enter(out, Phase::RolledBack, now);
                    self.emit(out, Action::Notify(Notice::RolledBack { reason }));
                }
            }
        }
    }

    /// Issues `action` unless it is already outstanding.
    fn need(&mut self, out: &mut Vec<Command>, action: Action) {
        if !self.pending.values().any(|a| *a == action) {
            self.emit(out, action);
        }
    }

    // ---- the fold ----

    fn enter(&mut self, out: &mut Vec<Command>, phase: Phase, now: Time) {
        if self.phase != phase {
            self.record(out, Record::Phase { phase, at: now });
        }
    }

    fn fault(&mut self, out: &mut Vec<Command>, cause: Fault, now: Time) {
        self.record(out, Record::Fault { cause, at: now });
    }

    fn record(&mut self, out: &mut Vec<Command>, record: Record) {
        self.emit(out, Action::Persist(record));
    }

    /// Issues a command: numbers it, applies it, logs it.
    fn emit(&mut self, out: &mut Vec<Command>, action: Action) {
        let cmd = Command {
            migration: self.plan.id.clone(),
            seq: self.log.len() as u64,
            action,
        };
        self.apply(&cmd);
        self.log.push(cmd.clone());
        out.push(cmd);
    }

    /// The single place where state changes: live emission and replay both go through
    /// it, so a restored machine equals the one that wrote the journal.
    fn apply(&mut self, cmd: &Command) {
        match &cmd.action {
            Action::Persist(r) => self.apply_record(r),
            Action::Notify(_) => {}
            a => {
                self.pending.insert(cmd.seq, a.clone());
                let t = &mut self.touched;
                match a {
                    Action::PrepareAgent { which } => t.agents[ix(*which)] = true,
                    Action::SwitchoverDestination | Action::AnnounceDestination => {
                        t.agents[ix(Role::Destination)] = true
                    }
                    Action::SwitchoverSource | Action::AnnounceSource => {
                        t.agents[ix(Role::Source)] = true
                    }
                    Action::StorageStartAsync
                    | Action::StorageSwitchSync
                    | Action::StorageWaitInSync
                    | Action::StorageCutover => t.storage = true,
                    Action::StartMigration => t.migration = true,
                    Action::AckQuiesce => self.flags.ack_issued = true,
                    Action::StorageAbort | Action::AbortAgent { .. } => t.undo_started = true,
                    _ => {}
                }
            }
        }
    }

    fn apply_record(&mut self, r: &Record) {
        match r {
            Record::Created { plan, at } => {
                self.plan = (**plan).clone();
                self.phase = Phase::Planned;
                self.phase_since = *at;
                self.transitions.push(Transition {
                    phase: Phase::Planned,
                    at: *at,
                });
            }
            Record::Phase { phase, at } => {
                self.stalled_from = (*phase == Phase::Stalled).then_some(self.phase);
                self.phase = *phase;
                self.phase_since = *at;
                self.transitions.push(Transition {
                    phase: *phase,
                    at: *at,
                });
            }
            Record::Done { seq, at } => {
                if let Some(a) = self.pending.remove(seq) {
                    self.done(&a, *at);
                }
            }
            Record::Failed { seq, error, at } => {
                if let Some(a) = self.pending.remove(seq) {
                    self.errors.push(ErrorRecord {
                        seq: Some(*seq),
                        error: error.clone(),
                        at: *at,
                    });
                    self.resolve_undo(&a);
                }
            }
            Record::Observed { what, at } => self.observe(what, *at),
            Record::Fault { cause, at } => {
                self.errors.push(ErrorRecord {
                    seq: None,
                    error: cause.to_string(),
                    at: *at,
                });
                if matches!(
                    cause,
                    Fault::Timeout {
                        phase: Phase::RollingBack
                    }
                ) {
                    // The step is given up: its undos count as answered, the next step
                    // gets a fresh deadline.
                    let given_up: Vec<Action> = std::mem::take(&mut self.pending)
                        .into_iter()
                        .filter_map(|(seq, a)| {
                            if a.is_forward() {
                                self.pending.insert(seq, a);
                                None
                            } else {
                                Some(a)
                            }
                        })
                        .collect();
                    for a in &given_up {
                        self.resolve_undo(a);
                    }
                    self.phase_since = *at;
                }
            }
            Record::Restarted { at } => {
                self.pending.clear();
                self.phase_since = *at;
            }
        }
    }

    fn done(&mut self, a: &Action, at: Time) {
        let f = &mut self.flags;
        match a {
            Action::PrepareAgent { which } => f.prepared[ix(*which)] = true,
            Action::StorageStartAsync => f.storage_started = true,
            Action::StorageSwitchSync => f.sync_on = true,
            Action::StorageWaitInSync => f.in_sync = true,
            Action::SwitchoverDestination => f.dst_switched = true,
            Action::SwitchoverSource => {
                f.src_switched = true;
                self.marks.override_acked_at.get_or_insert(at);
            }
            Action::StorageCutover => f.cutover = true,
            Action::StartMigration => self.observe(&Observation::Completed, at),
            Action::AnnounceDestination => f.announced[ix(Role::Destination)] = true,
            Action::AnnounceSource => f.announced[ix(Role::Source)] = true,
            Action::CompleteAgents => f.agents_completed = true,
            other => self.resolve_undo(other),
        }
    }

    fn resolve_undo(&mut self, a: &Action) {
        let f = &mut self.flags;
        match a {
            Action::CancelMigration => f.cancel_resolved = true,
            Action::StorageAbort => f.storage_abort_resolved = true,
            Action::AbortAgent { which } => f.abort_resolved[ix(*which)] = true,
            _ => {}
        }
    }

    fn observe(&mut self, what: &Observation, at: Time) {
        let f = &mut self.flags;
        match what {
            Observation::Suspended => {
                f.suspended = true;
                self.marks.suspended_at.get_or_insert(at);
            }
            Observation::Resumed => self.resumed(at),
            Observation::Completed => {
                self.flags.hv_completed = true;
                self.marks.completed_at.get_or_insert(at);
                // A finished job means the VM runs at the destination.
                self.resumed(at);
            }
            Observation::MigrationFailed => f.hv_failed = true,
            Observation::StorageReady => f.storage_ready = true,
            Observation::StorageInSync => f.in_sync = true,
            Observation::Agent { which, phase } => self.agents[ix(*which)] = Some(*phase),
        }
    }

    fn resumed(&mut self, at: Time) {
        if !self.flags.resumed {
            self.flags.resumed = true;
            self.marks.resumed_at = Some(at);
            self.marks.override_before_resume = Some(self.flags.src_switched);
        }
    }
}
