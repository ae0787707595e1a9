//! Our RTM_NEWLINK requests against the ones iproute2 sends for the same tunnel.
//!
//! The CI kernel has no GRE, so a GRE link can never be created there; instead the
//! request bytes of `ip link add … type gre|ip6gre …` were captured with strace
//! (`tests/fixtures/capture.sh` regenerates them; the exact command heads each file).
//! Both requests are parsed with netlink-packet-route and compared by meaning:
//! everything we set must be in iproute2's request with the same value, and anything
//! iproute2 adds on top must be one of its documented defaults (pmtudisc on, tos 0,
//! no encapsulation, …), not a knob we forgot.

use std::fmt::Debug;
use std::net::IpAddr;

use migroute_tunnel::request::FLAGS_CREATE;
use migroute_tunnel::{GreSpec, TunnelSpec, VxlanSpec};
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::link::{
    GreEncapFlags, GreEncapType, InfoData, InfoGre, InfoGre6, InfoKind, InfoVxlan, LinkAttribute,
    LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

/// (command comment, bytes) from a fixture file.
fn fixture(text: &str) -> (String, Vec<u8>) {
    let mut cmd = String::new();
    let mut bytes = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            cmd = c.to_string();
            continue;
        }
        for b in line.split_whitespace() {
            bytes.push(u8::from_str_radix(b, 16).expect("hex byte"));
        }
    }
    (cmd, bytes)
}

fn parse(bytes: &[u8]) -> (u16, LinkMessage) {
    let nl = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).expect("parse capture");
    let flags = nl.header.flags;
    match nl.payload {
        netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
            (flags, l)
        }
        other => panic!("not RTM_NEWLINK: {other:?}"),
    }
}

fn ours(spec: &TunnelSpec) -> (u16, LinkMessage) {
    let req = spec.link_request(None);
    // Through the wire format and back, like the capture.
    parse(&req.to_bytes())
}

fn name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn info(l: &LinkMessage) -> (InfoKind, InfoData) {
    let infos = l
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(i) => Some(i.clone()),
            _ => None,
        })
        .expect("IFLA_LINKINFO");
    let kind = infos.iter().find_map(|i| match i {
        LinkInfo::Kind(k) => Some(k.clone()),
        _ => None,
    });
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(d) => Some(d.clone()),
        _ => None,
    });
    (kind.expect("IFLA_INFO_KIND"), data.expect("IFLA_INFO_DATA"))
}

/// Everything in `ours` is in `theirs`; everything else in `theirs` is a default.
fn same_meaning<T: PartialEq + Debug>(
    cmd: &str,
    ours: &[T],
    theirs: &[T],
    default: impl Fn(&T) -> bool,
) {
    for a in ours {
        assert!(
            theirs.contains(a),
            "{cmd}: we set {a:?}, iproute2 sends {theirs:?}"
        );
    }
    for a in theirs {
        assert!(
            ours.contains(a) || default(a),
            "{cmd}: iproute2 sets {a:?} which we neither set nor is a default"
        );
    }
}

