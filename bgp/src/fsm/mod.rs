//! The BGP session as a pure state machine (RFC 4271 section 8).
//!
//! Methods, in the order a driver uses them (the quinn-proto contract):
//! - getters: [`Fsm::state`], [`Fsm::negotiated`], [`Fsm::established_conn`];
//! - [`Fsm::handle`] takes one [`Event`] and the current time, returns the
//!   [`Action`]s to perform, in order;
//! - [`Fsm::poll_timeout`] gives the next deadline; when it passes, feed
//!   [`Event::Timeout`].
//!
//! The machine never reads the clock, never sleeps and owns no socket, so its tests are
//! scripts of (time, event) → actions. Connection collisions (section 6.8) are resolved
//! here: the driver may report a second connection while the first is opening, and the
//! machine says which to close.

mod action;
mod event;
mod state;
mod timers;

use std::time::{Duration, Instant};

pub use action::{Action, DownReason};
pub use event::{ConnId, Direction, Event};
pub use state::State;
pub use timers::{Timer, Timers};

use crate::codec::iana::notif;
use crate::codec::{Message, Notification, Open, RouteRefreshSubtype};
use crate::negotiate::{negotiate, Negotiated};

/// Hold time while waiting for the peer's OPEN (RFC 4271 section 8.2.2 suggests 4
/// minutes).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// Hold Timer Expired (RFC 4271 section 6.5).
const HOLD_TIMER_EXPIRED: u8 = 4;
/// Finite State Machine Error (RFC 4271 section 6.6) and its subcodes (RFC 6608).
const FSM_ERROR: u8 = 5;
/// Cease subcode 7: Connection Collision Resolution (RFC 4486).
pub const CEASE_COLLISION: u8 = 7;

/// Session parameters the machine needs; the rest of the peer configuration is the
/// driver's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    /// The OPEN we send (see [`crate::negotiate::LocalCapabilities::open`]).
    pub local_open: Open,
    /// The peer's ASN; an OPEN with another is refused with Bad Peer AS.
    pub peer_as: u32,
    /// Never connect, only accept (RFC 4271 PassiveTcpEstablishment).
    pub passive: bool,
    pub connect_retry: Duration,
    /// First IdleHold after a failure; it doubles with each consecutive failure.
    pub idle_hold: Duration,
    pub idle_hold_max: Duration,
    /// RFC 4271 section 8.1.1 DelayOpen: on a new connection, wait this long for the
    /// peer's OPEN before sending ours (some peers, and RFC 4271's collision handling,
    /// prefer the passive side to speak second). `None` sends OPEN at once.
    pub delay_open: Option<Duration>,
}

