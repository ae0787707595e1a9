//! [`Registry`]: every migration of this PE, the 409 rules, and event routing. It is
//! what the REST layer and the agent runtime call; sans-IO like the machines.

use super::action::Command;
use super::desired::DesiredState;
use super::error::{ConflictReason, RegistryError, ReplayError};
use super::event::Event;
use super::machine::PeMigration;
use super::phase::{Phase, Role};
use super::spec::{MacAddr, MigrationId, MigrationSpec};
use crate::Time;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// All migrations this PE knows, live or finished.
#[derive(Debug, Clone)]
pub struct Registry {
    migrations: BTreeMap<MigrationId, PeMigration>,
    bgp_up: bool,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

/// Answer to a `PUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// `false` when the same body was already there: 200, nothing changes.
    pub created: bool,
    /// Commands to journal and carry out (empty when not created). The tunnel exists
    /// once they ran without failure.
    pub commands: Vec<Command>,
}

impl Registry {
    /// No migrations; BGP assumed up until told otherwise.
    pub fn new() -> Self {
        Registry {
            migrations: BTreeMap::new(),
            bgp_up: true,
        }
    }

    /// Rebuilds every machine from journaled commands (any order across migrations;
    /// each migration's commands are sorted by seq here). Call
    /// [`resume`](Self::resume) next, then reconcile with
    /// [`desired_state`](Self::desired_state).
    pub fn restore(
        commands: impl IntoIterator<Item = Command>,
        now: Time,
    ) -> Result<Self, ReplayError> {
        let mut groups: BTreeMap<MigrationId, Vec<Command>> = BTreeMap::new();
        for c in commands {
            groups.entry(c.migration.clone()).or_default().push(c);
        }
        let mut registry = Registry::new();
        for (id, mut cmds) in groups {
            cmds.sort_by_key(|c| c.seq);
            let m = PeMigration::restore(&cmds, now)?;
            registry.migrations.insert(id, m);
        }
        Ok(registry)
    }

    /// `PUT /v1/migrations/{id}`. Same body again: `created: false`, no commands. A
    /// different body for the id, or a prefix or tunnel of another live migration:
    /// [`RegistryError::Conflict`] naming the conflicting id.
    pub fn prepare(
        &mut self,
        id: MigrationId,
        spec: MigrationSpec,
        now: Time,
    ) -> Result<Prepared, RegistryError> {
        let spec = spec.normalized()?;
        if let Some(existing) = self.migrations.get(&id) {
            if *existing.spec() == spec {
                return Ok(Prepared {
                    created: false,
                    commands: Vec::new(),
                });
            }
            return Err(RegistryError::Conflict {
                id,
                reason: ConflictReason::DifferentBody,
            });
        }
        for other in self.migrations.values().filter(|m| m.phase().is_live()) {
            if let Some(p) = spec
                .prefixes
                .iter()
                .find(|p| other.spec().prefixes.contains(p))
            {
                return Err(RegistryError::Conflict {
                    id: other.id().clone(),
                    reason: ConflictReason::PrefixInUse(*p),
                });
            }
            if other.spec().tunnel_spec() == spec.tunnel_spec() {
                return Err(RegistryError::Conflict {
                    id: other.id().clone(),
                    reason: ConflictReason::TunnelInUse,
                });
            }
        }
        let (mut m, mut commands) = PeMigration::prepare(id.clone(), spec, now)?;
        if !self.bgp_up {
            commands.extend(m.handle(Event::BgpSession { up: false }, now)?);
        }
        self.migrations.insert(id, m);
        Ok(Prepared {
            created: true,
            commands,
        })
    }

