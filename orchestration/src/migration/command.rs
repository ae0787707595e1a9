//! Outputs of the whole-migration machine: plain data, journaled before they are
//! carried out.

use super::phase::Phase;
use super::plan::MigrationPlan;
use crate::pe::{MigrationId, Phase as PePhase, Role};
use crate::Time;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One action of one whole migration, numbered. The runtime journals the whole
/// `Command` (fsynced) and only then carries it out; the machine's state is a fold over
/// the journaled commands, so a restarted orchestrator rebuilds it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The migration this belongs to.
    pub migration: MigrationId,
    /// Position in the migration's journal, from 0, without gaps. `Done`/`Failed`
    /// events name it.
    pub seq: u64,
    /// What to do.
    pub action: Action,
}

/// What the runtime must do. Apart from `Persist` and `Notify`, each is answered with
/// [`Event::Done`](super::Event::Done) or [`Event::Failed`](super::Event::Failed)
/// naming its `seq`. See [`crate::drivers`] for the driver call behind each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action", content = "args")]
pub enum Action {
    /// Only journal this record: it is state, not a side effect.
    Persist(Record),
    /// `PUT /v1/migrations/{id}` on one agent with
    /// [`MigrationPlan::agent_spec`](super::MigrationPlan::agent_spec).
    PrepareAgent {
        /// Which agent.
        which: Role,
    },
    /// Start asynchronous storage replication.
    StorageStartAsync,
    /// Switch storage replication to synchronous.
    StorageSwitchSync,
    /// Wait until storage is in sync.
    StorageWaitInSync,
    /// `POST …/switchover` on the destination: deliver from the tunnel. Issued before
    /// the migration starts, so the pause window only holds the source's switchover.
    SwitchoverDestination,
    /// Start (or re-attach to) the live migration; `Done` when it finished.
    StartMigration,
    /// `POST …/switchover` on the source: install the override. `Done` = acknowledged.
    SwitchoverSource,
    /// Make the destination's storage primary, inside the pause window.
    StorageCutover,
    /// Hook-style hypervisor: the override is in place, let the VM resume.
    AckQuiesce,
    /// `POST …/announce` on the destination: the more-preferred route.
    AnnounceDestination,
    /// `POST …/announce` on the source: start watching the tunnel go quiet.
    AnnounceSource,
    /// `POST …/complete` on both agents.
    CompleteAgents,
    /// Stop the migration, leaving the VM at the source (hook style: release the gate
    /// with `Cancel` first).
    CancelMigration,
    /// Stop storage replication, source stays primary.
    StorageAbort,
    /// `POST …/abort` on one agent (404 counts as done).
    AbortAgent {
        /// Which agent.
        which: Role,
    },
    /// Tell the operator or the caller; no answer expected.
    Notify(Notice),
}

impl Action {
    /// Forward actions build the migration; their failure rolls it back (or stalls it
    /// past the point of no return). The others undo, journal or notify.
    pub fn is_forward(&self) -> bool {
        !matches!(
            self,
            Action::Persist(_)
                | Action::Notify(_)
                | Action::CancelMigration
                | Action::StorageAbort
                | Action::AbortAgent { .. }
        )
    }

    /// Whether the runtime answers it with `Done`/`Failed`.
    pub fn expects_answer(&self) -> bool {
        !matches!(self, Action::Persist(_) | Action::Notify(_))
    }
}

/// State that exists only in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "record")]
pub enum Record {
    /// The migration was planned; phase `planned`. Always seq 0.
    Created {
        /// The validated plan (boxed: it dwarfs every other record).
        plan: Box<MigrationPlan>,
        /// When.
        at: Time,
    },
    /// The migration entered a phase.
    Phase {
        /// The new phase.
        phase: Phase,
        /// When.
        at: Time,
    },
    /// Command `seq` finished.
    Done {
        /// Its seq.
        seq: u64,
        /// When reported.
        at: Time,
    },
    /// Command `seq` failed.
    Failed {
        /// Its seq.
        seq: u64,
        /// The driver's error.
        error: String,
        /// When reported.
        at: Time,
    },
    /// A driver or agent reported something the machine's progress depends on.
    Observed {
        /// What.
        what: Observation,
        /// When.
        at: Time,
    },
    /// Something went wrong that is not an action's failure.
    Fault {
        /// What.
        cause: Fault,
        /// When.
        at: Time,
    },
    /// The orchestrator restarted: outstanding actions are forgotten (and issued again
    /// if still needed), the phase's deadline starts afresh.
    Restarted {
        /// When.
        at: Time,
    },
}

/// Reports that move the machine forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Observation {
    /// The VM paused for stop-and-copy.
    Suspended,
    /// The VM runs at the destination.
    Resumed,
    /// The hypervisor's job finished.
    Completed,
    /// The migration failed; the VM runs at the source.
    MigrationFailed,
    /// Storage bulk copy done.
    StorageReady,
    /// Storage synchronous and drained.
    StorageInSync,
    /// An agent's phase changed.
    Agent {
        /// Which agent.
        which: Role,
        /// Its phase now.
        phase: PePhase,
    },
}

/// Why a migration left its forward path, other than a failed action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Fault {
    /// A phase missed its deadline.
    Timeout {
        /// The phase.
        phase: Phase,
    },
    /// The hypervisor reported a failure.
    Hypervisor {
        /// Its error.
        error: String,
    },
    /// The storage driver reported a failure.
    Storage {
        /// Its error.
        error: String,
    },
    /// An agent gave up on its own (aborted or stalled).
    Agent {
        /// Which agent.
        which: Role,
        /// The phase it reported.
        phase: PePhase,
    },
    /// An operator asked to abort.
    Operator,
    /// The orchestrator restarted and the policy (or a hook-style hypervisor whose hook
    /// died with it) says roll back.
    Restart,
    /// The VM resumed at the destination after the rollback had begun undoing the
    /// network: an operator must decide.
    ResumedDuringRollback,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Timeout { phase } => write!(f, "timeout in phase {phase}"),
            Fault::Hypervisor { error } => write!(f, "hypervisor: {error}"),
            Fault::Storage { error } => write!(f, "storage: {error}"),
            Fault::Agent { which, phase } => write!(f, "{which} agent reports {phase}"),
            Fault::Operator => f.write_str("aborted by operator"),
            Fault::Restart => f.write_str("orchestrator restarted mid-migration"),
            Fault::ResumedDuringRollback => {
                f.write_str("vm resumed at the destination while the network was rolled back")
            }
        }
    }
}

/// A message for the operator or the caller (webhook answer, CLI output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "notice")]
pub enum Notice {
    /// The migration completed.
    Completed,
    /// Stuck past the point of no return; nothing was undone.
    Stalled {
        /// Why.
        reason: String,
    },
    /// Everything was undone.
    RolledBack {
        /// The first error that caused it.
        reason: String,
    },
}