impl FsmConfig {
    /// Defaults suited to a PE agent: retry connecting every 5 s (RFC 4271's 120 s
    /// would leave a migrated VM unreachable for minutes after a peer reboot), back off
    /// from 1 s to 60 s after errors.
    pub fn new(local_open: Open, peer_as: u32) -> FsmConfig {
        FsmConfig {
            local_open,
            peer_as,
            passive: false,
            connect_retry: Duration::from_secs(5),
            idle_hold: Duration::from_secs(1),
            idle_hold_max: Duration::from_secs(60),
            delay_open: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Conn {
    id: ConnId,
    dir: Direction,
    /// Set once this connection's OPEN has been received and accepted.
    neg: Option<Negotiated>,
}

/// One peer's session machine.
#[derive(Debug, Clone)]
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    started: bool,
    primary: Option<Conn>,
    /// A second connection during collision detection, or a restarted peer's new
    /// connection while the old session still looks Established.
    candidate: Option<Conn>,
    negotiated: Option<Negotiated>,
    timers: Timers,
    failures: u32,
}

impl Fsm {
    pub fn new(cfg: FsmConfig) -> Fsm {
        Fsm {
            cfg,
            state: State::Idle,
            started: false,
            primary: None,
            candidate: None,
            negotiated: None,
            timers: Timers::default(),
            failures: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The agreement of the Established session.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The connection carrying the Established session.
    pub fn established_conn(&self) -> Option<ConnId> {
        match self.state {
            State::Established => self.primary.as_ref().map(|c| c.id),
            _ => None,
        }
    }

    /// When a timer is armed, its deadline (for tests and status output).
    pub fn timer(&self, t: Timer) -> Option<Instant> {
        self.timers.get(t)
    }

    /// Replaces the OPEN sent on future connections (e.g. to clear the graceful
    /// restart R bit once the restart is over).
    pub fn set_local_open(&mut self, open: Open) {
        self.cfg.local_open = open;
    }

    /// The earliest deadline; feed [`Event::Timeout`] once it has passed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Processes one event at time `now`.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => {
                if !self.started || self.state == State::Idle {
                    self.started = true;
                    if self.timers.get(Timer::IdleHold).is_none() {
                        self.leave_idle(now, &mut out);
                    }
                }
            }
            Event::Stop(n) => {
                self.started = false;
                let reason = n
                    .as_ref()
                    .map_or(DownReason::ConnectionClosed, DownReason::sent);
                self.fail(now, &mut out, n, reason);
            }
            Event::Reset {
                notification,
                idle_for,
            } => {
                self.started = false;
                let reason = DownReason::sent(&notification);
                self.fail(now, &mut out, Some(notification), reason);
                if let Some(d) = idle_for {
                    self.started = true;
                    self.timers.arm(Timer::IdleHold, now + d);
                }
            }
            Event::TcpConnected { conn, direction } => {
                self.connected(conn, direction, now, &mut out)
            }
            Event::TcpConnectFailed => {
                if self.state == State::Connect {
                    self.state = State::Active;
                    self.timers
                        .arm(Timer::ConnectRetry, now + self.cfg.connect_retry);
                }
            }
            Event::TcpClosed { conn } => self.closed(conn, now, &mut out),
            Event::Message { conn, message } => {
                if self.candidate.as_ref().is_some_and(|c| c.id == conn) {
                    self.candidate_message(conn, message.message, now, &mut out);
                } else if self.primary.as_ref().is_some_and(|c| c.id == conn) {
                    self.primary_message(conn, message, now, &mut out);
                }
            }
            Event::MessageError { conn, notification } => {
                if self.candidate.as_ref().is_some_and(|c| c.id == conn) {
                    self.candidate = None;
                    out.push(send(conn, Message::Notification(notification)));
                    out.push(Action::Close { conn });
                } else if self.primary.as_ref().is_some_and(|c| c.id == conn) {
                    let reason = DownReason::sent(&notification);
                    self.fail(now, &mut out, Some(notification), reason);
                }
            }
            Event::Timeout => {
                for t in self.timers.take_expired(now) {
                    self.timer_fired(t, now, &mut out);
                }
            }
        }
        out
    }

    /// Idle → Connect (active) or Active (passive).
    fn leave_idle(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.cfg.passive {
            self.state = State::Active;
        } else {
            self.state = State::Connect;
            out.push(Action::Connect);
            self.timers
                .arm(Timer::ConnectRetry, now + self.cfg.connect_retry);
        }
    }

    fn send_open(&self, conn: ConnId, out: &mut Vec<Action>) {
        out.push(send(conn, Message::Open(self.cfg.local_open.clone())));
    }

    fn connected(&mut self, conn: ConnId, dir: Direction, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Idle => out.push(Action::Close { conn }),
            // A connection is already waiting out DelayOpen: one is enough.
            State::Connect | State::Active if self.primary.is_some() => {
                out.push(Action::Close { conn });
            }
            State::Connect | State::Active => {
                self.primary = Some(Conn {
                    id: conn,
                    dir,
                    neg: None,
                });
                self.timers.cancel(Timer::ConnectRetry);
                match self.cfg.delay_open {
                    // Section 8.2.2, Event 17 with DelayOpen set: stay in this state
                    // and wait for the peer's OPEN or the timer.
                    Some(d) => self.timers.arm(Timer::DelayOpen, now + d),
                    None => self.open_sent(conn, now, out),
                }
            }
            State::OpenSent | State::OpenConfirm if self.candidate.is_none() => {
                self.candidate = Some(Conn {
                    id: conn,
                    dir,
                    neg: None,
                });
                self.send_open(conn, out);
            }
            State::Established
                if self.candidate.is_none()
                    && dir == Direction::Inbound
                    && self
                        .negotiated
                        .as_ref()
                        .is_some_and(|n| n.peer_graceful_restart.is_some()) =>
            {
                // RFC 4724 section 4.2: a restarting peer reconnects before we noticed
                // the old transport die. Its OPEN will replace the old session.
                self.candidate = Some(Conn {
                    id: conn,
                    dir,
                    neg: None,
                });
                self.send_open(conn, out);
            }
            _ => {
                out.push(send(conn, Message::Notification(collision())));
                out.push(Action::Close { conn });
            }
        }
    }

