//! Labs brought up for real: namespaces, veths, FRR/BIRD/gobgpd. These need root and
//! the daemons; without them each test prints `SKIPPED: <why>` and returns, except
//! under `CI`, where a missing prerequisite is a failure. Each test uses its own lab
//! name, so they run in parallel without sharing anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use migroute_labs::preflight::Preflight;
use migroute_labs::probe::tcp::TcpConfig;
use migroute_labs::probe::udp::{RecvOptions, SendConfig};
use migroute_labs::{Lab, LabError, Topology};

fn labs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Returns false (after printing why) when the machine cannot run labs.
fn can_run(needs: &[&str]) -> bool {
    Preflight::new("lab test")
        .root()
        .tools(needs)
        .tools(&["ip"])
        .ready()
}

/// The VM's own view of its port: index, MAC, addresses (not the peer's location).
const VM_STATE: &str =
    "cat /sys/class/net/eth1/ifindex /sys/class/net/eth1/address; ip -o addr show dev eth1 scope global";

const FRR: &[&str] = &[
    "/usr/lib/frr/zebra",
    "/usr/lib/frr/bgpd",
    "/usr/lib/frr/ospfd",
    "vtysh",
];

/// The shipped topology under a test-specific lab name.
fn lab(file: &str, name: &str) -> Lab {
    let mut t = Topology::load(labs_dir().join(file)).unwrap();
    t.name = name.to_string();
    let lab = Lab::new(t);
    let _ = lab.down(); // a previous, interrupted run
    lab
}

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn host_veths() -> usize {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Asserts that nothing of lab `name` is left: namespace, state, or live daemon.
fn assert_gone(lab: &Lab, daemon_pids: &[u32]) {
    let prefix = format!("{}-", lab.name());
    assert_eq!(
        namespaces_with_prefix(&prefix),
        Vec::<String>::new(),
        "namespaces left"
    );
    assert!(
        !lab.state_dir().exists(),
        "state dir left: {}",
        lab.state_dir().display()
    );
    for pid in daemon_pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'));
        assert!(!running, "daemon pid {pid} still running: {stat}");
    }
}

fn daemon_pids(lab: &Lab) -> Vec<u32> {
    let s = lab.status().unwrap();
    s.nodes
        .iter()
        .flat_map(|n| n.processes.iter().filter_map(|p| p.pid))
        .collect()
}

#[test]
fn wan_migration_converges_and_probe_loses_nothing_v4_and_v6() {
    if !can_run(FRR) {
        return;
    }
    let veths_before = host_veths();
    let lab = lab("wan-migration.clab.yml", "wmt-probe");
    let report = lab.up().unwrap();
    assert_eq!((report.nodes, report.links), (7, 7));
    lab.wait_all_established(Duration::from_secs(30)).unwrap();
    // Both directions of both families are in the FIBs before traffic starts.
    for (node, prefix) in [
        ("pe-in", "10.10.0.0/24"),
        ("pe-in", "2001:db8:10::/64"),
        ("pe-a", "10.0.0.0/24"),
        ("pe-a", "2001:db8:100::/64"),
    ] {
        lab.wait_route(node, prefix, Duration::from_secs(20))
            .unwrap();
    }
    let status = lab.status().unwrap();
    assert!(status.all_established(), "{status}");
    let pe_in = status.nodes.iter().find(|n| n.name == "pe-in").unwrap();
    assert_eq!(pe_in.bgp.len(), 4, "{status}");
    assert!(
        status
            .links
            .iter()
            .all(|l| l.a.state == "up" && l.b.state == "up"),
        "{status}"
    );
    let pids = daemon_pids(&lab);
    assert_eq!(pids.len(), 15, "5 FRR daemons on each of 3 PEs");

    for (i, target) in ["10.10.0.5:7331", "[2001:db8:10::5]:7332"]
        .iter()
        .enumerate()
    {
        let target: SocketAddr = target.parse().unwrap();
        // Warm-up: neighbour discovery along the path must not count as loss.
        let warm = SendConfig::new(target, Duration::from_millis(300));
        let _ = lab
            .udp_probe("client", "vm", &warm, RecvOptions::default())
            .unwrap();
        let cfg = SendConfig::new(target, Duration::from_secs(5));
        let (sent, r) = lab
            .udp_probe("client", "vm", &cfg, RecvOptions::default())
            .unwrap();
        assert_eq!(sent.sent, 5000, "run {i}");
        assert_eq!(sent.send_errors, 0, "run {i}");
        assert_eq!(
            (r.sent, r.received, r.lost),
            (5000, 5000, 0),
            "run {i}: gaps {:?}",
            r.gaps
        );
        assert!(r.end_seen);
        assert_eq!(r.longest_gap_ms, 0.0);
    }
    let (tcp, echo) = lab
        .tcp_probe(
            "client",
            "vm",
            &TcpConfig::new(
                "[2001:db8:10::5]:7333".parse().unwrap(),
                Duration::from_secs(1),
            ),
        )
        .unwrap();
    assert!(tcp.survived, "{tcp:?}");
    assert!(echo.clean_close);

    let down = lab.down().unwrap();
    assert_eq!(down.namespaces_deleted.len(), 7);
    assert_eq!(down.daemons_stopped.len(), 15);
    assert_gone(&lab, &pids);
    assert_eq!(
        host_veths(),
        veths_before,
        "veths left in the host namespace"
    );
}

