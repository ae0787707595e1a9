//! Inputs of the per-PE machine.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Something that happened to a migration. Requests (`PUT`) are not events: a repeated
/// prepare is answered by [`crate::pe::Registry::prepare`] without touching the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// `POST …/switchover`: the quiesce signal.
    Switchover,
    /// `POST …/announce`: the VM runs at the destination.
    Announce,
    /// `POST …/complete`: tear down now, converged or not.
    Complete,
    /// `POST …/abort`: undo in reverse order from wherever it is.
    Abort,
    /// RARP/GARP from the VM heard at this PE: it runs here now. Destination only.
    VmSeen,
    /// A sample of the packets counted on this migration's tunnel (cumulative; a
    /// decrease means the counter was reset and counts as traffic).
    TunnelCounters {
        /// Packets through the tunnel so far.
        packets: u64,
    },
    /// This PE's BGP sessions came up or went down. While down, the announced route is
    /// not being held.
    BgpSession {
        /// `true` once at least one session to the route reflectors is established.
        up: bool,
    },
    /// The executor could not carry out the command with this sequence number. The rest
    /// of that batch was not carried out (and not journaled).
    ActionFailed {
        /// `Command::seq` of the failed command.
        seq: u64,
        /// What went wrong, for the record and the GET.
        error: String,
    },
}

impl Event {
    /// The event's name without its data, for errors and logs.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Switchover => EventKind::Switchover,
            Event::Announce => EventKind::Announce,
            Event::Complete => EventKind::Complete,
            Event::Abort => EventKind::Abort,
            Event::VmSeen => EventKind::VmSeen,
            Event::TunnelCounters { .. } => EventKind::TunnelCounters,
            Event::BgpSession { .. } => EventKind::BgpSession,
            Event::ActionFailed { .. } => EventKind::ActionFailed,
        }
    }
}

/// [`Event`] without data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// See [`Event::Switchover`].
    Switchover,
    /// See [`Event::Announce`].
    Announce,
    /// See [`Event::Complete`].
    Complete,
    /// See [`Event::Abort`].
    Abort,
    /// See [`Event::VmSeen`].
    VmSeen,
    /// See [`Event::TunnelCounters`].
    TunnelCounters,
    /// See [`Event::BgpSession`].
    BgpSession,
    /// See [`Event::ActionFailed`].
    ActionFailed,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Switchover => "switchover",
            EventKind::Announce => "announce",
            EventKind::Complete => "complete",
            EventKind::Abort => "abort",
            EventKind::VmSeen => "vm-seen",
            EventKind::TunnelCounters => "tunnel-counters",
            EventKind::BgpSession => "bgp-session",
            EventKind::ActionFailed => "action-failed",
        })
    }
}
