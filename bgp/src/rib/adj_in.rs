//! One peer's Adj-RIB-In, with graceful-restart staleness (RFC 4724 section 4.2).
//!
//! Routes are keyed by NLRI (prefix and, with add-path, path identifier). A full
//! table is about a million prefixes but only about a hundred thousand distinct
//! attribute sets, so the layout is chosen for that:
//! - each family has its own map with a packed key (12 bytes for IPv4, 24 for IPv6)
//!   and a 4-byte slot holding the stale flag and the number of the route's attribute
//!   set;
//! - attribute sets are interned in wire form: one copy of the bytes per distinct
//!   set, counted by the routes that use it and dropped with the last of them, parsed
//!   again only when the table is read (the events carry the parsed UPDATE);
//! - an UPDATE is consumed, not copied: its attributes become the shared set (or join
//!   an equal one) and its NLRI lists move into the change events.
//!
//! With `keep = false` only the keys are stored: enough to count for max-prefix and
//! to know what to withdraw when a restarting peer's stale routes are swept, without
//! the memory for attributes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use foldhash::fast::RandomState;
use serde::Serialize;

use crate::codec::{decode_stored, encode_stored, Attribute, Family, Nlri, Prefix, Update};

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

/// Slot bit: the route is stale.
const STALE: u32 = 1 << 31;
/// Slot value (without [`STALE`]): no attributes stored.
const NO_SET: u32 = STALE - 1;

/// A map key packed from an NLRI of one family.
trait PackedKey: Copy + Eq + Hash {
    fn pack(n: &Nlri) -> Self;
    fn unpack(self) -> Nlri;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key4 {
    addr: u32,
    path_id: u32,
    len: u8,
    has_path_id: bool,
}

impl PackedKey for Key4 {
    fn pack(n: &Nlri) -> Key4 {
        let addr = match n.prefix.addr() {
            IpAddr::V4(a) => a.to_bits(),
            IpAddr::V6(_) => unreachable!("IPv6 NLRI in the IPv4 table"),
        };
        Key4 {
            addr,
            path_id: n.path_id.unwrap_or(0),
            len: n.prefix.prefix_len(),
            has_path_id: n.path_id.is_some(),
        }
    }