#[test]
fn moving_the_vm_port_to_dc_b_keeps_its_state_and_pe_b_reaches_it() {
    if !can_run(FRR) {
        return;
    }
    let lab = lab("wan-migration.clab.yml", "wmt-move");
    lab.up().unwrap();
    let vm_before = lab.sh("vm", VM_STATE).unwrap();
    // The VM talks to its gateway at pe-a, so its neighbour cache holds the anycast MAC.
    lab.sh(
        "vm",
        "ping -c1 -W2 10.10.0.1 && ping -6 -c1 -W2 2001:db8:10::1",
    )
    .unwrap();
    let neigh = lab.sh("vm", "ip neigh show 10.10.0.1 dev eth1").unwrap();
    assert!(neigh.contains("02:00:0a:0a:00:01"), "{neigh}");

    let moved = lab.move_link_end("dc-a", "eth2", "dc-b").unwrap();
    assert_eq!(moved.master.as_deref(), Some("br0"));
    assert_eq!(lab.current_node_of("dc-a", "eth2"), "dc-b");
    lab.sh("dc-b", "ip -o link show eth2 | grep -q 'master br0'")
        .unwrap();
    assert!(
        lab.sh("dc-a", "ip link show eth2").is_err(),
        "eth2 still in dc-a"
    );
    // The VM side did not change at all.
    let vm_after = lab.sh("vm", VM_STATE).unwrap();
    assert_eq!(vm_before, vm_after);
    // Same gateway MAC behind pe-b: the VM's replies flow at once, both families.
    lab.sh(
        "pe-b",
        "ping -c1 -w10 10.10.0.5 && ping -6 -c1 -w10 2001:db8:10::5",
    )
    .unwrap();
    lab.sh("vm", "ping -c1 -w10 10.10.0.1").unwrap();
    let status = lab.status().unwrap();
    let vm_link = status.links.iter().find(|l| l.a.node == "vm").unwrap();
    assert_eq!(
        (vm_link.b.node.as_str(), vm_link.b.state.as_str()),
        ("dc-b", "up")
    );
    // Moving back works too, and a wrong source node is refused.
    assert!(matches!(
        lab.move_link_end("dc-a", "eth2", "dc-b"),
        Err(LabError::UnknownInterface { .. })
    ));
    lab.move_link_end("dc-b", "eth2", "dc-a").unwrap();
    lab.wait_established("pe-in", Duration::from_secs(30))
        .unwrap();
    lab.wait_route("pe-in", "10.10.0.0/24", Duration::from_secs(20))
        .unwrap();
    lab.sh("client", "ping -c1 -w10 10.10.0.5").unwrap();
    let pids = daemon_pids(&lab);
    lab.down().unwrap();
    assert_gone(&lab, &pids);
}

#[test]
fn interop_bird_and_gobgp_sessions_establish_with_frr() {
    if !can_run(&[
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bgpd",
        "vtysh",
        "bird",
        "birdc",
        "gobgpd",
        "gobgp",
    ]) {
        return;
    }
    let lab = lab("interop.clab.yml", "iot");
    let up = lab.up().unwrap();
    assert_eq!(up.daemons_started.len(), 3);
    lab.wait_all_established(Duration::from_secs(30)).unwrap();
    let status = lab.status().unwrap();
    for node in ["bird", "gobgp"] {
        let n = status.nodes.iter().find(|n| n.name == node).unwrap();
        assert_eq!(n.bgp.len(), 1, "{status}");
        assert!(n.bgp[0].established, "{status}");
        assert!(n.processes.iter().all(|p| p.alive), "{status}");
    }
    let frr = status.nodes.iter().find(|n| n.name == "frr").unwrap();
    assert_eq!(frr.bgp.len(), 2);
    // BIRD learns FRR's loopback over the session.
    let ctl = lab.state_dir().join("nodes/bird/bird.ctl");
    let learned = (0..100).any(|_| {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&ctl)
            .args(["show", "route", "for", "10.255.1.1"])
            .output()
            .unwrap();
        let found = String::from_utf8_lossy(&out.stdout).contains("10.255.1.1/32");
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    });
    assert!(learned, "BIRD never learned 10.255.1.1/32 from FRR");
    let pids = daemon_pids(&lab);
    lab.down().unwrap();
    assert_gone(&lab, &pids);
}