    /// Routes an event to migration `id`. A source's `announce` also makes torn-down
    /// destination migrations of the same prefixes withdraw their routes (the VM moves
    /// back): that is the source's "withdraw its own host route".
    pub fn handle(
        &mut self,
        id: &MigrationId,
        event: Event,
        now: Time,
    ) -> Result<Vec<Command>, RegistryError> {
        let m = self
            .migrations
            .get_mut(id)
            .ok_or_else(|| RegistryError::NotFound(id.clone()))?;
        let announce = event == Event::Announce;
        let mut out = m.handle(event, now)?;
        if announce && m.role() == Role::Source && !out.is_empty() {
            let prefixes = m.spec().prefixes.clone();
            for other in self.migrations.values_mut() {
                if other.id() != id && other.role() == Role::Destination {
                    out.extend(other.release(&prefixes));
                }
            }
        }
        Ok(out)
    }

    /// RARP/GARP for `addr` heard at this PE: the live destination migration moving it
    /// announces at once and tells its source to switch over.
    pub fn vm_seen(&mut self, addr: IpAddr, now: Time) -> Result<Vec<Command>, RegistryError> {
        let id = self
            .migrations
            .values()
            .find(|m| {
                m.role() == Role::Destination
                    && m.phase().is_live()
                    && m.spec().prefixes.iter().any(|p| p.contains(addr))
            })
            .map(|m| m.id().clone())
            .ok_or(RegistryError::NoMigrationFor(addr))?;
        self.handle(&id, Event::VmSeen, now)
    }

    /// RARP from `mac` heard at this PE (QEMU's announcement carries no IP address):
    /// as [`Registry::vm_seen`], for the live destination migration of the VM with that
    /// MAC.
    pub fn vm_seen_mac(&mut self, mac: MacAddr, now: Time) -> Result<Vec<Command>, RegistryError> {
        let id = self
            .migrations
            .values()
            .find(|m| {
                m.role() == Role::Destination && m.phase().is_live() && m.spec().vm_mac == Some(mac)
            })
            .map(|m| m.id().clone())
            .ok_or(RegistryError::NoMigrationForMac(mac))?;
        self.handle(&id, Event::VmSeen, now)
    }

    /// This PE's BGP sessions went up or down; every machine hears it.
    pub fn bgp_session(&mut self, up: bool, now: Time) -> Vec<Command> {
        self.bgp_up = up;
        let mut out = Vec::new();
        for m in self.migrations.values_mut() {
            // BgpSession is accepted in every phase.
            out.extend(m.handle(Event::BgpSession { up }, now).unwrap_or_default());
        }
        out
    }

    /// Fires every machine whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Time) -> Vec<Command> {
        let mut out = Vec::new();
        for m in self.migrations.values_mut() {
            if m.poll_timeout().is_some_and(|t| t <= now) {
                out.extend(m.handle_timeout(now));
            }
        }
        out
    }

    /// The earliest deadline of all machines: the one timer the runtime sets.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.migrations
            .values()
            .filter_map(PeMigration::poll_timeout)
            .min()
    }

    /// After [`restore`](Self::restore): what every machine needs to finish its phase.
    pub fn resume(&mut self, now: Time) -> Vec<Command> {
        let mut out = Vec::new();
        for m in self.migrations.values_mut() {
            out.extend(m.resume(now));
        }
        out
    }

    /// One migration, for the GET.
    pub fn get(&self, id: &MigrationId) -> Option<&PeMigration> {
        self.migrations.get(id)
    }

    /// All migrations, by id.
    pub fn iter(&self) -> impl Iterator<Item = &PeMigration> {
        self.migrations.values()
    }

    /// Ids of migrations whose tunnel counters the runtime should sample.
    pub fn counter_watch(&self) -> impl Iterator<Item = &MigrationId> {
        self.migrations
            .values()
            .filter(|m| m.wants_counters())
            .map(PeMigration::id)
    }

    /// Live migrations.
    pub fn live(&self) -> impl Iterator<Item = &PeMigration> {
        self.migrations.values().filter(|m| m.phase().is_live())
    }

    /// The union of all machines' targets.
    pub fn desired_state(&self) -> DesiredState {
        DesiredState::from_migrations(self.migrations.values())
    }

    /// Migrations in `phase`.
    pub fn in_phase(&self, phase: Phase) -> impl Iterator<Item = &PeMigration> {
        self.migrations.values().filter(move |m| m.phase() == phase)
    }
}
