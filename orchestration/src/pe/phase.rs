//! Roles and phases of the per-PE machine.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which side of the move this PE is on. It decides which actions a phase needs: the
/// source redirects into the tunnel, the destination delivers from it and announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The PE in front of the data center the VM leaves (PE-A in the paper).
    Source,
    /// The PE in front of the data center the VM goes to (PE-B in the paper).
    Destination,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Destination => "destination",
        })
    }
}

/// Where a migration stands on this PE.
///
/// A phase is entered (and journaled) *before* the actions it needs are carried out, so
/// after a crash the phase says what this PE had decided to do, and
/// [`crate::pe::PeMigration::resume`] finishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The tunnel to the peer PE exists (or is being created); nothing redirected yet.
    Prepared,
    /// Source: the override sends the VM's traffic into the tunnel. Destination:
    /// traffic arriving through the tunnel is delivered locally.
    SwitchedOver,
    /// Destination: the more-preferred routes are announced. Source: its own host
    /// route (if it had one) is withdrawn. Waiting for the route to be held
    /// `min_hold_ms`.
    Announced,
    /// The route has been held long enough; waiting for the tunnel to go quiet for
    /// `quiet_ms`.
    Converging,
    /// Tunnel and override removed. The destination keeps announcing: the VM lives
    /// there now.
    TornDown,
    /// Not converged within `converge_timeout_ms`: nothing was torn down (that is the
    /// safe choice) and an operator must `complete` or `abort`.
    Stalled,
    /// Undoing, in reverse order, whatever had been done.
    Aborting,
    /// Everything undone.
    Aborted,
}

impl Phase {
    /// A live migration still owns its prefixes and its tunnel: another migration may
    /// not take them (the REST layer answers 409).
    pub fn is_live(self) -> bool {
        !matches!(self, Phase::TornDown | Phase::Aborted)
    }

    /// Phases in which the machine waits for convergence and wants tunnel counters.
    pub fn watches_convergence(self) -> bool {
        matches!(self, Phase::Announced | Phase::Converging)
    }

    /// Abortable phases: everything before teardown that has not failed already.
    pub fn can_abort(self) -> bool {
        matches!(
            self,
            Phase::Prepared
                | Phase::SwitchedOver
                | Phase::Announced
                | Phase::Converging
                | Phase::Stalled
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Prepared => "prepared",
            Phase::SwitchedOver => "switched-over",
            Phase::Announced => "announced",
            Phase::Converging => "converging",
            Phase::TornDown => "torn-down",
            Phase::Stalled => "stalled",
            Phase::Aborting => "aborting",
            Phase::Aborted => "aborted",
        })
    }
}
