//! The per-PE migration state machine, sans-IO.
//!
//! One [`PeMigration`] per migration per PE; the [`Registry`] holds them all, enforces
//! the 409 rules and routes events. Inputs are [`Event`]s plus time ([`crate::Time`]);
//! outputs are [`Command`]s — numbered [`Action`]s that the executor journals (fsynced)
//! *before* carrying them out. The machine's state is a fold over its commands, so a
//! restart rebuilds it from the journal ([`Registry::restore`]), finishes the phase it
//! was in ([`Registry::resume`]) and reconciles kernel and BGP with
//! [`DesiredState`].
//!
//! # Ordering the product depends on
//!
//! - The source's override is installed on `switchover`, which the orchestrator sends
//!   *before* the VM resumes at the destination; the destination's routes are announced
//!   only after switchover (`announce` in `prepared` is refused), or when the VM is
//!   heard there.
//! - Teardown removes the override only once the route has been held `min_hold_ms` and
//!   the tunnel then carried nothing for `quiet_ms` (measured from counter samples, so
//!   a missing counter never looks quiet). Not converged after `converge_timeout_ms`:
//!   `stalled`, nothing torn down.
//! - Abort undoes in reverse: withdraw, remove override, disable delivery, delete
//!   tunnel. Teardown does the same except the withdraw: the VM lives at the
//!   destination now.
//! - A failed forward action (create tunnel, install override, ensure delivery,
//!   announce) records the error and aborts. A failed undo is recorded and the rest of
//!   the undo goes on; the reconciler retries what is left from the desired state.
//!
//! # Phases × events
//!
//! `·` = accepted, nothing changes (idempotent). `409` = refused with
//! [`PeError::InvalidEvent`], nothing changes. Actions in order; `Src`/`Dst` by role.
//!
//! | phase \ event | switchover | announce | vm-seen (Dst) | complete | abort | timers, counters |
//! |---|---|---|---|---|---|---|
//! | prepared | → switched-over: Src `InstallOverride`, Dst `EnsureDelivery` | 409 | → switched-over + announced: `EnsureDelivery`, `Announce`, `Notify(SwitchOverPeer)` | 409 | → aborting → aborted: `DeleteTunnel` | — |
//! | switched-over | · | → announced: Dst `Announce`; Src releases torn-down routes of the prefixes (`Withdraw`) | → announced: `Announce`, `Notify(SwitchOverPeer)` | 409 | → aborted: `RemoveOverride`/`DisableDelivery`, `DeleteTunnel` | converge timeout → stalled |
//! | announced | · | · | · | → torn-down | → aborted: Dst `Withdraw`, …, `DeleteTunnel` | hold reached → converging; timeout → stalled |
//! | converging | · | · | · | → torn-down | as announced | counter sample after the hold showing `quiet_ms` without traffic → torn-down: `RemoveOverride`/`DisableDelivery`, `DeleteTunnel`; timeout → stalled |
//! | stalled | · | · | · | → torn-down | as announced | — (an operator decides) |
//! | torn-down | · | · | · | · | · | — |
//! | aborting | 409 | 409 | 409 | 409 | · | — (resume finishes the undo) |
//! | aborted | 409 | 409 | 409 | 409 | · | — |
//!
//! `PUT` with the same body is answered by the registry in every phase (200, no
//! commands). Vm-seen at a source is [`PeError::WrongRole`]. `action-failed` for a
//! forward action in prepared…stalled → `Persist(Error)`, aborting → aborted (undoing
//! the failed action too, as it may be half done); for an undo or a notice → recorded,
//! rest of the phase re-issued. BGP session down at the destination restarts the hold.

mod action;
mod desired;
mod error;
mod event;
mod machine;
mod phase;
mod policy;
mod registry;
mod spec;

pub use action::{Action, Command, Notice, Record, Route};
pub use desired::{DesiredPath, DesiredRoute, DesiredState, DesiredTunnel};
pub use error::{ConflictReason, PeError, RegistryError, ReplayError};
pub use event::{Event, EventKind};
pub use machine::{Effects, ErrorRecord, PeMigration, Status, Transition};
pub use phase::{Phase, Role};
pub use policy::{Community, CommunityParseError, Preference, RouteAttrs, RoutePolicy};
pub use registry::{Prepared, Registry};
pub use spec::{
    MacAddr, MacParseError, MigrationId, MigrationSpec, PeerPe, SpecError, Timers, TunnelKind,
    TunnelSpec,
};

#[cfg(test)]
mod tests;
