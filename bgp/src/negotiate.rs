//! Capability negotiation: the OPEN we send, and what two OPENs agree on.
//!
//! Kept apart from the FSM so that both the machine and the RIB code read one
//! [`Negotiated`] value instead of re-scanning capability lists.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::codec::iana::notif;
use crate::codec::{
    AddPathFamily, AddPathMode, Capability, Family, GracefulRestart, GracefulRestartFamily,
    Notification, Open, SessionContext, AS_TRANS,
};

/// OPEN Message Error subcode 2 (RFC 4271 section 6.2).
const BAD_PEER_AS: u8 = 2;

/// What we offer in our OPEN. Every flag is a capability we implement; the peer may
/// decline any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCapabilities {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds (0 disables keepalives, else at least 3).
    pub hold_time: u16,
    pub families: Vec<Family>,
    /// Offer RFC 8654 extended messages (UPDATEs up to 65535 bytes).
    pub extended_message: bool,
    /// Accept RFC 7911 path identifiers from the peer.
    pub add_path_receive: bool,
    /// RFC 4724: the time the peer should keep our routes after we vanish.
    pub restart_time: u16,
    /// R bit: we are coming back from a restart with our Adj-RIB-Out preserved.
    pub restarting: bool,
}

impl LocalCapabilities {
    /// The OPEN we send. The forwarding bit is set for every family: the routes
    /// migroute injects point at forwarding state that lives in the kernel, not in us,
    /// so it survives our restart.
    pub fn open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::Multiprotocol {
                afi: f.afi(),
                safi: f.safi(),
            })
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::EnhancedRouteRefresh);
        caps.push(Capability::FourOctetAs(self.local_as));
        caps.push(Capability::GracefulRestart(GracefulRestart {
            restart_state: self.restarting,
            notification: false,
            restart_time: self.restart_time.min(4095),
            families: self
                .families
                .iter()
                .map(|f| GracefulRestartFamily {
                    afi: f.afi(),
                    safi: f.safi(),
                    forwarding: true,
                })
                .collect(),
        }));
        if self.add_path_receive {
            caps.push(Capability::AddPath(
                self.families
                    .iter()
                    .map(|f| AddPathFamily {
                        afi: f.afi(),
                        safi: f.safi(),
                        mode: AddPathMode::Receive,
                    })
                    .collect(),
            ));
        }
        if self.extended_message {
            caps.push(Capability::ExtendedMessage);
        }
        Open {
            my_as: u16::try_from(self.local_as).unwrap_or(AS_TRANS),
            hold_time: self.hold_time,
            bgp_id: self.router_id,
            capabilities: caps,
        }
    }
}

/// What both OPENs agree on: everything the session's later behaviour depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Codec context (4-octet AS, add-path, extended message).
    pub ctx: SessionContext,
    /// min(ours, theirs), in seconds; 0 means no keepalives and no hold timer.
    pub hold_time: u16,
    pub remote_as: u32,
    pub remote_id: Ipv4Addr,
    /// Families both sides announced (IPv4 unicast when the peer sent no
    /// multiprotocol capability at all, RFC 4760 section 1).
    pub families: Vec<Family>,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    /// The peer's graceful restart capability, if it sent one.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// Both sent the N bit (RFC 8538).
    pub notification_gr: bool,
}

impl Negotiated {
    /// Keepalive interval: a third of the hold time (RFC 4271 section 10).
    pub fn keepalive(&self) -> Option<Duration> {
        (self.hold_time > 0).then(|| Duration::from_secs(u64::from(self.hold_time / 3).max(1)))
    }

    pub fn hold(&self) -> Option<Duration> {
        (self.hold_time > 0).then(|| Duration::from_secs(u64::from(self.hold_time)))
    }

    /// Whether the peer's graceful restart capability lists `family`: if the session
    /// drops, its routes of that family are kept stale instead of dropped.
    pub fn peer_preserves(&self, family: Family) -> bool {
        self.peer_graceful_restart.as_ref().is_some_and(|gr| {
            gr.families
                .iter()
                .any(|f| Family::from_afi_safi(f.afi, f.safi) == Some(family))
        })
    }

    /// Whether the peer, coming back from a restart, says it kept forwarding for
    /// `family` (F bit, RFC 4724 section 4.2): if not, the stale routes of that family
    /// must go at once rather than wait for End-of-RIB.
    pub fn peer_kept_forwarding(&self, family: Family) -> bool {
        self.peer_graceful_restart.as_ref().is_some_and(|gr| {
            gr.families
                .iter()
                .any(|f| Family::from_afi_safi(f.afi, f.safi) == Some(family) && f.forwarding)
        })
    }
}

