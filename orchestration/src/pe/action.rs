//! Outputs of the per-PE machine: plain data, journaled before they are carried out.

use super::phase::Phase;
use super::policy::RouteAttrs;
use super::spec::{MigrationId, MigrationSpec, TunnelSpec};
use crate::Time;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// One action of one migration, numbered. The executor journals the whole `Command`
/// (fsynced) and only then carries it out; the journal of a migration is exactly the
/// sequence of its commands, and the machine's state is a fold over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The migration this belongs to.
    pub migration: MigrationId,
    /// Position in the migration's journal, from 0, without gaps.
    pub seq: u64,
    /// What to do.
    pub action: Action,
}

/// What the caller must do. Every undo action must be idempotent (removing what is
/// absent succeeds): aborts and restarts undo things that may be half done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Only journal this record: it is state, not a side effect.
    Persist(Record),
    /// Create the tunnel to the peer PE (idempotent: an identical one is fine).
    CreateTunnel {
        /// The tunnel.
        tunnel: TunnelSpec,
    },
    /// Delete the tunnel.
    DeleteTunnel {
        /// The tunnel.
        tunnel: TunnelSpec,
    },
    /// Source: route the VM's prefixes into the tunnel, ahead of the normal route.
    InstallOverride {
        /// The VM's prefixes.
        prefixes: Vec<IpNetwork>,
        /// Where they go.
        tunnel: TunnelSpec,
    },
    /// Source: remove the override routes.
    RemoveOverride {
        /// The VM's prefixes.
        prefixes: Vec<IpNetwork>,
    },
    /// Destination: deliver traffic for the prefixes that arrives through the tunnel.
    EnsureDelivery {
        /// The VM's prefixes.
        prefixes: Vec<IpNetwork>,
        /// The tunnel it arrives on.
        tunnel: TunnelSpec,
    },
    /// Destination: stop delivering from the tunnel.
    DisableDelivery {
        /// The VM's prefixes.
        prefixes: Vec<IpNetwork>,
    },
    /// Announce these routes through the BGP speaker.
    Announce {
        /// Routes with their attributes.
        routes: Vec<Route>,
    },
    /// Withdraw these prefixes.
    Withdraw {
        /// The prefixes.
        prefixes: Vec<IpNetwork>,
    },
    /// Tell someone outside this PE.
    Notify(Notice),
}

impl Action {
    /// Actions that create state outside the journal. A failure of one of them aborts
    /// the migration; a failure of an undo action is only recorded (the reconciler
    /// retries from the desired state).
    pub fn is_forward(&self) -> bool {
        matches!(
            self,
            Action::CreateTunnel { .. }
                | Action::InstallOverride { .. }
                | Action::EnsureDelivery { .. }
                | Action::Announce { .. }
        )
    }
}

/// A route to announce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The host route.
    pub prefix: IpNetwork,
    /// Its attributes under the migration's policy.
    pub attrs: RouteAttrs,
}

/// State that exists only in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Record {
    /// The migration was prepared with this (normalized) spec; phase `prepared`.
    Created {
        /// The request.
        spec: MigrationSpec,
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
    /// A command failed.
    Error {
        /// `Command::seq` of the failed command.
        seq: u64,
        /// What went wrong.
        error: String,
        /// When it was reported.
        at: Time,
    },
}

/// A message for the world outside this PE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Notice {
    /// Destination heard the VM first: `POST {api_url}/v1/migrations/{id}/switchover`,
    /// then `…/announce`, on the source PE (harmless if it already did either).
    SwitchOverPeer {
        /// The peer's API base URL.
        api_url: String,
    },
    /// Not converged in time; nothing was torn down. Operators must look.
    Stalled,
    /// Torn down after convergence or `complete`.
    TornDown,
    /// Everything was undone.
    Aborted {
        /// The error that caused it, `None` for an operator's abort.
        reason: Option<String>,
    },
}
