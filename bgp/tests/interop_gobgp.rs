//! Interop with gobgpd 3.x: eBGP over IPv4 and iBGP over IPv6 (the neighbor's
//! `local-as` makes the second session internal), attributes read back with
//! `gobgp global rib -j`, withdraw, routes gobgpd sends, TCP-MD5 (`auth-password`;
//! right and wrong) and max-prefix → Cease/1 as gobgpd counts it.

mod interop_support;

use std::time::Duration;

use interop_support::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn gobgp_conf() -> String {
    format!(
        r#"[global.config]
  as = 65002
  router-id = "{D4}"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{S4}"
    peer-as = 65001
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
  [neighbors.graceful-restart.config]
    enabled = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{S6}"
    peer-as = 65001
    local-as = 65001
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#
    )
}

const SPEAKER: &str = r#"local_as = 65001
router_id = "10.77.0.1"
hold_time = 9
state_dir = "STATE"

[[peer]]
address = "10.77.0.2"
remote_as = 65002
families = ["ipv4_unicast"]
connect_retry_secs = 1

[[peer]]
address = "fd77::2"
remote_as = 65001
families = ["ipv6_unicast"]
connect_retry_secs = 1
"#;

/// The path attributes gobgpd holds for `prefix`.
fn gobgp_attrs(net: &Net, afi: &str, prefix: &str) -> Option<Vec<Value>> {
    let v = net.gobgp_json(&["global", "rib", "-a", afi]);
    let paths = v.get(prefix)?.as_array()?;
    paths.first()?["attrs"].as_array().cloned()
}

/// Whether gobgpd's session to us is Established (`session_state` is 6, or the
/// name, depending on the gobgp version).
fn established(net: &Net) -> bool {
    let n = net.gobgp_json(&["neighbor", S4]);
    let st = &n["state"]["session_state"];
    st == 6
        || st
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("established"))
}

fn attr(attrs: &[Value], ty: u64) -> Option<&Value> {
    attrs.iter().find(|a| a["type"] == ty)
}

