//! Path attributes (RFC 4271 section 5 and the RFCs named per variant), one decoder
//! per attribute, and [`decode_attributes`], the single place where RFC 7606 decides
//! what each error costs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::bytes::HexBytes;
use super::community::{Community, ExtendedCommunity, LargeCommunity};
use super::context::SessionContext;
use super::error::{AttrAction, EncodeError, UpdateError, UpdateErrorKind, UpdateField};
use super::iana::{attr_flags as fl, attr_type as t, Afi, Family, Safi};
use super::prefix::{decode_nlri, encode_nlri, Nlri};
use super::reader::Reader;

/// ORIGIN (RFC 4271 section 5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

/// One AS_PATH/AS4_PATH segment (RFC 4271 section 4.3, RFC 5065 for confederations).
/// ASNs are always held as 4 octets; the session decides the wire width.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AsSegment {
    Set(Vec<u32>),
    Sequence(Vec<u32>),
    ConfedSequence(Vec<u32>),
    ConfedSet(Vec<u32>),
}

impl AsSegment {
    pub fn asns(&self) -> &[u32] {
        match self {
            AsSegment::Set(v)
            | AsSegment::Sequence(v)
            | AsSegment::ConfedSequence(v)
            | AsSegment::ConfedSet(v) => v,
        }
    }

    fn code(&self) -> u8 {
        match self {
            AsSegment::Set(_) => 1,
            AsSegment::Sequence(_) => 2,
            AsSegment::ConfedSequence(_) => 3,
            AsSegment::ConfedSet(_) => 4,
        }
    }
}

/// AGGREGATOR / AS4_AGGREGATOR (RFC 4271 section 5.1.7, RFC 6793).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// MP_REACH_NLRI next hop: an IPv4 address (4 bytes), an IPv6 address (16 bytes, also
/// allowed for IPv4 NLRI by RFC 8950), or IPv6 global plus link-local (32 bytes, RFC
/// 2545 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MpNextHop {
    pub global: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_local: Option<Ipv6Addr>,
}

/// MP_REACH_NLRI for IPv4 or IPv6 unicast (RFC 4760 section 3). Other families are
/// kept as [`Attribute::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MpReach {
    pub family: Family,
    pub next_hop: MpNextHop,
    pub nlri: Vec<Nlri>,
}

/// MP_UNREACH_NLRI for IPv4 or IPv6 unicast (RFC 4760 section 4). Empty `withdrawn`
/// is the End-of-RIB marker of a non-IPv4 family (RFC 4724 section 2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Vec<Nlri>,
}

/// An attribute the codec does not model, kept byte for byte. For an optional
/// transitive one the decoder sets the Partial bit, so that passing it on says we
/// did not understand it (RFC 4271 section 5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: HexBytes,
}

/// A path attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    Origin(Origin),
    AsPath(Vec<AsSegment>),
    NextHop(Ipv4Addr),
    MultiExitDisc(u32),
    LocalPref(u32),
    AtomicAggregate,
    Aggregator(Aggregator),
    /// RFC 1997.
    Communities(Vec<Community>),
    /// RFC 4456.
    OriginatorId(Ipv4Addr),
    /// RFC 4456.
    ClusterList(Vec<Ipv4Addr>),
    MpReach(MpReach),
    MpUnreach(MpUnreach),
    /// RFC 4360.
    ExtendedCommunities(Vec<ExtendedCommunity>),
    /// RFC 6793: only on sessions without 4-octet AS.
    As4Path(Vec<AsSegment>),
    /// RFC 6793: only on sessions without 4-octet AS.
    As4Aggregator(Aggregator),
    /// RFC 8092.
    LargeCommunities(Vec<LargeCommunity>),
    Unknown(RawAttribute),
}

