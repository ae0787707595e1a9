//! Make the kernel match the journal after a restart.
//!
//! [`diff`] is a pure function from (desired, observed) to a [`Plan`]; [`apply`] runs
//! the plan. Adopt what already matches (no traffic blip on restart), recreate what
//! differs, remove what nobody asked for.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::handle::NetlinkHandle;
use crate::ids::{Prefix, RULE_PRIORITY, TABLE};
use crate::override_route::{self, Override};
use crate::ownership::{self, Owned, OwnedRoute, OwnedRule};
use crate::rule::{self, Family};
use crate::tunnel::{self, TunnelSpec};

/// What the journal says should exist in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    #[serde(default)]
    pub tunnels: Vec<TunnelSpec>,
    #[serde(default)]
    pub overrides: Vec<Override>,
}

/// The changes that turn observed into desired, in the order [`apply`] runs them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Rules that are not migroute's one rule per needed family.
    pub delete_rules: Vec<OwnedRule>,
    /// Routes nobody wants (or in a foreign table).
    pub delete_routes: Vec<OwnedRoute>,
    /// Links nobody wants, or that differ and will be recreated.
    pub delete_tunnels: Vec<String>,
    /// Links to create (missing, or recreated).
    pub create_tunnels: Vec<TunnelSpec>,
    /// Families whose rule is missing.
    pub add_rules: Vec<Family>,
    /// Overrides missing, different, or through a recreated tunnel.
    pub replace_overrides: Vec<Override>,
    /// Tunnels already right (adopted as they are).
    pub adopted_tunnels: Vec<String>,
}

impl Plan {
    /// `true` when the kernel already matches.
    pub fn is_noop(&self) -> bool {
        self.delete_rules.is_empty()
            && self.delete_routes.is_empty()
            && self.delete_tunnels.is_empty()
            && self.create_tunnels.is_empty()
            && self.add_rules.is_empty()
            && self.replace_overrides.is_empty()
    }
}

/// Computes the plan (pure).
pub fn diff(desired: &Desired, observed: &Owned) -> Plan {
    let mut plan = Plan::default();
    let wanted: HashMap<&str, &TunnelSpec> = desired
        .tunnels
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut present: BTreeSet<&str> = BTreeSet::new();
    let mut recreated: BTreeSet<&str> = BTreeSet::new();
    for t in &observed.tunnels {
        present.insert(t.name.as_str());
        match wanted.get(t.name.as_str()) {
            None => plan.delete_tunnels.push(t.name.clone()),
            Some(spec) if t.matches(spec) => plan.adopted_tunnels.push(t.name.clone()),
            Some(spec) => {
                plan.delete_tunnels.push(t.name.clone());
                plan.create_tunnels.push((*spec).clone());
                recreated.insert(t.name.as_str());
            }
        }
    }
    for t in &desired.tunnels {
        if !present.contains(t.name.as_str()) {
            plan.create_tunnels.push(t.clone());
            recreated.insert(t.name.as_str());
        }
    }

    let want_routes: HashMap<Prefix, &Override> =
        desired.overrides.iter().map(|o| (o.prefix, o)).collect();
    let mut have: HashMap<Prefix, &OwnedRoute> = HashMap::new();
    for r in &observed.routes {
        let keep = r.table == TABLE && want_routes.contains_key(&r.prefix);
        if keep && !have.contains_key(&r.prefix) {
            have.insert(r.prefix, r);
        } else {
            plan.delete_routes.push(r.clone());
        }
    }
    for o in &desired.overrides {
        let up_to_date = have.get(&o.prefix).is_some_and(|r| {
            r.via.as_deref() == Some(o.via.as_str())
                && r.gateway == o.gateway
                && !recreated.contains(o.via.as_str())
        });
        if !up_to_date {
            plan.replace_overrides.push(o.clone());
        }
    }

    let families: BTreeSet<Family> = desired
        .overrides
        .iter()
        .map(|o| Family::of(o.prefix.addr()))
        .collect();
    let mut rule_seen: BTreeSet<Family> = BTreeSet::new();
    for r in &observed.rules {
        let ours = r.priority == RULE_PRIORITY && r.table == TABLE;
        if ours && families.contains(&r.family) && rule_seen.insert(r.family) {
            continue;
        }
        plan.delete_rules.push(r.clone());
    }
    plan.add_rules = families.difference(&rule_seen).copied().collect();
    plan
}

/// Runs a plan: stop steering what must go, remove stale links, create links, then
/// steer again.
pub async fn apply(handle: &NetlinkHandle, plan: &Plan) -> Result<()> {
    for r in &plan.delete_rules {
        rule::remove_exact(handle, r.family, r.priority, r.table).await?;
    }
    override_route::remove_observed(handle, &plan.delete_routes).await?;
    for name in &plan.delete_tunnels {
        match tunnel::delete(handle, name).await {
            Ok(()) | Err(Error::LinkNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for t in &plan.create_tunnels {
        tunnel::create(handle, t).await?;
    }
    for f in &plan.add_rules {
        rule::ensure(handle, *f).await?;
    }
    override_route::replace_batch(handle, &plan.replace_overrides).await?;
    Ok(())
}

/// Lists what migroute owns, diffs it with `desired` and applies the plan; returns
/// the plan that was applied.
pub async fn reconcile(handle: &NetlinkHandle, desired: &Desired) -> Result<Plan> {
    let observed = ownership::list(handle).await?;
    let plan = diff(desired, &observed);
    apply(handle, &plan).await?;
    Ok(plan)
}
