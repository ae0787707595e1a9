//! The guest agent (`migroute-guest`): first as a process on loopback with a regular
//! file for a disk, then inside the KVM lab's real guest under QEMU (TCG), probed from
//! a network namespace over a tap on a bridge.
//!
//! The QEMU test needs root, ip, qemu-img, gzip, ldd, busybox-static and apt-get (the
//! private QEMU and the guest kernel are fetched once and cached under
//! /var/cache/migroute).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use migroute_labs::guest_agent::{
    check_records, control, Agent, AgentConfig, DiskConfig, PowerOff, BLOCK_SIZE, READY_LINE,
};
use migroute_labs::kvm::{ensure_guest, ensure_qemu, with_agent, Site};
use migroute_labs::netns;
use migroute_labs::preflight::Preflight;
use migroute_labs::probe::tcp::{run_client, TcpConfig};
use migroute_labs::probe::udp::{echo_probe, RecvOptions, SendConfig};
use migroute_labs::{Lab, LabError};

const AGENT: &str = env!("CARGO_BIN_EXE_migroute-guest");
const GUEST_IP: &str = "10.10.0.5";

/// Kills and reaps a child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(GUEST_IP.parse().unwrap(), port)
}

/// The agent as a process on loopback, a 1 MiB file as its disk: reflects, echoes,
/// writes, stops writing and exits on `poweroff` (never powering a host off).
#[test]
fn agent_binary_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let blocks = 256u64;
    std::fs::write(&disk, vec![0u8; (blocks * BLOCK_SIZE) as usize]).unwrap();
    let mut child = Reaped(
        Command::new(AGENT)
            .args([
                "--udp",
                "0",
                "--tcp",
                "0",
                "--control",
                "0",
                "--bind",
                "127.0.0.1",
            ])
            .args(["--interval-ms", "5", "--disk"])
            .arg(&disk)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut ports = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        println!("agent: {line}");
        if let Some(rest) = line.strip_prefix("migroute-guest: listening ") {
            let get = |k: &str| -> SocketAddr {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            ports = Some((get("udp="), get("tcp="), get("control=")));
            assert!(rest.contains("poweroff=Exit"), "{rest}");
        }
        if line == READY_LINE {
            break;
        }
    }
    let (udp, tcp, ctl) = ports.expect("listening line before ready");
    let (sent, r) = echo_probe(
        &SendConfig::new(udp, Duration::from_millis(500)),
        RecvOptions::default(),
    )
    .unwrap();
    assert_eq!((sent.sent, r.received, r.lost), (500, 500, 0), "{r:?}");
    let c = run_client(&TcpConfig::new(tcp, Duration::from_millis(200)));
    assert!(c.survived, "{c:?}");
    let t = Duration::from_secs(2);
    let a = control(ctl, "status", t).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let b = control(ctl, "status", t).unwrap();
    assert!(
        b.writing && b.acked > a.acked && b.errors == 0,
        "{a:?} {b:?}"
    );
    let stopped = control(ctl, "stop-writes", t).unwrap();
    assert!(!stopped.writing);
    assert_eq!(control(ctl, "poweroff", t).unwrap().ok, Some(true));
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "agent did not exit on poweroff");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let check = check_records(&disk, stopped.acked.unwrap(), BLOCK_SIZE, blocks).unwrap();
    assert!(check.is_complete() && check.checked > 50, "{check:?}");
}

/// Takes a lab down on drop.
struct LabGuard(Lab);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = self.0.down();
    }
}

