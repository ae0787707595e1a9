//! Tunnels, overrides, ownership and reconcile against a real kernel, in two fresh
//! namespaces joined by a veth. Needs root; prints SKIPPED without it (panics under CI).

mod common;

use std::net::IpAddr;

use common::{can_run, ping, sh, Pair, A4, A6, B4, B6};
use migroute_tunnel::reconcile::{self, Desired};
use migroute_tunnel::{
    counters, override_route, ownership, tunnel, Error, Inside, NetlinkHandle, Netns, Override,
    TunnelSpec, VxlanSpec, PROTOCOL, TABLE,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vx(name: &str, local: &str, remote: &str, inside: &str) -> TunnelSpec {
    TunnelSpec::vxlan(name, VxlanSpec::new(100, ip(local), ip(remote)))
        .with_inside(inside.parse::<Inside>().unwrap())
}

fn set_vni(spec: &mut TunnelSpec, vni: u32) {
    if let migroute_tunnel::TunnelKind::Vxlan(v) = &mut spec.kind {
        v.vni = vni;
    }
}

async fn handles(p: &Pair) -> (NetlinkHandle, NetlinkHandle) {
    (
        NetlinkHandle::open(Netns::Named(p.a.clone()))
            .await
            .unwrap(),
        NetlinkHandle::open(Netns::Named(p.b.clone()))
            .await
            .unwrap(),
    )
}

/// Both sides of a v4 VXLAN: A 192.168.255.0/31, B 192.168.255.1/31.
async fn vxlan_pair(a: &NetlinkHandle, b: &NetlinkHandle) {
    tunnel::create(a, &vx("mr-vx", A4, B4, "192.168.255.0/31"))
        .await
        .unwrap();
    tunnel::create(b, &vx("mr-vx", B4, A4, "192.168.255.1/31"))
        .await
        .unwrap();
}

#[tokio::test]
async fn vxlan_comes_up_and_carries_traffic() {
    if !can_run("vxlan_comes_up_and_carries_traffic") {
        return;
    }
    let p = Pair::new("vxup");
    let (a, b) = handles(&p).await;
    vxlan_pair(&a, &b).await;
    let link = sh(&["ip", "-n", &p.a, "-d", "link", "show", "mr-vx"]);
    assert!(link.contains("vxlan id 100"), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(link.contains("nolearning"), "{link}");
    assert!(link.contains(",UP"), "{link}");
    let fdb = sh(&["bridge", "-n", &p.a, "fdb", "show", "dev", "mr-vx"]);
    assert!(
        fdb.contains(&format!("00:00:00:00:00:00 dst {B4}")),
        "{fdb}"
    );
    let neigh = sh(&["ip", "-n", &p.a, "neigh", "show", "dev", "mr-vx"]);
    assert!(
        neigh.contains("192.168.255.1 lladdr 02:6d:c0:a8:ff:01 PERMANENT"),
        "{neigh}"
    );

    let before = counters::read(&a, "mr-vx").await.unwrap();
    assert!(ping(&p.a, "192.168.255.1"), "ping across the VXLAN failed");
    let after = counters::read(&a, "mr-vx").await.unwrap();
    let d = after.since(&before);
    assert!(d.tx_packets >= 1 && d.rx_packets >= 1, "{d:?}");
    assert!(d.tx_bytes >= 84, "{d:?}");
}

#[tokio::test]
async fn override_steers_host_route_and_stops_when_removed() {
    if !can_run("override_steers_host_route_and_stops_when_removed") {
        return;
    }
    let p = Pair::new("ovr");
    let (a, b) = handles(&p).await;
    vxlan_pair(&a, &b).await;
    sh(&["ip", "-n", &p.b, "addr", "add", "10.10.0.5/32", "dev", "lo"]);
    assert!(!ping(&p.a, "10.10.0.5"), "reachable before the override");

    let o =
        Override::new("10.10.0.5/32".parse().unwrap(), "mr-vx").with_gateway(ip("192.168.255.1"));
    override_route::replace(&a, &o).await.unwrap();
    let shown = sh(&[
        "ip",
        "-n",
        &p.a,
        "route",
        "show",
        "table",
        "all",
        "proto",
        &PROTOCOL.to_string(),
    ]);
    assert!(
        shown.contains("10.10.0.5 via 192.168.255.1 dev mr-vx"),
        "{shown}"
    );
    // Numeric, or named once packaging/rt_tables.d is installed.
    assert!(
        shown.contains(&format!("table {TABLE}")) || shown.contains("table migroute"),
        "{shown}"
    );
    let rules = sh(&["ip", "-n", &p.a, "rule", "show"]);
    assert!(
        rules.contains(&format!("4245:\tfrom all lookup {TABLE} proto {PROTOCOL}"))
            || rules.contains("4245:\tfrom all lookup migroute proto migroute"),
        "{rules}"
    );

    let before = counters::read(&a, "mr-vx").await.unwrap();
    assert!(
        ping(&p.a, "10.10.0.5"),
        "override did not steer into the tunnel"
    );
    let d = counters::read(&a, "mr-vx").await.unwrap().since(&before);
    assert!(
        d.tx_packets >= 1,
        "ping did not go through the tunnel: {d:?}"
    );

    override_route::remove(&a, o.prefix).await.unwrap();
    assert!(!ping(&p.a, "10.10.0.5"), "still reachable after removal");
    // Removing again is not an error.
    override_route::remove(&a, o.prefix).await.unwrap();
}

#[tokio::test]
async fn ipv6_host_override_over_ipv6_vxlan() {
    if !can_run("ipv6_host_override_over_ipv6_vxlan") {
        return;
    }
    let p = Pair::new("v6");
    let (a, b) = handles(&p).await;
    tunnel::create(&a, &vx("mr-vx6", A6, B6, "fd00:6d72::/127"))
        .await
        .unwrap();
    tunnel::create(&b, &vx("mr-vx6", B6, A6, "fd00:6d72::1/127"))
        .await
        .unwrap();
    let link = sh(&["ip", "-n", &p.a, "-d", "link", "show", "mr-vx6"]);
    assert!(link.contains("mtu 1430"), "{link}");
    sh(&[
        "ip",
        "-n",
        &p.b,
        "addr",
        "add",
        "2001:db8:10::5/128",
        "dev",
        "lo",
    ]);
    assert!(!ping(&p.a, "2001:db8:10::5"));
    let o = Override::new("2001:db8:10::5/128".parse().unwrap(), "mr-vx6")
        .with_gateway(ip("fd00:6d72::1"));
    override_route::replace(&a, &o).await.unwrap();
    let shown = sh(&[
        "ip", "-n", &p.a, "-6", "route", "show", "table", "all", "proto", "245",
    ]);
    assert!(
        shown.contains("2001:db8:10::5 via fd00:6d72::1 dev mr-vx6"),
        "{shown}"
    );
    assert!(ping(&p.a, "2001:db8:10::5"), "IPv6 override did not steer");
    override_route::remove(&a, o.prefix).await.unwrap();
    assert!(!ping(&p.a, "2001:db8:10::5"));
}

/// An IPv4-inside VXLAN carries IPv6 host routes too: via the peer's inside
/// link-local, a permanent neighbour, so nothing has to answer neighbour discovery for
/// the VM's own address on the tunnel.
#[tokio::test]
async fn ipv6_host_override_over_an_ipv4_inside_vxlan_goes_via_the_peers_link_local() {
    if !can_run("ipv6_host_override_over_an_ipv4_inside_vxlan_goes_via_the_peers_link_local") {
        return;
    }
    let p = Pair::new("v6in4");
    let (a, b) = handles(&p).await;
    vxlan_pair(&a, &b).await;
    let ll = tunnel::inside_link_local(ip("192.168.255.1"));
    let neigh = sh(&["ip", "-n", &p.a, "-6", "neigh", "show", "dev", "mr-vx"]);
    assert!(
        neigh.contains(&format!("{ll} lladdr 02:6d:c0:a8:ff:01 PERMANENT")),
        "{neigh}"
    );
    sh(&[
        "ip",
        "-n",
        &p.b,
        "addr",
        "add",
        "2001:db8:10::5/128",
        "dev",
        "lo",
    ]);
    assert!(
        !ping(&p.a, "2001:db8:10::5"),
        "reachable before the override"
    );
    let o =
        Override::new("2001:db8:10::5/128".parse().unwrap(), "mr-vx").with_gateway(IpAddr::V6(ll));
    override_route::replace(&a, &o).await.unwrap();
    let before = counters::read(&a, "mr-vx").await.unwrap();
    // The first answers may wait for the fresh links' own IPv6 set-up (the reply
    // leaves b by the veth, whose neighbour discovery starts now): poll.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !ping(&p.a, "2001:db8:10::5") {
        assert!(
            std::time::Instant::now() < deadline,
            "IPv6 override did not steer"
        );
    }
    let d = counters::read(&a, "mr-vx").await.unwrap().since(&before);
    assert!(
        d.tx_packets >= 1,
        "ping did not go through the tunnel: {d:?}"
    );
    override_route::remove(&a, o.prefix).await.unwrap();
    assert!(
        !ping(&p.a, "2001:db8:10::5"),
        "still reachable after removal"
    );
}

#[tokio::test]
async fn create_and_replace_are_idempotent() {
    if !can_run("create_and_replace_are_idempotent") {
        return;
    }
    let p = Pair::new("idem");
    let (a, _b) = handles(&p).await;
    let spec = vx("mr-vx", A4, B4, "192.168.255.0/31");
    let i1 = tunnel::create(&a, &spec).await.unwrap();
    let i2 = tunnel::create(&a, &spec).await.unwrap();
    assert_eq!(i1, i2, "an identical tunnel must be adopted, not recreated");
    let o = Override::new("10.10.0.5/32".parse().unwrap(), "mr-vx");
    override_route::replace(&a, &o).await.unwrap();
    override_route::replace(&a, &o).await.unwrap();
    let owned = ownership::list(&a).await.unwrap();
    assert_eq!(owned.tunnels.len(), 1);
    assert_eq!(owned.routes.len(), 1);
    assert_eq!(owned.rules.len(), 1, "rule added twice: {:?}", owned.rules);
    let fdb = sh(&["bridge", "-n", &p.a, "fdb", "show", "dev", "mr-vx"]);
    assert_eq!(fdb.matches("00:00:00:00:00:00").count(), 1, "{fdb}");

    // A different spec under the same name replaces the link.
    let mut other = spec.clone();
    set_vni(&mut other, 200);
    let i3 = tunnel::create(&a, &other).await.unwrap();
    assert_ne!(i1, i3);
    let link = sh(&["ip", "-n", &p.a, "-d", "link", "show", "mr-vx"]);
    assert!(link.contains("vxlan id 200"), "{link}");
}

#[tokio::test]
async fn reconcile_after_crash_adopts_and_removes_leftovers() {
    if !can_run("reconcile_after_crash_adopts_and_removes_leftovers") {
        return;
    }
    let p = Pair::new("rec");
    let (a, _b) = handles(&p).await;
    // What a crashed agent left: the tunnel it still wants, one it no longer wants,
    // an override it wants and one it does not.
    let keep = vx("mr-vx", A4, B4, "192.168.255.0/31");
    let keep_index = tunnel::create(&a, &keep).await.unwrap();
    let mut old = vx("mr-old", A4, "198.51.100.9", "192.168.254.0/31");
    set_vni(&mut old, 101);
    tunnel::create(&a, &old).await.unwrap();
    let wanted =
        Override::new("10.10.0.5/32".parse().unwrap(), "mr-vx").with_gateway(ip("192.168.255.1"));
    let stale = Override::new("10.10.0.6/32".parse().unwrap(), "mr-vx");
    override_route::replace_batch(&a, &[wanted.clone(), stale.clone()])
        .await
        .unwrap();
    // A leftover IPv6 rule nobody needs.
    migroute_tunnel::rule::ensure(&a, migroute_tunnel::rule::Family::Ipv6)
        .await
        .unwrap();

    let mut new = vx("mr-new", A4, "198.51.100.7", "192.168.253.0/31");
    set_vni(&mut new, 102);
    let desired = Desired {
        tunnels: vec![keep.clone(), new],
        overrides: vec![wanted.clone()],
    };
    // The diff is computed from the kernel's view.
    let plan = reconcile::reconcile(&a, &desired).await.unwrap();
    assert_eq!(plan.adopted_tunnels, vec!["mr-vx".to_string()]);
    assert_eq!(plan.delete_tunnels, vec!["mr-old".to_string()]);
    assert_eq!(plan.create_tunnels.len(), 1);
    assert_eq!(plan.delete_routes.len(), 1);
    assert_eq!(plan.delete_routes[0].prefix, stale.prefix);
    assert!(plan.replace_overrides.is_empty(), "{plan:?}");

    let owned = ownership::list(&a).await.unwrap();
    let names: Vec<&str> = owned.tunnels.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.contains(&"mr-vx") && names.contains(&"mr-new"),
        "{names:?}"
    );
    assert_eq!(
        owned
            .tunnels
            .iter()
            .find(|t| t.name == "mr-vx")
            .unwrap()
            .ifindex,
        keep_index
    );
    assert_eq!(owned.routes.len(), 1);
    assert_eq!(owned.routes[0].prefix, wanted.prefix);
    assert_eq!(owned.rules.len(), 1);

    // Running again changes nothing.
    let again = reconcile::reconcile(&a, &desired).await.unwrap();
    assert!(again.is_noop(), "{again:?}");

    // Empty journal: reconcile removes everything.
    reconcile::reconcile(&a, &Desired::default()).await.unwrap();
    assert!(ownership::list(&a).await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_underlay_netns_or_tunnel_are_clear_errors() {
    if !can_run("missing_underlay_netns_or_tunnel_are_clear_errors") {
        return;
    }
    let missing = format!("mrt-{}-does-not-exist", std::process::id());
    let err = NetlinkHandle::open(Netns::Named(missing.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NetnsOpen { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing), "{err}");

    let p = Pair::new("err");
    let (a, _b) = handles(&p).await;
    let mut v = VxlanSpec::new(100, ip(A4), ip(B4));
    v.underlay = Some("nosuchdev".into());
    let err = tunnel::create(&a, &TunnelSpec::vxlan("mr-vx", v))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnderlayNotFound { ifname, .. } if ifname == "nosuchdev"),
        "{err:?}"
    );
    let o = Override::new("10.10.0.5/32".parse().unwrap(), "mr-nope");
    let err = override_route::replace(&a, &o).await.unwrap_err();
    assert!(matches!(err, Error::LinkNotFound { .. }), "{err:?}");
    let err = tunnel::create(
        &a,
        &TunnelSpec::vxlan("vx0", VxlanSpec::new(1, ip(A4), ip(B4))),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidSpec { .. }), "{err:?}");
}

