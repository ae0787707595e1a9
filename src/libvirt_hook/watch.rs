//! `migroute libvirt-watch`: the resident half of the hook, for the one instant libvirt
//! runs no hook at: the guest pausing at the source for its final copy.
//!
//! The hook alone leaves the switchover to the destination agent hearing the guest's
//! RARP, after the guest has resumed there: traffic that reaches the source between
//! that resume and the override is lost (about 12 ms in the KVM lab). The watch runs
//! beside libvirtd on every hypervisor host, hears the source's
//! `SUSPENDED`/`migrated` event, and switches both PEs over while the guest is
//! paused, as an orchestrator would. The destination's RARP then only announces.
//!
//! If the guest runs again at the source after that (the migration failed after its
//! pause), both agents abort, so its traffic stops going into the tunnel.

use std::collections::HashMap;

use migroute_orchestration::drivers::libvirt::{Lifecycle, LifecycleEvent};
use migroute_orchestration::drivers::PeAgent;
use migroute_orchestration::pe::{MigrationId, Phase, Role};
use thiserror::Error;

use super::domain::Domain;
use super::run::Hook;
use crate::orchestrator::agent_client::ListedMigration;

/// What [`Hook::quiesced`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quiesced {
    /// The domain has no migroute metadata.
    NotOurs,
    /// No migration of this domain is prepared on this host's agent (the destination
    /// has no hook, or the migration was not prepared): nothing switched.
    NotPrepared,
    /// Both PEs switched over.
    SwitchedOver {
        /// The migration.
        id: String,
    },
    /// One or both refused or were unreachable; the destination still switches over
    /// when it hears the VM.
    Failed {
        /// The migration.
        id: String,
        /// The agents' errors.
        error: String,
    },
}

/// The newest migration of domain `uuid` that the hook prepared (`lv-UUID-MILLIS`) and
/// that is still `prepared` on this agent, as a source.
fn prepared_source_migration(listed: &[ListedMigration], uuid: &str) -> Option<MigrationId> {
    let prefix = format!("lv-{uuid}-");
    listed
        .iter()
        .filter(|m| m.role == Role::Source && m.phase == Phase::Prepared)
        .filter_map(|m| {
            let millis: u128 = m.id.as_str().strip_prefix(&prefix)?.parse().ok()?;
            Some((millis, &m.id))
        })
        .max_by_key(|(millis, _)| *millis)
        .map(|(_, id)| id.clone())
}

/// An agent call of the watch that failed; the watch logs it and goes on.
#[derive(Debug, Error)]
#[error("{what}: {error}")]
pub struct WatchError {
    /// What was asked.
    pub what: &'static str,
    /// The agent's error.
    pub error: String,
}

