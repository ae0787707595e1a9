//! Interop with FRR bgpd 8.x (zebra installs what it learns, so the kernel FIB of the
//! daemon's namespace shows whether forwarding follows): eBGP over IPv4 and IPv6,
//! attributes read back with `vtysh … json`, withdraw, routes FRR sends, iBGP
//! LOCAL_PREF, graceful restart across `kill -9` with the FIB watched throughout,
//! TCP-MD5 (right and wrong password), max-prefix → Cease/1, and FRR restarting
//! (kill -9) while we keep its routes stale until its End-of-RIB.

mod interop_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use interop_support::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn frr_conf(local_as: u32, peer_as: u32, extra_neighbor: &str, extra_v4: &str) -> String {
    format!(
        "hostname dut
!
router bgp {local_as}
 bgp router-id {D4}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 bgp graceful-restart
 neighbor {S4} remote-as {peer_as}
 neighbor {S4} timers 3 9
 neighbor {S4} timers connect 1
{extra_neighbor}
 neighbor {S6} remote-as {peer_as}
 neighbor {S6} timers 3 9
 neighbor {S6} timers connect 1
 !
 address-family ipv4 unicast
  network 10.99.0.0/24
{extra_v4}
  neighbor {S4} activate
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:99::/48
  neighbor {S6} activate
 exit-address-family
exit
!
end
"
    )
}

fn speaker_toml(local_as: u32, peer_as: u32, state_dir: &str, extra_v4_peer: &str) -> String {
    format!(
        r#"local_as = {local_as}
router_id = "{S4}"
listen = "[::]:179"
hold_time = 9
restart_time = 120
{state_dir}

[[peer]]
address = "{D4}"
remote_as = {peer_as}
families = ["ipv4_unicast"]
connect_retry_secs = 1
{extra_v4_peer}

[[peer]]
address = "{D6}"
remote_as = {peer_as}
families = ["ipv6_unicast"]
connect_retry_secs = 1
"#
    )
}

/// FRR's best path for a prefix, if it has one.
fn frr_path(net: &Net, afi: &str, prefix: &str) -> Option<Value> {
    let v = net.vtysh_json(&format!("show bgp {afi} unicast {prefix} json"));
    v["paths"].as_array()?.first().cloned()
}

fn frr_established(net: &Net, peer: &str) -> bool {
    let v = net.vtysh_json(&format!("show bgp neighbors {peer} json"));
    v[peer]["bgpState"] == "Established"
}