/// `Lab::udp_echo_probe` and `Lab::tcp_probe_remote` from one node of a two-node lab
/// to the agent (in-process) in the other: what the KVM scenario does with a guest.
#[test]
fn lab_echo_probes_reach_an_agent_in_another_node() {
    if !is_root_with_ip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("ga{}", std::process::id());
    let file = dir.path().join("t.clab.yml");
    std::fs::write(
        &file,
        format!(
            "name: {name}\ntopology:\n  nodes:\n    h1:\n      kind: linux\n      exec: [\"ip addr add 10.77.0.1/24 dev eth1\"]\n    g1:\n      kind: linux\n      exec: [\"ip addr add 10.77.0.2/24 dev eth1\"]\n  links:\n    - endpoints: [\"h1:eth1\", \"g1:eth1\"]\n"
        ),
    )
    .unwrap();
    let lab = LabGuard(Lab::load(&file).unwrap());
    let _ = lab.0.down();
    lab.0.up().expect("lab up");
    let disk = dir.path().join("disk");
    std::fs::write(&disk, vec![0u8; 64 * BLOCK_SIZE as usize]).unwrap();
    let cfg = AgentConfig {
        disk: DiskConfig {
            path: disk,
            wait: Duration::from_secs(1),
            interval: Duration::from_millis(20),
        },
        power_off: PowerOff::Exit,
        ..AgentConfig::default()
    };
    // Sockets stay in the namespace they were opened in, whichever thread serves them.
    let agent = netns::run_in(&lab.0.netns("g1").unwrap(), move || Agent::start(cfg))
        .unwrap()
        .expect("agent in g1");
    let target = |port| SocketAddr::new("10.77.0.2".parse().unwrap(), port);
    let (sent, udp) = lab
        .0
        .udp_echo_probe(
            "h1",
            &SendConfig::new(target(agent.udp_addr.port()), Duration::from_millis(500)),
            RecvOptions::default(),
        )
        .expect("echo probe");
    assert_eq!(
        (sent.sent, udp.received, udp.lost),
        (500, 500, 0),
        "{udp:?}"
    );
    let tcp = lab
        .0
        .tcp_probe_remote(
            "h1",
            &TcpConfig::new(target(agent.tcp_addr.port()), Duration::from_millis(300)),
        )
        .expect("tcp probe");
    assert!(tcp.survived, "{tcp:?}");
    // A node the lab does not have is named.
    let e = lab
        .0
        .tcp_probe_remote("nope", &TcpConfig::new(target(1), Duration::ZERO));
    assert!(matches!(e, Err(LabError::UnknownNode { .. })), "{e:?}");
    drop(agent);
}

fn is_root_with_ip() -> bool {
    Preflight::new("lab echo-probe test")
        .root()
        // `ip` in /usr/sbin or /sbin, not searched on PATH.
        .check(|| {
            let ip = Path::new("/usr/sbin/ip").exists() || Path::new("/sbin/ip").exists();
            (!ip).then(|| "ip".to_string())
        })
        .ready()
}

