//! Per-peer export policy: the attributes a route is sent with.
//!
//! The API caller gives a route's intent ([`RouteAttrs`]: next hop, preference,
//! communities); the peer's [`ExportPolicy`] and the session (iBGP or eBGP, our
//! address) turn it into wire attributes. Kept pure so that the PE agent's choices
//! (NO_EXPORT on a VM /32, a higher LOCAL_PREF after a migration) are unit-tested
//! without a session.

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::codec::{
    AsSegment, Attribute, Community, Family, LargeCommunity, MpNextHop, MpReach, Origin, Prefix,
};

/// What the caller of `announce` asks for. Unset fields fall back to the peer's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAttrs {
    /// Next hop; by default our address on the session (next-hop-self).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<IpAddr>,
    /// Sent to iBGP peers only (RFC 4271 section 5.1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_communities: Vec<LargeCommunity>,
}

/// How one peer sees our routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportPolicy {
    /// Always use our own address as next hop, whatever the route says.
    #[serde(default)]
    pub next_hop_self: bool,
    /// Use this next hop (for its family), whatever the route says.
    #[serde(default)]
    pub next_hop: Option<IpAddr>,
    /// Overrides the route's LOCAL_PREF (iBGP only).
    #[serde(default)]
    pub local_pref: Option<u32>,
    /// Overrides the route's MED.
    #[serde(default)]
    pub med: Option<u32>,
    /// Added to the route's communities.
    #[serde(default)]
    pub communities: Vec<Community>,
    #[serde(default)]
    pub large_communities: Vec<LargeCommunity>,
    /// Extra copies of our ASN in front of the AS_PATH.
    #[serde(default)]
    pub prepend: u8,
}

/// The session facts export depends on.
#[derive(Debug, Clone, Copy)]
pub struct ExportContext<'a> {
    pub local_as: u32,
    pub ibgp: bool,
    /// Our address on the session: the next-hop-self of its family.
    pub local_addr: Option<IpAddr>,
    /// Our IPv6 address for IPv6 routes when the session runs over IPv4 (found on the
    /// interface of `local_addr`).
    pub local_v6: Option<Ipv6Addr>,
    pub policy: &'a ExportPolicy,
}

