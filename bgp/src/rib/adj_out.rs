//! What we originate ([`Origins`], shared by all peers) and what each peer was last
//! sent ([`AdjRibOut`]).
//!
//! A peer's session computes its UPDATEs by comparing the two for the prefixes that
//! changed, so a burst of announce/withdraw for the same prefix while a slow peer is
//! still busy costs one UPDATE, not one per call, and memory stays bounded by the
//! table size (the backpressure rule: nothing queues per call).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::packing::Outgoing;
use crate::codec::{Attribute, Family, Prefix};
use crate::policy::{export, ExportContext, RouteAttrs};

/// The routes we originate, ordered so that a resend can walk them in slices.
pub type Origins = BTreeMap<Prefix, Arc<RouteAttrs>>;

/// One peer's Adj-RIB-Out: the attributes each prefix was announced with.
#[derive(Debug, Default, Clone)]
pub struct AdjRibOut {
    sent: HashMap<Prefix, Arc<Vec<Attribute>>>,
}

impl AdjRibOut {
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    pub fn get(&self, p: &Prefix) -> Option<&Arc<Vec<Attribute>>> {
        self.sent.get(p)
    }

    /// Forgets what was sent (session down): the next session starts from nothing.
    pub fn clear(&mut self) {
        self.sent.clear();
    }

    /// Forgets one family, so that a route refresh resends all of it.
    pub fn forget_family(&mut self, family: Family) {
        self.sent.retain(|p, _| p.family() != family);
    }

    /// The UPDATE content that brings the peer in line with `origins` for `prefixes`,
    /// recorded as sent. Families not in `families` are skipped.
    pub fn sync<'a>(
        &mut self,
        prefixes: impl IntoIterator<Item = &'a Prefix>,
        origins: &Origins,
        families: &[Family],
        cx: &ExportContext<'_>,
    ) -> Outgoing {
        let mut out = Outgoing::default();
        // Identical exports share one Arc, so that packing groups them cheaply.
        let mut interned: HashMap<Vec<Attribute>, Arc<Vec<Attribute>>> = HashMap::new();
        for p in prefixes {
            if !families.contains(&p.family()) {
                continue;
            }
            let want = origins.get(p).and_then(|r| export(p, r, cx));
            match (want, self.sent.get(p)) {
                (Some(w), Some(have)) if **have == w => {}
                (Some(w), _) => {
                    let a = interned
                        .entry(w)
                        .or_insert_with_key(|k| Arc::new(k.clone()))
                        .clone();
                    self.sent.insert(*p, a.clone());
                    out.announce.push((*p, a));
                }
                (None, Some(_)) => {
                    self.sent.remove(p);
                    out.withdraw.push(*p);
                }
                (None, None) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ExportPolicy;

    #[test]
    fn sync_sends_only_differences() {
        let pol = ExportPolicy::default();
        let cx = ExportContext {
            local_as: 65001,
            ibgp: true,
            local_addr: Some("192.0.2.1".parse().unwrap()),
            local_v6: None,
            policy: &pol,
        };
        let fams = [Family::Ipv4Unicast, Family::Ipv6Unicast];
        let a: Prefix = "10.0.0.1/32".parse().unwrap();
        let b: Prefix = "10.0.0.2/32".parse().unwrap();
        let mut origins = Origins::new();
        origins.insert(a, Arc::new(RouteAttrs::default()));
        origins.insert(b, Arc::new(RouteAttrs::default()));
        let mut out = AdjRibOut::default();
        let o = out.sync(&[a, b], &origins, &fams, &cx);
        assert_eq!(o.announce.len(), 2);
        assert!(Arc::ptr_eq(&o.announce[0].1, &o.announce[1].1));
        // Nothing changed: nothing to send.
        assert!(out.sync(&[a, b], &origins, &fams, &cx).is_empty());
        // Changed attributes: re-announce; removed: withdraw.
        origins.insert(
            a,
            Arc::new(RouteAttrs {
                med: Some(7),
                ..RouteAttrs::default()
            }),
        );
        origins.remove(&b);
        let o = out.sync(&[a, b], &origins, &fams, &cx);
        assert_eq!(o.announce.len(), 1);
        assert_eq!(o.withdraw, vec![b]);
        assert_eq!(out.len(), 1);
        // A family the session did not negotiate is never sent.
        let o = out.sync(&[a], &origins, &[Family::Ipv6Unicast], &cx);
        assert!(o.is_empty());
    }
}
