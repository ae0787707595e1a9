//! The session timers, kept as deadlines rather than running clocks: the machine never
//! sleeps, it only reports the earliest deadline through `poll_timeout`, and the driver
//! calls back when that instant has passed (the quinn-proto contract).

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One of the RFC 4271 section 8 timers, plus IdleHold (section 8.1.1,
/// DampPeerOscillations) which keeps a flapping peer in Idle for a growing while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    IdleHold,
    /// RFC 4271 section 8.1.1 DelayOpenTimer: how long a new connection waits for the
    /// peer's OPEN before sending ours.
    DelayOpen,
}

const ALL: [Timer; 5] = [
    Timer::ConnectRetry,
    Timer::Hold,
    Timer::Keepalive,
    Timer::IdleHold,
    Timer::DelayOpen,
];

fn slot(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
        Timer::IdleHold => 3,
        Timer::DelayOpen => 4,
    }
}

/// The armed deadlines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timers {
    deadlines: [Option<Instant>; 5],
}

impl Timers {
    pub fn arm(&mut self, t: Timer, at: Instant) {
        self.deadlines[slot(t)] = Some(at);
    }

    pub fn cancel(&mut self, t: Timer) {
        self.deadlines[slot(t)] = None;
    }

    pub fn cancel_all(&mut self) {
        self.deadlines = [None; 5];
    }

    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.deadlines[slot(t)]
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns every timer whose deadline is at or before `now`, earliest
    /// first.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Timer> {
        let mut v: Vec<(Instant, Timer)> = ALL
            .iter()
            .filter_map(|&t| self.get(t).filter(|d| *d <= now).map(|d| (d, t)))
            .collect();
        v.sort_by_key(|(d, _)| *d);
        for (_, t) in &v {
            self.cancel(*t);
        }
        v.into_iter().map(|(_, t)| t).collect()
    }
}