#[test]
fn gobgp_ebgp_ipv4_ibgp_ipv6_attributes_and_withdraw() {
    let Some(bin) = prerequisites(&["gobgpd", "gobgp"]) else {
        return;
    };
    let net = Net::new("gobgp", bin);
    net.start_gobgp(&gobgp_conf());
    let state = net.dir.join("speaker/state");
    let cfg = net.write(
        "speaker.toml",
        &SPEAKER.replace("STATE", state.to_str().unwrap()),
    );
    let mut sp = net.speak(&["--config", cfg.to_str().unwrap()]);
    sp.wait("eBGP IPv4 session", T, |v| session_up(v) && v["peer"] == D4);
    sp.wait("iBGP IPv6 session", T, |v| session_up(v) && v["peer"] == D6);

    for (p, afi) in [("10.97.0.0/24", "ipv4"), ("2001:db8:97::/48", "ipv6")] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &net.daemon_ns, "gobgp", "-u", "127.0.0.1"])
            .args(["global", "rib", "add", p, "-a", afi])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = sp.wait("10.97.0.0/24 from gobgpd", T, |v| {
        received(v, "10.97.0.0/24")
    });
    assert_eq!(r["next_hop"], D4);
    let r = sp.wait("2001:db8:97::/48 from gobgpd", T, |v| {
        received(v, "2001:db8:97::/48")
    });
    assert_eq!(r["next_hop"], D6);

    sp.cmd(
        "announce 203.0.113.7/32 med 42 community 65001:100 no-export large-community 65001:1:2",
    );
    let a = wait_until("IPv4 route at gobgpd", T, || {
        gobgp_attrs(&net, "ipv4", "203.0.113.7/32")
    });
    let s = serde_json::to_string(&a).unwrap();
    assert_eq!(
        attr(&a, 3).map(|x| &x["nexthop"]),
        Some(&Value::from(S4)),
        "{s}"
    );
    assert_eq!(
        attr(&a, 4).map(|x| &x["metric"]),
        Some(&Value::from(42)),
        "{s}"
    );
    let comms = &attr(&a, 8).expect("COMMUNITIES")["communities"];
    assert!(
        comms
            .as_array()
            .unwrap()
            .contains(&Value::from(65001u64 << 16 | 100)),
        "{s}"
    );
    assert!(
        comms
            .as_array()
            .unwrap()
            .contains(&Value::from(0xffff_ff01u64)),
        "{s}"
    );
    assert!(attr(&a, 32).is_some(), "LARGE_COMMUNITIES: {s}");
    assert!(attr(&a, 5).is_none(), "eBGP carries no LOCAL_PREF: {s}");

    sp.cmd("announce 2001:db8:7::/48 local-pref 250 med 7");
    let a = wait_until("IPv6 route at gobgpd", T, || {
        gobgp_attrs(&net, "ipv6", "2001:db8:7::/48")
    });
    let s = serde_json::to_string(&a).unwrap();
    assert_eq!(
        attr(&a, 5).map(|x| &x["value"]),
        Some(&Value::from(250)),
        "{s}"
    );
    assert!(s.contains(S6), "next hop {S6}: {s}");

    sp.cmd("withdraw 203.0.113.7/32");
    sp.cmd("withdraw 2001:db8:7::/48");
    wait_until("withdrawn at gobgpd", T, || {
        (gobgp_attrs(&net, "ipv4", "203.0.113.7/32").is_none()
            && gobgp_attrs(&net, "ipv6", "2001:db8:7::/48").is_none())
        .then_some(())
    });

    // Graceful restart: kill -9, gobgpd keeps the route (stale) while we are away; the
    // restarted speaker re-advertises it from its state directory.
    sp.cmd("announce 203.0.113.50/32 med 9");
    wait_until("route before the crash", T, || {
        gobgp_attrs(&net, "ipv4", "203.0.113.50/32")
    });
    assert!(established(&net), "{}", net.gobgp_json(&["neighbor", S4]));
    sp.kill9();
    let t0 = std::time::Instant::now();
    let mut down_seen = false;
    let mut sp2: Option<Speak> = None;
    let mut up = false;
    while t0.elapsed() < Duration::from_secs(7) {
        let a = gobgp_attrs(&net, "ipv4", "203.0.113.50/32");
        assert!(
            a.is_some(),
            "route withdrawn during the restart after {:?}",
            t0.elapsed()
        );
        match &sp2 {
            None => {
                down_seen = down_seen || !established(&net);
                if t0.elapsed() > Duration::from_secs(1) {
                    sp2 = Some(net.speak(&["--config", cfg.to_str().unwrap()]));
                }
            }
            Some(s2) => up = up || s2.lines().iter().any(|v| session_up(v) && v["peer"] == D4),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(down_seen, "gobgpd never saw the session drop");
    assert!(up, "session back within 6 s");
    let a = gobgp_attrs(&net, "ipv4", "203.0.113.50/32").unwrap();
    assert_eq!(attr(&a, 4).map(|x| &x["metric"]), Some(&Value::from(9)));
}

/// gobgpd with a TCP-MD5 password on its IPv4 neighbor.
fn gobgp_md5_conf() -> String {
    format!(
        r#"[global.config]
  as = 65002
  router-id = "{D4}"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{S4}"
    peer-as = 65001
    auth-password = "s3cret-md5"
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#
    )
}

fn md5_speaker_toml(password: &str, extra: &str) -> String {
    format!(
        r#"local_as = 65001
router_id = "{S4}"
hold_time = 9

[[peer]]
address = "{D4}"
remote_as = 65002
families = ["ipv4_unicast"]
connect_retry_secs = 1
md5_password = "{password}"
{extra}
"#
    )
}

/// NOTIFICATIONs gobgpd counts as received from us.
fn notifications_received(net: &Net) -> u64 {
    let n = net.gobgp_json(&["neighbor", S4]);
    n["state"]["messages"]["received"]["notification"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn gobgp_md5_session_and_max_prefix_cease() {
    let Some(bin) = prerequisites(&["gobgpd", "gobgp"]) else {
        return;
    };
    let net = Net::new("gobgp-md5", bin);
    net.start_gobgp(&gobgp_md5_conf());
    for p in ["10.97.0.0/24", "10.97.1.0/24", "10.97.2.0/24"] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &net.daemon_ns, "gobgp", "-u", "127.0.0.1"])
            .args(["global", "rib", "add", p, "-a", "ipv4"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A wrong password: the kernels drop the signed segments, no session comes up.
    let before = md5_drops(&net.daemon_ns) + md5_drops(&net.speaker_ns);
    let cfg = net.write("wrong.toml", &md5_speaker_toml("not-the-password", ""));
    let sp = net.speak(&["--config", cfg.to_str().unwrap()]);
    wait_until("segments with a bad signature dropped", T, || {
        (md5_drops(&net.daemon_ns) + md5_drops(&net.speaker_ns) > before + 2).then_some(())
    });
    assert!(
        !sp.lines().iter().any(session_up),
        "session up with a wrong password: {:?}",
        sp.lines()
    );
    assert!(!established(&net));
    drop(sp);

    // The right password: up, and gobgpd's routes arrive.
    let cfg = net.write("right.toml", &md5_speaker_toml("s3cret-md5", ""));
    let sp = net.speak(&["--config", cfg.to_str().unwrap()]);
    sp.wait("MD5 session", T, |v| session_up(v) && v["peer"] == D4);
    sp.wait("routes from gobgpd", T, |v| received(v, "10.97.2.0/24"));
    wait_until("gobgpd sees the session", T, || {
        established(&net).then_some(())
    });
    drop(sp);

    // Max-prefix 2: gobgpd sends 3, we send Cease/1, gobgpd counts the NOTIFICATION.
    wait_until("gobgpd sees the session drop", T, || {
        (!established(&net)).then_some(())
    });
    let notified = notifications_received(&net);
    let cfg = net.write(
        "cease.toml",
        &md5_speaker_toml(
            "s3cret-md5",
            r#"max_prefixes = { limit = 2, action = "cease", restart_secs = 300 }"#,
        ),
    );
    let sp = net.speak(&["--config", cfg.to_str().unwrap()]);
    sp.wait("max-prefix", T, |v| {
        v["event"] == "max_prefix_exceeded" && v["limit"] == 2
    });
    let down = sp.wait("session down", T, |v| {
        v["event"] == "session_down" && v["peer"] == D4
    });
    assert_eq!(down["reason"], "notification_sent");
    assert_eq!(
        (down["code"].as_u64(), down["subcode"].as_u64()),
        (Some(6), Some(1))
    );
    let n = wait_until("gobgpd counts the Cease", T, || {
        let n = net.gobgp_json(&["neighbor", S4]);
        (notifications_received(&net) > notified).then_some(n)
    });
    assert!(!established(&net), "{n}");
}