    /// Sends our OPEN on the primary connection and waits for the peer's.
    fn open_sent(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        self.send_open(conn, out);
        self.timers.arm(Timer::Hold, now + OPEN_HOLD_TIME);
        self.state = State::OpenSent;
    }

    fn closed(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        if self.candidate.as_ref().is_some_and(|c| c.id == conn) {
            self.candidate = None;
            out.push(Action::Close { conn });
            return;
        }
        if self.primary.as_ref().is_none_or(|c| c.id != conn) {
            return;
        }
        if let Some(c) = self.candidate.take() {
            if self.state != State::Established {
                self.primary = None;
                out.push(Action::Close { conn });
                self.promote(c, now);
                return;
            }
            self.candidate = Some(c);
        }
        match self.state {
            // OpenSent, or a connection still in DelayOpen: back to Active.
            State::OpenSent | State::Connect | State::Active => {
                self.primary = None;
                out.push(Action::Close { conn });
                self.timers.cancel_all();
                self.state = State::Active;
                self.timers
                    .arm(Timer::ConnectRetry, now + self.cfg.connect_retry);
            }
            _ => self.fail(now, out, None, DownReason::ConnectionClosed),
        }
    }

    /// Makes a surviving collision candidate the session's connection.
    fn promote(&mut self, c: Conn, now: Instant) {
        self.timers.cancel_all();
        if let Some(neg) = &c.neg {
            self.arm_session_timers(neg.hold(), neg.keepalive(), now);
            self.state = State::OpenConfirm;
        } else {
            self.timers.arm(Timer::Hold, now + OPEN_HOLD_TIME);
            self.state = State::OpenSent;
        }
        self.primary = Some(c);
    }

    fn arm_session_timers(
        &mut self,
        hold: Option<Duration>,
        keepalive: Option<Duration>,
        now: Instant,
    ) {
        match hold {
            Some(h) => self.timers.arm(Timer::Hold, now + h),
            None => self.timers.cancel(Timer::Hold),
        }
        match keepalive {
            Some(k) => self.timers.arm(Timer::Keepalive, now + k),
            None => self.timers.cancel(Timer::Keepalive),
        }
    }

    fn restart_hold(&mut self, now: Instant) {
        let hold = self
            .negotiated
            .as_ref()
            .or(self.primary.as_ref().and_then(|c| c.neg.as_ref()))
            .and_then(Negotiated::hold);
        if let Some(h) = hold {
            self.timers.arm(Timer::Hold, now + h);
        }
    }