/// A topology in a temp dir with one BIRD node whose config is given.
fn bird_lab(name: &str, bird_conf: &str, exec: &str) -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bird.conf"), bird_conf).unwrap();
    let file = dir.path().join("t.clab.yml");
    std::fs::write(
        &file,
        format!(
            "name: {name}\ntopology:\n  nodes:\n    h1:\n      kind: linux\n      exec: [\"{exec}\"]\n    r1:\n      kind: linux\n      image: bird\n      binds: [\"bird.conf:/etc/bird/bird.conf\"]\n  links:\n    - endpoints: [\"h1:eth1\", \"r1:eth1\"]\n"
        ),
    )
    .unwrap();
    let lab = Lab::load(&file).unwrap();
    let _ = lab.down();
    (dir, lab)
}

#[test]
fn daemon_that_fails_to_start_is_named_and_nothing_remains() {
    if !can_run(&["bird"]) {
        return;
    }
    let (_dir, lab) = bird_lab("ft-bird", "this is not bird config;\n", "true");
    let err = lab.up().unwrap_err();
    match &err {
        LabError::DaemonStart {
            node,
            daemon,
            field,
            ..
        } => {
            assert_eq!((node.as_str(), daemon.as_str()), ("r1", "bird"));
            assert!(field.contains("binds"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("`r1`"), "{err}");
    assert_gone(&lab, &[]);
}

#[test]
fn failing_exec_command_is_named_and_nothing_remains() {
    if !can_run(&["bird"]) {
        return;
    }
    let (_dir, lab) = bird_lab(
        "ft-exec",
        "router id 1.1.1.1;\nprotocol device {}\n",
        "ip link set nosuchif up",
    );
    let err = lab.up().unwrap_err();
    assert!(
        matches!(&err, LabError::Exec { node, index: 0, .. } if node == "h1"),
        "unexpected {err:?}"
    );
    assert!(err.to_string().contains("exec[0]"), "{err}");
    assert_gone(&lab, &[]);
}

#[test]
fn second_up_is_refused_and_down_is_idempotent() {
    if !can_run(&["bird"]) {
        return;
    }
    let (_dir, lab) = bird_lab(
        "ft-twice",
        "router id 1.1.1.1;\nprotocol device {}\n",
        "true",
    );
    lab.up().unwrap();
    let pids = daemon_pids(&lab);
    assert_eq!(pids.len(), 1);
    assert!(matches!(lab.up(), Err(LabError::AlreadyUp { .. })));
    // The refused second `up` must not have damaged the running lab.
    assert!(lab.status().unwrap().nodes.iter().all(|n| n.netns_exists));
    lab.down().unwrap();
    assert_gone(&lab, &pids);
    let again = lab.down().unwrap();
    assert!(again.namespaces_deleted.is_empty());
}

#[test]
fn down_after_an_interrupted_up_removes_namespaces_and_processes() {
    if !can_run(&["sleep"]) {
        return;
    }
    let (_dir, lab) = bird_lab("ft-crash", "router id 1.1.1.1;\n", "true");
    // What an `up` killed half-way leaves: journal, namespaces, a process inside one.
    let state = migroute_labs::state::StateDir::for_lab(lab.name());
    state.create().unwrap();
    for node in ["h1", "r1"] {
        let ns = lab.netns(node).unwrap();
        state.record_netns(&ns).unwrap();
        migroute_labs::netns::create(&ns).unwrap();
    }
    let mut child = lab
        .command("h1", "sleep")
        .unwrap()
        .arg("300")
        .spawn()
        .unwrap();
    let pid = child.id();
    let ns = lab.netns("h1").unwrap();
    // `ip netns exec` enters the namespace before it execs `sleep`.
    for _ in 0..200 {
        if migroute_labs::netns::pid_in(pid, &ns) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(migroute_labs::netns::pid_in(pid, &ns));
    let report = lab.down().unwrap();
    assert_eq!(report.namespaces_deleted.len(), 2);
    assert!(report.processes_killed.contains(&pid));
    let _ = child.wait();
    assert_gone(&lab, &[pid]);
}

#[test]
fn wait_for_a_missing_route_names_node_and_prefix() {
    if !can_run(&["bird"]) {
        return;
    }
    let (_dir, lab) = bird_lab(
        "ft-wait",
        "router id 1.1.1.1;\nprotocol device {}\n",
        "true",
    );
    lab.up().unwrap();
    let err = lab
        .wait_route("h1", "192.0.2.0/24", Duration::from_millis(300))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, LabError::WaitTimeout { node, .. } if node == "h1"),
        "{err:?}"
    );
    assert!(msg.contains("192.0.2.0/24"), "{msg}");
    // BIRD without BGP protocols: "no session" is what is missing.
    let err = lab
        .wait_established("r1", Duration::from_millis(300))
        .unwrap_err();
    assert!(err.to_string().contains("`r1`"), "{err}");
    lab.down().unwrap();
    assert_gone(&lab, &[]);
}

#[test]
fn down_works_when_the_file_no_longer_checks() {
    if !can_run(&["bird"]) {
        return;
    }
    let (dir, lab) = bird_lab(
        "ft-edit",
        "router id 1.1.1.1;\nprotocol device {}\n",
        "true",
    );
    lab.up().unwrap();
    let pids = daemon_pids(&lab);
    // The file is edited while the lab runs: it no longer checks, but names the lab.
    let file = dir.path().join("t.clab.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{text}    - endpoints: [\"h1:eth9\", \"ghost:eth1\"]\n"),
    )
    .unwrap();
    assert!(Lab::load(&file).is_err());
    let teardown = Lab::load_for_teardown(&file).unwrap();
    let report = teardown.down().unwrap();
    assert_eq!(report.namespaces_deleted.len(), 2);
    assert_gone(&lab, &pids);
}

#[test]
fn frr_config_that_vtysh_rejects_is_named_and_nothing_remains() {
    if !can_run(FRR) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("frr.conf"),
        "hostname r1\nrouter bgp 65001\n neighbor 10.0.0.1 remote-as 65002\n frobnicate now\nexit\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("daemons"), "bgpd=yes\n").unwrap();
    let file = dir.path().join("t.clab.yml");
    std::fs::write(
        &file,
        "name: ft-frrconf\ntopology:\n  nodes:\n    r1:\n      image: quay.io/frrouting/frr:8.4.4\n      binds: [\"frr.conf:/etc/frr/frr.conf\", \"daemons:/etc/frr/daemons\"]\n",
    )
    .unwrap();
    let lab = Lab::load(&file).unwrap();
    let _ = lab.down();
    let err = lab.up().unwrap_err();
    match &err {
        LabError::DaemonStart {
            node,
            field,
            detail,
            ..
        } => {
            assert_eq!(node, "r1");
            assert!(field.contains("frr.conf"), "{err}");
            assert!(detail.contains("frobnicate"), "{err}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_gone(&lab, &[]);
    // zebra, staticd and bgpd had started: none may survive the failed `up`.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains("ft-frrconf"));
}

#[test]
fn probe_loss_during_a_paused_port_move_falls_inside_the_outage() {
    if !can_run(FRR) {
        return;
    }
    let lab = lab("wan-migration.clab.yml", "wmt-pause");
    lab.up().unwrap();
    lab.wait_all_established(Duration::from_secs(30)).unwrap();
    lab.wait_route("pe-in", "10.10.0.0/24", Duration::from_secs(20))
        .unwrap();
    lab.wait_route("pe-a", "10.0.0.0/24", Duration::from_secs(20))
        .unwrap();
    let target: SocketAddr = "10.10.0.5:7341".parse().unwrap();
    let warm = SendConfig::new(target, Duration::from_millis(300));
    lab.udp_probe("client", "vm", &warm, RecvOptions::default())
        .unwrap();
    let lab2 = lab.clone();
    let probe = std::thread::spawn(move || {
        let cfg = SendConfig::new(target, Duration::from_secs(3));
        lab2.udp_probe("client", "vm", &cfg, RecvOptions::default())
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs(1));
    // Out to dc-b and straight back (pe-a still attracts the traffic), pausing 200 ms.
    let pause = migroute_labs::MoveOptions {
        pause: Some(Duration::from_millis(200)),
    };
    let out = lab
        .move_link_end_with("dc-a", "eth2", "dc-b", pause)
        .unwrap();
    let back = lab
        .move_link_end_with("dc-b", "eth2", "dc-a", pause)
        .unwrap();
    let (_, r) = probe.join().unwrap();
    assert!(r.lost >= 300, "two 200 ms pauses at 1 kpps: {:?}", r.gaps);
    // Delivery resumes as soon as the port is back: no loss outside the outage (20 ms
    // margins: packets in flight when it began, timestamps taken around `ip` calls).
    let w = r.loss_in_window(
        out.outage_start_unix_ns - 20_000_000,
        back.outage_end_unix_ns + 20_000_000,
    );
    assert_eq!(w.outside, 0, "loss outside the outage: {:?}", r.gaps);
    assert_eq!(w.inside, r.lost);
    assert!(r.longest_gap_ms >= 200.0, "{}", r.longest_gap_ms);
    assert_eq!(r.lost_send_unix_ns.len() as u64, r.lost);
    let pids = daemon_pids(&lab);
    lab.down().unwrap();
    assert_gone(&lab, &pids);
}
