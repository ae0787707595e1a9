//! One peer's Adj-RIB-In, with graceful-restart staleness (RFC 4724 section 4.2).
//!
//! Routes are keyed by NLRI (prefix and, with add-path, path identifier). With
//! `keep = false` only the keys are stored: enough to count for max-prefix and to know
//! what to withdraw when a restarting peer's stale routes are swept, without the
//! memory for attributes.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::codec::{Attribute, Family, Nlri, Update};

/// A change to the Adj-RIB-In, for events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RibChange {
    Announced {
        nlri: Vec<Nlri>,
        attributes: Arc<Vec<Attribute>>,
    },
    Withdrawn {
        nlri: Vec<Nlri>,
    },
}

/// A stored route: its NLRI, attributes (when kept) and whether it is stale.
pub type StoredRoute = (Nlri, Option<Arc<Vec<Attribute>>>, bool);

#[derive(Debug, Clone)]
struct Entry {
    attrs: Option<Arc<Vec<Attribute>>>,
    stale: bool,
}

/// Routes received from one peer.
#[derive(Debug, Clone)]
pub struct AdjRibIn {
    keep: bool,
    routes: HashMap<Nlri, Entry>,
    /// Entries with `stale` set, kept so that status reads are O(1).
    stale: usize,
}

impl AdjRibIn {
    pub fn new(keep: bool) -> AdjRibIn {
        AdjRibIn {
            keep,
            routes: HashMap::new(),
            stale: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Number of routes still marked stale.
    pub fn stale_count(&self) -> usize {
        self.stale
    }

    /// Applies a (treated) UPDATE; returns what changed, announcements grouped as
    /// they came (one attribute set per UPDATE and family).
    pub fn apply(&mut self, u: &Update) -> Vec<RibChange> {
        let mut changes = Vec::new();
        let mut withdrawn: Vec<Nlri> = u.withdrawn.clone();
        if let Some(m) = u.mp_unreach() {
            withdrawn.extend(m.withdrawn.iter().copied());
        }
        let withdrawn: Vec<Nlri> = withdrawn
            .into_iter()
            .filter(|n| match self.routes.remove(n) {
                Some(e) => {
                    self.stale -= usize::from(e.stale);
                    true
                }
                None => false,
            })
            .collect();
        if !withdrawn.is_empty() {
            changes.push(RibChange::Withdrawn { nlri: withdrawn });
        }
        let mp = u.mp_reach();
        if u.nlri.is_empty() && mp.is_none_or(|m| m.nlri.is_empty()) {
            return changes;
        }
        // Attributes shared by every NLRI of this UPDATE, without the MP attributes'
        // NLRI lists (the MP_REACH next hop stays: IPv6 routes need it).
        let attrs: Vec<Attribute> = u
            .attributes
            .iter()
            .filter_map(|a| match a {
                Attribute::MpUnreach(_) => None,
                Attribute::MpReach(m) => {
                    let mut m = m.clone();
                    m.nlri.clear();
                    Some(Attribute::MpReach(m))
                }
                other => Some(other.clone()),
            })
            .collect();
        let attrs = Arc::new(attrs);
        for list in [&u.nlri, &mp.map(|m| m.nlri.clone()).unwrap_or_default()] {
            if list.is_empty() {
                continue;
            }
            for n in list {
                let old = self.routes.insert(
                    *n,
                    Entry {
                        attrs: self.keep.then(|| attrs.clone()),
                        stale: false,
                    },
                );
                if old.is_some_and(|e| e.stale) {
                    self.stale -= 1;
                }
            }
            changes.push(RibChange::Announced {
                nlri: list.clone(),
                attributes: attrs.clone(),
            });
        }
        changes
    }

    /// Marks every route of `families` stale: the peer went away but asked us to keep
    /// forwarding (RFC 4724 section 4.2). Returns how many.
    pub fn mark_stale(&mut self, families: &[Family]) -> usize {
        let mut n = 0;
        for (k, e) in &mut self.routes {
            if families.contains(&k.prefix.family()) {
                if !e.stale {
                    self.stale += 1;
                }
                e.stale = true;
                n += 1;
            }
        }
        n
    }

    /// Removes the routes still stale in `family` (all families with `None`): the peer
    /// sent End-of-RIB, or its restart time ran out.
    pub fn sweep_stale(&mut self, family: Option<Family>) -> Vec<Nlri> {
        let gone: Vec<Nlri> = self
            .routes
            .iter()
            .filter(|(k, e)| e.stale && family.is_none_or(|f| k.prefix.family() == f))
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.routes.remove(k);
        }
        self.stale -= gone.len();
        gone
    }

    /// Removes everything (session down without graceful restart).
    pub fn clear(&mut self) -> Vec<Nlri> {
        self.stale = 0;
        self.routes.drain().map(|(k, _)| k).collect()
    }

    /// The stored routes (attributes absent when not kept), sorted.
    pub fn routes(&self) -> Vec<StoredRoute> {
        let mut v: Vec<_> = self
            .routes
            .iter()
            .map(|(k, e)| (*k, e.attrs.clone(), e.stale))
            .collect();
        v.sort_by_key(|r| r.0);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{MpNextHop, MpReach, MpUnreach, Origin};

    fn n(s: &str) -> Nlri {
        Nlri::new(s.parse().unwrap())
    }

    fn v4_update(prefixes: &[&str]) -> Update {
        Update {
            withdrawn: vec![],
            attributes: vec![
                Attribute::Origin(Origin::Igp),
                Attribute::NextHop("192.0.2.2".parse().unwrap()),
            ],
            nlri: prefixes.iter().map(|p| n(p)).collect(),
        }
    }

    #[test]
    fn announce_withdraw_and_mp() {
        let mut rib = AdjRibIn::new(true);
        let c = rib.apply(&v4_update(&["10.0.0.0/24", "10.0.1.0/24"]));
        assert!(matches!(&c[..], [RibChange::Announced { nlri, .. }] if nlri.len() == 2));
        let v6 = Update {
            attributes: vec![Attribute::MpReach(MpReach {
                family: Family::Ipv6Unicast,
                next_hop: MpNextHop {
                    global: "2001:db8::2".parse().unwrap(),
                    link_local: None,
                },
                nlri: vec![n("2001:db8:1::/48")],
            })],
            ..Update::default()
        };
        rib.apply(&v6);
        assert_eq!(rib.len(), 3);
        let stored = rib.routes();
        let (_, attrs, _) = stored.iter().find(|r| r.0 == n("2001:db8:1::/48")).unwrap();
        assert!(matches!(&attrs.as_ref().unwrap()[0], Attribute::MpReach(m) if m.nlri.is_empty()));
        let w = Update {
            withdrawn: vec![n("10.0.0.0/24"), n("10.9.9.0/24")],
            attributes: vec![Attribute::MpUnreach(MpUnreach {
                family: Family::Ipv6Unicast,
                withdrawn: vec![n("2001:db8:1::/48")],
            })],
            nlri: vec![],
        };
        let c = rib.apply(&w);
        // The unknown 10.9.9.0/24 is not reported as withdrawn.
        assert_eq!(
            c,
            vec![RibChange::Withdrawn {
                nlri: vec![n("10.0.0.0/24"), n("2001:db8:1::/48")]
            }]
        );
        assert_eq!(rib.len(), 1);
    }

    #[test]
    fn stale_routes_are_refreshed_or_swept() {
        let mut rib = AdjRibIn::new(false);
        rib.apply(&v4_update(&["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]));
        assert_eq!(rib.mark_stale(&[Family::Ipv4Unicast]), 3);
        // After the restart the peer re-announces one of them, then End-of-RIB.
        rib.apply(&v4_update(&["10.0.1.0/24"]));
        assert_eq!(rib.stale_count(), 2);
        let mut gone = rib.sweep_stale(Some(Family::Ipv4Unicast));
        gone.sort();
        assert_eq!(gone, vec![n("10.0.0.0/24"), n("10.0.2.0/24")]);
        assert_eq!(rib.len(), 1);
        assert!(rib.routes()[0].1.is_none(), "attributes not kept");
    }
}
