//! [`PeMigration`]: one migration as seen by one PE.

use super::action::{Action, Command, Notice, Record, Route};
use super::error::{PeError, ReplayError};
use super::event::Event;
use super::phase::{Phase, Role};
use super::spec::{MigrationId, MigrationSpec, SpecError};
use crate::Time;
use ipnetwork::IpNetwork;
use serde::Serialize;
use std::collections::BTreeSet;

/// The per-PE migration state machine.
///
/// Method groups, as in quinn-proto's `Connection`:
/// - constructors: [`prepare`](Self::prepare) for a new request,
///   [`restore`](Self::restore) from journaled commands;
/// - getters: [`id`](Self::id), [`spec`](Self::spec), [`phase`](Self::phase),
///   [`effects`](Self::effects), [`status`](Self::status), …;
/// - `handle_*`: [`handle`](Self::handle) for an [`Event`],
///   [`handle_timeout`](Self::handle_timeout) when the deadline of
///   [`poll_timeout`](Self::poll_timeout) has passed;
/// - [`resume`](Self::resume) after a restart or a failed undo: the commands that finish
///   the current phase.
///
/// Every method that changes state returns the [`Command`]s to carry out, in order. The
/// machine counts them as done as soon as it returns them; the executor journals each
/// before carrying it out, and on a failure stops the batch and reports
/// [`Event::ActionFailed`], which rewinds the machine to exactly the journaled prefix.
/// So the machine is always the fold of its journal, live or restored.
#[derive(Debug, Clone)]
pub struct PeMigration {
    id: MigrationId,
    spec: MigrationSpec,
    phase: Phase,
    transitions: Vec<Transition>,
    effects: Effects,
    errors: Vec<ErrorRecord>,
    /// Every command issued (= journaled), to rewind on a failure.
    log: Vec<Command>,
    /// First seq of the latest batch: only those may be reported failed.
    batch_start: u64,
    watch: Watch,
}

/// When a phase was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// The phase.
    pub phase: Phase,
    /// When it was entered.
    pub at: Time,
}

/// A failed command, kept for the GET and the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorRecord {
    /// The failed command.
    pub seq: u64,
    /// What went wrong.
    pub error: String,
    /// When it was reported.
    pub at: Time,
}

/// What this migration has asked the kernel and BGP to hold, as journaled. An effect
/// counts from the moment its command is journaled: it may be half done, and undo
/// actions are idempotent, so an abort undoes it anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Effects {
    /// The tunnel to the peer.
    pub tunnel: bool,
    /// Source: the override routes into the tunnel.
    pub override_installed: bool,
    /// Destination: local delivery of tunnel traffic.
    pub delivery: bool,
    /// Prefixes announced by this migration.
    pub announced: BTreeSet<IpNetwork>,
}

impl Effects {
    fn is_empty(&self) -> bool {
        !self.tunnel && !self.override_installed && !self.delivery && self.announced.is_empty()
    }
}

/// Observations that are not journaled: after a restart they start afresh, which only
/// delays teardown (the safe direction).
#[derive(Debug, Clone)]
struct Watch {
    /// Latest tunnel packet count, and when it last changed.
    packets: Option<u64>,
    changed_at: Time,
    sampled_at: Time,
    /// Whether the BGP sessions are up (assumed until told otherwise).
    bgp_up: bool,
    /// Since when the announced route has been held; `None` while BGP is down.
    hold_since: Option<Time>,
    /// `min_hold_ms` has passed since `hold_since`.
    held: bool,
}

impl Watch {
    fn new(now: Time) -> Self {
        Watch {
            packets: None,
            changed_at: now,
            sampled_at: now,
            bgp_up: true,
            hold_since: None,
            held: false,
        }
    }
}

/// Snapshot for `GET /v1/migrations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The migration.
    pub id: MigrationId,
    /// The request as normalized.
    pub spec: MigrationSpec,
    /// Current phase.
    pub phase: Phase,
    /// Every phase entered, in order, with its time.
    pub transitions: Vec<Transition>,
    /// What is (asked to be) in place.
    pub effects: Effects,
    /// Latest tunnel packet count, if sampled since start.
    pub tunnel_packets: Option<u64>,
    /// When that count last changed.
    pub tunnel_last_change: Option<Time>,
    /// Failed commands.
    pub errors: Vec<ErrorRecord>,
    /// The machine's next deadline.
    pub next_deadline: Option<Time>,
}

