//! OPEN capabilities (RFC 5492) that migroute negotiates; others are kept as bytes.

use serde::{Deserialize, Serialize};

use super::bytes::HexBytes;
use super::iana::{capability as code, Afi, Safi};
use super::reader::Reader;

/// Add-path Send/Receive field (RFC 7911 section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddPathMode {
    Receive,
    Send,
    Both,
}

impl AddPathMode {
    pub fn sends(self) -> bool {
        matches!(self, AddPathMode::Send | AddPathMode::Both)
    }

    pub fn receives(self) -> bool {
        matches!(self, AddPathMode::Receive | AddPathMode::Both)
    }
}

/// One family in the add-path capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddPathFamily {
    pub afi: Afi,
    pub safi: Safi,
    pub mode: AddPathMode,
}

/// One family in the graceful restart capability (RFC 4724 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GracefulRestartFamily {
    pub afi: Afi,
    pub safi: Safi,
    /// The sender kept its forwarding state for this family across the restart: the
    /// receiver may keep using the routes while they are re-learned.
    pub forwarding: bool,
}

/// The graceful restart capability (RFC 4724 section 3, N bit from RFC 8538).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit: the sender supports graceful restart for NOTIFICATIONs.
    pub notification: bool,
    /// Seconds the peer should keep our routes after the session drops (12 bits).
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

/// A capability. Unknown ones are kept so that a decoded OPEN re-encodes unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// RFC 4760 section 8.
    Multiprotocol {
        afi: Afi,
        safi: Safi,
    },
    /// RFC 2918.
    RouteRefresh,
    /// RFC 7313.
    EnhancedRouteRefresh,
    /// RFC 8654.
    ExtendedMessage,
    /// RFC 6793: the sender's real ASN.
    FourOctetAs(u32),
    /// RFC 7911.
    AddPath(Vec<AddPathFamily>),
    /// RFC 4724.
    GracefulRestart(GracefulRestart),
    Unknown {
        code: u8,
        value: HexBytes,
    },
}

impl Capability {
    /// Decodes one capability value. `Err` carries a reason; the caller adds the
    /// offset.
    pub(crate) fn decode(cap: u8, value: &[u8]) -> Result<Capability, &'static str> {
        let mut r = Reader::new(value, 0);
        let bad = |_| "value shorter than its fields";
        let cap = match cap {
            code::MULTIPROTOCOL => {
                if value.len() != 4 {
                    return Err("multiprotocol capability length is not 4");
                }
                let afi = Afi::from(r.u16().map_err(bad)?);
                r.u8().map_err(bad)?;
                Capability::Multiprotocol {
                    afi,
                    safi: Safi::from(r.u8().map_err(bad)?),
                }
            }
            code::ROUTE_REFRESH | code::ENHANCED_ROUTE_REFRESH | code::EXTENDED_MESSAGE => {
                if !value.is_empty() {
                    return Err("capability must have length 0");
                }
                match cap {
                    code::ROUTE_REFRESH => Capability::RouteRefresh,
                    code::ENHANCED_ROUTE_REFRESH => Capability::EnhancedRouteRefresh,
                    _ => Capability::ExtendedMessage,
                }
            }
            code::FOUR_OCTET_AS => {
                if value.len() != 4 {
                    return Err("4-octet AS capability length is not 4");
                }
                Capability::FourOctetAs(r.u32().map_err(bad)?)
            }
            code::ADD_PATH => {
                if !value.chunks_exact(4).remainder().is_empty() {
                    return Err("add-path capability length is not a multiple of 4");
                }
                let mut families = Vec::with_capacity(value.len() / 4);
                while !r.is_empty() {
                    let afi = Afi::from(r.u16().map_err(bad)?);
                    let safi = Safi::from(r.u8().map_err(bad)?);
                    let mode = match r.u8().map_err(bad)? {
                        1 => AddPathMode::Receive,
                        2 => AddPathMode::Send,
                        3 => AddPathMode::Both,
                        _ => return Err("add-path Send/Receive value is not 1, 2 or 3"),
                    };
                    families.push(AddPathFamily { afi, safi, mode });
                }
                Capability::AddPath(families)
            }
            code::GRACEFUL_RESTART => {
                if value.len() < 2 || !value[2..].chunks_exact(4).remainder().is_empty() {
                    return Err("graceful restart capability length is not 2 + 4n");
                }
                let head = r.u16().map_err(bad)?;
                let mut families = Vec::with_capacity((value.len() - 2) / 4);
                while !r.is_empty() {
                    let afi = Afi::from(r.u16().map_err(bad)?);
                    let safi = Safi::from(r.u8().map_err(bad)?);
                    let flags = r.u8().map_err(bad)?;
                    families.push(GracefulRestartFamily {
                        afi,
                        safi,
                        forwarding: flags & 0x80 != 0,
                    });
                }
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: head & 0x8000 != 0,
                    notification: head & 0x4000 != 0,
                    restart_time: head & 0x0fff,
                    families,
                })
            }
            code => Capability::Unknown {
                code,
                value: HexBytes::from(value),
            },
        };
        Ok(cap)
    }

    /// Appends code, length and value.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        let mut v = Vec::new();
        let c = match self {
            Capability::Multiprotocol { afi, safi } => {
                v.extend_from_slice(&u16::from(*afi).to_be_bytes());
                v.push(0);
                v.push(u8::from(*safi));
                code::MULTIPROTOCOL
            }
            Capability::RouteRefresh => code::ROUTE_REFRESH,
            Capability::EnhancedRouteRefresh => code::ENHANCED_ROUTE_REFRESH,
            Capability::ExtendedMessage => code::EXTENDED_MESSAGE,
            Capability::FourOctetAs(asn) => {
                v.extend_from_slice(&asn.to_be_bytes());
                code::FOUR_OCTET_AS
            }
            Capability::AddPath(fams) => {
                for f in fams {
                    v.extend_from_slice(&u16::from(f.afi).to_be_bytes());
                    v.push(u8::from(f.safi));
                    v.push(match f.mode {
                        AddPathMode::Receive => 1,
                        AddPathMode::Send => 2,
                        AddPathMode::Both => 3,
                    });
                }
                code::ADD_PATH
            }
            Capability::GracefulRestart(gr) => {
                if gr.restart_time > 0x0fff {
                    return Err("graceful restart time exceeds 4095 seconds");
                }
                let head = u16::from(gr.restart_state) << 15
                    | u16::from(gr.notification) << 14
                    | gr.restart_time;
                v.extend_from_slice(&head.to_be_bytes());
                for f in &gr.families {
                    v.extend_from_slice(&u16::from(f.afi).to_be_bytes());
                    v.push(u8::from(f.safi));
                    v.push(if f.forwarding { 0x80 } else { 0 });
                }
                code::GRACEFUL_RESTART
            }
            Capability::Unknown { code, value } => {
                v.extend_from_slice(&value.0);
                *code
            }
        };
        let len = u8::try_from(v.len()).map_err(|_| "capability value exceeds 255 bytes")?;
        out.push(c);
        out.push(len);
        out.extend_from_slice(&v);
        Ok(())
    }
}