#[tokio::test]
async fn gre_creation_reports_missing_kernel_support() {
    if !can_run("gre_creation_reports_missing_kernel_support") {
        return;
    }
    let p = Pair::new("gre");
    let (a, _b) = handles(&p).await;
    let spec = TunnelSpec::gre("mr-gre", migroute_tunnel::GreSpec::new(ip(A4), ip(B4)));
    match tunnel::create(&a, &spec).await {
        // A kernel with GRE: the link exists and is ours.
        Ok(_) => {
            let owned = ownership::list(&a).await.unwrap();
            assert_eq!(owned.tunnels.len(), 1);
        }
        Err(e) => {
            assert!(
                matches!(
                    &e,
                    Error::KernelLacksTunnel {
                        module: "ip_gre",
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains("lacks gre support"), "{e}");
            assert_eq!(e.errno(), Some(nix_eopnotsupp()));
        }
    }
}

fn nix_eopnotsupp() -> i32 {
    95
}

#[tokio::test]
async fn gc_removes_everything_owned() {
    if !can_run("gc_removes_everything_owned") {
        return;
    }
    let p = Pair::new("gc");
    let (a, _b) = handles(&p).await;
    tunnel::create(&a, &vx("mr-vx", A4, B4, "192.168.255.0/31"))
        .await
        .unwrap();
    let o = Override::new("10.10.0.5/32".parse().unwrap(), "mr-vx");
    let o6 = Override::new("2001:db8:10::5/128".parse().unwrap(), "mr-vx");
    override_route::replace_batch(&a, &[o, o6]).await.unwrap();
    let before = ownership::list(&a).await.unwrap();
    assert_eq!(before.rules.len(), 2);
    assert_eq!(before.routes.len(), 2);
    let r = ownership::gc(&a).await.unwrap();
    assert_eq!((r.rules, r.routes, r.tunnels), (2, 2, 1));
    assert!(ownership::list(&a).await.unwrap().is_empty());
    let rules = sh(&["ip", "-n", &p.a, "rule", "show"]);
    assert!(!rules.contains("4245"), "{rules}");
}