fn start(tag: &str) -> Option<Net> {
    let bin = prerequisites(&["/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "vtysh"])?;
    Some(Net::new(tag, bin))
}

#[test]
fn frr_ebgp_ipv4_ipv6_attributes_withdraw_and_received_routes() {
    let Some(net) = start("frr-e") else { return };
    net.start_frr(&frr_conf(65002, 65001, "", ""));
    let cfg = net.write("speaker.toml", &speaker_toml(65001, 65002, "", ""));
    let mut sp = net.speak(&["--config", cfg.to_str().unwrap()]);
    sp.wait("IPv4 session", T, |v| session_up(v) && v["peer"] == D4);
    sp.wait("IPv6 session", T, |v| session_up(v) && v["peer"] == D6);
    assert!(frr_established(&net, S4) && frr_established(&net, S6));

    // Routes FRR originates reach us, with FRR's address as next hop.
    let r = sp.wait("10.99.0.0/24 from FRR", T, |v| received(v, "10.99.0.0/24"));
    assert_eq!(r["next_hop"], D4);
    let r = sp.wait("2001:db8:99::/48 from FRR", T, |v| {
        received(v, "2001:db8:99::/48")
    });
    assert_eq!(r["next_hop"], D6);

    sp.cmd(
        "announce 203.0.113.7/32 med 42 community 65001:100 no-export large-community 65001:1:2",
    );
    let p = wait_until("203.0.113.7/32 at FRR", T, || {
        frr_path(&net, "ipv4", "203.0.113.7/32")
    });
    assert_eq!(p["nexthops"][0]["ip"], S4, "{p}");
    assert_eq!(p["metric"], 42, "{p}");
    assert_eq!(p["aspath"]["string"], "65001", "{p}");
    let comms = p["community"]["string"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        comms.contains("65001:100") && comms.contains("noExport") || comms.contains("no-export"),
        "{p}"
    );
    assert_eq!(p["largeCommunity"]["string"], "65001:1:2", "{p}");
    wait_until("203.0.113.7/32 in FRR's FIB", T, || {
        let r = net.fib("203.0.113.7/32");
        (r.first().map(|x| x["gateway"] == S4) == Some(true)).then_some(())
    });

    sp.cmd("announce 2001:db8:7::/48 med 7");
    let p = wait_until("2001:db8:7::/48 at FRR", T, || {
        frr_path(&net, "ipv6", "2001:db8:7::/48")
    });
    let nh: Vec<&str> = p["nexthops"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["ip"].as_str())
        .collect();
    assert!(nh.contains(&S6), "{p}");
    assert_eq!(p["metric"], 7);
    wait_until("2001:db8:7::/48 in FRR's FIB", T, || {
        (!net.fib("2001:db8:7::/48").is_empty()).then_some(())
    });

    // FRR asks for our routes again (ROUTE-REFRESH): served from the Adj-RIB-Out.
    let sent = |sp: &mut Speak| {
        let from = sp.len();
        sp.send("show peers");
        let v = sp.wait_from(from, "show peers", T, |v| v.get("peers").is_some());
        v["peers"][0]["updates_sent"].as_u64().unwrap()
    };
    let before = sent(&mut sp);
    net.vtysh_json(&format!("clear bgp ipv4 unicast {S4} soft in"));
    wait_until("refresh served", T, || {
        (sent(&mut sp) > before).then_some(())
    });
    assert!(frr_path(&net, "ipv4", "203.0.113.7/32").is_some());

    sp.cmd("withdraw 203.0.113.7/32");
    sp.cmd("withdraw 2001:db8:7::/48");
    wait_until("withdrawal at FRR", T, || {
        (frr_path(&net, "ipv4", "203.0.113.7/32").is_none()
            && frr_path(&net, "ipv6", "2001:db8:7::/48").is_none())
        .then_some(())
    });
    wait_until("FIB cleared", T, || {
        net.fib("203.0.113.7/32").is_empty().then_some(())
    });
}

#[test]
fn frr_ibgp_graceful_restart_across_kill_9_keeps_forwarding() {
    let Some(net) = start("frr-gr") else { return };
    net.start_frr(&frr_conf(65001, 65001, "", ""));
    let state = net.dir.join("speaker/state");
    let toml = speaker_toml(
        65001,
        65001,
        &format!("state_dir = {:?}", state.to_str().unwrap()),
        "",
    );
    let cfg = net.write("speaker.toml", &toml);
    let args = ["--config", cfg.to_str().unwrap()];
    let mut sp = net.speak(&args);
    sp.wait("IPv4 session", T, |v| session_up(v) && v["peer"] == D4);
    sp.cmd("announce 203.0.113.9/32 local-pref 200 med 5 community no-export");
    let p = wait_until("route at FRR", T, || {
        frr_path(&net, "ipv4", "203.0.113.9/32")
    });
    assert_eq!(p["locPrf"], 200, "{p}");
    assert_eq!(p["metric"], 5, "{p}");
    assert_eq!(p["aspath"]["length"], 0, "iBGP: empty AS path: {p}");
    wait_until("route in FIB", T, || {
        (!net.fib("203.0.113.9/32").is_empty()).then_some(())
    });

    // Watch FRR's FIB every 10 ms from before the crash until after the refresh.
    let stop = Arc::new(AtomicBool::new(false));
    let misses = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, misses, samples) = (stop.clone(), misses.clone(), samples.clone());
        let ns = net.daemon_ns.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = std::process::Command::new("ip")
                    .args(["-n", &ns, "route", "show", "203.0.113.9/32"])
                    .output()
                    .unwrap();
                if out.stdout.is_empty() {
                    misses.fetch_add(1, Ordering::Relaxed);
                }
                samples.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    sp.kill9();
    // FRR notices the dead transport and keeps the route, marked stale.
    let p = wait_until("stale route at FRR", T, || {
        frr_path(&net, "ipv4", "203.0.113.9/32").filter(|p| p["stale"] == true)
    });
    assert_eq!(p["locPrf"], 200);
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    // Restart: nothing is announced on stdin, the state directory brings the route back.
    let sp2 = net.speak(&args);
    sp2.wait("IPv4 session again", T, |v| {
        session_up(v) && v["peer"] == D4
    });
    let p = wait_until("route refreshed (not stale)", T, || {
        frr_path(&net, "ipv4", "203.0.113.9/32").filter(|p| p["stale"] != true)
    });
    assert_eq!(p["locPrf"], 200, "{p}");
    // Give FRR time to process End-of-RIB and sweep: the route must survive it.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(frr_path(&net, "ipv4", "203.0.113.9/32").is_some());
    let n = samples.load(Ordering::Relaxed);
    eprintln!(
        "graceful restart: {n} FIB samples over {:?}, {} without the route",
        down_at.elapsed(),
        misses.load(Ordering::Relaxed)
    );
    assert!(n > 50);
    assert_eq!(
        misses.load(Ordering::Relaxed),
        0,
        "route left the FIB during the restart"
    );
}

#[test]
fn frr_md5_session_and_max_prefix_cease() {
    let Some(net) = start("frr-md5") else { return };
    let extra_v4 = "  network 10.99.1.0/24\n  network 10.99.2.0/24";
    net.start_frr(&frr_conf(
        65002,
        65001,
        &format!(" neighbor {S4} password s3cret-md5"),
        extra_v4,
    ));
    // A wrong password: the kernels drop the signed segments, no session comes up.
    let wrong = net.write("md5-wrong", "not-the-password\n");
    let before = md5_drops(&net.daemon_ns) + md5_drops(&net.speaker_ns);
    let sp = net.speak(&[
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
        wrong.to_str().unwrap(),
    ]);
    wait_until("segments with a bad signature dropped", T, || {
        (md5_drops(&net.daemon_ns) + md5_drops(&net.speaker_ns) > before + 2).then_some(())
    });
    assert!(
        !sp.lines().iter().any(session_up),
        "session up with a wrong password"
    );
    assert!(!frr_established(&net, S4));
    drop(sp);
    let pw = net.write("md5", "s3cret-md5\n");
    // With the password from a file through flags: the session comes up.
    let sp = net.speak(&[
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
    ]);
    sp.wait("MD5 session", T, |v| session_up(v) && v["peer"] == D4);
    sp.wait("routes from FRR", T, |v| received(v, "10.99.2.0/24"));
    drop(sp);
    // Now with max-prefix 2: FRR sends 3, we cease with subcode 1.
    let toml = speaker_toml(
        65001,
        65002,
        "",
        r#"md5_password = "s3cret-md5"
max_prefixes = { limit = 2, action = "cease", restart_secs = 300 }"#,
    );
    let cfg = net.write("speaker.toml", &toml);
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
    let v = wait_until("FRR records the Cease", T, || {
        let v = net.vtysh_json(&format!("show bgp neighbors {S4} json"));
        let why = v[S4]["lastResetDueTo"].as_str()?.to_string();
        (why.contains("Prefix") || why.contains("Notification")).then_some(v)
    });
    eprintln!("FRR: {}", v[S4]["lastResetDueTo"]);
    assert!(!frr_established(&net, S4));
}

/// Kills every FRR daemon of the test with SIGKILL: no NOTIFICATION, the kernel just
/// closes bgpd's sockets.
fn kill9_frr(net: &Net) {
    for d in ["bgpd", "staticd", "zebra"] {
        let p = net.dir.join(format!("daemon/{d}.pid"));
        let Some(pid) = std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill has no memory preconditions; the pid is this test's daemon.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        wait_until(&format!("{d} gone"), T, || {
            let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for its (reparented) parent.
            (st.is_empty() || st.contains(") Z ")).then_some(())
        });
        let _ = std::fs::remove_file(&p);
    }
}