impl Hook {
    /// At the source, when the guest pauses for its final copy (`libvirt-watch`): both
    /// PEs switch over at once, so the override is in place before the guest resumes
    /// at the destination. The migration is the one the destination's hook prepared:
    /// the newest `lv-UUID-…` still `prepared` on this host's agent, as a source.
    pub async fn quiesced(&self, domain: &Domain) -> Result<Quiesced, WatchError> {
        if domain.prefixes.is_empty() {
            return Ok(Quiesced::NotOurs);
        }
        let listed = self.local.list().await.map_err(|e| WatchError {
            what: "listing the source agent's migrations",
            error: e.to_string(),
        })?;
        let Some(mid) = prepared_source_migration(&listed, &domain.uuid) else {
            return Ok(Quiesced::NotPrepared);
        };
        let (src, dst) = tokio::join!(self.local.switchover(&mid), self.peer.switchover(&mid));
        let id = mid.as_str().to_owned();
        match (src, dst) {
            (Ok(()), Ok(())) => Ok(Quiesced::SwitchedOver { id }),
            (src, dst) => Ok(Quiesced::Failed {
                id,
                error: [src.err(), dst.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    }

    /// The guest runs again at the source after [`quiesced`](Self::quiesced) switched
    /// the PEs over: the migration failed after its pause. Its traffic must stop going
    /// into the tunnel, so both agents abort.
    pub async fn resumed_at_source(&self, id: &str) -> Result<(), WatchError> {
        let mid = MigrationId::new(id.to_owned()).map_err(|e| WatchError {
            what: "migration id",
            error: e.to_string(),
        })?;
        let (src, dst) = tokio::join!(self.local.abort(&mid), self.peer.abort(&mid));
        src.and(dst).map_err(|e| WatchError {
            what: "aborting after the guest resumed at the source",
            error: e.to_string(),
        })
    }
}

/// What to do about one lifecycle change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Paused for an outgoing migration: switch both PEs over now.
    Quiesce,
    /// Running again at the source after a switchover: undo migration `id`.
    Undo {
        /// The migration.
        id: String,
    },
    /// Gone from this host after a switchover: nothing more to do for it here.
    Forget,
    /// Nothing.
    Nothing,
}

/// The domains this host switched over, by name: what the events that follow a pause
/// mean depends on it. In memory only: a watch restarted between a pause and a failure
/// of that migration does not undo it, and the migration stalls at its converge
/// timeout for an operator to abort (both PEs switched over, so the destination's
/// `release` hook leaves it alone).
#[derive(Debug, Default)]
pub struct Tracker {
    switched: HashMap<String, String>,
}

impl Tracker {
    /// Decides about one event.
    pub fn step(&self, event: &LifecycleEvent) -> Step {
        let switched = self.switched.get(&event.domain);
        match (event.change, switched) {
            (Lifecycle::SuspendedForMigration, _) => Step::Quiesce,
            (Lifecycle::Resumed { .. }, Some(id)) => Step::Undo { id: id.clone() },
            (Lifecycle::Stopped { .. }, Some(_)) => Step::Forget,
            _ => Step::Nothing,
        }
    }

    /// Remembers that `domain` was switched over by migration `id`.
    pub fn switched(&mut self, domain: &str, id: &str) {
        self.switched.insert(domain.to_owned(), id.to_owned());
    }

    /// Forgets `domain`.
    pub fn forget(&mut self, domain: &str) {
        self.switched.remove(domain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(domain: &str, change: Lifecycle) -> LifecycleEvent {
        LifecycleEvent {
            domain: domain.into(),
            change,
        }
    }

    #[test]
    fn a_pause_switches_over_and_a_resume_after_it_undoes() {
        let mut t = Tracker::default();
        assert_eq!(
            t.step(&ev("vm", Lifecycle::Resumed { migrated: false })),
            Step::Nothing,
            "a resume that follows no switchover is none of ours"
        );
        assert_eq!(
            t.step(&ev("vm", Lifecycle::SuspendedForMigration)),
            Step::Quiesce
        );
        t.switched("vm", "lv-u-1");
        assert_eq!(
            t.step(&ev("other", Lifecycle::Resumed { migrated: true })),
            Step::Nothing
        );
        assert_eq!(
            t.step(&ev("vm", Lifecycle::Resumed { migrated: true })),
            Step::Undo {
                id: "lv-u-1".into()
            }
        );
        assert_eq!(
            t.step(&ev("vm", Lifecycle::Stopped { migrated: true })),
            Step::Forget
        );
        t.forget("vm");
        assert_eq!(
            t.step(&ev("vm", Lifecycle::Stopped { migrated: true })),
            Step::Nothing
        );
        assert_eq!(t.step(&ev("vm", Lifecycle::Other)), Step::Nothing);
    }

    fn listed(id: &str, role: Role, phase: Phase) -> ListedMigration {
        ListedMigration {
            id: MigrationId::new(id.to_owned()).unwrap(),
            phase,
            role,
        }
    }

    #[test]
    fn the_quiesce_picks_the_newest_prepared_source_migration_of_the_domain() {
        let u = "3f1c0e4a-0000-4000-8000-000000000001";
        let all = [
            listed(&format!("lv-{u}-1000"), Role::Source, Phase::TornDown),
            listed(&format!("lv-{u}-900"), Role::Source, Phase::Prepared),
            listed(&format!("lv-{u}-2000"), Role::Source, Phase::Prepared),
            listed(&format!("lv-{u}-3000"), Role::Destination, Phase::Prepared),
            listed("lv-other-uuid-4000", Role::Source, Phase::Prepared),
            listed("scenario-1", Role::Source, Phase::Prepared),
        ];
        assert_eq!(
            prepared_source_migration(&all, u).unwrap().as_str(),
            format!("lv-{u}-2000")
        );
        assert_eq!(prepared_source_migration(&all[..1], u), None);
        assert_eq!(prepared_source_migration(&all, "another"), None);
    }
}