/// Optional and Transitive bits each known attribute must carry (RFC 4271 section 5
/// and the defining RFCs). `None` for attributes the codec does not know.
fn expected_flags(type_code: u8) -> Option<u8> {
    const WELL_KNOWN: u8 = fl::TRANSITIVE;
    const OPT_NON_TRANS: u8 = fl::OPTIONAL;
    const OPT_TRANS: u8 = fl::OPTIONAL | fl::TRANSITIVE;
    Some(match type_code {
        t::ORIGIN | t::AS_PATH | t::NEXT_HOP | t::LOCAL_PREF | t::ATOMIC_AGGREGATE => WELL_KNOWN,
        t::MULTI_EXIT_DISC
        | t::ORIGINATOR_ID
        | t::CLUSTER_LIST
        | t::MP_REACH_NLRI
        | t::MP_UNREACH_NLRI => OPT_NON_TRANS,
        t::AGGREGATOR
        | t::COMMUNITIES
        | t::EXTENDED_COMMUNITIES
        | t::AS4_PATH
        | t::AS4_AGGREGATOR
        | t::LARGE_COMMUNITIES => OPT_TRANS,
        _ => return None,
    })
}

impl Attribute {
    /// The type code this attribute is sent with.
    pub fn type_code(&self) -> u8 {
        match self {
            Attribute::Origin(_) => t::ORIGIN,
            Attribute::AsPath(_) => t::AS_PATH,
            Attribute::NextHop(_) => t::NEXT_HOP,
            Attribute::MultiExitDisc(_) => t::MULTI_EXIT_DISC,
            Attribute::LocalPref(_) => t::LOCAL_PREF,
            Attribute::AtomicAggregate => t::ATOMIC_AGGREGATE,
            Attribute::Aggregator(_) => t::AGGREGATOR,
            Attribute::Communities(_) => t::COMMUNITIES,
            Attribute::OriginatorId(_) => t::ORIGINATOR_ID,
            Attribute::ClusterList(_) => t::CLUSTER_LIST,
            Attribute::MpReach(_) => t::MP_REACH_NLRI,
            Attribute::MpUnreach(_) => t::MP_UNREACH_NLRI,
            Attribute::ExtendedCommunities(_) => t::EXTENDED_COMMUNITIES,
            Attribute::As4Path(_) => t::AS4_PATH,
            Attribute::As4Aggregator(_) => t::AS4_AGGREGATOR,
            Attribute::LargeCommunities(_) => t::LARGE_COMMUNITIES,
            Attribute::Unknown(raw) => raw.type_code,
        }
    }

