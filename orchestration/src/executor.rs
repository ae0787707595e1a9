//! Carrying out commands: journal first, then act; on failure, tell the machine.
//!
//! This is the one loop every runtime needs, kept here (synchronous, generic over the
//! journal and the effects) so its contract is tested once. An async runtime either
//! calls it from a blocking task or mirrors it step for step:
//!
//! 1. append the whole batch to the journal in one durable write (one fsync, not one
//!    per command: the switchover's latency budget is about a millisecond); if that
//!    fails, stop: an action that is not journaled must not be taken;
//! 2. in order, `Persist` commands are done once journaled; others go to the
//!    [`Effector`];
//! 3. if the effector fails, drop the rest of that migration's batch (journaled but not
//!    done), report [`Event::ActionFailed`], and in one durable write remove the
//!    dropped tail from the journal and append the machine's answer (an abort, or the
//!    rest of an undo) via [`CommandLog::rewind`]; then carry the answer out.
//!
//! A crash after step 1 leaves commands journaled but not done: the journal states
//! intent, and start-up recovery makes the kernel and the speaker match it, exactly as
//! for a crash between journaling one command and doing it.
//!
//! Feed each `Vec<Command>` the registry returns to [`execute`] before asking the
//! registry for more: a failure can only be reported for the latest batch.

use crate::journal::{Journal, JournalError};
use crate::pe::{Action, Command, Event, MigrationId, Registry, RegistryError};
use crate::Time;
use std::collections::VecDeque;
use std::fmt::Display;
use thiserror::Error;

/// Where commands are journaled before they are carried out.
pub trait CommandLog {
    /// Why an append failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Appends `cmd` durably; returns only once it would survive a crash.
    fn append(&mut self, cmd: &Command) -> Result<(), Self::Error>;

    /// Appends every command of `cmds` durably; returns only once all would survive a
    /// crash. The default appends one by one (a crash may keep a prefix, which replays
    /// like any crash between two commands); a journal should override it with a
    /// single write.
    fn append_batch(&mut self, cmds: &[Command]) -> Result<(), Self::Error> {
        cmds.iter().try_for_each(|c| self.append(c))
    }

    /// Forgets `migration`'s commands after `failed_seq` (journaled, never done) and
    /// appends `answer` durably.
    fn rewind(
        &mut self,
        migration: &MigrationId,
        failed_seq: u64,
        answer: &[Command],
    ) -> Result<(), Self::Error>;
}

impl CommandLog for Journal {
    type Error = JournalError;

    fn append(&mut self, cmd: &Command) -> Result<(), JournalError> {
        Journal::append(self, cmd)
    }

    fn append_batch(&mut self, cmds: &[Command]) -> Result<(), JournalError> {
        Journal::append_batch(self, cmds)
    }

    fn rewind(
        &mut self,
        migration: &MigrationId,
        failed_seq: u64,
        answer: &[Command],
    ) -> Result<(), JournalError> {
        Journal::rewind(self, migration, failed_seq, answer)
    }
}

/// Carries out non-`Persist` commands: netlink, BGP speaker, notifications. Undo
/// commands must succeed when there is nothing to undo.
pub trait Effector {
    /// Why an action failed; recorded in the machine as text.
    type Error: Display;

    /// Does it.
    fn perform(&mut self, cmd: &Command) -> Result<(), Self::Error>;
}

/// What [`execute`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Every command journaled, in order (including `Persist`).
    pub journaled: Vec<Command>,
    /// Commands whose effect failed, with the error.
    pub failed: Vec<(Command, String)>,
}

/// Why [`execute`] stopped early. Commands after the stop were not journaled and not
/// carried out; the journal is consistent and a restart resumes from it.
#[derive(Debug, Error)]
pub enum ExecError<E: std::error::Error + 'static> {
    /// The journal refused a command.
    #[error("journal append failed; stopped before acting")]
    Journal(#[source] E),
    /// The registry refused a failure report (executor contract broken).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Journals and carries out `commands` in order, feeding failures back to `registry`.
pub fn execute<L: CommandLog, X: Effector>(
    registry: &mut Registry,
    log: &mut L,
    effector: &mut X,
    commands: Vec<Command>,
    now: Time,
) -> Result<Outcome, ExecError<L::Error>> {
    log.append_batch(&commands).map_err(ExecError::Journal)?;
    let mut queue: VecDeque<Command> = commands.into();
    let mut outcome = Outcome::default();
    while let Some(cmd) = queue.pop_front() {
        outcome.journaled.push(cmd.clone());
        if matches!(cmd.action, Action::Persist(_)) {
            continue;
        }
        if let Err(e) = effector.perform(&cmd) {
            let error = e.to_string();
            queue.retain(|c| c.migration != cmd.migration);
            let answer = registry.handle(
                &cmd.migration,
                Event::ActionFailed {
                    seq: cmd.seq,
                    error: error.clone(),
                },
                now,
            )?;
            log.rewind(&cmd.migration, cmd.seq, &answer)
                .map_err(ExecError::Journal)?;
            outcome.failed.push((cmd, error));
            queue.extend(answer);
        }
    }
    Ok(outcome)
}
