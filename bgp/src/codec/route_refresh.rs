//! ROUTE-REFRESH (RFC 2918) and its enhanced subtypes (RFC 7313).

use serde::{Deserialize, Serialize};

use super::bytes::HexBytes;
use super::error::RouteRefreshError;
use super::iana::{Afi, Safi};

/// Message subtype (RFC 7313 section 3.2). BoRR/EoRR bracket a refresh so that the
/// receiver can purge stale routes; migroute uses them to resync after a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteRefreshSubtype {
    /// A plain request for the peer's Adj-RIB-Out.
    Request,
    /// Beginning of Route Refresh.
    Borr,
    /// End of Route Refresh.
    Eorr,
    /// Reserved values; RFC 7313 says to ignore such messages, so they are decoded
    /// and left to the session to drop.
    Reserved(u8),
}

impl From<u8> for RouteRefreshSubtype {
    fn from(v: u8) -> Self {
        match v {
            0 => RouteRefreshSubtype::Request,
            1 => RouteRefreshSubtype::Borr,
            2 => RouteRefreshSubtype::Eorr,
            v => RouteRefreshSubtype::Reserved(v),
        }
    }
}

impl From<RouteRefreshSubtype> for u8 {
    fn from(s: RouteRefreshSubtype) -> u8 {
        match s {
            RouteRefreshSubtype::Request => 0,
            RouteRefreshSubtype::Borr => 1,
            RouteRefreshSubtype::Eorr => 2,
            RouteRefreshSubtype::Reserved(v) => v,
        }
    }
}

/// A ROUTE-REFRESH for one (AFI, SAFI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRefresh {
    pub afi: Afi,
    pub safi: Safi,
    pub subtype: RouteRefreshSubtype,
}

impl RouteRefresh {
    pub(crate) fn decode(message: &[u8]) -> Result<RouteRefresh, RouteRefreshError> {
        match message {
            [_header @ .., a0, a1, sub, safi] if message.len() == 23 => Ok(RouteRefresh {
                afi: Afi::from(u16::from_be_bytes([*a0, *a1])),
                subtype: RouteRefreshSubtype::from(*sub),
                safi: Safi::from(*safi),
            }),
            _ => Err(RouteRefreshError {
                length: message.len(),
                message: HexBytes::from(message),
            }),
        }
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&u16::from(self.afi).to_be_bytes());
        out.push(self.subtype.into());
        out.push(self.safi.into());
    }
}
