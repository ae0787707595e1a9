//! VXLAN tunnels: a point-to-point L2 segment between two PEs.
//!
//! The link is created without a `remote`: the far end is the all-zero FDB entry
//! (appended with `NLM_F_APPEND`, as `bridge fdb append` does), so a second remote can
//! be appended later for head-end replication without recreating the link. Learning is
//! off: migroute, not the data plane, decides where a MAC lives.

use std::net::IpAddr;

use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::LinkVxlan;
use serde::{Deserialize, Serialize};

use crate::request::{Request, FLAGS_APPEND};

/// IANA VXLAN port.
pub const DEFAULT_DSTPORT: u16 = 4789;
/// 1500 minus outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const DEFAULT_MTU_V4: u32 = 1450;
/// 1500 minus outer IPv6 (40) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const DEFAULT_MTU_V6: u32 = 1430;

/// What a VXLAN tunnel is made of (the name and inside address live in
/// [`crate::tunnel::TunnelSpec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanSpec {
    pub vni: u32,
    /// Underlay source address; its family selects IPv4 or IPv6 underlay.
    pub local: IpAddr,
    /// The other PE's underlay address (installed as the all-zero FDB entry).
    pub remote: IpAddr,
    #[serde(default = "default_dstport")]
    pub dstport: u16,
    /// Underlay device name, when the tunnel must be pinned to one.
    #[serde(default)]
    pub underlay: Option<String>,
    /// Link MTU; defaults to [`DEFAULT_MTU_V4`] or [`DEFAULT_MTU_V6`].
    #[serde(default)]
    pub mtu: Option<u32>,
}

fn default_dstport() -> u16 {
    DEFAULT_DSTPORT
}

impl VxlanSpec {
    /// A VXLAN spec with the default port and MTU.
    pub fn new(vni: u32, local: IpAddr, remote: IpAddr) -> Self {
        Self {
            vni,
            local,
            remote,
            dstport: DEFAULT_DSTPORT,
            underlay: None,
            mtu: None,
        }
    }

    /// The MTU the link gets.
    pub fn effective_mtu(&self) -> u32 {
        self.mtu.unwrap_or(if self.local.is_ipv4() {
            DEFAULT_MTU_V4
        } else {
            DEFAULT_MTU_V6
        })
    }

    /// `RTM_NEWLINK` for the link, brought up in the same message.
    pub fn build(
        &self,
        name: &str,
        underlay_index: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> LinkMessage {
        let mut b = LinkVxlan::new(name, self.vni)
            .port(self.dstport)
            .learning(false)
            .mtu(self.effective_mtu())
            .up();
        b = match self.local {
            IpAddr::V4(a) => b.local(a),
            IpAddr::V6(a) => b.local6(a),
        };
        if let Some(idx) = underlay_index {
            b = b.dev(idx);
        }
        if let Some(mac) = mac {
            b = b.address(mac.to_vec());
        }
        b.build()
    }
}

/// The all-zero FDB entry that sends every frame (unknown unicast, broadcast, ARP) to
/// `remote`: `bridge fdb append 00:00:00:00:00:00 dev NAME dst REMOTE`.
pub fn fdb_default_entry(ifindex: u32, remote: IpAddr) -> Request {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
    m.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(remote)));
    Request::new(RouteNetlinkMessage::NewNeighbour(m), FLAGS_APPEND)
}

pub(crate) fn neighbour_address(a: IpAddr) -> NeighbourAddress {
    match a {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_APPEND, NLM_F_EXCL};

    #[test]
    fn fdb_entry_appends_all_zero_mac_to_remote() {
        let req = fdb_default_entry(5, "192.0.2.2".parse().unwrap());
        assert_ne!(req.flags & NLM_F_APPEND, 0);
        assert_eq!(
            req.flags & NLM_F_EXCL,
            0,
            "EXCL makes a second append fail with EEXIST"
        );
        let nl = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&req.to_bytes()).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) = nl.payload else {
            panic!("not RTM_NEWNEIGH");
        };
        assert_eq!(m.header.family, AddressFamily::Bridge);
        assert_eq!(m.header.ifindex, 5);
        assert!(m.header.flags.contains(NeighbourFlags::Own));
        assert!(m
            .attributes
            .contains(&NeighbourAttribute::LinkLayerAddress(vec![0; 6])));
        // AF_BRIDGE destinations parse back as raw bytes.
        assert!(m
            .attributes
            .contains(&NeighbourAttribute::Destination(NeighbourAddress::Other(
                vec![192, 0, 2, 2]
            ))));
    }

    #[test]
    fn mtu_defaults_follow_underlay_family() {
        let v4 = VxlanSpec::new(
            1,
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
        );
        let v6 = VxlanSpec::new(
            1,
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        assert_eq!(v4.effective_mtu(), 1450);
        assert_eq!(v6.effective_mtu(), 1430);
    }
}
