//! Everything migroute owns in a namespace, read back from the kernel: links named
//! `mr-*`, routes tagged with migroute's protocol (in any table) and rules tagged the
//! same way. This is what `migroute tunnel list` prints, what `gc` removes and what
//! reconcile compares with the journal.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    GreIOFlags, InfoData, InfoGre, InfoGre6, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use netlink_packet_route::rule::{RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::{Deserialize, Serialize};

use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::handle::NetlinkHandle;
use crate::ids::{Prefix, LINK_PREFIX, PROTOCOL};
use crate::rule::Family;
use crate::tunnel::{Inside, TunnelKind, TunnelSpec};
use crate::{link, override_route, rule};

/// The kernel-visible identity of a tunnel: what must match for an existing link to be
/// adopted instead of recreated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TunnelIdentity {
    Vxlan {
        vni: u32,
        local: Option<IpAddr>,
        dstport: u16,
        /// Far ends from the all-zero FDB entries.
        remotes: Vec<IpAddr>,
    },
    Gre {
        kind: String,
        local: Option<IpAddr>,
        remote: Option<IpAddr>,
        ttl: u8,
        key: Option<u32>,
    },
    /// A `mr-` link of a kind migroute does not create: always removed.
    Other { kind: String },
}

/// Identity from a link message (VXLAN remotes are filled in from the FDB separately).
pub fn identity_of_link(l: &LinkMessage) -> Option<TunnelIdentity> {
    let infos = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(i) => Some(i),
        _ => None,
    })?;
    let kind = infos.iter().find_map(|i| match i {
        LinkInfo::Kind(k) => Some(k.to_string()),
        _ => None,
    });
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(d) => Some(d),
        _ => None,
    });
    match data {
        Some(InfoData::Vxlan(v)) => {
            let mut id = (0, None, crate::vxlan::DEFAULT_DSTPORT);
            for a in v {
                match a {
                    InfoVxlan::Id(n) => id.0 = *n,
                    InfoVxlan::Local(a) => id.1 = Some(IpAddr::V4(*a)),
                    InfoVxlan::Local6(a) => id.1 = Some(IpAddr::V6(*a)),
                    InfoVxlan::Port(p) => id.2 = *p,
                    _ => {}
                }
            }
            Some(TunnelIdentity::Vxlan {
                vni: id.0,
                local: id.1,
                dstport: id.2,
                remotes: Vec::new(),
            })
        }
        Some(InfoData::GreTun(g)) => {
            let mut local = None;
            let mut remote = None;
            let mut ttl = 0;
            let mut key = None;
            let mut keyed = false;
            for a in g {
                match a {
                    InfoGre::Local(a) => local = Some(IpAddr::V4(*a)),
                    InfoGre::Remote(a) => remote = Some(IpAddr::V4(*a)),
                    InfoGre::Ttl(t) => ttl = *t,
                    InfoGre::OKey(k) => key = Some(*k),
                    InfoGre::OFlags(f) => keyed = f.contains(GreIOFlags::Key),
                    _ => {}
                }
            }
            Some(TunnelIdentity::Gre {
                kind: "gre".into(),
                local,
                remote,
                ttl,
                key: key.filter(|_| keyed),
            })
        }
        Some(InfoData::GreTun6(g)) => {
            let mut local = None;
            let mut remote = None;
            let mut ttl = 0;
            let mut key = None;
            let mut keyed = false;
            for a in g {
                match a {
                    InfoGre6::Local(a) => local = Some(IpAddr::V6(*a)),
                    InfoGre6::Remote(a) => remote = Some(IpAddr::V6(*a)),
                    InfoGre6::Ttl(t) => ttl = *t,
                    InfoGre6::OKey(k) => key = Some(*k),
                    InfoGre6::OFlags(f) => keyed = f.contains(GreIOFlags::Key),
                    _ => {}
                }
            }
            Some(TunnelIdentity::Gre {
                kind: "ip6gre".into(),
                local,
                remote,
                ttl,
                key: key.filter(|_| keyed),
            })
        }
        _ => Some(TunnelIdentity::Other {
            kind: kind.unwrap_or_else(|| "unknown".into()),
        }),
    }
}