fn check_common(cmd: &str, (of, ol): &(u16, LinkMessage), (tf, tl): &(u16, LinkMessage)) {
    assert_eq!(*of, FLAGS_CREATE);
    assert_eq!(of, tf, "{cmd}: header flags");
    assert_eq!(name(ol), name(tl), "{cmd}: ifname");
    // We bring the link up in the same message; otherwise the headers match.
    let mut oh = ol.header.clone();
    oh.flags = tl.header.flags;
    oh.change_mask = tl.header.change_mask;
    assert_eq!(oh, tl.header, "{cmd}: ifinfomsg");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn gre_request_matches_iproute2() {
    let (cmd, bytes) = fixture(include_str!("fixtures/gre.hex"));
    let theirs = parse(&bytes);
    let mut g = GreSpec::new(ip("192.0.2.1"), ip("192.0.2.2"));
    g.ttl = 64;
    g.key = Some(42);
    let ours = ours(&TunnelSpec::gre("mr-gre0", g));
    check_common(&cmd, &ours, &theirs);
    let (ok, od) = info(&ours.1);
    let (tk, td) = info(&theirs.1);
    assert_eq!(ok, tk, "{cmd}: kind");
    assert_eq!(ok, InfoKind::GreTun);
    let (InfoData::GreTun(o), InfoData::GreTun(t)) = (od, td) else {
        panic!("{cmd}: not GRE info data");
    };
    assert!(o.contains(&InfoGre::IKey(42)) && o.contains(&InfoGre::Ttl(64)));
    same_meaning(&cmd, &o, &t, |a| {
        matches!(
            a,
            InfoGre::PathMTUDiscovery(true)
                | InfoGre::Tos(0)
                | InfoGre::EncapType(GreEncapType::None)
                | InfoGre::SourcePort(0)
                | InfoGre::DestinationPort(0)
                | InfoGre::FwMask(0)
        ) || matches!(a, InfoGre::EncapFlags(f) if f.is_empty())
    });
}

#[test]
fn ip6gre_request_matches_iproute2() {
    let (cmd, bytes) = fixture(include_str!("fixtures/ip6gre.hex"));
    let theirs = parse(&bytes);
    let mut g = GreSpec::new(ip("2001:db8::1"), ip("2001:db8::2"));
    g.ttl = 64;
    g.key = Some(42);
    let ours = ours(&TunnelSpec::gre("mr-gre6", g));
    check_common(&cmd, &ours, &theirs);
    let (ok, od) = info(&ours.1);
    let (tk, td) = info(&theirs.1);
    assert_eq!(ok, tk, "{cmd}: kind");
    assert_eq!(ok, InfoKind::GreTun6);
    let (InfoData::GreTun6(o), InfoData::GreTun6(t)) = (od, td) else {
        panic!("{cmd}: not ip6gre info data");
    };
    same_meaning(&cmd, &o, &t, |a| match a {
        // ip6_tunnel defaults: encaplimit 4, flowlabel 0, tclass 0.
        InfoGre6::EncapLimit(4)
        | InfoGre6::FlowLabel(0)
        | InfoGre6::EncapType(GreEncapType::None)
        | InfoGre6::SourcePort(0)
        | InfoGre6::DestinationPort(0)
        | InfoGre6::FwMask(0)
        // ERSPAN version is ignored by a plain ip6gre link.
        | InfoGre6::ErSpanVer(_) => true,
        // Encapsulation flags mean nothing without an encapsulation type.
        InfoGre6::EncapFlags(f) => f.difference(GreEncapFlags::Checksum6).is_empty(),
        // IFLA_GRE_FLAGS (13): ip6 tunnel flags, 0 = none.
        InfoGre6::Other(nla) => {
            use netlink_packet_core::Nla;
            let mut v = vec![0u8; nla.value_len()];
            nla.emit_value(&mut v);
            nla.kind() == 13 && v.iter().all(|b| *b == 0)
        }
        _ => false,
    });
}

#[test]
fn vxlan_request_matches_iproute2() {
    let (cmd, bytes) = fixture(include_str!("fixtures/vxlan.hex"));
    let theirs = parse(&bytes);
    let ours = ours(&TunnelSpec::vxlan(
        "mr-vx0",
        VxlanSpec::new(100, ip("192.0.2.1"), ip("192.0.2.2")),
    ));
    check_common(&cmd, &ours, &theirs);
    let (ok, od) = info(&ours.1);
    let (tk, td) = info(&theirs.1);
    assert_eq!(ok, tk);
    let (InfoData::Vxlan(o), InfoData::Vxlan(t)) = (od, td) else {
        panic!("{cmd}: not VXLAN info data");
    };
    // The remote is not a link attribute for us (it is the FDB entry), so the two
    // requests carry exactly the same VXLAN attributes.
    same_meaning(&cmd, &o, &t, |_| false);
    assert!(o.contains(&InfoVxlan::Learning(false)));
    // We also set the MTU (1450), iproute2 leaves it to the kernel.
    assert!(ours.1.attributes.contains(&LinkAttribute::Mtu(1450)));
}