/// What `show routes` reports as received from `peer`: prefix → stale.
fn received_routes(sp: &mut Speak, peer: &str) -> Vec<(String, bool)> {
    let from = sp.len();
    sp.send("show routes");
    let v = sp.wait_from(from, "show routes", T, |v| v.get("received").is_some());
    v["received"][peer]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .map(|r| {
                    (
                        r["prefix"].as_str().unwrap_or_default().to_string(),
                        r["stale"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn frr_restart_routes_kept_stale_until_end_of_rib() {
    let Some(net) = start("frr-grr") else { return };
    // preserve-fw-state: FRR's OPEN after the restart says it kept forwarding (the F
    // bit), so its routes stay usable until it has re-sent them (RFC 4724 section 4.2).
    let gr = " bgp graceful-restart preserve-fw-state";
    net.start_frr(&frr_conf(65002, 65001, gr, "  network 10.99.1.0/24"));
    let cfg = net.write("speaker.toml", &speaker_toml(65001, 65002, "", ""));
    let mut sp = net.speak(&["--config", cfg.to_str().unwrap()]);
    sp.wait("IPv4 session", T, |v| session_up(v) && v["peer"] == D4);
    sp.wait("10.99.0.0/24", T, |v| received(v, "10.99.0.0/24"));
    sp.wait("10.99.1.0/24", T, |v| received(v, "10.99.1.0/24"));

    kill9_frr(&net);
    let down = sp.wait("session down", T, |v| {
        v["event"] == "session_down" && v["peer"] == D4
    });
    assert!(down["stale_routes"].as_u64() >= Some(2), "{down}");
    // While FRR is away, both routes are still offered, marked stale.
    let routes = received_routes(&mut sp, D4);
    for p in ["10.99.0.0/24", "10.99.1.0/24"] {
        assert!(
            routes.contains(&(p.to_string(), true)),
            "{p} not kept stale: {routes:?}"
        );
    }

    // FRR comes back without 10.99.1.0/24: after its End-of-RIB that one is swept,
    // and 10.99.0.0/24 is fresh again without ever having been withdrawn.
    let from = sp.len();
    net.start_frr(&frr_conf(65002, 65001, gr, ""));
    sp.wait_from(from, "session back", T, |v| {
        session_up(v) && v["peer"] == D4
    });
    sp.wait_from(from, "End-of-RIB", T, |v| {
        v["event"] == "end_of_rib" && v["peer"] == D4
    });
    let swept = sp.wait_from(from, "stale route swept", T, |v| {
        v["event"] == "route_withdrawn" && v["prefix"] == "10.99.1.0/24"
    });
    assert_eq!(swept["stale"], true, "{swept}");
    let routes = received_routes(&mut sp, D4);
    assert_eq!(
        routes,
        vec![("10.99.0.0/24".to_string(), false)],
        "after End-of-RIB"
    );
    assert!(
        !sp.lines()
            .iter()
            .any(|v| v["event"] == "route_withdrawn" && v["prefix"] == "10.99.0.0/24"),
        "10.99.0.0/24 was withdrawn during the restart"
    );
}