    /// Appends flags, type, length and value.
    pub(crate) fn encode(
        &self,
        out: &mut Vec<u8>,
        ctx: &SessionContext,
    ) -> Result<(), EncodeError> {
        let type_code = self.type_code();
        let flags = match self {
            Attribute::Unknown(raw) => raw.flags & !fl::EXTENDED_LENGTH,
            _ => expected_flags(type_code).unwrap_or(0),
        };
        let start = out.len();
        // Room for an extended length; shrunk below when the value is short.
        out.extend_from_slice(&[flags | fl::EXTENDED_LENGTH, type_code, 0, 0]);
        let vstart = out.len();
        self.encode_value(out, ctx)?;
        let len = out.len() - vstart;
        if len <= 255 {
            out[start] = flags;
            out[start + 2] = len as u8;
            out.remove(start + 3);
        } else {
            let len = u16::try_from(len).map_err(|_| EncodeError::ValueTooLong {
                field: t::name(type_code),
                length: len,
            })?;
            out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }

    fn encode_value(&self, out: &mut Vec<u8>, ctx: &SessionContext) -> Result<(), EncodeError> {
        let nonempty = |field: &'static str, empty: bool| {
            if empty {
                Err(EncodeError::Invalid {
                    field,
                    reason: "must not be empty",
                })
            } else {
                Ok(())
            }
        };
        match self {
            Attribute::Origin(o) => out.push(match o {
                Origin::Igp => 0,
                Origin::Egp => 1,
                Origin::Incomplete => 2,
            }),
            Attribute::AsPath(segs) => encode_as_path(out, segs, ctx.as4, "AS_PATH")?,
            Attribute::As4Path(segs) => encode_as_path(out, segs, true, "AS4_PATH")?,
            Attribute::NextHop(a) | Attribute::OriginatorId(a) => {
                out.extend_from_slice(&a.octets())
            }
            Attribute::MultiExitDisc(v) | Attribute::LocalPref(v) => {
                out.extend_from_slice(&v.to_be_bytes())
            }
            Attribute::AtomicAggregate => {}
            Attribute::Aggregator(a) => {
                if ctx.as4 {
                    out.extend_from_slice(&a.asn.to_be_bytes());
                } else {
                    let asn = u16::try_from(a.asn).map_err(|_| EncodeError::AsnTooWide {
                        field: "AGGREGATOR",
                        asn: a.asn,
                    })?;
                    out.extend_from_slice(&asn.to_be_bytes());
                }
                out.extend_from_slice(&a.address.octets());
            }
            Attribute::As4Aggregator(a) => {
                out.extend_from_slice(&a.asn.to_be_bytes());
                out.extend_from_slice(&a.address.octets());
            }
            Attribute::Communities(cs) => {
                nonempty("COMMUNITIES", cs.is_empty())?;
                cs.iter()
                    .for_each(|c| out.extend_from_slice(&c.0.to_be_bytes()));
            }
            Attribute::ClusterList(ids) => {
                nonempty("CLUSTER_LIST", ids.is_empty())?;
                ids.iter().for_each(|a| out.extend_from_slice(&a.octets()));
            }
            Attribute::ExtendedCommunities(cs) => {
                nonempty("EXTENDED_COMMUNITIES", cs.is_empty())?;
                cs.iter().for_each(|c| out.extend_from_slice(&c.0));
            }
            Attribute::LargeCommunities(cs) => {
                nonempty("LARGE_COMMUNITIES", cs.is_empty())?;
                for c in cs {
                    out.extend_from_slice(&c.global.to_be_bytes());
                    out.extend_from_slice(&c.local1.to_be_bytes());
                    out.extend_from_slice(&c.local2.to_be_bytes());
                }
            }
            Attribute::MpReach(mp) => {
                out.extend_from_slice(&u16::from(mp.family.afi()).to_be_bytes());
                out.push(u8::from(mp.family.safi()));
                match (mp.family, mp.next_hop.global, mp.next_hop.link_local) {
                    (Family::Ipv4Unicast, IpAddr::V4(a), None) => {
                        out.push(4);
                        out.extend_from_slice(&a.octets());
                    }
                    (_, IpAddr::V6(a), None) => {
                        out.push(16);
                        out.extend_from_slice(&a.octets());
                    }
                    (_, IpAddr::V6(a), Some(ll)) => {
                        out.push(32);
                        out.extend_from_slice(&a.octets());
                        out.extend_from_slice(&ll.octets());
                    }
                    _ => {
                        return Err(EncodeError::Invalid {
                            field: "MP_REACH_NLRI",
                            reason: "next hop must be IPv4 (IPv4 family only), IPv6, or IPv6 plus link-local",
                        })
                    }
                }
                out.push(0);
                encode_nlri_list(
                    out,
                    &mp.nlri,
                    mp.family,
                    ctx.add_path_tx(mp.family),
                    "MP_REACH_NLRI",
                )?;
            }
            Attribute::MpUnreach(mp) => {
                out.extend_from_slice(&u16::from(mp.family.afi()).to_be_bytes());
                out.push(u8::from(mp.family.safi()));
                encode_nlri_list(
                    out,
                    &mp.withdrawn,
                    mp.family,
                    ctx.add_path_tx(mp.family),
                    "MP_UNREACH_NLRI",
                )?;
            }
            Attribute::Unknown(raw) => out.extend_from_slice(&raw.value.0),
        }
        Ok(())
    }
}

fn encode_as_path(
    out: &mut Vec<u8>,
    segs: &[AsSegment],
    as4: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    for seg in segs {
        let asns = seg.asns();
        if asns.is_empty() {
            return Err(EncodeError::Invalid {
                field,
                reason: "empty AS path segment",
            });
        }
        let count = u8::try_from(asns.len()).map_err(|_| EncodeError::SegmentTooLong {
            field,
            count: asns.len(),
        })?;
        out.push(seg.code());
        out.push(count);
        for &asn in asns {
            if as4 {
                out.extend_from_slice(&asn.to_be_bytes());
            } else {
                let asn = u16::try_from(asn).map_err(|_| EncodeError::AsnTooWide { field, asn })?;
                out.extend_from_slice(&asn.to_be_bytes());
            }
        }
    }
    Ok(())
}

