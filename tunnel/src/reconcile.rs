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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counters;
    use crate::ownership::{OwnedTunnel, TunnelIdentity};
    use crate::tunnel::Inside;
    use crate::vxlan::VxlanSpec;

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }

    fn spec(name: &str, vni: u32) -> TunnelSpec {
        TunnelSpec::vxlan(name, VxlanSpec::new(vni, ip("192.0.2.1"), ip("192.0.2.2")))
            .with_inside(Inside::new(ip("192.168.255.0"), 31).unwrap())
    }

    /// What the kernel shows for a tunnel created from `s`.
    fn observed(s: &TunnelSpec, ifindex: u32) -> OwnedTunnel {
        OwnedTunnel {
            name: s.name.clone(),
            ifindex,
            identity: TunnelIdentity::of_spec(s),
            up: true,
            mtu: Some(1450),
            addresses: s.inside.into_iter().collect(),
            counters: Counters::default(),
        }
    }

    fn route(prefix: &str, table: u32, via: &str, gw: Option<&str>) -> OwnedRoute {
        OwnedRoute {
            prefix: prefix.parse().unwrap(),
            table,
            oif: Some(7),
            via: Some(via.into()),
            gateway: gw.map(ip),
        }
    }

    fn ours(family: Family) -> OwnedRule {
        OwnedRule {
            family,
            priority: RULE_PRIORITY,
            table: TABLE,
        }
    }

    fn ovr(prefix: &str, via: &str, gw: Option<&str>) -> Override {
        Override {
            prefix: prefix.parse().unwrap(),
            via: via.into(),
            gateway: gw.map(ip),
        }
    }

    #[test]
    fn empty_on_both_sides_is_noop() {
        assert!(diff(&Desired::default(), &Owned::default()).is_noop());
    }

    #[test]
    fn matching_state_is_adopted_untouched() {
        let t = spec("mr-a", 10);
        let desired = Desired {
            tunnels: vec![t.clone()],
            overrides: vec![ovr("10.0.0.5/32", "mr-a", Some("192.168.255.1"))],
        };
        let obs = Owned {
            tunnels: vec![observed(&t, 7)],
            routes: vec![route("10.0.0.5/32", TABLE, "mr-a", Some("192.168.255.1"))],
            rules: vec![ours(Family::Ipv4)],
        };
        let plan = diff(&desired, &obs);
        assert!(plan.is_noop(), "{plan:?}");
        assert_eq!(plan.adopted_tunnels, vec!["mr-a".to_string()]);
    }

    #[test]
    fn missing_things_are_created() {
        let desired = Desired {
            tunnels: vec![spec("mr-a", 10)],
            overrides: vec![
                ovr("10.0.0.5/32", "mr-a", None),
                ovr("2001:db8::5/128", "mr-a", None),
            ],
        };
        let plan = diff(&desired, &Owned::default());
        assert_eq!(plan.create_tunnels, desired.tunnels);
        assert_eq!(plan.replace_overrides, desired.overrides);
        assert_eq!(plan.add_rules, vec![Family::Ipv4, Family::Ipv6]);
        assert!(plan.delete_tunnels.is_empty() && plan.delete_routes.is_empty());
    }

    #[test]
    fn leftovers_are_removed() {
        let obs = Owned {
            tunnels: vec![observed(&spec("mr-old", 3), 9)],
            routes: vec![route("10.0.0.9/32", TABLE, "mr-old", None)],
            rules: vec![ours(Family::Ipv4), ours(Family::Ipv6)],
        };
        let plan = diff(&Desired::default(), &obs);
        assert_eq!(plan.delete_tunnels, vec!["mr-old".to_string()]);
        assert_eq!(plan.delete_routes, obs.routes);
        assert_eq!(plan.delete_rules, obs.rules);
        assert!(plan.create_tunnels.is_empty() && plan.add_rules.is_empty());
    }

    #[test]
    fn changed_tunnel_is_recreated_and_its_overrides_reinstalled() {
        let old = spec("mr-a", 10);
        let new = spec("mr-a", 11);
        let desired = Desired {
            tunnels: vec![new.clone()],
            overrides: vec![ovr("10.0.0.5/32", "mr-a", None)],
        };
        let obs = Owned {
            tunnels: vec![observed(&old, 7)],
            routes: vec![route("10.0.0.5/32", TABLE, "mr-a", None)],
            rules: vec![ours(Family::Ipv4)],
        };
        let plan = diff(&desired, &obs);
        assert_eq!(plan.delete_tunnels, vec!["mr-a".to_string()]);
        assert_eq!(plan.create_tunnels, vec![new]);
        // The route dies with the old link, so it must be installed again.
        assert_eq!(plan.replace_overrides, desired.overrides);
        assert!(plan.delete_routes.is_empty());
    }

    #[test]
    fn different_inside_address_or_remote_is_a_change() {
        let t = spec("mr-a", 10);
        let mut obs = observed(&t, 7);
        obs.addresses = vec![Inside::new(ip("192.168.254.0"), 31).unwrap()];
        assert!(!obs.matches(&t));
        let mut obs = observed(&t, 7);
        if let TunnelIdentity::Vxlan { remotes, .. } = &mut obs.identity {
            remotes.push(ip("192.0.2.99"));
        }
        assert!(!obs.matches(&t));
        assert!(observed(&t, 7).matches(&t));
    }

    #[test]
    fn moved_override_is_replaced_and_foreign_table_route_removed() {
        let desired = Desired {
            tunnels: vec![spec("mr-a", 10), spec("mr-b", 20)],
            overrides: vec![ovr("10.0.0.5/32", "mr-b", None)],
        };
        let obs = Owned {
            tunnels: vec![
                observed(&spec("mr-a", 10), 7),
                observed(&spec("mr-b", 20), 8),
            ],
            routes: vec![
                route("10.0.0.5/32", TABLE, "mr-a", None),
                route("10.0.0.5/32", 254, "mr-a", None),
            ],
            rules: vec![ours(Family::Ipv4)],
        };
        let plan = diff(&desired, &obs);
        assert_eq!(plan.replace_overrides, desired.overrides);
        assert_eq!(plan.delete_routes, vec![obs.routes[1].clone()]);
    }

    #[test]
    fn stray_rule_priority_is_replaced() {
        let desired = Desired {
            tunnels: vec![spec("mr-a", 10)],
            overrides: vec![ovr("10.0.0.5/32", "mr-a", None)],
        };
        let stray = OwnedRule {
            family: Family::Ipv4,
            priority: 100,
            table: TABLE,
        };
        let obs = Owned {
            tunnels: vec![observed(&spec("mr-a", 10), 7)],
            routes: vec![route("10.0.0.5/32", TABLE, "mr-a", None)],
            rules: vec![stray.clone(), ours(Family::Ipv4), ours(Family::Ipv4)],
        };
        let plan = diff(&desired, &obs);
        // The stray and the duplicate go, the one good rule stays.
        assert_eq!(plan.delete_rules, vec![stray, ours(Family::Ipv4)]);
        assert!(plan.add_rules.is_empty());
    }
}