    fn unpack(self) -> Nlri {
        let addr = IpAddr::V4(Ipv4Addr::from_bits(self.addr));
        Nlri {
            path_id: self.has_path_id.then_some(self.path_id),
            prefix: Prefix::new(addr, self.len).expect("length checked when packed"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key6 {
    addr: [u8; 16],
    path_id: u32,
    len: u8,
    has_path_id: bool,
}

impl PackedKey for Key6 {
    fn pack(n: &Nlri) -> Key6 {
        let addr = match n.prefix.addr() {
            IpAddr::V6(a) => a.octets(),
            IpAddr::V4(_) => unreachable!("IPv4 NLRI in the IPv6 table"),
        };
        Key6 {
            addr,
            path_id: n.path_id.unwrap_or(0),
            len: n.prefix.prefix_len(),
            has_path_id: n.path_id.is_some(),
        }
    }

    fn unpack(self) -> Nlri {
        let addr = IpAddr::V6(Ipv6Addr::from(self.addr));
        Nlri {
            path_id: self.has_path_id.then_some(self.path_id),
            prefix: Prefix::new(addr, self.len).expect("length checked when packed"),
        }
    }
}

/// One family's routes: packed key to slot.
#[derive(Debug, Clone)]
struct Table<K: PackedKey> {
    map: HashMap<K, u32, RandomState>,
}

impl<K: PackedKey> Default for Table<K> {
    fn default() -> Self {
        Table {
            map: HashMap::default(),
        }
    }
}

impl<K: PackedKey> Table<K> {
    fn insert(&mut self, n: &Nlri, slot: u32) -> Option<u32> {
        self.map.insert(K::pack(n), slot)
    }

    fn remove(&mut self, n: &Nlri) -> Option<u32> {
        self.map.remove(&K::pack(n))
    }

    /// Sets the stale bit everywhere; returns how many were not stale before.
    fn mark_stale(&mut self) -> usize {
        let mut fresh = 0;
        for slot in self.map.values_mut() {
            fresh += usize::from(*slot & STALE == 0);
            *slot |= STALE;
        }
        fresh
    }

    /// Removes the stale routes, returning them with their slots.
    fn take_stale(&mut self) -> Vec<(Nlri, u32)> {
        let mut gone = Vec::new();
        self.map.retain(|k, slot| {
            let stale = *slot & STALE != 0;
            if stale {
                gone.push((k.unpack(), *slot));
            }
            !stale
        });
        gone
    }

    fn iter(&self) -> impl Iterator<Item = (Nlri, u32)> + '_ {
        self.map.iter().map(|(k, s)| (k.unpack(), *s))
    }
}

/// How an attribute set is kept.
#[derive(Debug, Clone)]
enum SetForm {
    /// Wire form, interned: about 50 bytes for a typical set, against several hundred
    /// parsed. Parsed again only when the routes are read.
    Wire(Arc<[u8]>),
    /// The rare set that does not survive the round trip (see
    /// [`crate::codec::encode_stored`]); not interned.
    Parsed(Arc<Vec<Attribute>>),
}

/// An attribute set and the number of routes that use it.
#[derive(Debug, Clone)]
struct SharedSet {
    form: SetForm,
    routes: u32,
}

/// The distinct attribute sets of one peer's routes, numbered.
#[derive(Debug, Clone, Default)]
struct AttrSets {
    index: HashMap<Arc<[u8]>, u32, RandomState>,
    sets: Vec<Option<SharedSet>>,
    free: Vec<u32>,
    /// Encoding buffer, reused.
    scratch: Vec<u8>,
}

impl AttrSets {
    /// The number of the set equal to `attrs`, adding it (with no routes yet) if new.
    fn intern(&mut self, attrs: &Arc<Vec<Attribute>>) -> u32 {
        self.scratch.clear();
        if !encode_stored(attrs, &mut self.scratch) {
            return self.add(SetForm::Parsed(attrs.clone()));
        }
        if let Some(&id) = self.index.get(&self.scratch[..]) {
            return id;
        }
        let wire: Arc<[u8]> = Arc::from(&self.scratch[..]);
        let id = self.add(SetForm::Wire(wire.clone()));
        self.index.insert(wire, id);
        id
    }

    fn add(&mut self, form: SetForm) -> u32 {
        let shared = SharedSet { form, routes: 0 };
        match self.free.pop() {
            Some(id) => {
                self.sets[id as usize] = Some(shared);
                id
            }
            None => {
                let id = u32::try_from(self.sets.len())
                    .ok()
                    .filter(|&id| id < NO_SET)
                    .expect("fewer than 2^31 attribute sets");
                self.sets.push(Some(shared));
                id
            }
        }
    }

    fn add_routes(&mut self, id: u32, n: u32) {
        if let Some(s) = self.sets[id as usize].as_mut() {
            s.routes += n;
        }
    }

    /// One route no longer uses set `id` (the slot's bits; `NO_SET` is ignored).
    fn release(&mut self, slot: u32) {
        let id = slot & !STALE;
        if id == NO_SET {
            return;
        }
        let entry = &mut self.sets[id as usize];
        let Some(s) = entry.as_mut() else { return };
        s.routes -= 1;
        if s.routes == 0 {
            if let Some(SharedSet {
                form: SetForm::Wire(w),
                ..
            }) = entry.take()
            {
                self.index.remove(&w[..]);
            }
            self.free.push(id);
        }
    }

    /// A slot's attributes, parsed (through `cache`, so that each set is parsed once
    /// per read of the table).
    fn attrs_of(
        &self,
        slot: u32,
        cache: &mut HashMap<u32, Arc<Vec<Attribute>>, RandomState>,
    ) -> Option<Arc<Vec<Attribute>>> {
        let id = slot & !STALE;
        if id == NO_SET {
            return None;
        }
        let set = self.sets[id as usize].as_ref()?;
        Some(match &set.form {
            SetForm::Parsed(a) => a.clone(),
            SetForm::Wire(w) => cache
                .entry(id)
                .or_insert_with(|| Arc::new(decode_stored(w)))
                .clone(),
        })
    }

    fn clear(&mut self) {
        *self = AttrSets::default();
    }

    fn len(&self) -> usize {
        self.sets.iter().filter(|s| s.is_some()).count()
    }
}

/// Routes received from one peer.
#[derive(Debug, Clone)]
pub struct AdjRibIn {
    keep: bool,
    v4: Table<Key4>,
    v6: Table<Key6>,
    sets: AttrSets,
    /// Entries with the stale bit set, kept so that status reads are O(1).
    stale: usize,
}

impl AdjRibIn {
    pub fn new(keep: bool) -> AdjRibIn {
        AdjRibIn {
            keep,
            v4: Table::default(),
            v6: Table::default(),
            sets: AttrSets::default(),
            stale: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.v4.map.len() + self.v6.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of routes still marked stale.
    pub fn stale_count(&self) -> usize {
        self.stale
    }

    /// Number of distinct attribute sets stored (0 when attributes are not kept).
    pub fn attribute_sets(&self) -> usize {
        self.sets.len()
    }

    fn insert(&mut self, n: &Nlri, slot: u32) -> Option<u32> {
        match n.prefix.family() {
            Family::Ipv4Unicast => self.v4.insert(n, slot),
            Family::Ipv6Unicast => self.v6.insert(n, slot),
        }
    }

    fn remove(&mut self, n: &Nlri) -> Option<u32> {
        match n.prefix.family() {
            Family::Ipv4Unicast => self.v4.remove(n),
            Family::Ipv6Unicast => self.v6.remove(n),
        }
    }

    /// Forgets a slot that left the table.
    fn dropped(&mut self, slot: u32) {
        self.stale -= usize::from(slot & STALE != 0);
        self.sets.release(slot);
    }

    /// Applies a (treated) UPDATE; returns what changed, announcements grouped as
    /// they came (one attribute set per UPDATE and family). Prefer
    /// [`AdjRibIn::apply_owned`], which does not copy the UPDATE.
    pub fn apply(&mut self, u: &Update) -> Vec<RibChange> {
        self.apply_owned(u.clone())
    }

    /// Applies a (treated) UPDATE, consuming it: its attributes become the stored
    /// (shared) set and its NLRI lists move into the returned changes.
    pub fn apply_owned(&mut self, u: Update) -> Vec<RibChange> {
        let Update {
            mut withdrawn,
            attributes: mut attrs,
            nlri,
        } = u;
        // Attributes shared by every NLRI of this UPDATE, without the MP attributes'
        // NLRI lists (the MP_REACH next hop stays: IPv6 routes need it).
        let mut mp_nlri = Vec::new();
        attrs.retain_mut(|a| match a {
            Attribute::MpUnreach(m) => {
                withdrawn.append(&mut m.withdrawn);
                false
            }
            Attribute::MpReach(m) => {
                mp_nlri = std::mem::take(&mut m.nlri);
                true
            }
            _ => true,
        });
        let mut changes = Vec::new();
        withdrawn.retain(|n| match self.remove(n) {
            Some(slot) => {
                self.dropped(slot);
                true
            }
            None => false,
        });
        if !withdrawn.is_empty() {
            changes.push(RibChange::Withdrawn { nlri: withdrawn });
        }
        if nlri.is_empty() && mp_nlri.is_empty() {
            return changes;
        }
        let attrs = Arc::new(attrs);
        let set = if self.keep {
            self.sets.intern(&attrs)
        } else {
            NO_SET
        };
        for list in [nlri, mp_nlri] {
            if list.is_empty() {
                continue;
            }
            if set != NO_SET {
                self.sets
                    .add_routes(set, u32::try_from(list.len()).unwrap_or(u32::MAX));
            }
            for n in &list {
                if let Some(old) = self.insert(n, set) {
                    self.dropped(old);
                }
            }
            changes.push(RibChange::Announced {
                nlri: list,
                attributes: attrs.clone(),
            });
        }
        changes
    }

    /// Marks every route of `families` stale: the peer went away but asked us to keep
    /// forwarding (RFC 4724 section 4.2). Returns how many.
    pub fn mark_stale(&mut self, families: &[Family]) -> usize {
        let mut n = 0;
        if families.contains(&Family::Ipv4Unicast) {
            self.stale += self.v4.mark_stale();
            n += self.v4.map.len();
        }
        if families.contains(&Family::Ipv6Unicast) {
            self.stale += self.v6.mark_stale();
            n += self.v6.map.len();
        }
        n
    }

    /// Removes the routes still stale in `family` (all families with `None`): the peer
    /// sent End-of-RIB, or its restart time ran out.
    pub fn sweep_stale(&mut self, family: Option<Family>) -> Vec<Nlri> {
        let mut gone = Vec::new();
        if family.is_none_or(|f| f == Family::Ipv4Unicast) {
            gone.extend(self.v4.take_stale());
        }
        if family.is_none_or(|f| f == Family::Ipv6Unicast) {
            gone.extend(self.v6.take_stale());
        }
        gone.into_iter()
            .map(|(n, slot)| {
                self.dropped(slot);
                n
            })
            .collect()
    }

    /// Removes every route of `family` (the family was disabled on the session).
    pub fn remove_family(&mut self, family: Family) -> Vec<Nlri> {
        let slots: Vec<(Nlri, u32)> = match family {
            Family::Ipv4Unicast => self.v4.map.drain().map(|(k, s)| (k.unpack(), s)).collect(),
            Family::Ipv6Unicast => self.v6.map.drain().map(|(k, s)| (k.unpack(), s)).collect(),
        };
        slots
            .into_iter()
            .map(|(n, slot)| {
                self.dropped(slot);
                n
            })
            .collect()
    }

    /// Removes everything (session down without graceful restart).
    pub fn clear(&mut self) -> Vec<Nlri> {
        self.stale = 0;
        self.sets.clear();
        let mut all: Vec<Nlri> = self.v4.map.drain().map(|(k, _)| k.unpack()).collect();
        all.extend(self.v6.map.drain().map(|(k, _)| k.unpack()));
        all
    }

    /// The stored routes (attributes absent when not kept), sorted.
    pub fn routes(&self) -> Vec<StoredRoute> {
        let mut parsed = HashMap::default();
        let mut v: Vec<StoredRoute> = self
            .v4
            .iter()
            .chain(self.v6.iter())
            .map(|(n, slot)| (n, self.sets.attrs_of(slot, &mut parsed), slot & STALE != 0))
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
    fn attribute_sets_are_shared_read_back_equal_and_dropped_with_their_routes() {
        use crate::codec::{AsSegment, Community, LargeCommunity};
        let mut rich = v4_update(&["10.0.0.0/24", "10.0.1.0/24"]);
        rich.attributes.insert(
            1,
            Attribute::AsPath(vec![AsSegment::Sequence(vec![65001, 4_200_000_001])]),
        );
        rich.attributes.push(Attribute::MultiExitDisc(7));
        rich.attributes
            .push(Attribute::Communities(vec![Community(0xfde9_0001)]));
        rich.attributes
            .push(Attribute::LargeCommunities(vec![LargeCommunity {
                global: 65001,
                local1: 1,
                local2: 2,
            }]));
        let mut rib = AdjRibIn::new(true);
        rib.apply(&rich);
        // The same set again, in another UPDATE: still one set.
        let mut again = rich.clone();
        again.nlri = vec![n("10.0.2.0/24")];
        rib.apply(&again);
        assert_eq!(rib.attribute_sets(), 1);
        for (_, attrs, _) in rib.routes() {
            assert_eq!(attrs.as_deref(), Some(&rich.attributes));
        }
        // AS4_PATH (a 2-octet session's) is kept parsed, and reads back equal too.
        let mut as4 = v4_update(&["10.0.9.0/24"]);
        as4.attributes
            .push(Attribute::As4Path(vec![AsSegment::Sequence(vec![
                4_200_000_001,
            ])]));
        rib.apply(&as4);
        assert_eq!(rib.attribute_sets(), 2);
        let stored = rib.routes();
        let (_, attrs, _) = stored.iter().find(|r| r.0 == n("10.0.9.0/24")).unwrap();
        assert_eq!(attrs.as_deref(), Some(&as4.attributes));
        // Replacing and withdrawing the routes releases their sets.
        rib.apply(&v4_update(&["10.0.0.0/24", "10.0.1.0/24"]));
        let w = Update {
            withdrawn: vec![n("10.0.2.0/24"), n("10.0.9.0/24")],
            ..Update::default()
        };
        rib.apply(&w);
        assert_eq!(rib.attribute_sets(), 1);
        assert_eq!(rib.len(), 2);
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