fn can_run_qemu() -> bool {
    Preflight::new("guest agent QEMU test")
        .root()
        .tools(&["ip", "qemu-img", "gzip", "ldd", "apt-get", "dpkg"])
        .package("busybox-static", "/bin/busybox")
        .ready()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes a directory on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real guest: Debian kernel + busybox initramfs + the agent, under QEMU with a
/// virtio NIC on a tap in a bridge (10.10.0.1/24) of a fresh namespace and a qcow2
/// virtio disk. Probed from the namespace; its records checked in the image after it
/// powered itself off.
#[test]
fn agent_in_the_qemu_guest() {
    if !can_run_qemu() {
        return;
    }
    let t0 = Instant::now();
    let qemu = ensure_qemu().expect("private QEMU");
    let base = ensure_guest().expect("lab guest");
    let dir =
        TempDir(std::env::temp_dir().join(format!("migroute-guest-agent-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let image = with_agent(&base, Path::new(AGENT), &dir.0).expect("agent initrd");
    let built = std::fs::metadata(&image.initrd)
        .unwrap()
        .modified()
        .unwrap();
    let again = with_agent(&base, Path::new(AGENT), &dir.0).expect("agent initrd");
    assert_eq!(again, image);
    let reused = std::fs::metadata(&image.initrd)
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(built, reused, "an up-to-date initrd is reused");
    let initrd_mb = std::fs::metadata(&image.initrd).unwrap().len() as f64 / 1e6;
    println!(
        "assets ready in {:?} (initrd {initrd_mb:.1} MB)",
        t0.elapsed()
    );

    let disk = dir.0.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("64M"));
    let ns = format!("mgga{}", std::process::id());
    let site = Site::create(&ns, "10.10.0.1/24").expect("namespace with bridge");
    site.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"])
        .unwrap();
    site.ip(&["link", "set", "tap0", "master", "br0", "up"])
        .unwrap();
    let console = dir.0.join("console.log");
    let t_boot = Instant::now();
    let qemu_child = site
        .command(qemu.to_str().unwrap())
        .args([
            "-accel",
            "tcg",
            "-m",
            "128",
            "-display",
            "none",
            "-nodefaults",
        ])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-drive")
        .arg(format!("file={},format=qcow2,if=virtio", disk.display()))
        .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
        .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:0a:0a:05"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start QEMU");
    // Dropped before `site` (declared later): QEMU is gone before the namespace.
    let mut qemu_child = Reaped(qemu_child);
    let console_text = || std::fs::read_to_string(&console).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !console_text().contains(READY_LINE) {
        if let Some(s) = qemu_child.0.try_wait().unwrap() {
            panic!(
                "QEMU exited ({s}) before the agent was ready:\n{}",
                console_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no `{READY_LINE}` within 90 s:\n{}",
            console_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "guest agent ready {:?} after QEMU started",
        t_boot.elapsed()
    );

    let t = Duration::from_secs(3);
    let ctl = addr(7353);
    let first = netns::run_in(&ns, move || control(ctl, "status", t))
        .unwrap()
        .expect("status");
    println!("status: {first:?}");

    let t_probe = Instant::now();
    let cfg = SendConfig::new(addr(7351), Duration::from_secs(2));
    let (sent, udp) = netns::run_in(&ns, move || {
        echo_probe(
            &cfg,
            RecvOptions {
                first_packet_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(3),
            },
        )
    })
    .unwrap()
    .expect("echo probe");
    let loss = udp.lost as f64 / udp.sent.max(1) as f64;
    println!(
        "echo probe: sent {} reflected {} lost {} ({:.2}%), longest gap {:.1} ms, \
         rtt max {} µs mean {} µs, sender lag max {} µs, in {:?}",
        sent.sent,
        udp.received,
        udp.lost,
        loss * 100.0,
        udp.longest_gap_ms,
        udp.max_latency_us,
        udp.mean_latency_us,
        sent.max_lag_us,
        t_probe.elapsed()
    );
    assert_eq!(sent.sent, 2000);
    assert!(
        loss < 0.01,
        "echo probe lost {:.2}%: {:?}",
        loss * 100.0,
        udp.gaps
    );

    let tcp_cfg = TcpConfig::new(addr(7352), Duration::from_secs(1));
    let tcp = netns::run_in(&ns, move || run_client(&tcp_cfg)).unwrap();
    println!(
        "tcp probe: {} sent {} echoed, longest stall {:.1} ms",
        tcp.messages_sent, tcp.messages_echoed, tcp.longest_stall_ms
    );
    assert!(tcp.survived, "{tcp:?}");

    let second = netns::run_in(&ns, move || control(ctl, "status", t))
        .unwrap()
        .expect("status");
    println!("status: {second:?}");
    assert!(second.writing, "{second:?}");
    assert!(second.acked > first.acked, "{first:?} then {second:?}");
    assert_eq!(
        (second.block_size, second.blocks),
        (BLOCK_SIZE, 64 << 20 >> 12)
    );

    let stopped = netns::run_in(&ns, move || control(ctl, "stop-writes", t))
        .unwrap()
        .expect("stop-writes");
    assert!(!stopped.writing, "{stopped:?}");
    let acked = stopped.acked.expect("records were written");
    let t_off = Instant::now();
    let off = netns::run_in(&ns, move || control(ctl, "poweroff", t))
        .unwrap()
        .expect("poweroff");
    assert_eq!(off.ok, Some(true));
    assert_eq!(off.acked, Some(acked));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = qemu_child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "QEMU still running 30 s after poweroff:\n{}",
            console_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "QEMU exited ({status}) {:?} after poweroff",
        t_off.elapsed()
    );
    for line in console_text()
        .lines()
        .filter(|l| l.contains("migroute-guest"))
    {
        println!("console: {}", line.trim_end());
    }
    assert!(status.success(), "QEMU: {status}");

    let raw = dir.0.join("disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&disk)
        .arg(&raw));
    let check = check_records(&raw, acked, stopped.block_size, stopped.blocks).unwrap();
    println!(
        "records: acked {acked}, checked {}, missing {} (errors {}); total {:?}",
        check.checked,
        check.missing_count,
        stopped.errors,
        t0.elapsed()
    );
    assert!(check.is_complete(), "{check:?}");
    assert!(check.checked > 50, "{check:?}");
    drop(qemu_child);
    drop(site);
    assert!(!netns::exists(&ns));
}