/// Checks the peer's OPEN against what we expect and computes the agreement, or gives
/// the NOTIFICATION to refuse it with.
pub fn negotiate(
    local: &Open,
    remote: &Open,
    expected_as: u32,
) -> Result<Negotiated, Notification> {
    if remote.asn() != expected_as {
        let mut data = Vec::from(remote.my_as.to_be_bytes());
        if remote.my_as == AS_TRANS {
            data = remote.asn().to_be_bytes().to_vec();
        }
        return Err(Notification::new(
            notif::OPEN_MESSAGE_ERROR,
            BAD_PEER_AS,
            data,
        ));
    }
    if remote.bgp_id == local.bgp_id && expected_as == local.asn() {
        return Err(Notification::new(
            notif::OPEN_MESSAGE_ERROR,
            notif::BAD_BGP_IDENTIFIER,
            remote.bgp_id.octets().to_vec(),
        ));
    }
    let mp = |o: &Open| -> Vec<Family> {
        o.capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol { afi, safi } => Family::from_afi_safi(*afi, *safi),
                _ => None,
            })
            .collect()
    };
    let theirs = {
        let v = mp(remote);
        let any_mp = remote
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::Multiprotocol { .. }));
        if any_mp {
            v
        } else {
            vec![Family::Ipv4Unicast]
        }
    };
    let families: Vec<Family> = mp(local)
        .into_iter()
        .filter(|f| theirs.contains(f))
        .collect();
    let has = |o: &Open, f: fn(&Capability) -> bool| o.capabilities.iter().any(f);
    let both = |f: fn(&Capability) -> bool| has(local, f) && has(remote, f);
    let gr = |o: &Open| {
        o.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.clone()),
            _ => None,
        })
    };
    let peer_graceful_restart = gr(remote);
    let notification_gr = gr(local).is_some_and(|g| g.notification)
        && peer_graceful_restart
            .as_ref()
            .is_some_and(|g| g.notification);
    Ok(Negotiated {
        ctx: SessionContext::negotiate(local, remote),
        hold_time: local.hold_time.min(remote.hold_time),
        remote_as: remote.asn(),
        remote_id: remote.bgp_id,
        families,
        route_refresh: both(|c| matches!(c, Capability::RouteRefresh)),
        enhanced_route_refresh: both(|c| matches!(c, Capability::EnhancedRouteRefresh)),
        peer_graceful_restart,
        notification_gr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalCapabilities {
        LocalCapabilities {
            local_as: 4_200_000_001,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            hold_time: 90,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            extended_message: true,
            add_path_receive: false,
            restart_time: 120,
            restarting: false,
        }
    }

    #[test]
    fn four_octet_local_as_goes_in_the_capability() {
        let o = local().open();
        assert_eq!(o.my_as, AS_TRANS);
        assert_eq!(o.asn(), 4_200_000_001);
    }

    #[test]
    fn agreement_is_the_intersection() {
        let l = local().open();
        let mut r = LocalCapabilities {
            local_as: 65002,
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            hold_time: 30,
            families: vec![Family::Ipv4Unicast],
            extended_message: false,
            ..local()
        }
        .open();
        r.capabilities
            .retain(|c| !matches!(c, Capability::EnhancedRouteRefresh));
        let n = negotiate(&l, &r, 65002).unwrap();
        assert_eq!(n.hold_time, 30);
        assert_eq!(n.keepalive(), Some(Duration::from_secs(10)));
        assert_eq!(n.families, vec![Family::Ipv4Unicast]);
        assert!(n.route_refresh);
        assert!(!n.enhanced_route_refresh);
        assert!(!n.ctx.extended_message);
        assert!(n.ctx.as4);
        assert!(n.peer_preserves(Family::Ipv4Unicast));
        assert!(!n.peer_preserves(Family::Ipv6Unicast));
        assert!(n.peer_kept_forwarding(Family::Ipv4Unicast));
        // Without the F bit the family is listed but its routes must not wait.
        if let Some(Capability::GracefulRestart(g)) = r
            .capabilities
            .iter_mut()
            .find(|c| matches!(c, Capability::GracefulRestart(_)))
        {
            g.families[0].forwarding = false;
        }
        let n = negotiate(&l, &r, 65002).unwrap();
        assert!(n.peer_preserves(Family::Ipv4Unicast));
        assert!(!n.peer_kept_forwarding(Family::Ipv4Unicast));
    }

    #[test]
    fn no_multiprotocol_means_ipv4_only() {
        let l = local().open();
        let r = Open {
            my_as: 65002,
            hold_time: 0,
            bgp_id: Ipv4Addr::new(10, 0, 0, 2),
            capabilities: vec![],
        };
        let n = negotiate(&l, &r, 65002).unwrap();
        assert_eq!(n.families, vec![Family::Ipv4Unicast]);
        assert_eq!(n.keepalive(), None);
        assert!(!n.ctx.as4);
    }

    #[test]
    fn wrong_peer_as_is_refused_with_bad_peer_as() {
        let l = local().open();
        let r = Open {
            my_as: 65003,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(10, 0, 0, 2),
            capabilities: vec![],
        };
        let n = negotiate(&l, &r, 65002).unwrap_err();
        assert_eq!((n.code, n.subcode), (2, 2));
    }

    #[test]
    fn same_router_id_on_ibgp_is_refused() {
        let l = local().open();
        let mut r = l.clone();
        r.hold_time = 90;
        let n = negotiate(&l, &r, 4_200_000_001).unwrap_err();
        assert_eq!((n.code, n.subcode), (2, 3));
    }
}
