//! OPEN (RFC 4271 section 4.2) with capabilities in optional parameters (RFC 5492),
//! including the extended optional parameters length of RFC 9072.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use super::capability::{
    AddPathFamily, AddPathMode, Capability, GracefulRestart, GracefulRestartFamily,
};
use super::error::{EncodeError, OpenError};
use super::iana::{open_param, Afi, Safi};
use super::reader::{Reader, Short};

/// AS_TRANS (RFC 6793 section 9): the 2-octet stand-in for a 4-octet ASN.
pub const AS_TRANS: u16 = 23456;

/// An OPEN. The version is always 4 and not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// The 2-octet My Autonomous System field; AS_TRANS when the real ASN is in the
    /// 4-octet AS capability. Use [`Open::asn`] for the real one.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
}

fn malformed(field: &'static str, reason: impl Into<String>) -> impl Fn(Short) -> OpenError {
    let reason = reason.into();
    move |s: Short| OpenError::Malformed {
        field,
        offset: s.offset,
        reason: format!("{reason}: needs {} bytes, {} left", s.needed, s.available),
    }
}

impl Open {
    /// The sender's ASN: from the 4-octet AS capability if present (RFC 6793
    /// section 4.1), else My Autonomous System.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// The add-path mode advertised for a family, if any.
    pub fn add_path_mode(&self, afi: Afi, safi: Safi) -> Option<AddPathMode> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::AddPath(fams) => fams
                .iter()
                .find(|f| f.afi == afi && f.safi == safi)
                .map(|f| f.mode),
            _ => None,
        })
    }

    /// Decodes the body (after the 19-byte header).
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Open, OpenError> {
        let at = r.offset();
        let version = r.u8().map_err(malformed("Version", "truncated"))?;
        if version != 4 {
            return Err(OpenError::UnsupportedVersion {
                version,
                offset: at,
            });
        }
        let my_as = r
            .u16()
            .map_err(malformed("My Autonomous System", "truncated"))?;
        let hold_at = r.offset();
        let hold_time = r.u16().map_err(malformed("Hold Time", "truncated"))?;
        if hold_time == 1 || hold_time == 2 {
            return Err(OpenError::UnacceptableHoldTime {
                hold_time,
                offset: hold_at,
            });
        }
        let id_at = r.offset();
        let bgp_id = Ipv4Addr::from(r.u32().map_err(malformed("BGP Identifier", "truncated"))?);
        if bgp_id.is_unspecified() {
            return Err(OpenError::BadBgpIdentifier { offset: id_at });
        }
        let len_at = r.offset();
        let mut opt_len = usize::from(
            r.u8()
                .map_err(malformed("Optional Parameters Length", "truncated"))?,
        );
        // RFC 9072 section 2: 255 followed by type 255 announces a 2-octet length.
        let mut extended = false;
        if opt_len == 255
            && r.remaining() >= 3
            && r.clone().u8().ok() == Some(open_param::EXTENDED_LENGTH)
        {
            r.u8()
                .map_err(malformed("Optional Parameters", "truncated"))?;
            opt_len = usize::from(r.u16().map_err(malformed(
                "Extended Optional Parameters Length",
                "truncated",
            ))?);
            extended = true;
        }
        if opt_len != r.remaining() {
            return Err(OpenError::Malformed {
                field: "Optional Parameters Length",
                offset: len_at,
                reason: format!("says {opt_len} bytes but {} follow", r.remaining()),
            });
        }
        let mut capabilities = Vec::new();
        while !r.is_empty() {
            let p_at = r.offset();
            let ptype = r
                .u8()
                .map_err(malformed("Optional Parameter", "truncated"))?;
            let plen = if extended {
                r.u16()
                    .map_err(malformed("Optional Parameter Length", "truncated"))?
            } else {
                u16::from(
                    r.u8()
                        .map_err(malformed("Optional Parameter Length", "truncated"))?,
                )
            };
            let mut p = r.sub(usize::from(plen)).map_err(malformed(
                "Optional Parameter",
                "length overruns the parameters",
            ))?;
            if ptype != open_param::CAPABILITIES {
                return Err(OpenError::UnsupportedOptionalParameter {
                    param_type: ptype,
                    offset: p_at,
                });
            }
            while !p.is_empty() {
                let c_at = p.offset();
                let code = p.u8().map_err(malformed("Capability", "truncated"))?;
                let clen = p
                    .u8()
                    .map_err(malformed("Capability Length", "truncated"))?;
                let value = p.take(usize::from(clen)).map_err(malformed(
                    "Capability Value",
                    "length overruns the parameter",
                ))?;
                let cap =
                    Capability::decode(code, value).map_err(|reason| OpenError::Malformed {
                        field: "Capability",
                        offset: c_at,
                        reason: format!("code {code}: {reason}"),
                    })?;
                capabilities.push(cap);
            }
        }
        Ok(Open {
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(4);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut caps = Vec::new();
        for c in &self.capabilities {
            c.encode(&mut caps).map_err(|reason| EncodeError::Invalid {
                field: "capability",
                reason,
            })?;
        }
        if caps.is_empty() {
            out.push(0);
        } else if caps.len() + 2 <= 255 {
            // All capabilities in one parameter, as RFC 5492 section 4 allows.
            out.push((caps.len() + 2) as u8);
            out.push(open_param::CAPABILITIES);
            out.push(caps.len() as u8);
            out.extend_from_slice(&caps);
        } else {
            // RFC 9072: extended lengths.
            let too_long = |_| EncodeError::ValueTooLong {
                field: "OPEN capabilities",
                length: caps.len(),
            };
            let plen = u16::try_from(caps.len()).map_err(too_long)?;
            let total = u16::try_from(caps.len() + 3).map_err(too_long)?;
            out.extend_from_slice(&[255, open_param::EXTENDED_LENGTH]);
            out.extend_from_slice(&total.to_be_bytes());
            out.push(open_param::CAPABILITIES);
            out.extend_from_slice(&plen.to_be_bytes());
            out.extend_from_slice(&caps);
        }
        Ok(())
    }
}
