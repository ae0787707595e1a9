//! Start-up after a stop or a crash: the journal says what should be, the kernel and
//! the speaker are made to match.
//!
//! Order matters. The registry is already rebuilt from the journal; first every
//! machine finishes the phase it was in ([`Registry::resume`], journaled and carried
//! out like any batch), then the kernel is reconciled with the union of the machines'
//! targets (orphans removed, missing objects created, matching ones adopted without a
//! blip), then routes the journal says are announced are announced again and anything
//! else the speaker still holds is withdrawn.
//!
//! [`Registry::resume`]: migroute_orchestration::pe::Registry::resume

use std::collections::BTreeSet;

use ipnetwork::IpNetwork;
use migroute_orchestration::journal::JournalError;
use migroute_orchestration::pe::Route;
use thiserror::Error;

use super::announcer::AnnounceError;
use super::effector::{Dataplane, DataplaneError, ReconcileReport};
use super::now;
use super::runtime::Owner;

/// What recovery did, for the log.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Migrations found in the journal.
    pub migrations: usize,
    /// Commands the resume issued.
    pub resumed: usize,
    /// Kernel reconcile.
    pub kernel: ReconcileReport,
    /// Routes announced again.
    pub announced: usize,
    /// Stale routes withdrawn.
    pub withdrawn: usize,
}

/// Why the agent could not recover; it does not start then.
#[derive(Debug, Error)]
pub enum RecoveryError {
    /// Journal write during resume.
    #[error("resume: {0}")]
    Journal(#[from] JournalError),
    /// Kernel reconcile.
    #[error("kernel reconcile: {0}")]
    Kernel(#[from] DataplaneError),
    /// Speaker.
    #[error("re-announce: {0}")]
    Bgp(#[from] AnnounceError),
}

/// Resume, reconcile the kernel, restore routes.
pub async fn recover<D: Dataplane>(owner: &mut Owner<D>) -> Result<RecoveryReport, RecoveryError> {
    let mut report = RecoveryReport {
        migrations: owner.registry.iter().count(),
        ..RecoveryReport::default()
    };
    let t = now();
    let cmds = owner.registry.resume(t);
    report.resumed = cmds.len();
    owner.run_batch(cmds, t).await?;

    let desired = owner.registry.desired_state();
    let roles: Vec<_> = owner
        .registry
        .iter()
        .map(|m| (m.spec().tunnel_spec(), m.role()))
        .collect();
    report.kernel = owner.dataplane.reconcile(&desired, &roles).await?;

    let routes: Vec<Route> = desired
        .routes
        .iter()
        .map(|r| Route {
            prefix: r.prefix,
            attrs: r.attrs.clone(),
        })
        .collect();
    let wanted: BTreeSet<IpNetwork> = routes.iter().map(|r| r.prefix).collect();
    let stale: Vec<IpNetwork> = owner
        .announcer
        .routes()
        .into_iter()
        .map(|r| r.prefix)
        .filter(|p| !wanted.contains(p))
        .collect();
    if !stale.is_empty() {
        owner.announcer.withdraw(&stale).await?;
    }
    if !routes.is_empty() {
        owner.announcer.announce(&routes).await?;
    }
    report.announced = routes.len();
    report.withdrawn = stale.len();
    Ok(report)
}
