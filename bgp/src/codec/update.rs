//! UPDATE (RFC 4271 section 4.3) and the RFC 7606 treatment of a malformed one.

use serde::{Deserialize, Serialize};

use super::attribute::{decode_attributes, encode_nlri_list, Attribute, MpReach, MpUnreach};
use super::bytes::HexBytes;
use super::context::SessionContext;
use super::error::{AttrAction, EncodeError, UpdateError, UpdateErrorKind, UpdateField};
use super::iana::{attr_type as t, Afi, Family, Safi};
use super::prefix::{decode_nlri, Nlri, NlriError};
use super::reader::{Reader, Short};

/// An UPDATE. Attributes keep their order on the wire; MP_REACH_NLRI and
/// MP_UNREACH_NLRI are attributes like the others (see [`Update::mp_reach`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// IPv4 unicast withdrawals in the Withdrawn Routes field.
    #[serde(default)]
    pub withdrawn: Vec<Nlri>,
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    /// IPv4 unicast NLRI in the NLRI field.
    #[serde(default)]
    pub nlri: Vec<Nlri>,
}

/// The decoded UPDATE after RFC 7606 treatment, and what was found wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// What the session should act on. After treat-as-withdraw it holds only
    /// withdrawals (every NLRI moved to `withdrawn` or MP_UNREACH_NLRI); after
    /// AFI/SAFI-disable the disabled families' MP attributes are gone.
    pub update: Update,
    /// The harshest action among `errors`, or `None` for a clean UPDATE.
    pub treatment: Option<AttrAction>,
    /// Every error found, in wire order (none with [`AttrAction::SessionReset`]:
    /// those are returned as the decode error instead).
    pub errors: Vec<UpdateError>,
}

impl UpdateOutcome {
    /// Families to disable for the rest of the session (RFC 4760 section 7).
    pub fn disabled_families(&self) -> Vec<(Afi, Safi)> {
        let mut v: Vec<_> = self.errors.iter().filter_map(|e| e.afi_safi).collect();
        v.sort();
        v.dedup();
        v
    }
}

fn nlri_reset(field: UpdateField, (e, at): (NlriError, usize)) -> UpdateError {
    UpdateError {
        field,
        offset: at,
        kind: UpdateErrorKind::Nlri(e),
        action: AttrAction::SessionReset,
        afi_safi: None,
        data: HexBytes::default(),
    }
}

fn overrun(field: UpdateField, s: Short) -> UpdateError {
    UpdateError {
        field,
        offset: s.offset,
        kind: UpdateErrorKind::LengthOverrun {
            declared: s.needed,
            available: s.available,
        },
        action: AttrAction::SessionReset,
        afi_safi: None,
        data: HexBytes::default(),
    }
}

