//! IP prefixes and NLRI (RFC 4271 section 4.3, RFC 4760 section 5, RFC 7911 section 3).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::iana::Family;
use super::reader::Reader;

/// An IPv4 or IPv6 prefix, written `192.0.2.0/24` in JSON.
///
/// Host bits are kept as received: the codec reports what was on the wire, and masking
/// is a routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// A prefix, or `None` when `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Prefix { addr, len })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn family(&self) -> Family {
        if self.addr.is_ipv4() {
            Family::Ipv4Unicast
        } else {
            Family::Ipv6Unicast
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A string that is not `address/length`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid prefix {0:?}: expected address/length")]
pub struct PrefixParseError(String);

impl FromStr for Prefix {
    type Err = PrefixParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PrefixParseError(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let len: u8 = l.parse().map_err(|_| err())?;
        Prefix::new(addr, len).ok_or_else(err)
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One reachable or withdrawn route: a prefix, and its path identifier on an add-path
/// session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Nlri {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_id: Option<u32>,
    pub prefix: Prefix,
}

impl Nlri {
    pub fn new(prefix: Prefix) -> Nlri {
        Nlri {
            path_id: None,
            prefix,
        }
    }
}

/// Why a run of NLRI could not be parsed. RFC 7606 section 5.3 calls both cases
/// "syntactically incorrect".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NlriError {
    #[error("prefix length {len} exceeds {max}")]
    PrefixTooLong { len: u8, max: u8 },
    #[error("NLRI needs {needed} bytes but {available} remain")]
    Overrun { needed: usize, available: usize },
}

/// Reads NLRI until the reader is empty. Returns the error and the offset of the
/// offending NLRI.
pub(crate) fn decode_nlri(
    r: &mut Reader<'_>,
    family: Family,
    add_path: bool,
) -> Result<Vec<Nlri>, (NlriError, usize)> {
    let mut out = Vec::with_capacity(count_nlri(r.clone().rest(), add_path));
    let max = family.max_prefix_len();
    while !r.is_empty() {
        let at = r.offset();
        let short = |s: super::reader::Short| {
            (
                NlriError::Overrun {
                    needed: s.needed,
                    available: s.available,
                },
                at,
            )
        };
        let path_id = if add_path {
            Some(r.u32().map_err(short)?)
        } else {
            None
        };
        let len = r.u8().map_err(short)?;
        if len > max {
            return Err((NlriError::PrefixTooLong { len, max }, at));
        }
        let bytes = r.take(usize::from(len).div_ceil(8)).map_err(short)?;
        let addr = match family {
            Family::Ipv4Unicast => {
                let mut a = [0u8; 4];
                a[..bytes.len()].copy_from_slice(bytes);
                IpAddr::V4(Ipv4Addr::from(a))
            }
            Family::Ipv6Unicast => {
                let mut a = [0u8; 16];
                a[..bytes.len()].copy_from_slice(bytes);
                IpAddr::V6(Ipv6Addr::from(a))
            }
        };
        out.push(Nlri {
            path_id,
            prefix: Prefix { addr, len },
        });
    }
    Ok(out)
}

/// How many NLRI `bytes` holds, as far as their lengths can be followed: sizes the
/// vector so that a full UPDATE costs one allocation, not a series of doublings.
fn count_nlri(bytes: &[u8], add_path: bool) -> usize {
    let skip = if add_path { 4 } else { 0 };
    let (mut at, mut n) = (0, 0);
    while let Some(&len) = bytes.get(at + skip) {
        at += skip + 1 + usize::from(len).div_ceil(8);
        n += 1;
    }
    n
}

/// Bytes one NLRI takes on the wire.
pub(crate) fn nlri_wire_len(n: &Nlri, add_path: bool) -> usize {
    usize::from(add_path) * 4 + 1 + usize::from(n.prefix.len).div_ceil(8)
}

/// Appends one NLRI. The caller has checked family and path-id presence.
pub(crate) fn encode_nlri(out: &mut Vec<u8>, n: &Nlri, add_path: bool) {
    if add_path {
        out.extend_from_slice(&n.path_id.unwrap_or(0).to_be_bytes());
    }
    out.push(n.prefix.len);
    let nbytes = usize::from(n.prefix.len).div_ceil(8);
    match n.prefix.addr {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..nbytes]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..nbytes]),
    }
}
