//! The whole-migration state machine the orchestrator runs, sans-IO (paper §3.1).
//!
//! A [`MigrationPlan`] (VM, prefixes, both agents, hypervisor, storage, policy,
//! timeouts) becomes a [`Migration`] that emits [`Command`]s: prepare both agents →
//! storage asynchronous → presync (synchronous, in sync) → destination switched over,
//! hypervisor pre-copies → at the suspend, the source's override (and the storage
//! cutover) **before** the VM resumes at the destination → announce → converged →
//! teardown. The runtime journals each command (fsynced, [`crate::journal::Journal`])
//! before carrying it out through the [`crate::drivers`], and feeds back each
//! action's `Done`/`Failed`, the drivers' reports and the agents' polled phases.
//!
//! # The ordering rule, for both kinds of hypervisor
//!
//! - [`QuiesceStyle::Hook`] (the lab): the hypervisor reports `Suspended` and waits.
//!   The machine issues `SwitchoverSource` (+ `StorageCutover`) and, once acknowledged,
//!   `AckQuiesce`: the override is in place before the resume, by construction.
//! - [`QuiesceStyle::Observe`] (libvirt): the hypervisor only reports `Suspended`.
//!   The machine issues the same switchover at once — the pause window is the budget —
//!   and records in [`Marks::override_before_resume`] whether the acknowledgement came
//!   before `Resumed`.
//!
//! # Rollback, and the point of no return
//!
//! Before the VM runs at the destination, any failure, timeout or operator abort rolls
//! back in reverse: `CancelMigration` first (and waited for: the VM must be back at
//! the source before the override goes), then `StorageAbort` and `AbortAgent` for both
//! agents, concurrently. Only what was issued is undone; an undo that fails or times out
//! is recorded and the rollback goes on (the agents' own reconcilers clean up).
//!
//! Once the hypervisor reports `Resumed` or `Completed`, the VM lives at the
//! destination and undoing the network would cut it off; migrating it back is a new
//! migration, not an automatic step. So past that point: a failure or timeout in the
//! pause window goes forward to announce (the destination's route is the remedy for a
//! missing override); elsewhere it stalls with nothing undone and a
//! [`Notice::Stalled`]; `abort` is refused ([`MigrationError::PastPointOfNoReturn`]).
//! If the VM resumes at the destination while only the cancel was outstanding (the
//! cancel lost the race), the machine goes forward too.
//!
//! # Restart
//!
//! [`Migration::restore`] folds the journal back into a machine; [`Migration::resume`]
//! forgets what was outstanding and, per [`OnRestart`], issues it again or rolls
//! back. A rollback in progress is always finished.
//!
//! # Phases × events
//!
//! `·` = accepted, nothing changes. `409` = refused with
//! [`MigrationError::InvalidEvent`]. "fail" = an action's `Failed`, a driver's failure
//! report, an agent seen `aborted`/`stalled`, or the phase's timeout. Storage phases are
//! skipped with `kind = "none"`; `StorageCutover` only with storage.
//!
//! | phase \ event | start | done (all of the phase's actions) | hypervisor | storage | agent | fail | abort | complete / retry |
//! |---|---|---|---|---|---|---|---|---|
//! | planned | → preparing: `PrepareAgent` ×2 | — | · | · | · | — | → rolled-back | 409 |
//! | preparing | · | → storage-async: `StorageStartAsync` (or → migrating) | · | · | · | → rolling-back | → rolling-back | 409 |
//! | storage-async | · | with `Ready` → presync: `StorageSwitchSync` | · | `Ready` | · | → rolling-back | → rolling-back | 409 |
//! | presync | · | `StorageWaitInSync` (or `InSync`) → migrating: `SwitchoverDestination` | · | `InSync` | · | → rolling-back | → rolling-back | 409 |
//! | migrating | · | `SwitchoverDestination` → `StartMigration` | `Suspended` → switching-over: `SwitchoverSource` (+`StorageCutover`) | · | · | → rolling-back | → rolling-back | 409 |
//! | switching-over | · | Hook: → resuming: `AckQuiesce`; Observe: → resuming, or → announcing if resumed | `Resumed`: point of no return (ack still awaited) | · | · | before resume → rolling-back; after → announcing | before resume → rolling-back; after 409 | 409 |
//! | resuming | · | — | `Resumed`/`Completed` → announcing: `AnnounceDestination` | · | · | → rolling-back | → rolling-back | 409 |
//! | announcing | · | → `AnnounceSource` → converging | · | · | · | → stalled | 409 | 409 |
//! | converging | · | — | `Completed` | · | src torn-down, dst converging/torn-down, job completed → tearing-down: `CompleteAgents` | → stalled | 409 | complete → tearing-down |
//! | tearing-down | · | → completed: `Notify(Completed)` | · | · | · | → stalled | 409 | · |
//! | stalled | · | recorded | · | · | · | · | 409 | complete → tearing-down (if announced); retry → the stalled phase |
//! | rolling-back | · | `CancelMigration` → `StorageAbort`, `AbortAgent` ×2 → rolled-back: `Notify(RolledBack)` | `Resumed` with only the cancel issued → switching-over (forward); later → stalled | · | · | undo failed/timed out: recorded, next step | · | 409 |
//! | completed, rolled-back | · | · | · | · | · | · | completed 409, rolled-back · | · / 409 |
//!
//! Duplicate `Done`/`Failed` (same seq), repeated driver reports and repeated agent
//! phases change nothing. `Done`/`Failed` for a seq never issued is
//! [`MigrationError::UnknownCommand`]. `Progress` is kept in memory only.
//!
//! # Runtime contract
//!
//! 1. Journal every command (fsynced) before carrying it out; `Persist` is then done.
//! 2. `Notify`: deliver, best effort, no answer.
//! 3. Every other action: one FIFO per driver (source agent, destination agent,
//!    hypervisor, storage); answer with `Done { seq }` or `Failed { seq, error }`.
//!    `StartMigration` is long-running: its `Done` is the end of the migration.
//! 4. Hypervisor and storage reports → [`Event::Hypervisor`] / [`Event::Storage`];
//!    while [`Migration::polls_agents`], poll both agents → [`Event::Agent`].
//! 5. One timer at [`Migration::poll_timeout`] → [`Migration::handle_timeout`].
//! 6. On start: [`crate::journal::Journal::load_migrations`], then
//!    [`Migration::restore`] and [`Migration::resume`] for each unfinished one.

mod command;
mod error;
mod event;
mod machine;
mod phase;
mod plan;
mod timing;

pub use command::{Action, Command, Fault, Notice, Observation, Record};
pub use error::{MigrationError, ReplayError};
pub use event::{Event, EventKind};
pub use machine::{ErrorRecord, Flags, Migration, Report, Status, Touched};
pub use phase::Phase;
pub use plan::{
    AgentPlan, CopyStorage, HypervisorPlan, MigrationPlan, MigrationPolicy, OnRestart, PlanError,
    QemuMirrorPlan, QuiesceStyle, StoragePlan, SwitchMethod, Timeouts, VmPlan,
};
pub use timing::{phase_timings, Marks, PhaseTiming, Transition};

#[cfg(test)]
pub(crate) mod tests;