impl TunnelIdentity {
    /// The identity a spec would produce.
    pub fn of_spec(spec: &TunnelSpec) -> Self {
        match &spec.kind {
            TunnelKind::Vxlan(v) => TunnelIdentity::Vxlan {
                vni: v.vni,
                local: Some(v.local),
                dstport: v.dstport,
                remotes: vec![v.remote],
            },
            TunnelKind::Gre(g) => TunnelIdentity::Gre {
                kind: g.kind().into(),
                local: Some(g.local),
                remote: Some(g.remote),
                ttl: g.ttl,
                key: g.key,
            },
        }
    }

    /// Link-level match, ignoring VXLAN remotes (which live in the FDB and are
    /// compared by [`OwnedTunnel::matches`]).
    pub fn matches_spec(&self, spec: &TunnelSpec) -> bool {
        match (self, TunnelIdentity::of_spec(spec)) {
            (
                TunnelIdentity::Vxlan {
                    vni,
                    local,
                    dstport,
                    ..
                },
                TunnelIdentity::Vxlan {
                    vni: v2,
                    local: l2,
                    dstport: d2,
                    ..
                },
            ) => *vni == v2 && *local == l2 && *dstport == d2,
            (a, b) => *a == b,
        }
    }
}

/// A `mr-` link as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedTunnel {
    pub name: String,
    pub ifindex: u32,
    pub identity: TunnelIdentity,
    pub up: bool,
    pub mtu: Option<u32>,
    /// Global addresses on the link (link-local IPv6 left out).
    pub addresses: Vec<Inside>,
    pub counters: Counters,
}

impl OwnedTunnel {
    /// `true` when the link already is what `spec` asks for: adopt, don't recreate.
    pub fn matches(&self, spec: &TunnelSpec) -> bool {
        if self.name != spec.name || self.identity != TunnelIdentity::of_spec(spec) {
            return false;
        }
        if let TunnelKind::Vxlan(v) = &spec.kind {
            if self.mtu.is_some_and(|m| m != v.effective_mtu()) {
                return false;
            }
        }
        match spec.inside {
            Some(i) => self.addresses == vec![i],
            None => self.addresses.is_empty(),
        }
    }
}

/// A route tagged with migroute's protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedRoute {
    pub prefix: Prefix,
    pub table: u32,
    pub oif: Option<u32>,
    /// Name of `oif`, when it is a link we could see.
    pub via: Option<String>,
    pub gateway: Option<IpAddr>,
}

/// A rule tagged with migroute's protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedRule {
    pub family: Family,
    pub priority: u32,
    pub table: u32,
}

/// Everything migroute owns in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    pub tunnels: Vec<OwnedTunnel>,
    pub routes: Vec<OwnedRoute>,
    pub rules: Vec<OwnedRule>,
}

impl Owned {
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty() && self.routes.is_empty() && self.rules.is_empty()
    }
}

fn dump_err(handle: &NetlinkHandle, what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let netns = handle.netns().clone();
    move |source| Error::Dump {
        netns,
        what,
        source,
    }
}

/// Reads everything migroute owns (four dumps: links, addresses, bridge FDB, routes,
/// rules).
pub async fn list(handle: &NetlinkHandle) -> Result<Owned> {
    let links = handle
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .await
        .map_err(dump_err(handle, "links"))?;
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut tunnels: BTreeMap<u32, OwnedTunnel> = BTreeMap::new();
    for m in links {
        let RouteNetlinkMessage::NewLink(l) = m else {
            continue;
        };
        let Some(name) = link::name_of(&l).map(str::to_string) else {
            continue;
        };
        names.insert(l.header.index, name.clone());
        if !name.starts_with(LINK_PREFIX) {
            continue;
        }
        let identity = identity_of_link(&l).unwrap_or(TunnelIdentity::Other {
            kind: "unknown".into(),
        });
        let mtu = l.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        });
        tunnels.insert(
            l.header.index,
            OwnedTunnel {
                name,
                ifindex: l.header.index,
                identity,
                up: l.header.flags.contains(LinkFlags::Up),
                mtu,
                addresses: Vec::new(),
                counters: Counters::from_link(&l),
            },
        );
    }
    if !tunnels.is_empty() {
        let addrs = handle
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .await
            .map_err(dump_err(handle, "addresses"))?;
        for m in addrs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            let Some(t) = tunnels.get_mut(&a.header.index) else {
                continue;
            };
            if let Some(addr) = address_of(&a) {
                if !is_link_local(addr) {
                    t.addresses.push(Inside {
                        address: addr,
                        prefix_len: a.header.prefix_len,
                    });
                }
            }
        }
        let mut fdb_req = NeighbourMessage::default();
        fdb_req.header.family = AddressFamily::Bridge;
        let fdb = handle
            .dump(RouteNetlinkMessage::GetNeighbour(fdb_req))
            .await
            .map_err(dump_err(handle, "bridge fdb"))?;
        for m in fdb {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            let Some(t) = tunnels.get_mut(&n.header.ifindex) else {
                continue;
            };
            if let (Some(remote), TunnelIdentity::Vxlan { remotes, .. }) =
                (default_fdb_remote(&n), &mut t.identity)
            {
                remotes.push(remote);
            }
        }
    }
    let routes = handle
        .dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))
        .await
        .map_err(dump_err(handle, "routes"))?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => owned_route(&r, &names),
            _ => None,
        })
        .collect();
    let rules = handle
        .dump(RouteNetlinkMessage::GetRule(RuleMessage::default()))
        .await
        .map_err(dump_err(handle, "rules"))?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRule(r) => owned_rule(&r),
            _ => None,
        })
        .collect();
    Ok(Owned {
        tunnels: tunnels.into_values().collect(),
        routes,
        rules,
    })
}

