//! Forwarding overrides: a host route for a VM's address into a tunnel, in migroute's
//! table, tagged with migroute's protocol.
//!
//! This is the source PE's half of a switchover: once the VM resumes at the other site,
//! traffic that still arrives here is steered into the tunnel until ingress routers have
//! converged. Installs use `NLM_F_REPLACE`, so re-installing (after a restart, or to
//! move an override to another tunnel) is never an EEXIST error, and batches are
//! pipelined so thousands of prefixes move in one round of acks.

use std::net::IpAddr;

use netlink_packet_route::route::{
    RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::RouteMessageBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{is_enoent, Error, Result};
use crate::handle::NetlinkHandle;
use crate::ids::{Prefix, PROTOCOL, TABLE};
use crate::link;
use crate::ownership::OwnedRoute;
use crate::request::{Request, FLAGS_ACK, FLAGS_REPLACE};
use crate::rule::{self, Family};

/// One override: `PREFIX` goes into tunnel `via`, optionally through `gateway`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Override {
    pub prefix: Prefix,
    /// Tunnel link name.
    pub via: String,
    /// Next hop on the tunnel (the peer's inside address). Without it the prefix is
    /// treated as on-link on the tunnel.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

impl Override {
    pub fn new(prefix: Prefix, via: &str) -> Self {
        Self {
            prefix,
            via: via.to_string(),
            gateway: None,
        }
    }

    pub fn with_gateway(mut self, gateway: IpAddr) -> Self {
        self.gateway = Some(gateway);
        self
    }
}

/// The route message for `prefix` → `oif` (pure). With a gateway the next hop is
/// marked on-link: it sits on the tunnel, whatever the main table says.
pub fn route_message(prefix: Prefix, oif: u32, gateway: Option<IpAddr>) -> RouteMessage {
    let mut m = match prefix.addr() {
        IpAddr::V4(a) => {
            let mut b = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(a, prefix.len())
                .output_interface(oif);
            if let Some(IpAddr::V4(g)) = gateway {
                b = b.gateway(g).onlink();
            }
            finish(b)
        }
        IpAddr::V6(a) => {
            let mut b = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(a, prefix.len())
                .output_interface(oif);
            if let Some(IpAddr::V6(g)) = gateway {
                b = b.gateway(g).onlink();
            }
            finish(b)
        }
    };
    // Like iproute2 for tables above 255: the id travels in RTA_TABLE only.
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.header.scope = if gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    m
}

fn finish<T>(b: RouteMessageBuilder<T>) -> RouteMessage {
    b.table_id(TABLE)
        .protocol(RouteProtocol::Other(PROTOCOL))
        .kind(RouteType::Unicast)
        .build()
}

/// `ip route replace PREFIX [via GW onlink] dev OIF table migroute proto migroute`.
pub fn replace_request(prefix: Prefix, oif: u32, gateway: Option<IpAddr>) -> Request {
    Request::new(
        RouteNetlinkMessage::NewRoute(route_message(prefix, oif, gateway)),
        FLAGS_REPLACE,
    )
}

/// `ip route del PREFIX table migroute proto migroute` (any next hop).
pub fn delete_request(prefix: Prefix) -> Request {
    delete_request_in(prefix, TABLE)
}

/// Deletes a migroute-tagged route from any table (for leftovers found by `list`).
pub fn delete_request_in(prefix: Prefix, table: u32) -> Request {
    let mut m = route_message(prefix, 0, None);
    for a in m.attributes.iter_mut() {
        if let netlink_packet_route::route::RouteAttribute::Table(t) = a {
            *t = table;
        }
    }
    m.attributes
        .retain(|a| !matches!(a, netlink_packet_route::route::RouteAttribute::Oif(_)));
    m.header.scope = RouteScope::NoWhere;
    Request::new(RouteNetlinkMessage::DelRoute(m), FLAGS_ACK)
}

/// Installs or replaces every override, pipelined. Fails on the first error, naming
/// the prefix; a missing tunnel is [`Error::LinkNotFound`].
pub async fn replace_batch(handle: &NetlinkHandle, overrides: &[Override]) -> Result<()> {
    let mut cache: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let mut reqs = Vec::with_capacity(overrides.len());
    for o in overrides {
        let oif = match cache.get(o.via.as_str()) {
            Some(i) => *i,
            None => {
                let i =
                    link::index_of(handle, &o.via)
                        .await?
                        .ok_or_else(|| Error::LinkNotFound {
                            netns: handle.netns().clone(),
                            ifname: o.via.clone(),
                        })?;
                cache.insert(o.via.as_str(), i);
                i
            }
        };
        reqs.push(replace_request(o.prefix, oif, o.gateway));
    }
    let mut families: Vec<Family> = overrides
        .iter()
        .map(|o| Family::of(o.prefix.addr()))
        .collect();
    families.sort();
    families.dedup();
    for f in families {
        rule::ensure(handle, f).await?;
    }
    let results = handle.execute_batch(reqs).await;
    for (o, r) in overrides.iter().zip(results) {
        r.map_err(|source| Error::RouteReplace {
            netns: handle.netns().clone(),
            table: TABLE,
            prefix: o.prefix,
            source,
        })?;
    }
    Ok(())
}

/// Installs or replaces one override.
pub async fn replace(handle: &NetlinkHandle, o: &Override) -> Result<()> {
    replace_batch(handle, std::slice::from_ref(o)).await
}

/// Removes overrides, pipelined; one already gone is not an error.
pub async fn remove_batch(handle: &NetlinkHandle, prefixes: &[Prefix]) -> Result<()> {
    let reqs = prefixes.iter().map(|p| delete_request(*p)).collect();
    let results = handle.execute_batch(reqs).await;
    for (p, r) in prefixes.iter().zip(results) {
        match r {
            Ok(()) => {}
            Err(e) if is_enoent(&e) => {}
            Err(source) => {
                return Err(Error::RouteDelete {
                    netns: handle.netns().clone(),
                    table: TABLE,
                    prefix: *p,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// `ip route del PREFIX dev OIF table migroute proto migroute`: deletes the route only
/// if it leaves through `oif`.
///
/// Why the device: the destination's delivery route (the VM's host route on-link on the
/// data-center-facing interface) shares table and prefix with the override the same PE
/// installs when it later becomes the source of the next move. Deleting by prefix alone
/// would take that override away; with the oif the kernel matches only the delivery
/// route and answers ESRCH otherwise, which [`remove_via`] treats as "already gone".
pub fn delete_via_request(prefix: Prefix, oif: u32) -> Request {
    let mut m = route_message(prefix, oif, None);
    m.header.scope = RouteScope::NoWhere;
    Request::new(RouteNetlinkMessage::DelRoute(m), FLAGS_ACK)
}

/// Removes the routes of `prefixes` that leave through device `dev`, pipelined; routes
/// through another device (an override into a tunnel) stay, and a missing route or a
/// missing device is not an error (nothing can leave through it).
pub async fn remove_via(handle: &NetlinkHandle, prefixes: &[Prefix], dev: &str) -> Result<()> {
    let Some(oif) = link::index_of(handle, dev).await? else {
        return Ok(());
    };
    let reqs = prefixes
        .iter()
        .map(|p| delete_via_request(*p, oif))
        .collect();
    let results = handle.execute_batch(reqs).await;
    for (p, r) in prefixes.iter().zip(results) {
        match r {
            Ok(()) => {}
            Err(e) if is_enoent(&e) => {}
            Err(source) => {
                return Err(Error::RouteDelete {
                    netns: handle.netns().clone(),
                    table: TABLE,
                    prefix: *p,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Removes routes as `list` observed them (any table), pipelined.
pub async fn remove_observed(handle: &NetlinkHandle, routes: &[OwnedRoute]) -> Result<()> {
    let reqs = routes
        .iter()
        .map(|r| delete_request_in(r.prefix, r.table))
        .collect();
    let results = handle.execute_batch(reqs).await;
    for (o, r) in routes.iter().zip(results) {
        match r {
            Ok(()) => {}
            Err(e) if is_enoent(&e) => {}
            Err(source) => {
                return Err(Error::RouteDelete {
                    netns: handle.netns().clone(),
                    table: o.table,
                    prefix: o.prefix,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Removes one override.
pub async fn remove(handle: &NetlinkHandle, prefix: Prefix) -> Result<()> {
    remove_batch(handle, &[prefix]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags};

    fn roundtrip(req: &Request) -> RouteMessage {
        let bytes = req.to_bytes();
        let nl = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(nl.header.flags, req.flags);
        match nl.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m))
            | NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replace_request_carries_table_protocol_and_onlink_gateway() {
        let req = replace_request(
            "10.10.0.5/32".parse().unwrap(),
            7,
            Some("192.168.255.1".parse().unwrap()),
        );
        assert_eq!(req.flags, FLAGS_REPLACE);
        let m = roundtrip(&req);
        assert_eq!(m.header.protocol, RouteProtocol::Other(PROTOCOL));
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert_eq!(m.header.destination_prefix_length, 32);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert!(m.header.flags.contains(RouteFlags::Onlink));
        assert!(m.attributes.contains(&RouteAttribute::Table(TABLE)));
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(m
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(
                "192.168.255.1".parse().unwrap()
            ))));
        assert!(m
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                "10.10.0.5".parse().unwrap()
            ))));
    }

    #[test]
    fn v6_host_route_without_gateway_is_link_scoped() {
        let m = roundtrip(&replace_request(
            "2001:db8::5/128".parse().unwrap(),
            3,
            None,
        ));
        assert_eq!(m.header.destination_prefix_length, 128);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert!(!m.header.flags.contains(RouteFlags::Onlink));
    }

    #[test]
    fn delete_via_request_names_prefix_table_protocol_and_device() {
        let req = delete_via_request("10.10.0.5/32".parse().unwrap(), 9);
        assert_eq!(req.flags, FLAGS_ACK);
        let bytes = req.to_bytes();
        let nl = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        let m = match nl.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(m.header.protocol, RouteProtocol::Other(PROTOCOL));
        assert_eq!(m.header.destination_prefix_length, 32);
        assert!(m.attributes.contains(&RouteAttribute::Table(TABLE)));
        assert!(m.attributes.contains(&RouteAttribute::Oif(9)));
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_))));
    }

    #[test]
    fn delete_request_names_prefix_and_table_only() {
        let req = delete_request_in("10.10.0.5/32".parse().unwrap(), 254);
        assert_eq!(req.flags, FLAGS_ACK);
        let m = roundtrip(&req);
        assert!(m.attributes.contains(&RouteAttribute::Table(254)));
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(_))));
    }
}
