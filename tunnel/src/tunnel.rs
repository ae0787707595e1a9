//! A tunnel as migroute wants it (`TunnelSpec`) and the steps that make it real:
//! create and bring up the link, address its inside as a point-to-point /31 or /127,
//! and for VXLAN add the FDB entry and the static neighbour of the peer (and, with an
//! IPv4 inside, of the peer's IPv6 link-local too) so that the first packet after a
//! switchover does not wait for ARP/ND.

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::{Deserialize, Serialize};

use crate::error::{is_eexist, is_enoent, Error, Result};
use crate::gre::GreSpec;
use crate::handle::NetlinkHandle;
use crate::ids::check_link_name;
use crate::link;
use crate::request::{Request, FLAGS_CREATE, FLAGS_REPLACE};
use crate::vxlan::{fdb_default_entry, neighbour_address, VxlanSpec};

/// The encapsulation of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TunnelKind {
    Vxlan(VxlanSpec),
    Gre(GreSpec),
}

/// The inside address of a point-to-point tunnel: a /31 (IPv4) or /127 (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Inside {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Inside {
    /// `None` unless the length is 31 (IPv4) or 127 (IPv6).
    pub fn new(address: IpAddr, prefix_len: u8) -> Option<Self> {
        let ok = matches!(
            (address, prefix_len),
            (IpAddr::V4(_), 31) | (IpAddr::V6(_), 127)
        );
        ok.then_some(Self {
            address,
            prefix_len,
        })
    }

    /// The other end of the /31 or /127.
    pub fn peer(&self) -> IpAddr {
        match self.address {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) ^ 1).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) ^ 1).into()),
        }
    }
}

impl std::str::FromStr for Inside {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s}: expected ADDRESS/31 or ADDRESS/127"))?;
        let a: IpAddr = a.parse().map_err(|e| format!("{s}: {e}"))?;
        let l: u8 = l.parse().map_err(|e| format!("{s}: {e}"))?;
        Inside::new(a, l).ok_or_else(|| format!("{s}: inside must be a /31 or a /127"))
    }
}

/// A MAC derived from an inside address (`02:6d:` + its last four bytes), so each side
/// knows its peer's MAC without ARP and installs it as a permanent neighbour.
pub fn inside_mac(address: IpAddr) -> [u8; 6] {
    let tail = match address {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0x6d, tail[0], tail[1], tail[2], tail[3]]
}

/// The IPv6 next hop of an IPv4-inside VXLAN tunnel's end at `address`: the EUI-64
/// link-local address of [`inside_mac`]`(address)`.
///
/// Why: an IPv6 host route into a tunnel whose inside is an IPv4 /31 still needs a next
/// hop the sender can resolve without neighbour discovery (nobody on the tunnel owns
/// the VM's address, so on-link ND for it would go unanswered). Each side installs its
/// peer's link-local as a permanent neighbour next to the IPv4 one. It is also the
/// address the kernel gives the peer's link under the default `addr_gen_mode` (EUI-64
/// of its MAC), but forwarding does not depend on that: the frame carries the peer's
/// MAC, and the peer routes by the packet's destination.
pub fn inside_link_local(address: IpAddr) -> std::net::Ipv6Addr {
    let m = inside_mac(address);
    std::net::Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// One tunnel as migroute wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSpec {
    /// Link name, starting with `mr-`.
    pub name: String,
    #[serde(flatten)]
    pub kind: TunnelKind,
    #[serde(default)]
    pub inside: Option<Inside>,
}

impl TunnelSpec {
    pub fn vxlan(name: &str, spec: VxlanSpec) -> Self {
        Self {
            name: name.to_string(),
            kind: TunnelKind::Vxlan(spec),
            inside: None,
        }
    }

    pub fn gre(name: &str, spec: GreSpec) -> Self {
        Self {
            name: name.to_string(),
            kind: TunnelKind::Gre(spec),
            inside: None,
        }
    }

