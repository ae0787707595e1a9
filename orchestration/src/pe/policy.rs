//! Route preference policy: how the destination makes its route win.
//!
//! Plain types of our own, not the BGP crate's: this crate must not depend on
//! `migroute-bgp`. The agent maps [`RouteAttrs`] onto its speaker's attributes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// An RFC 1997 community, written `ASN:VALUE` in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Community(pub u32);

impl Community {
    /// RFC 1997 NO_EXPORT: a host route must not leak out of the provider's AS.
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);

    /// The community `asn:value`.
    pub const fn new(asn: u16, value: u16) -> Self {
        Community(((asn as u32) << 16) | value as u32)
    }
}

/// A community string that is not `ASN:VALUE` with two 16-bit numbers.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad community {0:?}: expected ASN:VALUE with two 16-bit numbers, or no-export")]
pub struct CommunityParseError(pub String);

impl FromStr for Community {
    type Err = CommunityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("no-export") {
            return Ok(Community::NO_EXPORT);
        }
        let bad = || CommunityParseError(s.to_owned());
        let (asn, value) = s.split_once(':').ok_or_else(bad)?;
        let asn: u16 = asn.parse().map_err(|_| bad())?;
        let value: u16 = value.parse().map_err(|_| bad())?;
        Ok(Community::new(asn, value))
    }
}

impl TryFrom<String> for Community {
    type Error = CommunityParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Community> for String {
    fn from(c: Community) -> String {
        c.to_string()
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Community::NO_EXPORT {
            return f.write_str("no-export");
        }
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF)
    }
}

/// What makes the destination's route more preferred than the source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preference {
    /// A host route (/32, /128) wins by longest match over the covering prefix the
    /// source data center announces; NO_EXPORT keeps it inside the provider's AS.
    #[default]
    HostRoute,
    /// Same prefix as the source announces, won by a higher LOCAL_PREF.
    LocalPref(u32),
    /// Same prefix, won by a lower MULTI_EXIT_DISC.
    Med(u32),
}

/// The policy part of a migration request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// How the route wins.
    #[serde(default)]
    pub preference: Preference,
    /// Extra communities to attach (e.g. to steer a route reflector's policy).
    #[serde(default)]
    pub communities: Vec<Community>,
}

impl RoutePolicy {
    /// The attributes the destination's announcement carries under this policy.
    pub fn attributes(&self) -> RouteAttrs {
        let mut attrs = RouteAttrs::default();
        match self.preference {
            Preference::HostRoute => attrs.communities.push(Community::NO_EXPORT),
            Preference::LocalPref(n) => attrs.local_pref = Some(n),
            Preference::Med(n) => attrs.med = Some(n),
        }
        attrs.communities.extend(self.communities.iter().copied());
        attrs.communities.sort_unstable();
        attrs.communities.dedup();
        attrs
    }

    /// Sorted, deduplicated communities, so that two requests meaning the same thing
    /// compare equal (the 200-vs-409 decision of a repeated PUT).
    pub(crate) fn normalize(&mut self) {
        self.communities.sort_unstable();
        self.communities.dedup();
    }
}

/// Path attributes of an announced route, in plain terms the BGP speaker maps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RouteAttrs {
    /// LOCAL_PREF, if the policy sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC, if the policy sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    /// Communities, sorted.
    #[serde(default)]
    pub communities: Vec<Community>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_route_policy_carries_no_export_and_extras() {
        let p = RoutePolicy {
            preference: Preference::HostRoute,
            communities: vec![Community::new(65000, 7)],
        };
        let a = p.attributes();
        assert_eq!(a.local_pref, None);
        assert_eq!(a.med, None);
        assert_eq!(
            a.communities,
            vec![Community::new(65000, 7), Community::NO_EXPORT]
        );
    }

    #[test]
    fn local_pref_and_med_policies_set_only_their_attribute() {
        let lp = RoutePolicy {
            preference: Preference::LocalPref(300),
            communities: vec![],
        };
        assert_eq!(lp.attributes().local_pref, Some(300));
        assert!(lp.attributes().communities.is_empty());
        let med = RoutePolicy {
            preference: Preference::Med(5),
            communities: vec![],
        };
        assert_eq!(med.attributes().med, Some(5));
        assert_eq!(med.attributes().local_pref, None);
    }

    #[test]
    fn community_text_round_trips_and_rejects_garbage() {
        assert_eq!("65000:100".parse(), Ok(Community::new(65000, 100)));
        assert_eq!("no-export".parse(), Ok(Community::NO_EXPORT));
        assert_eq!(Community::new(1, 2).to_string(), "1:2");
        for bad in ["65000", "70000:1", "a:b", ":"] {
            assert!(bad.parse::<Community>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&Community::new(65000, 1)).unwrap();
        assert_eq!(json, "\"65000:1\"");
    }

    #[test]
    fn policy_json_shape() {
        let p: RoutePolicy =
            serde_json::from_str(r#"{"preference":{"local-pref":200},"communities":["1:2"]}"#)
                .unwrap();
        assert_eq!(p.preference, Preference::LocalPref(200));
        let d: RoutePolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(d.preference, Preference::HostRoute);
    }
}