/// Appends NLRI after checking family and path identifiers.
pub(crate) fn encode_nlri_list(
    out: &mut Vec<u8>,
    nlri: &[Nlri],
    family: Family,
    add_path: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    for n in nlri {
        if n.prefix.family() != family {
            return Err(EncodeError::WrongFamily {
                field,
                prefix: n.prefix.to_string(),
                family: if family == Family::Ipv4Unicast {
                    "IPv4"
                } else {
                    "IPv6"
                },
            });
        }
        match (add_path, n.path_id) {
            (true, None) => {
                return Err(EncodeError::MissingPathId {
                    field,
                    prefix: n.prefix.to_string(),
                })
            }
            (false, Some(_)) => {
                return Err(EncodeError::UnexpectedPathId {
                    field,
                    prefix: n.prefix.to_string(),
                })
            }
            _ => encode_nlri(out, n, add_path),
        }
    }
    Ok(())
}

/// A failed attribute decoder: what is wrong and what RFC 7606 says to do about it.
pub(crate) struct AttrFail {
    kind: UpdateErrorKind,
    action: AttrAction,
    afi_safi: Option<(Afi, Safi)>,
}

fn fail(kind: UpdateErrorKind, action: AttrAction) -> AttrFail {
    AttrFail {
        kind,
        action,
        afi_safi: None,
    }
}

fn bad_length(len: usize, action: AttrAction) -> AttrFail {
    fail(UpdateErrorKind::AttributeLength { length: len }, action)
}

/// `count` fixed-size items, or the length error: the caller gives the action.
fn items<const N: usize>(
    v: &[u8],
    nonzero: bool,
    action: AttrAction,
) -> Result<impl Iterator<Item = [u8; N]> + '_, AttrFail> {
    if !v.chunks_exact(N).remainder().is_empty() || (nonzero && v.is_empty()) {
        return Err(bad_length(v.len(), action));
    }
    Ok(v.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    }))
}

fn exact<const N: usize>(v: &[u8], action: AttrAction) -> Result<[u8; N], AttrFail> {
    <[u8; N]>::try_from(v).map_err(|_| bad_length(v.len(), action))
}

/// RFC 7606 section 7.2 (AS_PATH) and RFC 6793 section 6 (AS4_PATH): segments must
/// have a defined type, a non-zero count, and fit the attribute.
fn decode_as_path(v: &[u8], width: usize) -> Result<Vec<AsSegment>, &'static str> {
    let mut r = Reader::new(v, 0);
    let mut segs = Vec::new();
    while !r.is_empty() {
        let (Ok(kind), Ok(count)) = (r.u8(), r.u8()) else {
            return Err("segment header truncated");
        };
        if count == 0 {
            return Err("zero-length segment");
        }
        let bytes = r
            .take(usize::from(count) * width)
            .map_err(|_| "segment overruns the attribute")?;
        let asns: Vec<u32> = if width == 4 {
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            bytes
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .collect()
        };
        segs.push(match kind {
            1 => AsSegment::Set(asns),
            2 => AsSegment::Sequence(asns),
            3 => AsSegment::ConfedSequence(asns),
            4 => AsSegment::ConfedSet(asns),
            _ => return Err("undefined segment type"),
        });
    }
    Ok(segs)
}

fn aggregator(v: &[u8], asn_width: usize) -> Result<Aggregator, AttrFail> {
    // RFC 7606 section 7.7: a wrong length costs only the attribute.
    if v.len() != asn_width + 4 {
        return Err(bad_length(v.len(), AttrAction::AttributeDiscard));
    }
    let asn = if asn_width == 4 {
        u32::from_be_bytes([v[0], v[1], v[2], v[3]])
    } else {
        u32::from(u16::from_be_bytes([v[0], v[1]]))
    };
    let a = &v[asn_width..];
    Ok(Aggregator {
        asn,
        address: Ipv4Addr::new(a[0], a[1], a[2], a[3]),
    })
}

