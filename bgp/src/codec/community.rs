//! Community values (RFC 1997, RFC 4360, RFC 8092), written the way operators write
//! them (`65000:100`, `65000:1:2`) so that JSON can be read and crafted by hand.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A standard community, `ASN:value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Community(pub u32);

impl Community {
    /// NO_EXPORT (RFC 1997).
    pub const NO_EXPORT: Community = Community(0xffff_ff01);
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}

impl FromStr for Community {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| format!("community {s:?} is not ASN:value"))?;
        let a: u16 = a.parse().map_err(|_| format!("community {s:?}: bad ASN"))?;
        let b: u16 = b
            .parse()
            .map_err(|_| format!("community {s:?}: bad value"))?;
        Ok(Community(u32::from(a) << 16 | u32::from(b)))
    }
}

impl From<Community> for String {
    fn from(c: Community) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for Community {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A large community, `global:local1:local2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

impl FromStr for LargeCommunity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut it = s.split(':').map(str::parse::<u32>);
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(Ok(global)), Some(Ok(local1)), Some(Ok(local2)), None) => Ok(LargeCommunity {
                global,
                local1,
                local2,
            }),
            _ => Err(format!("large community {s:?} is not global:local1:local2")),
        }
    }
}

impl From<LargeCommunity> for String {
    fn from(c: LargeCommunity) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for LargeCommunity {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// An extended community, 8 bytes written as 16 hex digits. migroute only passes
/// them on, so it does not model the many subtypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ExtendedCommunity(pub [u8; 8]);

impl fmt::Display for ExtendedCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::bytes::to_hex(&self.0))
    }
}

impl From<ExtendedCommunity> for String {
    fn from(c: ExtendedCommunity) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for ExtendedCommunity {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let v = super::bytes::from_hex(&s).map_err(|e| e.to_string())?;
        <[u8; 8]>::try_from(v.as_slice())
            .map(ExtendedCommunity)
            .map_err(|_| format!("extended community {s:?} is not 8 bytes"))
    }
}
