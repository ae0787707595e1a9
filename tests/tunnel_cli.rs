//! The operator flow end to end, through the `migroute` binary: two fresh namespaces
//! joined by a veth, a VXLAN on both sides, an override that makes a ping to
//! 10.10.0.5 cross the tunnel, `ip route show table all proto migroute`, `tunnel list
//! --json` and `tunnel gc`. Needs root; SKIPPED without it (panics under CI).

#[path = "../tunnel/tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::{can_run, ping, sh, Pair, A4, B4};

fn migroute(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_migroute"))
        .args(args)
        .output()
        .expect("run migroute");
    assert!(
        out.status.success(),
        "migroute {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs the packaging files so iproute2 knows the name `migroute` (what a package
/// install does); leaves an identical file alone.
fn install_iproute2_names() {
    for (dir, file) in [
        ("rt_protos.d", "packaging/rt_protos.d/migroute.conf"),
        ("rt_tables.d", "packaging/rt_tables.d/migroute.conf"),
    ] {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let body = std::fs::read_to_string(&src).expect("packaging file");
        let dst_dir = std::path::Path::new("/etc/iproute2").join(dir);
        std::fs::create_dir_all(&dst_dir).expect("create /etc/iproute2 dir");
        let dst = dst_dir.join("migroute.conf");
        if std::fs::read_to_string(&dst).ok().as_deref() != Some(body.as_str()) {
            std::fs::write(&dst, body).expect("install iproute2 name file");
        }
    }
}

#[test]
fn vxlan_override_list_gc_through_the_cli() {
    if !can_run("vxlan_override_list_gc_through_the_cli") {
        return;
    }
    install_iproute2_names();
    let p = Pair::new("cli");
    migroute(&[
        "tunnel",
        "add",
        "vxlan",
        "mr-vx",
        "--local",
        A4,
        "--remote",
        B4,
        "--vni",
        "100",
        "--dev",
        "ua",
        "--address",
        "192.168.255.0/31",
        "--netns",
        &p.a,
    ]);
    migroute(&[
        "tunnel",
        "add",
        "vxlan",
        "mr-vx",
        "--local",
        B4,
        "--remote",
        A4,
        "--vni",
        "100",
        "--dev",
        "ub",
        "--address",
        "192.168.255.1/31",
        "--netns",
        &p.b,
    ]);
    sh(&["ip", "-n", &p.b, "addr", "add", "10.10.0.5/32", "dev", "lo"]);
    assert!(
        !ping(&p.a, "10.10.0.5"),
        "10.10.0.5 reachable before the override"
    );

    migroute(&[
        "tunnel",
        "override",
        "add",
        "10.10.0.5/32",
        "--via",
        "mr-vx",
        "--gateway",
        "192.168.255.1",
        "--netns",
        &p.a,
    ]);
    assert!(ping(&p.a, "10.10.0.5"), "ping did not cross the tunnel");

    let routes = sh(&[
        "ip", "-n", &p.a, "route", "show", "table", "all", "proto", "migroute",
    ]);
    assert!(
        routes.contains("10.10.0.5 via 192.168.255.1 dev mr-vx table migroute"),
        "{routes}"
    );

    let listed: serde_json::Value =
        serde_json::from_str(&migroute(&["tunnel", "list", "--json", "--netns", &p.a])).unwrap();
    let t = &listed["tunnels"][0];
    assert_eq!(t["name"], "mr-vx");
    assert_eq!(t["identity"]["type"], "vxlan");
    assert_eq!(t["identity"]["vni"], 100);
    assert_eq!(t["identity"]["remotes"][0], B4);
    assert!(t["counters"]["tx_packets"].as_u64().unwrap() >= 1, "{t}");
    assert!(t["counters"]["rx_packets"].as_u64().unwrap() >= 1, "{t}");
    let r = &listed["routes"][0];
    assert_eq!(r["prefix"], "10.10.0.5/32");
    assert_eq!(r["via"], "mr-vx");
    assert_eq!(listed["rules"][0]["priority"], 4245);

    migroute(&[
        "tunnel",
        "override",
        "del",
        "10.10.0.5/32",
        "--via",
        "mr-vx",
        "--netns",
        &p.a,
    ]);
    assert!(!ping(&p.a, "10.10.0.5"), "still steered after override del");
    migroute(&[
        "tunnel",
        "override",
        "add",
        "10.10.0.5/32",
        "--via",
        "mr-vx",
        "--gateway",
        "192.168.255.1",
        "--netns",
        &p.a,
    ]);

    let gc = migroute(&["tunnel", "gc", "--netns", &p.a]);
    assert!(gc.contains("1 rule(s), 1 route(s), 1 tunnel(s)"), "{gc}");
    let links = sh(&["ip", "-n", &p.a, "link", "show"]);
    assert!(!links.contains("mr-"), "{links}");
    let routes = sh(&[
        "ip", "-n", &p.a, "route", "show", "table", "all", "proto", "migroute",
    ]);
    assert!(routes.trim().is_empty(), "{routes}");
    let rules = sh(&["ip", "-n", &p.a, "rule", "show"]);
    assert!(
        !rules.contains("migroute") && !rules.contains("4245"),
        "{rules}"
    );
    let listed = migroute(&["tunnel", "list", "--netns", &p.a]);
    assert!(listed.contains("nothing owned by migroute"), "{listed}");
}

#[test]
fn cli_reports_missing_netns_and_underlay() {
    if !can_run("cli_reports_missing_netns_and_underlay") {
        return;
    }
    let missing = format!("mrt-{}-nope", std::process::id());
    let out = Command::new(env!("CARGO_BIN_EXE_migroute"))
        .args(["tunnel", "list", "--netns", &missing])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&missing) && err.contains("No such file"),
        "{err}"
    );

    let p = Pair::new("clierr");
    let out = Command::new(env!("CARGO_BIN_EXE_migroute"))
        .args([
            "tunnel", "add", "vxlan", "mr-vx", "--local", A4, "--remote", B4, "--vni", "7",
            "--dev", "nosuch0", "--netns", &p.a,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("underlay device nosuch0 not found"), "{err}");
}