/// Default LOCAL_PREF on iBGP when neither route nor policy sets one (what FRR, BIRD
/// and GoBGP assume).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// The attributes for `prefix`, sorted by type code, or `None` when no next hop of the
/// prefix's family is known (an IPv6 route on a session without an IPv6 address and
/// without a configured next hop).
pub fn export(
    prefix: &Prefix,
    route: &RouteAttrs,
    cx: &ExportContext<'_>,
) -> Option<Vec<Attribute>> {
    let family = prefix.family();
    let fits = |a: &IpAddr| match family {
        Family::Ipv4Unicast => a.is_ipv4(),
        Family::Ipv6Unicast => a.is_ipv6(),
    };
    let own = cx.local_addr.filter(fits).or(match family {
        Family::Ipv6Unicast => cx.local_v6.map(IpAddr::V6),
        Family::Ipv4Unicast => None,
    });
    let given = cx.policy.next_hop.filter(fits);
    let routed = route.next_hop.filter(fits);
    let next_hop = if cx.policy.next_hop_self {
        own.or(given)
    } else {
        given.or(routed).or(own)
    }?;
    let mut attrs = vec![Attribute::Origin(Origin::Igp)];
    let copies = usize::from(cx.policy.prepend) + usize::from(!cx.ibgp);
    attrs.push(Attribute::AsPath(if copies == 0 {
        vec![]
    } else {
        vec![AsSegment::Sequence(vec![cx.local_as; copies])]
    }));
    match next_hop {
        IpAddr::V4(a) => attrs.push(Attribute::NextHop(a)),
        IpAddr::V6(a) => attrs.push(Attribute::MpReach(MpReach {
            family,
            next_hop: MpNextHop {
                global: IpAddr::V6(a),
                link_local: None,
            },
            nlri: vec![],
        })),
    }
    if let Some(med) = cx.policy.med.or(route.med) {
        attrs.push(Attribute::MultiExitDisc(med));
    }
    if cx.ibgp {
        attrs.push(Attribute::LocalPref(
            cx.policy
                .local_pref
                .or(route.local_pref)
                .unwrap_or(DEFAULT_LOCAL_PREF),
        ));
    }
    let mut comms: Vec<Community> = route
        .communities
        .iter()
        .chain(&cx.policy.communities)
        .copied()
        .collect();
    comms.sort();
    comms.dedup();
    if !comms.is_empty() {
        attrs.push(Attribute::Communities(comms));
    }
    let mut large: Vec<LargeCommunity> = route
        .large_communities
        .iter()
        .chain(&cx.policy.large_communities)
        .copied()
        .collect();
    large.sort();
    large.dedup();
    if !large.is_empty() {
        attrs.push(Attribute::LargeCommunities(large));
    }
    Some(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn ebgp_gets_our_as_no_local_pref_and_next_hop_self() {
        let pol = ExportPolicy::default();
        let cx = ExportContext {
            local_as: 65001,
            ibgp: false,
            local_addr: Some("192.0.2.1".parse().unwrap()),
            local_v6: None,
            policy: &pol,
        };
        let route = RouteAttrs {
            local_pref: Some(200),
            med: Some(5),
            communities: vec![Community::NO_EXPORT],
            ..RouteAttrs::default()
        };
        let a = export(&p("203.0.113.7/32"), &route, &cx).unwrap();
        assert_eq!(
            a,
            vec![
                Attribute::Origin(Origin::Igp),
                Attribute::AsPath(vec![AsSegment::Sequence(vec![65001])]),
                Attribute::NextHop("192.0.2.1".parse().unwrap()),
                Attribute::MultiExitDisc(5),
                Attribute::Communities(vec![Community::NO_EXPORT]),
            ]
        );
    }

    #[test]
    fn ibgp_policy_overrides_and_prepends() {
        let pol = ExportPolicy {
            local_pref: Some(300),
            prepend: 2,
            communities: vec!["65001:7".parse().unwrap()],
            large_communities: vec!["65001:1:2".parse().unwrap()],
            ..ExportPolicy::default()
        };
        let cx = ExportContext {
            local_as: 65001,
            ibgp: true,
            local_addr: Some("192.0.2.1".parse().unwrap()),
            local_v6: None,
            policy: &pol,
        };
        let route = RouteAttrs {
            next_hop: Some("192.0.2.99".parse().unwrap()),
            local_pref: Some(200),
            communities: vec!["65001:7".parse().unwrap(), "65001:1".parse().unwrap()],
            ..RouteAttrs::default()
        };
        let a = export(&p("10.1.0.0/16"), &route, &cx).unwrap();
        assert_eq!(
            a[1],
            Attribute::AsPath(vec![AsSegment::Sequence(vec![65001, 65001])])
        );
        assert_eq!(a[2], Attribute::NextHop("192.0.2.99".parse().unwrap()));
        assert_eq!(a[3], Attribute::LocalPref(300));
        assert_eq!(
            a[4],
            Attribute::Communities(vec!["65001:1".parse().unwrap(), "65001:7".parse().unwrap()])
        );
        assert!(matches!(&a[5], Attribute::LargeCommunities(v) if v.len() == 1));
    }

    #[test]
    fn ipv6_uses_mp_reach_and_needs_a_v6_next_hop() {
        let pol = ExportPolicy::default();
        let v4only = ExportContext {
            local_as: 65001,
            ibgp: true,
            local_addr: Some("192.0.2.1".parse().unwrap()),
            local_v6: None,
            policy: &pol,
        };
        assert_eq!(
            export(&p("2001:db8::/48"), &RouteAttrs::default(), &v4only),
            None
        );
        let route = RouteAttrs {
            next_hop: Some("2001:db8::1".parse().unwrap()),
            ..RouteAttrs::default()
        };
        let a = export(&p("2001:db8:1::/48"), &route, &v4only).unwrap();
        assert!(
            matches!(&a[2], Attribute::MpReach(m) if m.next_hop.global == "2001:db8::1".parse::<IpAddr>().unwrap())
        );
        // iBGP without prepend: empty AS_PATH, default LOCAL_PREF.
        assert_eq!(a[1], Attribute::AsPath(vec![]));
        assert_eq!(a[3], Attribute::LocalPref(DEFAULT_LOCAL_PREF));
    }

    #[test]
    fn ipv6_route_on_an_ipv4_session_takes_our_ipv6_address() {
        let pol = ExportPolicy::default();
        let cx = ExportContext {
            local_as: 65001,
            ibgp: true,
            local_addr: Some("192.0.2.1".parse().unwrap()),
            local_v6: Some("2001:db8::1".parse().unwrap()),
            policy: &pol,
        };
        let a = export(&p("2001:db8:7::/48"), &RouteAttrs::default(), &cx).unwrap();
        assert!(
            a.iter().any(|x| matches!(x, Attribute::MpReach(m) if m.next_hop.global == "2001:db8::1".parse::<IpAddr>().unwrap())),
            "{a:?}"
        );
        // IPv4 routes keep the session's address.
        let a = export(&p("203.0.113.0/24"), &RouteAttrs::default(), &cx).unwrap();
        assert!(a.contains(&Attribute::NextHop("192.0.2.1".parse().unwrap())));
    }

    #[test]
    fn next_hop_self_wins_over_the_route() {
        let pol = ExportPolicy {
            next_hop_self: true,
            ..ExportPolicy::default()
        };
        let cx = ExportContext {
            local_as: 1,
            ibgp: false,
            local_addr: Some("192.0.2.1".parse().unwrap()),
            local_v6: None,
            policy: &pol,
        };
        let route = RouteAttrs {
            next_hop: Some("192.0.2.50".parse().unwrap()),
            ..RouteAttrs::default()
        };
        let a = export(&p("10.0.0.0/8"), &route, &cx).unwrap();
        assert_eq!(a[2], Attribute::NextHop("192.0.2.1".parse().unwrap()));
    }
}