/// MP_REACH_NLRI and MP_UNREACH_NLRI (RFC 4760; errors per RFC 7606 section 7.11).
/// Anything wrong after the AFI/SAFI costs the family; without even an AFI/SAFI the
/// session must go.
fn decode_mp(
    type_code: u8,
    v: &mut Reader<'_>,
    ctx: &SessionContext,
    raw: &RawView<'_>,
) -> Result<Attribute, AttrFail> {
    let (Ok(afi), Ok(safi)) = (v.u16(), v.u8()) else {
        return Err(bad_length(raw.value.len(), AttrAction::SessionReset));
    };
    let (afi, safi) = (Afi::from(afi), Safi::from(safi));
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        return Ok(Attribute::Unknown(raw.to_owned()));
    };
    let disable = |kind| AttrFail {
        kind,
        action: AttrAction::AfiSafiDisable,
        afi_safi: Some((afi, safi)),
    };
    let add_path = ctx.add_path_rx(family);
    if type_code == t::MP_UNREACH_NLRI {
        let withdrawn =
            decode_nlri(v, family, add_path).map_err(|(e, _)| disable(UpdateErrorKind::Nlri(e)))?;
        return Ok(Attribute::MpUnreach(MpUnreach { family, withdrawn }));
    }
    let nh_len = v.u8().map_err(|_| {
        disable(UpdateErrorKind::AttributeLength {
            length: raw.value.len(),
        })
    })?;
    let nh_len = usize::from(nh_len);
    let valid = match family {
        Family::Ipv4Unicast => matches!(nh_len, 4 | 16 | 32),
        Family::Ipv6Unicast => matches!(nh_len, 16 | 32),
    };
    if !valid {
        return Err(disable(UpdateErrorKind::MpNextHopLength {
            length: nh_len,
            afi,
            safi,
        }));
    }
    let (Ok(nh), Ok(_reserved)) = (v.take(nh_len), v.u8()) else {
        return Err(disable(UpdateErrorKind::AttributeLength {
            length: raw.value.len(),
        }));
    };
    let v6 = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or([0; 16]));
    let next_hop = match nh_len {
        4 => MpNextHop {
            global: IpAddr::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
            link_local: None,
        },
        16 => MpNextHop {
            global: IpAddr::V6(v6(nh)),
            link_local: None,
        },
        _ => MpNextHop {
            global: IpAddr::V6(v6(&nh[..16])),
            link_local: Some(v6(&nh[16..])),
        },
    };
    let nlri =
        decode_nlri(v, family, add_path).map_err(|(e, _)| disable(UpdateErrorKind::Nlri(e)))?;
    Ok(Attribute::MpReach(MpReach {
        family,
        next_hop,
        nlri,
    }))
}

/// Decodes one attribute value whose flags have been checked. The action in each
/// error arm is the one RFC 7606 section 7 gives for that attribute.
/// An attribute as it sits in the message; copied into a [`RawAttribute`] only when it
/// is kept unparsed, so known attributes cost no allocation of their bytes.
struct RawView<'a> {
    flags: u8,
    type_code: u8,
    value: &'a [u8],
}

impl RawView<'_> {
    fn to_owned(&self) -> RawAttribute {
        RawAttribute {
            flags: self.flags,
            type_code: self.type_code,
            value: HexBytes::from(self.value),
        }
    }
}