    pub fn with_inside(mut self, inside: Inside) -> Self {
        self.inside = Some(inside);
        self
    }

    pub fn underlay(&self) -> Option<&str> {
        match &self.kind {
            TunnelKind::Vxlan(v) => v.underlay.as_deref(),
            TunnelKind::Gre(g) => g.underlay.as_deref(),
        }
    }

    /// Checks that need no kernel: name, address families.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_link_name(&self.name).map_err(str::to_string)?;
        let (local, remote) = match &self.kind {
            TunnelKind::Vxlan(v) => {
                if v.vni >= 1 << 24 {
                    return Err(format!("VNI {} does not fit in 24 bits", v.vni));
                }
                (v.local, v.remote)
            }
            TunnelKind::Gre(g) => (g.local, g.remote),
        };
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(format!(
                "local {local} and remote {remote} are of different families"
            ));
        }
        Ok(())
    }

    /// `RTM_NEWLINK` for this tunnel (pure).
    pub fn link_request(&self, underlay_index: Option<u32>) -> Request {
        let msg = match &self.kind {
            TunnelKind::Vxlan(v) => v.build(
                &self.name,
                underlay_index,
                self.inside.map(|i| inside_mac(i.address)),
            ),
            TunnelKind::Gre(g) => g
                .build(&self.name, underlay_index)
                .expect("validate() checked address families"),
        };
        Request::new(RouteNetlinkMessage::NewLink(msg), FLAGS_CREATE)
    }

    /// The requests that follow link creation, once its ifindex is known (pure).
    pub fn follow_up_requests(&self, ifindex: u32) -> Vec<Request> {
        let mut out = Vec::new();
        if let Some(inside) = self.inside {
            out.push(address_request(ifindex, inside));
        }
        if let TunnelKind::Vxlan(v) = &self.kind {
            out.push(fdb_default_entry(ifindex, v.remote));
            if let Some(inside) = self.inside {
                let (peer, mac) = (inside.peer(), inside_mac(inside.peer()));
                out.push(static_neighbour(ifindex, peer, mac));
                // IPv6 overrides into an IPv4-inside tunnel go via the peer's
                // link-local (see [`inside_link_local`]).
                if peer.is_ipv4() {
                    let ll = IpAddr::V6(inside_link_local(peer));
                    out.push(static_neighbour(ifindex, ll, mac));
                }
            }
        }
        out
    }
}

/// `ip addr replace INSIDE dev IFINDEX` (replace, so re-applying is not an error).
pub fn address_request(ifindex: u32, inside: Inside) -> Request {
    let mut m = AddressMessage::default();
    m.header.index = ifindex;
    m.header.prefix_len = inside.prefix_len;
    match inside.address {
        IpAddr::V4(_) => {
            m.header.family = AddressFamily::Inet;
            m.attributes.push(AddressAttribute::Local(inside.address));
            m.attributes.push(AddressAttribute::Address(inside.address));
        }
        IpAddr::V6(_) => {
            m.header.family = AddressFamily::Inet6;
            m.attributes.push(AddressAttribute::Address(inside.address));
            // No duplicate address detection on a point-to-point link: the address
            // must be usable the moment the tunnel exists.
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    Request::new(RouteNetlinkMessage::NewAddress(m), FLAGS_REPLACE)
}

/// `ip neigh replace PEER lladdr MAC dev IFINDEX nud permanent`.
pub fn static_neighbour(ifindex: u32, peer: IpAddr, mac: [u8; 6]) -> Request {
    let mut m = NeighbourMessage::default();
    m.header.family = if peer.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(peer)));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    Request::new(RouteNetlinkMessage::NewNeighbour(m), FLAGS_REPLACE)
}

