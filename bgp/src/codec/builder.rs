//! Packing routes into as few UPDATEs as the session's message size allows.
//!
//! A speaker announcing a migrated VM's prefixes, or resending a table after a route
//! refresh, has one set of attributes and many prefixes. Splitting them by hand is
//! error-prone (the limit depends on extended message and add-path), so the packer
//! does it from the same encoding rules as [`super::encode`].

use super::attribute::{Attribute, MpReach};
use super::context::SessionContext;
use super::error::EncodeError;
use super::header::HEADER_LEN;
use super::iana::Family;
use super::prefix::{nlri_wire_len, Nlri};
use super::update::Update;

/// Splits `nlri` into UPDATEs that each carry `attributes` and fit the session.
///
/// IPv4 unicast NLRI go in the NLRI field; for IPv6 unicast, `attributes` must hold an
/// MP_REACH_NLRI (its NLRI list is ignored and refilled per UPDATE), placed first as
/// RFC 7606 section 5.1 asks.
pub fn pack_announcements(
    attributes: &[Attribute],
    family: Family,
    nlri: &[Nlri],
    ctx: &SessionContext,
) -> Result<Vec<Update>, EncodeError> {
    let add_path = ctx.add_path_tx(family);
    let mut attrs: Vec<Attribute> = attributes.to_vec();
    let mp_template: Option<MpReach> = match family {
        Family::Ipv4Unicast => None,
        Family::Ipv6Unicast => {
            let pos = attrs
                .iter()
                .position(|a| matches!(a, Attribute::MpReach(m) if m.family == family))
                .ok_or(EncodeError::Invalid {
                    field: "MP_REACH_NLRI",
                    reason: "IPv6 announcements need an MP_REACH_NLRI with the next hop",
                })?;
            let Attribute::MpReach(mut m) = attrs.remove(pos) else {
                unreachable!("position matched an MpReach")
            };
            m.nlri.clear();
            Some(m)
        }
    };
    // Size of everything but the NLRI, measured by encoding it.
    let mut probe = Vec::new();
    for a in &attrs {
        a.encode(&mut probe, ctx)?;
    }
    // MP_REACH header: flags, type, 2-byte length (extended, as soon as it grows),
    // AFI, SAFI, next-hop length, next hop, reserved.
    let mp_overhead = mp_template.as_ref().map_or(0, |m| {
        let mut v = Vec::new();
        let _ = Attribute::MpReach(m.clone()).encode(&mut v, ctx);
        v.len() + 1
    });
    let fixed = HEADER_LEN + 2 + 2 + probe.len() + mp_overhead;
    let max = ctx.max_message_len();
    let mut updates = Vec::new();
    let mut batch: Vec<Nlri> = Vec::new();
    let mut size = fixed;
    let flush = |batch: &mut Vec<Nlri>, updates: &mut Vec<Update>| {
        let nlri = std::mem::take(batch);
        let update = match &mp_template {
            None => Update {
                withdrawn: vec![],
                attributes: attrs.clone(),
                nlri,
            },
            Some(m) => {
                let mut a = vec![Attribute::MpReach(MpReach { nlri, ..m.clone() })];
                a.extend(attrs.iter().cloned());
                Update {
                    withdrawn: vec![],
                    attributes: a,
                    nlri: vec![],
                }
            }
        };
        updates.push(update);
    };
    for n in nlri {
        let len = nlri_wire_len(n, add_path);
        if size + len > max && !batch.is_empty() {
            flush(&mut batch, &mut updates);
            size = fixed;
        }
        if fixed + len > max {
            return Err(EncodeError::TooLong {
                length: fixed + len,
                max,
            });
        }
        size += len;
        batch.push(*n);
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut updates);
    }
    Ok(updates)
}