impl PeMigration {
    /// A new migration from a `PUT`: journals its spec and creates the tunnel.
    /// `spec` is normalized (and validated) here.
    pub fn prepare(
        id: MigrationId,
        spec: MigrationSpec,
        now: Time,
    ) -> Result<(Self, Vec<Command>), SpecError> {
        let spec = spec.normalized()?;
        let mut m = PeMigration::empty(id, spec.clone(), now);
        let mut out = Vec::new();
        m.emit(&mut out, Action::Persist(Record::Created { spec, at: now }));
        m.resume_into(&mut out, now);
        Ok((m, out))
    }

    /// Rebuilds a machine from its journaled commands (in seq order). Observations
    /// (counters, hold) restart at `now`; call [`resume`](Self::resume) next.
    pub fn restore(commands: &[Command], now: Time) -> Result<Self, ReplayError> {
        let Some(first) = commands.first() else {
            return Err(ReplayError::Empty);
        };
        let id = first.migration.clone();
        let spec = match &first.action {
            Action::Persist(Record::Created { spec, .. }) if first.seq == 0 => spec.clone(),
            _ => return Err(ReplayError::MissingCreation { id, seq: first.seq }),
        };
        let spec = spec
            .normalized()
            .map_err(|source| ReplayError::InvalidSpec {
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
        let mut m = PeMigration::empty(id, spec, now);
        m.log = commands.to_vec();
        m.refold();
        m.batch_start = m.next_seq();
        m.restart_watch(now);
        Ok(m)
    }

    fn empty(id: MigrationId, spec: MigrationSpec, now: Time) -> Self {
        PeMigration {
            id,
            spec,
            phase: Phase::Prepared,
            transitions: Vec::new(),
            effects: Effects::default(),
            errors: Vec::new(),
            log: Vec::new(),
            batch_start: 0,
            watch: Watch::new(now),
        }
    }

    // ---- getters ----

    /// The migration's id.
    pub fn id(&self) -> &MigrationId {
        &self.id
    }

    /// The normalized request.
    pub fn spec(&self) -> &MigrationSpec {
        &self.spec
    }

    /// This PE's role.
    pub fn role(&self) -> Role {
        self.spec.role
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Phases entered so far, with times.
    pub fn transitions(&self) -> &[Transition] {
        &self.transitions
    }

    /// What is (asked to be) in place.
    pub fn effects(&self) -> &Effects {
        &self.effects
    }

    /// Failed commands.
    pub fn errors(&self) -> &[ErrorRecord] {
        &self.errors
    }

    /// Every command issued so far: what the journal holds for this migration.
    pub fn log(&self) -> &[Command] {
        &self.log
    }

    /// Whether the runtime should sample this migration's tunnel counters.
    pub fn wants_counters(&self) -> bool {
        self.phase.watches_convergence()
    }

    /// Snapshot for the GET.
    pub fn status(&self) -> Status {
        Status {
            id: self.id.clone(),
            spec: self.spec.clone(),
            phase: self.phase,
            transitions: self.transitions.clone(),
            effects: self.effects.clone(),
            tunnel_packets: self.watch.packets,
            tunnel_last_change: self.watch.packets.map(|_| self.watch.changed_at),
            errors: self.errors.clone(),
            next_deadline: self.poll_timeout(),
        }
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) has something to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut next = self.stall_deadline();
        if matches!(self.phase, Phase::Announced | Phase::Converging) && !self.watch.held {
            if let Some(end) = self.hold_end() {
                next = Some(next.map_or(end, |n| n.min(end)));
            }
        }
        next
    }

    // ---- handle_* ----

    /// Feeds an event; returns the commands to carry out, in order. An `Err` changes
    /// nothing.
    pub fn handle(&mut self, event: Event, now: Time) -> Result<Vec<Command>, PeError> {
        if let Event::ActionFailed { seq, error } = event {
            return self.action_failed(seq, error, now);
        }
        let mut out = Vec::new();
        let refuse = |m: &Self| PeError::InvalidEvent {
            id: m.id.clone(),
            phase: m.phase,
            event: event.kind(),
        };
        use Phase::*;
        match (&event, self.phase) {
            (Event::Switchover, Prepared) => self.switch_over(&mut out, now),
            (Event::Switchover, SwitchedOver | Announced | Converging | Stalled | TornDown) => {}
            (Event::Announce, SwitchedOver) => self.announce(&mut out, now),
            (Event::Announce, Announced | Converging | Stalled | TornDown) => {}
            (Event::VmSeen, _) if self.role() != Role::Destination => {
                return Err(PeError::WrongRole {
                    id: self.id.clone(),
                    role: self.role(),
                    event: event.kind(),
                })
            }
            (Event::VmSeen, Prepared) => {
                self.switch_over(&mut out, now);
                self.announce(&mut out, now);
                self.emit(
                    &mut out,
                    Action::Notify(Notice::SwitchOverPeer {
                        api_url: self.spec.peer.api_url.clone(),
                    }),
                );
            }
            // Switched over by a quiesce signal (an orchestrator, or `libvirt-watch`
            // at the source's pause): the source still waits to hear that the VM
            // runs here before it watches its tunnel go quiet. Telling it again is
            // harmless: both calls are idempotent there.
            (Event::VmSeen, SwitchedOver) => {
                self.announce(&mut out, now);
                self.emit(
                    &mut out,
                    Action::Notify(Notice::SwitchOverPeer {
                        api_url: self.spec.peer.api_url.clone(),
                    }),
                );
            }
            (Event::VmSeen, Announced | Converging | Stalled | TornDown) => {}
            (Event::Complete, Announced | Converging | Stalled) => self.tear_down(&mut out, now),
            (Event::Complete, TornDown) => {}
            (Event::Abort, p) if p.can_abort() => self.abort(&mut out, None, now),
            (Event::Abort, Aborting | Aborted | TornDown) => {}
            (Event::TunnelCounters { packets }, _) => {
                self.sample(*packets, now);
                self.check_convergence(&mut out, now);
            }
            (Event::BgpSession { up }, _) => self.bgp_session(*up, now),
            _ => return Err(refuse(self)),
        }
        self.start_batch(&out);
        Ok(out)
    }

    /// Fires whatever deadline has passed: hold reached, convergence, stall.
    pub fn handle_timeout(&mut self, now: Time) -> Vec<Command> {
        let mut out = Vec::new();
        self.check_convergence(&mut out, now);
        if let Some(deadline) = self.stall_deadline() {
            if now >= deadline {
                self.enter(&mut out, Phase::Stalled, now);
                self.emit(&mut out, Action::Notify(Notice::Stalled));
            }
        }
        self.start_batch(&out);
        out
    }

    /// The commands that finish the current phase from the journaled state: after a
    /// restart, or after an undo failed and stopped its batch. Forward phases re-issue
    /// what is missing; torn-down and aborting finish their undo.
    pub fn resume(&mut self, now: Time) -> Vec<Command> {
        let mut out = Vec::new();
        self.resume_into(&mut out, now);
        self.start_batch(&out);
        out
    }

    /// A newer migration on this PE moves (some of) these prefixes away: withdraw what
    /// this torn-down destination migration still announces for them. The journal
    /// records it under this migration, so its desired state drops the routes.
    pub(crate) fn release(&mut self, prefixes: &[IpNetwork]) -> Vec<Command> {
        let mut out = Vec::new();
        if self.phase == Phase::TornDown {
            let gone: Vec<IpNetwork> = prefixes
                .iter()
                .filter(|p| self.effects.announced.contains(p))
                .copied()
                .collect();
            if !gone.is_empty() {
                self.emit(&mut out, Action::Withdraw { prefixes: gone });
            }
        }
        self.start_batch(&out);
        out
    }

    // ---- transitions ----

    fn switch_over(&mut self, out: &mut Vec<Command>, now: Time) {
        self.enter(out, Phase::SwitchedOver, now);
        self.resume_into(out, now);
    }

    fn announce(&mut self, out: &mut Vec<Command>, now: Time) {
        self.enter(out, Phase::Announced, now);
        self.resume_into(out, now);
        self.restart_watch(now);
    }

    fn tear_down(&mut self, out: &mut Vec<Command>, now: Time) {
        self.enter(out, Phase::TornDown, now);
        self.resume_into(out, now);
        self.emit(out, Action::Notify(Notice::TornDown));
    }

    fn abort(&mut self, out: &mut Vec<Command>, reason: Option<String>, now: Time) {
        self.enter(out, Phase::Aborting, now);
        self.undo(out, true);
        self.enter(out, Phase::Aborted, now);
        self.emit(out, Action::Notify(Notice::Aborted { reason }));
    }

    fn resume_into(&mut self, out: &mut Vec<Command>, now: Time) {
        let tunnel = self.spec.tunnel_spec();
        let prefixes = self.spec.prefixes.clone();
        let forward = match self.phase {
            Phase::Prepared => 0,
            Phase::SwitchedOver => 1,
            Phase::Announced | Phase::Converging | Phase::Stalled => 2,
            Phase::TornDown => {
                self.undo(out, false);
                return;
            }
            Phase::Aborting => {
                self.undo(out, true);
                let reason = self.errors.last().map(|e| e.error.clone());
                self.enter(out, Phase::Aborted, now);
                self.emit(out, Action::Notify(Notice::Aborted { reason }));
                return;
            }
            Phase::Aborted => return,
        };
        if !self.effects.tunnel {
            self.emit(out, Action::CreateTunnel { tunnel });
        }
        if forward >= 1 {
            match self.role() {
                Role::Source if !self.effects.override_installed => self.emit(
                    out,
                    Action::InstallOverride {
                        prefixes: prefixes.clone(),
                        tunnel,
                    },
                ),
                Role::Destination if !self.effects.delivery => self.emit(
                    out,
                    Action::EnsureDelivery {
                        prefixes: prefixes.clone(),
                        tunnel,
                    },
                ),
                _ => {}
            }
        }
        if forward >= 2 && self.role() == Role::Destination {
            let attrs = self.spec.policy.attributes();
            let routes: Vec<Route> = prefixes
                .iter()
                .filter(|p| !self.effects.announced.contains(p))
                .map(|&prefix| Route {
                    prefix,
                    attrs: attrs.clone(),
                })
                .collect();
            if !routes.is_empty() {
                self.emit(out, Action::Announce { routes });
            }
        }
    }

    /// Undo in reverse order of doing: routes, override, delivery, tunnel. Teardown keeps
    /// the announcement (the VM lives at the destination now); abort withdraws it.
    fn undo(&mut self, out: &mut Vec<Command>, withdraw: bool) {
        let prefixes = self.spec.prefixes.clone();
        if withdraw && !self.effects.announced.is_empty() {
            let announced: Vec<IpNetwork> = self.effects.announced.iter().copied().collect();
            self.emit(
                out,
                Action::Withdraw {
                    prefixes: announced,
                },
            );
        }
        if self.effects.override_installed {
            self.emit(
                out,
                Action::RemoveOverride {
                    prefixes: prefixes.clone(),
                },
            );
        }
        if self.effects.delivery {
            self.emit(out, Action::DisableDelivery { prefixes });
        }
        if self.effects.tunnel {
            let tunnel = self.spec.tunnel_spec();
            self.emit(out, Action::DeleteTunnel { tunnel });
        }
    }

    fn action_failed(
        &mut self,
        seq: u64,
        error: String,
        now: Time,
    ) -> Result<Vec<Command>, PeError> {
        if seq < self.batch_start || seq >= self.next_seq() {
            return Err(PeError::UnknownCommand {
                id: self.id.clone(),
                seq,
            });
        }
        // The executor stopped at `seq`: what follows was neither journaled nor done.
        self.log.truncate(seq as usize + 1);
        self.refold();
        let failed = self.log[seq as usize].action.clone();
        let mut out = Vec::new();
        self.emit(
            &mut out,
            Action::Persist(Record::Error {
                seq,
                error: error.clone(),
                at: now,
            }),
        );
        if failed.is_forward() && self.phase.can_abort() {
            self.abort(&mut out, Some(error), now);
        } else {
            self.resume_into(&mut out, now);
        }
        self.start_batch(&out);
        Ok(out)
    }

    // ---- observations ----

    fn sample(&mut self, packets: u64, now: Time) {
        if self.watch.packets != Some(packets) {
            if self.watch.packets.is_some() {
                self.watch.changed_at = now;
            } else {
                // First sample: we cannot know when traffic last flowed, so assume now.
                self.watch.changed_at = self.watch.changed_at.max(now);
            }
            self.watch.packets = Some(packets);
        }
        self.watch.sampled_at = now;
    }

    fn bgp_session(&mut self, up: bool, now: Time) {
        if up == self.watch.bgp_up {
            return;
        }
        self.watch.bgp_up = up;
        // Only the destination's own sessions carry the new route.
        if self.role() == Role::Destination && self.phase.watches_convergence() {
            self.watch.held = false;
            self.watch.hold_since = up.then_some(now);
        }
    }

    /// Observations restart: quiet and hold are measured from `now`.
    fn restart_watch(&mut self, now: Time) {
        self.watch.changed_at = now;
        self.watch.sampled_at = now;
        self.watch.held = false;
        self.watch.hold_since = match self.role() {
            Role::Destination if !self.watch.bgp_up => None,
            _ => Some(now),
        };
    }

    fn hold_end(&self) -> Option<Time> {
        self.watch
            .hold_since
            .map(|t| t.plus_millis(self.spec.timers.min_hold_ms))
    }

    /// Quiet means: a counter sample taken after the hold was reached shows no change
    /// for `quiet_ms`. A stale sample, or none at all, never counts.
    fn quiet(&self) -> bool {
        self.watch.packets.is_some()
            && self
                .hold_end()
                .is_some_and(|end| self.watch.sampled_at >= end)
            && self.watch.sampled_at.millis_since(self.watch.changed_at)
                >= self.spec.timers.quiet_ms
    }

    fn check_convergence(&mut self, out: &mut Vec<Command>, now: Time) {
        if !self.phase.watches_convergence() {
            return;
        }
        if !self.watch.held && self.hold_end().is_some_and(|end| now >= end) {
            self.watch.held = true;
        }
        if !self.watch.held {
            return;
        }
        if self.phase == Phase::Announced {
            self.enter(out, Phase::Converging, now);
        }
        if self.quiet() {
            self.tear_down(out, now);
        }
    }

    fn stall_deadline(&self) -> Option<Time> {
        let from = match self.phase {
            Phase::SwitchedOver => Phase::SwitchedOver,
            Phase::Announced | Phase::Converging => Phase::Announced,
            _ => return None,
        };
        let entered = self.entered(from)?;
        Some(entered.plus_millis(self.spec.timers.converge_timeout_ms))
    }

    fn entered(&self, phase: Phase) -> Option<Time> {
        self.transitions
            .iter()
            .rev()
            .find(|t| t.phase == phase)
            .map(|t| t.at)
    }

    // ---- the fold ----

    fn next_seq(&self) -> u64 {
        self.log.len() as u64
    }

    fn start_batch(&mut self, out: &[Command]) {
        if let Some(first) = out.first() {
            self.batch_start = first.seq;
        }
    }

    fn enter(&mut self, out: &mut Vec<Command>, phase: Phase, now: Time) {
        if self.phase != phase {
            self.emit(out, Action::Persist(Record::Phase { phase, at: now }));
        }
    }

    /// Issues a command: numbers it, applies it, logs it.
    fn emit(&mut self, out: &mut Vec<Command>, action: Action) {
        let cmd = Command {
            migration: self.id.clone(),
            seq: self.next_seq(),
            action,
        };
        self.apply(&cmd.action);
        self.log.push(cmd.clone());
        out.push(cmd);
    }

    fn refold(&mut self) {
        self.phase = Phase::Prepared;
        self.transitions.clear();
        self.effects = Effects::default();
        self.errors.clear();
        let log = std::mem::take(&mut self.log);
        for c in &log {
            self.apply(&c.action);
        }
        self.log = log;
    }

    /// The single place where state changes: live emission and replay both go through
    /// it, so a restored machine equals the one that wrote the journal.
    fn apply(&mut self, action: &Action) {
        let e = &mut self.effects;
        match action {
            Action::Persist(Record::Created { spec, at }) => {
                self.spec = spec.clone();
                self.phase = Phase::Prepared;
                self.transitions.push(Transition {
                    phase: Phase::Prepared,
                    at: *at,
                });
            }
            Action::Persist(Record::Phase { phase, at }) => {
                self.phase = *phase;
                self.transitions.push(Transition {
                    phase: *phase,
                    at: *at,
                });
            }
            Action::Persist(Record::Error { seq, error, at }) => self.errors.push(ErrorRecord {
                seq: *seq,
                error: error.clone(),
                at: *at,
            }),
            Action::CreateTunnel { .. } => e.tunnel = true,
            Action::DeleteTunnel { .. } => e.tunnel = false,
            Action::InstallOverride { .. } => e.override_installed = true,
            Action::RemoveOverride { .. } => e.override_installed = false,
            Action::EnsureDelivery { .. } => e.delivery = true,
            Action::DisableDelivery { .. } => e.delivery = false,
            Action::Announce { routes } => e.announced.extend(routes.iter().map(|r| r.prefix)),
            Action::Withdraw { prefixes } => {
                for p in prefixes {
                    e.announced.remove(p);
                }
            }
            Action::Notify(_) => {}
        }
    }

    /// Nothing of this migration remains outside the journal.
    pub fn is_clean(&self) -> bool {
        self.effects.is_empty()
    }
}
