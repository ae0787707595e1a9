//! The kernel and BGP state the agent must hold, computed from the machines alone.
//!
//! On restart the agent rebuilds the machines from the journal and hands this to the
//! tunnel crate's `reconcile(desired)` and to the BGP speaker: whatever exists but is not
//! desired is removed, whatever is desired but missing is created. It is the *target* of
//! each migration's phase, so a crash in the middle of a batch converges to the state
//! that batch was heading for: forward phases replay, aborts compensate.

use super::action::Command;
use super::error::ReplayError;
use super::machine::PeMigration;
use super::phase::{Phase, Role};
use super::policy::RouteAttrs;
use super::registry::Registry;
use super::spec::{MigrationId, TunnelSpec};
use crate::Time;
use ipnetwork::IpNetwork;
use serde::Serialize;

/// Everything migroute should have in place on this PE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesiredState {
    /// Tunnels to peer PEs.
    pub tunnels: Vec<DesiredTunnel>,
    /// Source side: host routes into a tunnel, ahead of the normal route.
    pub overrides: Vec<DesiredPath>,
    /// Destination side: local delivery of traffic arriving through a tunnel.
    pub deliveries: Vec<DesiredPath>,
    /// Routes the BGP speaker announces.
    pub routes: Vec<DesiredRoute>,
}

/// A tunnel and the migration that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredTunnel {
    /// Owner.
    pub migration: MigrationId,
    /// The tunnel.
    pub tunnel: TunnelSpec,
}

/// A prefix bound to a tunnel (override or delivery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredPath {
    /// Owner.
    pub migration: MigrationId,
    /// The host route.
    pub prefix: IpNetwork,
    /// The tunnel.
    pub tunnel: TunnelSpec,
}

/// An announced route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredRoute {
    /// Owner.
    pub migration: MigrationId,
    /// The host route.
    pub prefix: IpNetwork,
    /// Its attributes.
    pub attrs: RouteAttrs,
}

impl DesiredState {
    /// The union of every migration's target state.
    pub fn from_migrations<'a>(migrations: impl IntoIterator<Item = &'a PeMigration>) -> Self {
        let mut d = DesiredState::default();
        for m in migrations {
            d.add(m);
        }
        d
    }

    /// "Desired state from journal": rebuilds the machines from journaled commands and
    /// takes their target. Pure; time does not enter into it.
    pub fn from_journal(commands: impl IntoIterator<Item = Command>) -> Result<Self, ReplayError> {
        let registry = Registry::restore(commands, Time::ZERO)?;
        Ok(registry.desired_state())
    }

    /// Nothing at all: what a PE without live migrations (or only aborted ones) holds.
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
            && self.overrides.is_empty()
            && self.deliveries.is_empty()
            && self.routes.is_empty()
    }

    fn add(&mut self, m: &PeMigration) {
        let id = m.id().clone();
        let spec = m.spec();
        let tunnel = spec.tunnel_spec();
        let level = match m.phase() {
            Phase::Prepared => 1,
            Phase::SwitchedOver => 2,
            Phase::Announced | Phase::Converging | Phase::Stalled => 3,
            Phase::TornDown => {
                // The destination keeps announcing what it has not released.
                let attrs = spec.policy.attributes();
                for &prefix in &m.effects().announced {
                    self.routes.push(DesiredRoute {
                        migration: id.clone(),
                        prefix,
                        attrs: attrs.clone(),
                    });
                }
                return;
            }
            Phase::Aborting | Phase::Aborted => return,
        };
        self.tunnels.push(DesiredTunnel {
            migration: id.clone(),
            tunnel,
        });
        if level >= 2 {
            let paths = spec.prefixes.iter().map(|&prefix| DesiredPath {
                migration: id.clone(),
                prefix,
                tunnel,
            });
            match m.role() {
                Role::Source => self.overrides.extend(paths),
                Role::Destination => self.deliveries.extend(paths),
            }
        }
        if level >= 3 && m.role() == Role::Destination {
            let attrs = spec.policy.attributes();
            for &prefix in &spec.prefixes {
                self.routes.push(DesiredRoute {
                    migration: id.clone(),
                    prefix,
                    attrs: attrs.clone(),
                });
            }
        }
    }
}