fn address_of(a: &AddressMessage) -> Option<IpAddr> {
    a.attributes
        .iter()
        .find_map(|x| match x {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
}

fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(_) => false,
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The remote of an all-zero FDB entry, if `n` is one.
fn default_fdb_remote(n: &NeighbourMessage) -> Option<IpAddr> {
    let zero = n
        .attributes
        .iter()
        .any(|a| matches!(a, NeighbourAttribute::LinkLayerAddress(l) if l.iter().all(|b| *b == 0)));
    if !zero {
        return None;
    }
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        // AF_BRIDGE entries carry the VTEP address raw; its length gives the family.
        NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => match raw.len() {
            4 => <[u8; 4]>::try_from(raw.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(raw.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

/// A route message as an [`OwnedRoute`], if it carries migroute's protocol.
pub fn owned_route(r: &RouteMessage, names: &HashMap<u32, String>) -> Option<OwnedRoute> {
    if r.header.protocol != RouteProtocol::Other(PROTOCOL) {
        return None;
    }
    let mut table = u32::from(r.header.table);
    let mut dst = None;
    let mut oif = None;
    let mut gateway = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            _ => {}
        }
    }
    let dst = dst.unwrap_or(match r.header.address_family {
        AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
        _ => IpAddr::from([0u8; 4]),
    });
    Some(OwnedRoute {
        prefix: Prefix::new(dst, r.header.destination_prefix_length)?,
        table,
        oif,
        via: oif.and_then(|i| names.get(&i).cloned()),
        gateway,
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A rule message as an [`OwnedRule`], if it carries migroute's protocol.
pub fn owned_rule(r: &RuleMessage) -> Option<OwnedRule> {
    let ours = r
        .attributes
        .iter()
        .any(|a| matches!(a, RuleAttribute::Protocol(p) if *p == RouteProtocol::Other(PROTOCOL)));
    if !ours {
        return None;
    }
    let family = match r.header.family {
        AddressFamily::Inet => Family::Ipv4,
        AddressFamily::Inet6 => Family::Ipv6,
        _ => return None,
    };
    let mut table = u32::from(r.header.table);
    let mut priority = 0;
    for a in &r.attributes {
        match a {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = *p,
            _ => {}
        }
    }
    Some(OwnedRule {
        family,
        priority,
        table,
    })
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub rules: usize,
    pub routes: usize,
    pub tunnels: usize,
}

/// Removes everything migroute owns in the namespace: rules first (stop steering),
/// then routes, then links.
pub async fn gc(handle: &NetlinkHandle) -> Result<GcReport> {
    let owned = list(handle).await?;
    for r in &owned.rules {
        rule::remove_exact(handle, r.family, r.priority, r.table).await?;
    }
    override_route::remove_observed(handle, &owned.routes).await?;
    for t in &owned.tunnels {
        match crate::tunnel::delete(handle, &t.name).await {
            Ok(()) | Err(Error::LinkNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(GcReport {
        rules: owned.rules.len(),
        routes: owned.routes.len(),
        tunnels: owned.tunnels.len(),
    })
}