fn decode_value(
    type_code: u8,
    raw: &RawView<'_>,
    base: usize,
    ctx: &SessionContext,
) -> Result<Attribute, AttrFail> {
    use AttrAction::{AttributeDiscard, TreatAsWithdraw};
    let v = raw.value;
    let ip = |b: [u8; 4]| Ipv4Addr::from(b);
    Ok(match type_code {
        // 7.1: wrong length or undefined value: treat-as-withdraw.
        t::ORIGIN => match exact::<1>(v, TreatAsWithdraw)?[0] {
            0 => Attribute::Origin(Origin::Igp),
            1 => Attribute::Origin(Origin::Egp),
            2 => Attribute::Origin(Origin::Incomplete),
            value => {
                return Err(fail(
                    UpdateErrorKind::InvalidOrigin { value },
                    TreatAsWithdraw,
                ))
            }
        },
        // 7.2: malformed AS_PATH: treat-as-withdraw.
        t::AS_PATH => Attribute::AsPath(decode_as_path(v, if ctx.as4 { 4 } else { 2 }).map_err(
            |reason| fail(UpdateErrorKind::MalformedAsPath { reason }, TreatAsWithdraw),
        )?),
        // 7.3: wrong length: treat-as-withdraw.
        t::NEXT_HOP => Attribute::NextHop(ip(exact::<4>(v, TreatAsWithdraw)?)),
        // 7.4, 7.5: wrong length: treat-as-withdraw.
        t::MULTI_EXIT_DISC => {
            Attribute::MultiExitDisc(u32::from_be_bytes(exact::<4>(v, TreatAsWithdraw)?))
        }
        t::LOCAL_PREF => Attribute::LocalPref(u32::from_be_bytes(exact::<4>(v, TreatAsWithdraw)?)),
        // 7.6: non-zero length: attribute-discard.
        t::ATOMIC_AGGREGATE => {
            if !v.is_empty() {
                return Err(bad_length(v.len(), AttributeDiscard));
            }
            Attribute::AtomicAggregate
        }
        // 7.7: wrong length: attribute-discard.
        t::AGGREGATOR => Attribute::Aggregator(aggregator(v, if ctx.as4 { 4 } else { 2 })?),
        // 7.8: not a non-zero multiple of 4: treat-as-withdraw.
        t::COMMUNITIES => Attribute::Communities(
            items::<4>(v, true, TreatAsWithdraw)?
                .map(|b| Community(u32::from_be_bytes(b)))
                .collect(),
        ),
        // 7.9: wrong length: treat-as-withdraw.
        t::ORIGINATOR_ID => Attribute::OriginatorId(ip(exact::<4>(v, TreatAsWithdraw)?)),
        // 7.10: not a non-zero multiple of 4: treat-as-withdraw.
        t::CLUSTER_LIST => {
            Attribute::ClusterList(items::<4>(v, true, TreatAsWithdraw)?.map(ip).collect())
        }
        // 7.11.
        t::MP_REACH_NLRI | t::MP_UNREACH_NLRI => {
            decode_mp(type_code, &mut Reader::new(v, base), ctx, raw)?
        }
        // 7.14: not a non-zero multiple of 8: treat-as-withdraw.
        t::EXTENDED_COMMUNITIES => Attribute::ExtendedCommunities(
            items::<8>(v, true, TreatAsWithdraw)?
                .map(ExtendedCommunity)
                .collect(),
        ),
        // RFC 6793 section 6: AS4_PATH/AS4_AGGREGATOR errors cost only the attribute,
        // and on a 4-octet session they must not appear at all (section 3).
        t::AS4_PATH | t::AS4_AGGREGATOR if ctx.as4 => {
            return Err(fail(
                UpdateErrorKind::Context {
                    what: "AS4_PATH/AS4_AGGREGATOR",
                    why: "negotiated 4-octet AS",
                },
                AttributeDiscard,
            ))
        }
        t::AS4_PATH => Attribute::As4Path(decode_as_path(v, 4).map_err(|reason| {
            fail(
                UpdateErrorKind::MalformedAsPath { reason },
                AttributeDiscard,
            )
        })?),
        t::AS4_AGGREGATOR => Attribute::As4Aggregator(aggregator(v, 4)?),
        // RFC 8092 section 6: not a non-zero multiple of 12: treat-as-withdraw.
        t::LARGE_COMMUNITIES => Attribute::LargeCommunities(
            items::<12>(v, true, TreatAsWithdraw)?
                .map(|b| LargeCommunity {
                    global: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    local1: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    local2: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                })
                .collect(),
        ),
        _ => Attribute::Unknown(raw.to_owned()),
    })
}

/// Appends `attrs` in wire form for compact storage (an Adj-RIB-In keeps a full
/// table's attribute sets in a fraction of the memory their parsed form takes).
/// Returns false, leaving `out` as it was, for a list that would not read back equal
/// in the 4-octet context: AS4_PATH and AS4_AGGREGATOR of 2-octet sessions.
pub(crate) fn encode_stored(attrs: &[Attribute], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let ctx = SessionContext::default();
    let ok = attrs
        .iter()
        .all(|a| !matches!(a, Attribute::As4Path(_) | Attribute::As4Aggregator(_)))
        && attrs.iter().all(|a| a.encode(out, &ctx).is_ok());
    if !ok {
        out.truncate(start);
    }
    ok
}

/// Reads back what [`encode_stored`] wrote.
pub(crate) fn decode_stored(bytes: &[u8]) -> Vec<Attribute> {
    decode_attributes(&mut Reader::new(bytes, 0), &SessionContext::default()).attributes
}

/// The path attributes of an UPDATE, and every error found in them.
pub(crate) struct DecodedAttributes {
    pub attributes: Vec<Attribute>,
    pub errors: Vec<UpdateError>,
    /// Type codes present, even if malformed: a malformed ORIGIN is not also missing.
    pub seen: [bool; 256],
}