/// Creates the tunnel, or adopts it if a link of that name is already there with the
/// same identity (so re-running is not an error); a different link of that name is
/// replaced. Returns the ifindex.
pub async fn create(handle: &NetlinkHandle, spec: &TunnelSpec) -> Result<u32> {
    let netns = handle.netns().clone();
    spec.validate().map_err(|reason| Error::InvalidSpec {
        netns: netns.clone(),
        ifname: spec.name.clone(),
        reason,
    })?;
    let underlay_index = match spec.underlay() {
        None => None,
        Some(dev) => {
            Some(
                link::index_of(handle, dev)
                    .await?
                    .ok_or_else(|| Error::UnderlayNotFound {
                        netns: netns.clone(),
                        ifname: dev.to_string(),
                    })?,
            )
        }
    };
    let req = spec.link_request(underlay_index);
    match handle.execute(req.clone()).await {
        Ok(()) => {}
        Err(e) if is_eexist(&e) => {
            let owned = crate::ownership::list(handle).await?;
            let same = match owned.tunnels.iter().find(|t| t.name == spec.name) {
                // Same link, same FDB remote, same inside address: adopt it.
                Some(t) => t.matches(spec),
                // EEXIST without a link of that name: another link holds the same
                // VNI/port (or key/endpoints); not ours to remove.
                None => return Err(create_error(&netns, spec, e)),
            };
            if !same {
                delete(handle, &spec.name).await?;
                handle
                    .execute(req)
                    .await
                    .map_err(|source| create_error(&netns, spec, source))?;
            }
        }
        Err(source) => return Err(create_error(&netns, spec, source)),
    }
    let ifindex = link::index_of(handle, &spec.name)
        .await?
        .ok_or_else(|| Error::LinkNotFound {
            netns: netns.clone(),
            ifname: spec.name.clone(),
        })?;
    // Bring up even when adopted: a crash may have left it down.
    let mut up = netlink_packet_route::link::LinkMessage::default();
    up.header.index = ifindex;
    up.header.flags = netlink_packet_route::link::LinkFlags::Up;
    up.header.change_mask = netlink_packet_route::link::LinkFlags::Up;
    handle
        .execute(Request::new(
            RouteNetlinkMessage::SetLink(up),
            crate::request::FLAGS_ACK,
        ))
        .await
        .map_err(|source| Error::LinkUp {
            netns: netns.clone(),
            ifname: spec.name.clone(),
            source,
        })?;
    for r in spec.follow_up_requests(ifindex) {
        let what = r.message.clone();
        match handle.execute(r).await {
            Ok(()) => {}
            Err(e) if is_eexist(&e) => {}
            Err(source) => return Err(follow_up_error(&netns, spec, &what, source)),
        }
    }
    Ok(ifindex)
}

fn create_error(netns: &crate::Netns, spec: &TunnelSpec, source: std::io::Error) -> Error {
    let unsupported = source.raw_os_error() == Some(nix::libc::EOPNOTSUPP);
    match (&spec.kind, unsupported) {
        (TunnelKind::Gre(g), true) => Error::KernelLacksTunnel {
            netns: netns.clone(),
            ifname: spec.name.clone(),
            kind: g.kind(),
            module: g.module(),
            source,
        },
        (TunnelKind::Vxlan(_), true) => Error::KernelLacksTunnel {
            netns: netns.clone(),
            ifname: spec.name.clone(),
            kind: "vxlan",
            module: "vxlan",
            source,
        },
        _ => Error::LinkCreate {
            netns: netns.clone(),
            ifname: spec.name.clone(),
            source,
        },
    }
}

fn follow_up_error(
    netns: &crate::Netns,
    spec: &TunnelSpec,
    what: &RouteNetlinkMessage,
    source: std::io::Error,
) -> Error {
    let ifname = spec.name.clone();
    let netns = netns.clone();
    match (what, &spec.kind, spec.inside) {
        (RouteNetlinkMessage::NewAddress(_), _, Some(i)) => Error::AddressAdd {
            netns,
            ifname,
            address: i.address,
            prefix_len: i.prefix_len,
            source,
        },
        (RouteNetlinkMessage::NewNeighbour(n), TunnelKind::Vxlan(v), _)
            if n.header.family == AddressFamily::Bridge =>
        {
            Error::FdbAppend {
                netns,
                ifname,
                remote: v.remote,
                source,
            }
        }
        (_, _, inside) => Error::NeighbourAdd {
            netns,
            ifname,
            address: inside
                .map(|i| i.peer())
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            source,
        },
    }
}