impl Update {
    /// The MP_REACH_NLRI attribute, if any.
    pub fn mp_reach(&self) -> Option<&MpReach> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::MpReach(m) => Some(m),
            _ => None,
        })
    }

    /// The MP_UNREACH_NLRI attribute, if any.
    pub fn mp_unreach(&self) -> Option<&MpUnreach> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::MpUnreach(m) => Some(m),
            _ => None,
        })
    }

    /// The attribute with a type code, if present.
    pub fn attribute(&self, type_code: u8) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.type_code() == type_code)
    }

    /// The End-of-RIB marker's family, if this UPDATE is one (RFC 4724 section 2):
    /// graceful restart needs it to know when a peer has resent everything. For a
    /// received UPDATE use [`super::Decoded::end_of_rib`], which knows whether
    /// treat-as-withdraw emptied it.
    pub fn end_of_rib(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::Ipv4Unicast),
            [Attribute::MpUnreach(m)] if m.withdrawn.is_empty() => Some(m.family),
            _ => None,
        }
    }

    /// Removes everything about `family`: its NLRI, withdrawals and MP attributes. For a
    /// family disabled on the session (RFC 4760 section 7), whose later UPDATEs are
    /// ignored.
    pub fn drop_family(&mut self, family: Family) {
        if family == Family::Ipv4Unicast {
            self.withdrawn.clear();
            self.nlri.clear();
        }
        self.attributes.retain(|a| match a {
            Attribute::MpReach(m) => m.family != family,
            Attribute::MpUnreach(m) => m.family != family,
            _ => true,
        });
    }

    /// Decodes the UPDATE body. `r` covers the body, with message offsets. A
    /// session-reset error is returned as `Err`; any other error is applied and
    /// listed in the outcome.
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        ctx: &SessionContext,
    ) -> Result<UpdateOutcome, UpdateError> {
        // RFC 4271 section 6.3 / RFC 7606 section 5.3: the lengths that delimit the
        // three fields, and the IPv4 NLRI in them, must be right or nothing can be
        // located: session reset.
        let wlen = r
            .u16()
            .map_err(|s| overrun(UpdateField::WithdrawnRoutesLength, s))?;
        let mut wr = r
            .sub(usize::from(wlen))
            .map_err(|s| overrun(UpdateField::WithdrawnRoutesLength, s))?;
        let v4_rx = ctx.add_path_rx(Family::Ipv4Unicast);
        let withdrawn = decode_nlri(&mut wr, Family::Ipv4Unicast, v4_rx)
            .map_err(|e| nlri_reset(UpdateField::WithdrawnRoutes, e))?;
        let alen = r
            .u16()
            .map_err(|s| overrun(UpdateField::TotalPathAttributeLength, s))?;
        let mut ar = r
            .sub(usize::from(alen))
            .map_err(|s| overrun(UpdateField::TotalPathAttributeLength, s))?;
        let nlri_at = r.offset();
        let nlri = decode_nlri(r, Family::Ipv4Unicast, v4_rx)
            .map_err(|e| nlri_reset(UpdateField::Nlri, e))?;
        let attrs = decode_attributes(&mut ar, ctx);
        let mut update = Update {
            withdrawn,
            attributes: attrs.attributes,
            nlri,
        };
        let mut errors = attrs.errors;

        // RFC 7606 section 3 (d): a missing well-known mandatory attribute is
        // treat-as-withdraw. They are only mandatory when there is something to
        // reach (RFC 4271 section 5), and NEXT_HOP only for the NLRI field (RFC 4760
        // section 3 makes it unnecessary for MP_REACH_NLRI).
        let reach = !update.nlri.is_empty() || attrs.seen[usize::from(t::MP_REACH_NLRI)];
        if reach {
            let needed: &[u8] = if update.nlri.is_empty() {
                &[t::ORIGIN, t::AS_PATH]
            } else {
                &[t::ORIGIN, t::AS_PATH, t::NEXT_HOP]
            };
            for &code in needed {
                if !attrs.seen[usize::from(code)] {
                    errors.push(UpdateError {
                        field: UpdateField::Attribute(code),
                        offset: nlri_at,
                        kind: UpdateErrorKind::MissingWellKnown { type_code: code },
                        action: AttrAction::TreatAsWithdraw,
                        afi_safi: None,
                        data: HexBytes(vec![code]),
                    });
                }
            }
        }

        // RFC 7606 section 3: the harshest approach wins.
        let treatment = errors.iter().map(|e| e.action).max();
        if let Some(reset) = errors.iter().find(|e| e.action == AttrAction::SessionReset) {
            return Err(reset.clone());
        }
        let disabled: Vec<(Afi, Safi)> = errors.iter().filter_map(|e| e.afi_safi).collect();
        if !disabled.is_empty() {
            // The disabled families' routes are all flushed by the session; nothing in
            // this UPDATE about them is to be used.
            update.attributes.retain(|a| match a {
                Attribute::MpReach(m) => !disabled.contains(&(m.family.afi(), m.family.safi())),
                Attribute::MpUnreach(m) => !disabled.contains(&(m.family.afi(), m.family.safi())),
                _ => true,
            });
        }
        // Treat-as-withdraw is applied to what remains even when another error
        // disabled a family: a bad ORIGIN must not let IPv4 NLRI through just because
        // IPv6 was disabled as well.
        if errors
            .iter()
            .any(|e| e.action == AttrAction::TreatAsWithdraw)
        {
            update.treat_as_withdraw();
        }
        Ok(UpdateOutcome {
            update,
            treatment,
            errors,
        })
    }

    /// Turns every NLRI into a withdrawal and drops the other attributes (RFC 7606
    /// section 2, "treat-as-withdraw").
    fn treat_as_withdraw(&mut self) {
        let nlri = std::mem::take(&mut self.nlri);
        self.withdrawn.extend(nlri);
        let mut unreach: Vec<MpUnreach> = Vec::new();
        for a in std::mem::take(&mut self.attributes) {
            let (family, prefixes) = match a {
                Attribute::MpReach(m) => (m.family, m.nlri),
                Attribute::MpUnreach(m) => (m.family, m.withdrawn),
                _ => continue,
            };
            // IPv4 withdrawals go in the Withdrawn Routes field, so that at most one
            // MP_UNREACH_NLRI (IPv6) remains and the result is a valid UPDATE.
            if family == Family::Ipv4Unicast {
                self.withdrawn.extend(prefixes);
                continue;
            }
            // An empty MP_UNREACH_NLRI would read as End-of-RIB.
            if prefixes.is_empty() {
                continue;
            }
            match unreach.iter_mut().find(|u| u.family == family) {
                Some(u) => u.withdrawn.extend(prefixes),
                None => unreach.push(MpUnreach {
                    family,
                    withdrawn: prefixes,
                }),
            }
        }
        self.attributes = unreach.into_iter().map(Attribute::MpUnreach).collect();
    }

    pub(crate) fn encode_body(
        &self,
        out: &mut Vec<u8>,
        ctx: &SessionContext,
    ) -> Result<(), EncodeError> {
        let v4_tx = ctx.add_path_tx(Family::Ipv4Unicast);
        let wstart = out.len();
        out.extend_from_slice(&[0, 0]);
        encode_nlri_list(
            out,
            &self.withdrawn,
            Family::Ipv4Unicast,
            v4_tx,
            "Withdrawn Routes",
        )?;
        patch_len(out, wstart, "Withdrawn Routes")?;
        let astart = out.len();
        out.extend_from_slice(&[0, 0]);
        for a in &self.attributes {
            a.encode(out, ctx)?;
        }
        patch_len(out, astart, "Path Attributes")?;
        encode_nlri_list(out, &self.nlri, Family::Ipv4Unicast, v4_tx, "NLRI")
    }
}

/// Writes the 2-byte length of what follows `at + 2`.
fn patch_len(out: &mut [u8], at: usize, field: &'static str) -> Result<(), EncodeError> {
    let len = out.len() - at - 2;
    let l = u16::try_from(len).map_err(|_| EncodeError::ValueTooLong { field, length: len })?;
    out[at..at + 2].copy_from_slice(&l.to_be_bytes());
    Ok(())
}
