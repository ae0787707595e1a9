//! Per-phase timing and the migration report: what the lab scenario prints next to the
//! probe's loss figures, and what an operator reads after a migration.

use super::phase::Phase;
use crate::Time;
use serde::Serialize;

/// When a phase was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// The phase.
    pub phase: Phase,
    /// When it was entered.
    pub at: Time,
}

/// One stretch of a phase: from entering it to entering the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PhaseTiming {
    /// The phase.
    pub phase: Phase,
    /// When it was entered.
    pub start: Time,
    /// When the next phase was entered; `None` while it lasts (or for a final phase).
    pub end: Option<Time>,
}

impl PhaseTiming {
    /// How long it lasted, if it ended.
    pub fn duration_ms(&self) -> Option<u64> {
        self.end.map(|e| e.millis_since(self.start))
    }
}

/// The phases in order, each ending where the next begins. A phase entered twice (a
/// retry after a stall) appears twice.
pub fn phase_timings(transitions: &[Transition]) -> Vec<PhaseTiming> {
    transitions
        .iter()
        .enumerate()
        .map(|(i, t)| PhaseTiming {
            phase: t.phase,
            start: t.at,
            end: transitions.get(i + 1).map(|n| n.at),
        })
        .collect()
}

/// The instants that decide whether clients lost traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Marks {
    /// The VM was suspended (pause window opens).
    pub suspended_at: Option<Time>,
    /// The source acknowledged its override.
    pub override_acked_at: Option<Time>,
    /// The VM resumed at the destination (pause window closes; point of no return).
    pub resumed_at: Option<Time>,
    /// The hypervisor's job finished.
    pub completed_at: Option<Time>,
    /// Whether the override was acknowledged before the VM resumed: always `true` with
    /// a hook-style hypervisor that behaves; with libvirt, whether we won the race.
    /// `None` until the VM resumed.
    pub override_before_resume: Option<bool>,
}

impl Marks {
    /// The pause window as we saw it: suspend to resume.
    pub fn pause_ms(&self) -> Option<u64> {
        Some(self.resumed_at?.millis_since(self.suspended_at?))
    }

    /// How long the override took after the suspend: the part of the pause budget the
    /// network used.
    pub fn switchover_ms(&self) -> Option<u64> {
        Some(self.override_acked_at?.millis_since(self.suspended_at?))
    }
}