/// Deletes the tunnel named `name`; [`Error::LinkNotFound`] if there is none. Routes
/// through it go with it (the kernel removes them).
pub async fn delete(handle: &NetlinkHandle, name: &str) -> Result<()> {
    let netns = handle.netns().clone();
    let index = link::index_of(handle, name)
        .await?
        .ok_or_else(|| Error::LinkNotFound {
            netns: netns.clone(),
            ifname: name.to_string(),
        })?;
    match handle.execute(link::delete(index)).await {
        Ok(()) => Ok(()),
        Err(e) if is_enoent(&e) => Ok(()),
        Err(source) => Err(Error::LinkDelete {
            netns,
            ifname: name.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_the_eui64_of_the_inside_mac() {
        let a: IpAddr = "169.254.23.113".parse().unwrap();
        assert_eq!(inside_mac(a), [0x02, 0x6d, 169, 254, 23, 113]);
        // 02:6d:a9:fe:17:71 -> U/L bit flipped, ff:fe in the middle.
        assert_eq!(
            inside_link_local(a),
            "fe80::6d:a9ff:fefe:1771"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
        );
    }

    #[test]
    fn an_ipv4_inside_vxlan_gets_both_neighbours_of_its_peer() {
        let spec = TunnelSpec::vxlan(
            "mr-vx",
            VxlanSpec::new(
                7,
                "10.0.23.2".parse().unwrap(),
                "10.0.23.3".parse().unwrap(),
            ),
        )
        .with_inside("169.254.0.14/31".parse().unwrap());
        let neighbours: Vec<(IpAddr, Vec<u8>)> =
            spec.follow_up_requests(9)
                .into_iter()
                .filter_map(|r| match r.message {
                    RouteNetlinkMessage::NewNeighbour(n)
                        if n.header.family != AddressFamily::Bridge =>
                    {
                        let mut dst = None;
                        let mut mac = None;
                        for a in n.attributes {
                            match a {
                                NeighbourAttribute::Destination(d) => dst = Some(match d {
                                    netlink_packet_route::neighbour::NeighbourAddress::Inet(a) => {
                                        IpAddr::V4(a)
                                    }
                                    netlink_packet_route::neighbour::NeighbourAddress::Inet6(a) => {
                                        IpAddr::V6(a)
                                    }
                                    other => panic!("{other:?}"),
                                }),
                                NeighbourAttribute::LinkLayerAddress(m) => mac = Some(m),
                                _ => {}
                            }
                        }
                        Some((dst.unwrap(), mac.unwrap()))
                    }
                    _ => None,
                })
                .collect();
        let peer: IpAddr = "169.254.0.15".parse().unwrap();
        let mac = inside_mac(peer).to_vec();
        assert_eq!(
            neighbours,
            [
                (peer, mac.clone()),
                (IpAddr::V6(inside_link_local(peer)), mac)
            ]
        );
        // An IPv6 inside has its peer's IPv6 address already: one neighbour.
        let v6 = TunnelSpec::vxlan(
            "mr-vx",
            VxlanSpec::new(
                7,
                "10.0.23.2".parse().unwrap(),
                "10.0.23.3".parse().unwrap(),
            ),
        )
        .with_inside("fd00::/127".parse().unwrap());
        let n = v6
            .follow_up_requests(9)
            .iter()
            .filter(|r| matches!(&r.message, RouteNetlinkMessage::NewNeighbour(n) if n.header.family == AddressFamily::Inet6))
            .count();
        assert_eq!(n, 1);
    }
}
