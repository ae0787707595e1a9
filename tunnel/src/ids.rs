//! The numbers and names by which migroute recognises what it owns in the kernel.
//!
//! | what | value | where it shows |
//! |---|---|---|
//! | link name prefix | `mr-` | `ip link` |
//! | `rtm_protocol` | 245 (`migroute`) | `ip route show table all proto migroute`, `ip rule` |
//! | routing table | 4245 (`migroute`) | `ip route show table migroute` |
//! | rule priority | 4245 | `ip rule` / `ip -6 rule` |
//!
//! 245 is in no list of the kernel's `rtnetlink.h`, iproute2's `rt_protos` or FRR's
//! `rt_protos` (FRR uses 186–198, BIRD 12); 4245 is above 255 so it cannot collide
//! with the one-byte table ids that older tools assume, and the rule priority sits
//! well before `main` (32766) but after `local` (0) and after FRR PBR's usual range.
//! The packaging files `packaging/rt_protos.d/migroute.conf` and
//! `packaging/rt_tables.d/migroute.conf` give iproute2 the names.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// migroute's `rtm_protocol` on routes and `FRA_PROTOCOL` on rules.
pub const PROTOCOL: u8 = 245;
/// migroute's own routing table: overrides live here and nowhere else.
pub const TABLE: u32 = 4245;
/// Priority of the `ip rule` that sends lookups to [`TABLE`].
pub const RULE_PRIORITY: u32 = 4245;
/// Every link migroute creates starts with this, so ownership is visible in `ip link`.
pub const LINK_PREFIX: &str = "mr-";
/// Kernel limit on interface names, without the trailing NUL (`IFNAMSIZ - 1`).
pub const IFNAME_MAX: usize = 15;

/// Why a link name was refused (pure check, no kernel involved).
pub fn check_link_name(name: &str) -> Result<(), &'static str> {
    if !name.starts_with(LINK_PREFIX) {
        return Err("migroute links must start with \"mr-\"");
    }
    if name.len() > IFNAME_MAX {
        return Err("longer than 15 bytes");
    }
    if name.len() == LINK_PREFIX.len() {
        return Err("nothing after \"mr-\"");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic())
    {
        return Err("contains '/', ':', whitespace or a non-printable byte");
    }
    Ok(())
}

/// An IP prefix (`10.10.0.5/32`, `2001:db8::5/128`), host bits cleared on parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// A prefix string that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid prefix {0:?}: expected ADDRESS/LENGTH")]
pub struct PrefixParseError(pub String);

impl Prefix {
    /// A prefix; `None` when the length exceeds the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let max = max_len(&addr);
        (len <= max).then(|| Self {
            addr: mask(addr, len),
            len,
        })
    }
    /// The host route for one address (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: max_len(&addr),
        }
    }
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    pub fn len(&self) -> u8 {
        self.len
    }
    /// `true` for the default route (`/0`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PrefixParseError(s.to_string());
        match s.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| err())?;
                let len: u8 = l.parse().map_err(|_| err())?;
                Prefix::new(addr, len).ok_or_else(err)
            }
            None => s.parse().map(Prefix::host).map_err(|_| err()),
        }
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_parses_and_masks() {
        let p: Prefix = "10.10.0.5/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.10.0.0/24");
        let h: Prefix = "10.10.0.5".parse().unwrap();
        assert_eq!(h.to_string(), "10.10.0.5/32");
        let v6: Prefix = "2001:db8::5/128".parse().unwrap();
        assert_eq!(v6.len(), 128);
        assert!("10.0.0.1/33".parse::<Prefix>().is_err());
        assert!("nonsense/3".parse::<Prefix>().is_err());
    }

    #[test]
    fn link_names_are_checked() {
        assert!(check_link_name("mr-vx-1").is_ok());
        assert!(check_link_name("vx-1").is_err());
        assert!(check_link_name("mr-").is_err());
        assert!(check_link_name("mr-0123456789abc").is_err());
        assert!(check_link_name("mr-a/b").is_err());
    }
}