    /// Which direction survives a collision (RFC 4271 section 6.8): the connection
    /// opened by the speaker with the higher BGP Identifier.
    fn collision_keeps(&self, remote_id: std::net::Ipv4Addr) -> Direction {
        if u32::from(self.cfg.local_open.bgp_id) < u32::from(remote_id) {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }

    fn primary_message(
        &mut self,
        conn: ConnId,
        decoded: crate::codec::Decoded,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let state = self.state;
        match (state, decoded.message) {
            (_, Message::Notification(n)) => {
                let reason = DownReason::received(&n);
                self.fail(now, out, None, reason);
            }
            // Section 8.2.2, Event 20 with the DelayOpenTimer running: the peer spoke
            // first; answer with OPEN and KEEPALIVE, straight to OpenConfirm.
            (State::Connect | State::Active, Message::Open(open))
                if self.timers.get(Timer::DelayOpen).is_some() =>
            {
                self.timers.cancel(Timer::DelayOpen);
                let neg = match negotiate(&self.cfg.local_open, &open, self.cfg.peer_as) {
                    Ok(n) => n,
                    Err(n) => {
                        let reason = DownReason::sent(&n);
                        return self.fail(now, out, Some(n), reason);
                    }
                };
                self.send_open(conn, out);
                out.push(send(conn, Message::Keepalive));
                self.arm_session_timers(neg.hold(), neg.keepalive(), now);
                if let Some(p) = self.primary.as_mut() {
                    p.neg = Some(neg);
                }
                self.state = State::OpenConfirm;
            }
            (State::OpenSent, Message::Open(open)) => {
                let neg = match negotiate(&self.cfg.local_open, &open, self.cfg.peer_as) {
                    Ok(n) => n,
                    Err(n) => {
                        let reason = DownReason::sent(&n);
                        return self.fail(now, out, Some(n), reason);
                    }
                };
                let keep = self.collision_keeps(neg.remote_id);
                if let Some(c) = self.candidate.take() {
                    let pdir = self.primary.as_ref().map(|p| p.dir);
                    if pdir != Some(keep) && c.dir == keep {
                        out.push(send(conn, Message::Notification(collision())));
                        out.push(Action::Close { conn });
                        self.primary = None;
                        self.promote(c, now);
                        return;
                    }
                    out.push(send(c.id, Message::Notification(collision())));
                    out.push(Action::Close { conn: c.id });
                }
                out.push(send(conn, Message::Keepalive));
                self.arm_session_timers(neg.hold(), neg.keepalive(), now);
                if let Some(p) = self.primary.as_mut() {
                    p.neg = Some(neg);
                }
                self.state = State::OpenConfirm;
            }
            (State::OpenConfirm, Message::Keepalive) => {
                if let Some(c) = self.candidate.take() {
                    out.push(send(c.id, Message::Notification(collision())));
                    out.push(Action::Close { conn: c.id });
                }
                let neg = self.primary.as_mut().and_then(|p| p.neg.take());
                let Some(neg) = neg else {
                    return self.fsm_error(now, out);
                };
                self.state = State::Established;
                self.failures = 0;
                self.arm_session_timers(neg.hold(), neg.keepalive(), now);
                self.negotiated = Some(neg.clone());
                out.push(Action::SessionUp {
                    conn,
                    negotiated: Box::new(neg),
                });
            }
            (State::Established, Message::Keepalive) => self.restart_hold(now),
            (State::Established, Message::Update(u)) => {
                self.restart_hold(now);
                out.push(Action::Deliver(Box::new(crate::codec::Decoded {
                    message: Message::Update(u),
                    treatment: decoded.treatment,
                    errors: decoded.errors,
                })));
            }
            (State::Established, Message::RouteRefresh(r)) => {
                self.restart_hold(now);
                let rr = self.negotiated.as_ref().is_some_and(|n| n.route_refresh);
                if rr && !matches!(r.subtype, RouteRefreshSubtype::Reserved(_)) {
                    out.push(Action::RouteRefresh(r));
                }
            }
            _ => self.fsm_error(now, out),
        }
    }

    fn fsm_error(&mut self, now: Instant, out: &mut Vec<Action>) {
        let subcode = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            State::Established => 3,
            _ => 0,
        };
        let n = Notification::new(FSM_ERROR, subcode, vec![]);
        let reason = DownReason::sent(&n);
        self.fail(now, out, Some(n), reason);
    }

