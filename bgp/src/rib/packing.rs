//! Turning a set of route changes into as few UPDATEs as the session allows.
//!
//! Announcements that share attributes are packed together by the codec's
//! [`pack_announcements`] (4096 bytes, or 65535 with extended message); withdrawals
//! are packed here, in the Withdrawn Routes field for IPv4 and MP_UNREACH_NLRI for
//! IPv6. Withdrawals go first so that a prefix moved between attribute sets is never
//! briefly withdrawn after its new announcement.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::{
    pack_announcements, Attribute, EncodeError, Family, MpUnreach, Nlri, Prefix, SessionContext,
    Update, HEADER_LEN,
};

/// Changes for one peer, already through export policy.
#[derive(Debug, Default, Clone)]
pub struct Outgoing {
    pub announce: Vec<(Prefix, Arc<Vec<Attribute>>)>,
    pub withdraw: Vec<Prefix>,
}

impl Outgoing {
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

fn wire_len(p: &Prefix, add_path: bool) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8) + if add_path { 4 } else { 0 }
}

fn nlri(p: Prefix, add_path: bool) -> Nlri {
    Nlri {
        path_id: add_path.then_some(0),
        prefix: p,
    }
}

/// Packs `out` into UPDATEs for a session.
pub fn pack(out: &Outgoing, ctx: &SessionContext) -> Result<Vec<Update>, EncodeError> {
    let mut updates = Vec::new();
    for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
        let add_path = ctx.add_path_tx(family);
        // Withdrawn Routes Length + Total Path Attribute Length, plus for IPv6 the
        // MP_UNREACH_NLRI header (flags, type, 2-byte length, AFI, SAFI).
        let fixed = HEADER_LEN
            + 4
            + match family {
                Family::Ipv4Unicast => 0,
                Family::Ipv6Unicast => 7,
            };
        let mut batch: Vec<Nlri> = Vec::new();
        let mut size = fixed;
        let flush = |batch: &mut Vec<Nlri>, updates: &mut Vec<Update>| {
            let w = std::mem::take(batch);
            updates.push(match family {
                Family::Ipv4Unicast => Update {
                    withdrawn: w,
                    ..Update::default()
                },
                Family::Ipv6Unicast => Update {
                    attributes: vec![Attribute::MpUnreach(MpUnreach {
                        family,
                        withdrawn: w,
                    })],
                    ..Update::default()
                },
            });
        };
        for p in out.withdraw.iter().filter(|p| p.family() == family) {
            let len = wire_len(p, add_path);
            if size + len > ctx.max_message_len() {
                flush(&mut batch, &mut updates);
                size = fixed;
            }
            size += len;
            batch.push(nlri(*p, add_path));
        }
        if !batch.is_empty() {
            flush(&mut batch, &mut updates);
        }
    }
    let mut groups: HashMap<&Vec<Attribute>, (Family, Vec<Nlri>)> = HashMap::new();
    let mut order: Vec<&Vec<Attribute>> = Vec::new();
    for (p, attrs) in &out.announce {
        let family = p.family();
        let add_path = ctx.add_path_tx(family);
        let e = groups.entry(attrs.as_ref()).or_insert_with(|| {
            order.push(attrs.as_ref());
            (family, Vec::new())
        });
        e.1.push(nlri(*p, add_path));
    }
    for attrs in order {
        let (family, nlri) = &groups[attrs];
        updates.extend(pack_announcements(attrs, *family, nlri, ctx)?);
    }
    Ok(updates)
}

/// The End-of-RIB marker of a family (RFC 4724 section 2).
pub fn end_of_rib(family: Family) -> Update {
    match family {
        Family::Ipv4Unicast => Update::default(),
        Family::Ipv6Unicast => Update {
            attributes: vec![Attribute::MpUnreach(MpUnreach {
                family,
                withdrawn: vec![],
            })],
            ..Update::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode, Message, Origin};

    fn attrs(lp: u32) -> Arc<Vec<Attribute>> {
        Arc::new(vec![
            Attribute::Origin(Origin::Igp),
            Attribute::AsPath(vec![]),
            Attribute::NextHop("192.0.2.1".parse().unwrap()),
            Attribute::LocalPref(lp),
        ])
    }

    fn v4(i: u32) -> Prefix {
        Prefix::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), 24).unwrap()
    }

    #[test]
    fn shared_attributes_fill_messages_to_the_limit() {
        let a = attrs(100);
        let out = Outgoing {
            announce: (0..2000).map(|i| (v4(i), a.clone())).collect(),
            withdraw: vec![],
        };
        let ctx = SessionContext::default();
        let ups = pack(&out, &ctx).unwrap();
        // 2000 × 4 bytes of NLRI and ~30 bytes of overhead: 2 messages of <= 4096.
        assert_eq!(ups.len(), 2);
        for u in &ups {
            let len = encode(&Message::Update(u.clone()), &ctx).unwrap().len();
            assert!(len <= 4096, "{len}");
        }
        let total: usize = ups.iter().map(|u| u.nlri.len()).sum();
        assert_eq!(total, 2000);
        let ext = SessionContext {
            extended_message: true,
            ..ctx
        };
        assert_eq!(pack(&out, &ext).unwrap().len(), 1);
    }

    #[test]
    fn different_attributes_go_in_different_updates_withdrawals_first() {
        let out = Outgoing {
            announce: vec![
                (v4(1), attrs(100)),
                (v4(2), attrs(200)),
                (v4(3), attrs(100)),
            ],
            withdraw: vec![v4(4), "2001:db8::/32".parse().unwrap()],
        };
        let ups = pack(&out, &SessionContext::default()).unwrap();
        assert_eq!(ups.len(), 4);
        assert_eq!(ups[0].withdrawn.len(), 1);
        assert!(matches!(&ups[1].attributes[0], Attribute::MpUnreach(m) if m.withdrawn.len() == 1));
        assert_eq!(ups[2].nlri.len(), 2);
        assert_eq!(ups[3].nlri.len(), 1);
    }

    #[test]
    fn many_withdrawals_split_under_the_limit() {
        let out = Outgoing {
            announce: vec![],
            withdraw: (0..3000).map(v4).collect(),
        };
        let ctx = SessionContext::default();
        let ups = pack(&out, &ctx).unwrap();
        assert_eq!(ups.len(), 3);
        for u in &ups {
            assert!(encode(&Message::Update(u.clone()), &ctx).unwrap().len() <= 4096);
        }
    }

    #[test]
    fn end_of_rib_markers_decode_as_such() {
        assert_eq!(
            end_of_rib(Family::Ipv4Unicast).end_of_rib(),
            Some(Family::Ipv4Unicast)
        );
        assert_eq!(
            end_of_rib(Family::Ipv6Unicast).end_of_rib(),
            Some(Family::Ipv6Unicast)
        );
    }
}
