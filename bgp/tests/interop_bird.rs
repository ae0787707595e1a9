//! Interop with BIRD 2: eBGP over IPv4 and iBGP over IPv6 (BIRD's `local as` makes
//! the second session internal), attributes read back with `birdc show route … all`,
//! withdraw, routes BIRD sends, TCP-MD5 (BIRD's `password`; right and wrong) and
//! max-prefix → Cease/1 as BIRD reports it.

mod interop_support;

use std::time::Duration;

use interop_support::*;

const T: Duration = Duration::from_secs(30);

fn bird_conf() -> String {
    format!(
        r#"router id {D4};
protocol device {{ }}
protocol static s4 {{ ipv4; route 10.98.0.0/24 blackhole; }}
protocol static s6 {{ ipv6; route 2001:db8:98::/48 blackhole; }}
protocol bgp m4 {{
  local {D4} as 65002;
  neighbor {S4} as 65001;
  hold time 9; keepalive time 3; connect retry time 1;
  graceful restart on;
  ipv4 {{ import all; export where source = RTS_STATIC; }};
}}
protocol bgp m6 {{
  local {D6} as 65001;
  neighbor {S6} as 65001;
  direct;
  hold time 9; keepalive time 3; connect retry time 1;
  ipv6 {{ import all; export where source = RTS_STATIC; next hop self; gateway direct; }};
}}
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

/// `show route for P all` when BIRD has the route.
fn bird_route(net: &Net, prefix: &str) -> Option<String> {
    let out = net.birdc(&format!("show route for {prefix} all"));
    out.contains(&format!("{prefix} ")).then_some(out)
}

#[test]
fn bird_ebgp_ipv4_ibgp_ipv6_attributes_and_withdraw() {
    let Some(bin) = prerequisites(&["bird", "birdc"]) else {
        return;
    };
    let net = Net::new("bird", bin);
    net.start_bird(&bird_conf());
    let state = net.dir.join("speaker/state");
    let cfg = net.write(
        "speaker.toml",
        &SPEAKER.replace("STATE", state.to_str().unwrap()),
    );
    let mut sp = net.speak(&["--config", cfg.to_str().unwrap()]);
    let up = sp.wait("eBGP IPv4 session", T, |v| session_up(v) && v["peer"] == D4);
    assert_eq!(up["remote_as"], 65002);
    let up = sp.wait("iBGP IPv6 session", T, |v| session_up(v) && v["peer"] == D6);
    assert_eq!(up["remote_as"], 65001);

    let r = sp.wait("10.98.0.0/24 from BIRD", T, |v| received(v, "10.98.0.0/24"));
    assert_eq!(r["next_hop"], D4);
    let r = sp.wait("2001:db8:98::/48 from BIRD", T, |v| {
        received(v, "2001:db8:98::/48")
    });
    assert_eq!(r["next_hop"], D6);

    sp.cmd(
        "announce 203.0.113.7/32 med 42 community 65001:100 no-export large-community 65001:1:2",
    );
    let out = wait_until("IPv4 route at BIRD", T, || {
        bird_route(&net, "203.0.113.7/32")
    });
    for want in [
        "BGP.next_hop: 10.77.0.1",
        "BGP.med: 42",
        "BGP.as_path: 65001",
        "(65001,100)",
        "(65535,65281)",
        "BGP.large_community: (65001, 1, 2)",
    ] {
        assert!(out.contains(want), "{want:?} missing in:\n{out}");
    }
    // We send no LOCAL_PREF on eBGP; BIRD fills in its default (100) on import.
    assert!(out.contains("BGP.local_pref: 100"), "{out}");

    sp.cmd("announce 2001:db8:7::/48 local-pref 250 med 7 community 65001:6");
    let out = wait_until("IPv6 route at BIRD", T, || {
        bird_route(&net, "2001:db8:7::/48")
    });
    for want in [
        "BGP.next_hop: fd77::1",
        "BGP.local_pref: 250",
        "BGP.med: 7",
        "(65001,6)",
    ] {
        assert!(out.contains(want), "{want:?} missing in:\n{out}");
    }

    sp.cmd("withdraw 203.0.113.7/32");
    sp.cmd("withdraw 2001:db8:7::/48");
    wait_until("withdrawn at BIRD", T, || {
        (bird_route(&net, "203.0.113.7/32").is_none()
            && bird_route(&net, "2001:db8:7::/48").is_none())
        .then_some(())
    });

    // Graceful restart: kill -9, BIRD keeps the route; the restarted speaker (nothing
    // on stdin) re-advertises it from its state directory; it is never missing.
    sp.cmd("announce 203.0.113.50/32 med 9");
    wait_until("route before the crash", T, || {
        bird_route(&net, "203.0.113.50/32")
    });
    sp.kill9();
    let t0 = std::time::Instant::now();
    let mut samples = 0;
    let mut down_seen = false;
    let mut sp2: Option<Speak> = None;
    let mut up = false;
    while t0.elapsed() < Duration::from_secs(7) {
        let r = bird_route(&net, "203.0.113.50/32");
        assert!(
            r.is_some(),
            "route withdrawn during the restart after {:?}",
            t0.elapsed()
        );
        samples += 1;
        match &sp2 {
            None => {
                let p = net.birdc("show protocols m4");
                down_seen = down_seen || !p.contains("Established");
                // Stay down for a second so that BIRD surely saw the session go.
                if t0.elapsed() > Duration::from_secs(1) {
                    sp2 = Some(net.speak(&["--config", cfg.to_str().unwrap()]));
                }
            }
            Some(s2) => up = up || s2.lines().iter().any(|v| session_up(v) && v["peer"] == D4),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(down_seen, "BIRD never saw the session drop");
    assert!(up, "session back within 6 s");
    assert!(samples > 20);
    let out = bird_route(&net, "203.0.113.50/32").unwrap();
    assert!(out.contains("BGP.med: 9"), "{out}");
}

/// BIRD with a TCP-MD5 password on its IPv4 session, sending three routes.
fn bird_md5_conf() -> String {
    format!(
        r#"router id {D4};
protocol device {{ }}
protocol static s4 {{
  ipv4;
  route 10.98.0.0/24 blackhole;
  route 10.98.1.0/24 blackhole;
  route 10.98.2.0/24 blackhole;
}}
protocol bgp m4 {{
  local {D4} as 65002;
  neighbor {S4} as 65001;
  password "s3cret-md5";
  hold time 9; keepalive time 3; connect retry time 1;
  ipv4 {{ import all; export where source = RTS_STATIC; }};
}}
"#
    )
}

/// `migroute bgp speak` flags for one IPv4 peer (BIRD) with a password file.
fn md5_speak(net: &Net, password: &str) -> Speak {
    let pw = net.write("md5", &format!("{password}\n"));
    net.speak(&[
        "--local-as",
        "65001",
        "--router-id",
        S4,
        "--peer",
        D4,
        "--peer-as",
        "65002",
        "--families",
        "ipv4",
        "--hold-time",
        "9",
        "--md5-password-file",
        pw.to_str().unwrap(),
    ])
}

#[test]
fn bird_md5_session_and_max_prefix_cease() {
    let Some(bin) = prerequisites(&["bird", "birdc"]) else {
        return;
    };
    let net = Net::new("bird-md5", bin);
    net.start_bird(&bird_md5_conf());

    // A wrong password: the kernels drop the signed segments, no session comes up.
    let before = md5_drops(&net.daemon_ns) + md5_drops(&net.speaker_ns);
    let sp = md5_speak(&net, "not-the-password");
    wait_until("segments with a bad signature dropped", T, || {
        (md5_drops(&net.daemon_ns) + md5_drops(&net.speaker_ns) > before + 2).then_some(())
    });
    assert!(
        !sp.lines().iter().any(session_up),
        "session up with a wrong password: {:?}",
        sp.lines()
    );
    assert!(!net.birdc("show protocols m4").contains("Established"));
    drop(sp);

    // The right password: up, and BIRD's routes arrive.
    let sp = md5_speak(&net, "s3cret-md5");
    sp.wait("MD5 session", T, |v| session_up(v) && v["peer"] == D4);
    sp.wait("routes from BIRD", T, |v| received(v, "10.98.2.0/24"));
    wait_until("BIRD sees the session", T, || {
        net.birdc("show protocols m4")
            .contains("Established")
            .then_some(())
    });
    drop(sp);

    // Max-prefix 2: BIRD sends 3, we send Cease/1 (Maximum Number of Prefixes
    // Reached), and BIRD reports it as the reason the session went down.
    let cfg = net.write(
        "speaker.toml",
        &format!(
            r#"local_as = 65001
router_id = "{S4}"
hold_time = 9

[[peer]]
address = "{D4}"
remote_as = 65002
families = ["ipv4_unicast"]
connect_retry_secs = 1
md5_password = "s3cret-md5"
max_prefixes = {{ limit = 2, action = "cease", restart_secs = 300 }}
"#
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
    let out = wait_until("BIRD records the Cease", T, || {
        let out = net.birdc("show protocols all m4");
        out.contains("Maximum number of prefixes reached")
            .then_some(out)
    });
    assert!(out.contains("Received"), "{out}");
}