    fn candidate_message(
        &mut self,
        conn: ConnId,
        message: Message,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Message::Open(open) = message else {
            // Only the OPEN matters on a candidate; a NOTIFICATION or anything else
            // ends it without touching the session.
            if let Some(c) = self.candidate.take() {
                out.push(Action::Close { conn: c.id });
            }
            return;
        };
        let neg = match negotiate(&self.cfg.local_open, &open, self.cfg.peer_as) {
            Ok(n) => n,
            Err(n) => {
                self.candidate = None;
                out.push(send(conn, Message::Notification(n)));
                out.push(Action::Close { conn });
                return;
            }
        };
        let Some(mut c) = self.candidate.take() else {
            return;
        };
        let keep = self.collision_keeps(neg.remote_id);
        out.push(send(conn, Message::Keepalive));
        c.neg = Some(neg);
        let old = self.primary.as_ref().map(|p| (p.id, p.dir));
        match (self.state, old) {
            (State::Established, Some((old_id, _))) => {
                // The peer restarted: treat the old session as a transport failure
                // (its routes go stale, not away) and carry on with the new one.
                out.push(Action::Close { conn: old_id });
                out.push(Action::SessionDown {
                    reason: DownReason::PeerRestarted,
                });
                self.negotiated = None;
                self.primary = None;
                self.promote(c, now);
            }
            (_, Some((old_id, old_dir))) if old_dir != keep && c.dir == keep => {
                out.push(send(old_id, Message::Notification(collision())));
                out.push(Action::Close { conn: old_id });
                self.primary = None;
                self.promote(c, now);
            }
            _ => {
                out.push(send(conn, Message::Notification(collision())));
                out.push(Action::Close { conn });
            }
        }
    }

    fn timer_fired(&mut self, t: Timer, now: Instant, out: &mut Vec<Action>) {
        match (t, self.state) {
            (Timer::ConnectRetry, State::Connect | State::Active) if !self.cfg.passive => {
                self.state = State::Connect;
                out.push(Action::Connect);
                self.timers
                    .arm(Timer::ConnectRetry, now + self.cfg.connect_retry);
            }
            (Timer::Hold, State::OpenSent | State::OpenConfirm | State::Established) => {
                let n = Notification::new(HOLD_TIMER_EXPIRED, 0, vec![]);
                self.fail(now, out, Some(n), DownReason::HoldTimerExpired);
            }
            (Timer::Keepalive, State::OpenConfirm | State::Established) => {
                if let Some(p) = &self.primary {
                    out.push(send(p.id, Message::Keepalive));
                }
                let ka = self
                    .negotiated
                    .as_ref()
                    .or(self.primary.as_ref().and_then(|c| c.neg.as_ref()))
                    .and_then(Negotiated::keepalive);
                if let Some(k) = ka {
                    self.timers.arm(Timer::Keepalive, now + k);
                }
            }
            (Timer::IdleHold, State::Idle) if self.started => self.leave_idle(now, out),
            (Timer::DelayOpen, State::Connect | State::Active) => {
                if let Some(conn) = self.primary.as_ref().map(|c| c.id) {
                    self.open_sent(conn, now, out);
                }
            }
            _ => {}
        }
    }

    /// Ends everything: NOTIFICATION (if any) and close on each connection, SessionDown
    /// if Established, Idle, and IdleHold with exponential backoff when the session is
    /// still meant to run.
    fn fail(
        &mut self,
        now: Instant,
        out: &mut Vec<Action>,
        notification: Option<Notification>,
        reason: DownReason,
    ) {
        let was_established = self.state == State::Established;
        for c in [self.primary.take(), self.candidate.take()]
            .into_iter()
            .flatten()
        {
            if let Some(n) = &notification {
                out.push(send(c.id, Message::Notification(n.clone())));
            }
            out.push(Action::Close { conn: c.id });
        }
        if was_established {
            out.push(Action::SessionDown { reason });
        }
        self.negotiated = None;
        self.timers.cancel_all();
        self.state = State::Idle;
        if self.started {
            self.failures = self.failures.saturating_add(1);
            let factor = 1u32 << (self.failures - 1).min(16);
            let idle = (self.cfg.idle_hold * factor).min(self.cfg.idle_hold_max);
            self.timers.arm(Timer::IdleHold, now + idle);
        }
    }
}

fn send(conn: ConnId, message: Message) -> Action {
    Action::Send { conn, message }
}

fn collision() -> Notification {
    Notification::new(notif::CEASE, CEASE_COLLISION, vec![])
}

#[cfg(test)]
mod tests;