/// Walks the path attributes. This is where RFC 7606 is applied to every attribute
/// header; the per-attribute rules live in [`decode_value`].
pub(crate) fn decode_attributes(r: &mut Reader<'_>, ctx: &SessionContext) -> DecodedAttributes {
    let mut out = DecodedAttributes {
        // Enough for the usual UPDATE without growing.
        attributes: Vec::with_capacity(8),
        errors: Vec::new(),
        seen: [false; 256],
    };
    while !r.is_empty() {
        let at = r.offset();
        let whole = r.clone().rest();
        let err = |field: UpdateField, kind: UpdateErrorKind, action: AttrAction, data: &[u8]| {
            UpdateError {
                field,
                offset: at,
                kind,
                action,
                afi_safi: None,
                data: HexBytes::from(data),
            }
        };
        // Section 4: an attribute header that does not fit, or a length that overruns
        // the Total Path Attribute Length: treat-as-withdraw, and the rest of the list
        // cannot be parsed. The NLRI are still found from the total length.
        let flags = r.u8().unwrap_or(0);
        let hdr = if flags & fl::EXTENDED_LENGTH != 0 {
            4
        } else {
            3
        };
        if whole.len() < hdr {
            out.errors.push(err(
                UpdateField::PathAttributes,
                UpdateErrorKind::AttributeHeaderTruncated {
                    available: whole.len(),
                },
                AttrAction::TreatAsWithdraw,
                whole,
            ));
            break;
        }
        let type_code = r.u8().unwrap_or(0);
        let len = if hdr == 4 {
            usize::from(r.u16().unwrap_or(0))
        } else {
            usize::from(r.u8().unwrap_or(0))
        };
        let field = UpdateField::Attribute(type_code);
        let vbase = r.offset();
        let Ok(value) = r.take(len) else {
            out.errors.push(err(
                field,
                UpdateErrorKind::LengthOverrun {
                    declared: len,
                    available: whole.len() - hdr,
                },
                AttrAction::TreatAsWithdraw,
                whole,
            ));
            break;
        };
        let data = &whole[..hdr + len];
        // Section 3 (g): a repeated MP_REACH_NLRI or MP_UNREACH_NLRI resets the
        // session (Malformed Attribute List); any other repeat is discarded.
        if out.seen[usize::from(type_code)] {
            let action = if matches!(type_code, t::MP_REACH_NLRI | t::MP_UNREACH_NLRI) {
                AttrAction::SessionReset
            } else {
                AttrAction::AttributeDiscard
            };
            out.errors
                .push(err(field, UpdateErrorKind::Duplicate, action, data));
            continue;
        }
        out.seen[usize::from(type_code)] = true;
        let mut raw = RawView {
            flags: flags & !fl::EXTENDED_LENGTH,
            type_code,
            value,
        };
        match expected_flags(type_code) {
            Some(expected) if flags & (fl::OPTIONAL | fl::TRANSITIVE) != expected => {
                // Section 3 (c): Optional/Transitive bits in conflict: treat-as-withdraw.
                out.errors.push(err(
                    field,
                    UpdateErrorKind::AttributeFlags { flags },
                    AttrAction::TreatAsWithdraw,
                    data,
                ));
                // The NLRI in an MP attribute are still needed to withdraw them.
                if !matches!(type_code, t::MP_REACH_NLRI | t::MP_UNREACH_NLRI) {
                    continue;
                }
            }
            Some(_) => {}
            // RFC 4271 section 6.3: an unrecognized well-known attribute resets.
            None if flags & fl::OPTIONAL == 0 => {
                out.errors.push(err(
                    field,
                    UpdateErrorKind::UnrecognizedWellKnown { type_code },
                    AttrAction::SessionReset,
                    data,
                ));
                continue;
            }
            // RFC 4271 section 5: pass unrecognized optional transitive attributes on
            // with the Partial bit set.
            None => {
                if flags & fl::TRANSITIVE != 0 {
                    raw.flags |= fl::PARTIAL;
                }
            }
        }
        match decode_value(type_code, &raw, vbase, ctx) {
            Ok(a) => out.attributes.push(a),
            Err(f) => out.errors.push(UpdateError {
                afi_safi: f.afi_safi,
                ..err(field, f.kind, f.action, data)
            }),
        }
    }
    out
}
