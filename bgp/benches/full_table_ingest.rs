//! Full-table ingest: a feeder built on migroute's encoder sends 1,000,000 IPv4
//! prefixes (about 125,000 attribute sets: AS paths of 2-7 hops from a pool of 5,000
//! ASNs, some 4-octet, MED on 30%, 0-4 communities, large communities on 10%) to
//! migroute, BIRD and gobgpd, one after another in the same run. For each: seconds
//! from the first UPDATE byte until the receiver reports every prefix, and its resident
//! memory (VmRSS after, VmHWM peak).
//!
//! Run as root: `cargo build --release -p migroute && cargo bench -p migroute-bgp
//! --bench full_table_ingest` (PREFIXES=N to change the table size).

#[path = "support/feeder.rs"]
mod feeder;
#[path = "../tests/interop_support/mod.rs"]
mod interop_support;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use feeder::{feed, table};
use interop_support::*;

fn proc_kb(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The process state letter (`Z` for a zombie not yet reaped).
fn proc_state(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("State:"))?;
    line.split_whitespace().nth(1)?.chars().next()
}

fn pid_file(p: &Path) -> u32 {
    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
}

struct Result_ {
    name: &'static str,
    secs: f64,
    rss_mb: f64,
    hwm_mb: f64,
}

/// One receiver under test.
struct Target<'a> {
    name: &'static str,
    /// Namespace the feeder runs in (the other end of the veth).
    feeder_ns: &'a str,
    addr: SocketAddr,
    /// The feeder's BGP identifier.
    id: Ipv4Addr,
    /// The receiver's process, for its memory.
    pid: u32,
}

/// Feeds `bytes` to the target and polls `count` until it reports `n` prefixes.
fn run(t: Target<'_>, bytes: Vec<u8>, n: usize, mut count: impl FnMut() -> usize) -> Result_ {
    let Target {
        name,
        feeder_ns,
        addr: target,
        id,
        pid,
    } = t;
    let feeder = migroute_labs::netns::spawn_in(feeder_ns, move || {
        let s = wait_until("feeder connects", Duration::from_secs(30), || {
            TcpStream::connect(target).ok()
        });
        feed(s, id, &bytes)
    })
    .expect("feeder thread");
    let (t0, _s) = feeder.join().expect("feeder");
    let done = wait_until(
        &format!("{name} to receive {n} prefixes"),
        Duration::from_secs(600),
        || {
            let c = count();
            (c >= n).then(Instant::now)
        },
    );
    let secs = (done - t0).as_secs_f64();
    let r = Result_ {
        name,
        secs,
        rss_mb: proc_kb(pid, "VmRSS:") as f64 / 1024.0,
        hwm_mb: proc_kb(pid, "VmHWM:") as f64 / 1024.0,
    };
    println!(
        "{:<10} {:>8.2} s   RSS {:>8.1} MiB   peak {:>8.1} MiB",
        r.name, r.secs, r.rss_mb, r.hwm_mb
    );
    r
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/migroute");
    if std::env::var_os("MIGROUTE_BIN").is_none() && release.exists() {
        std::env::set_var("MIGROUTE_BIN", &release);
    }
    let Some(bin) = prerequisites(&["bird", "birdc", "gobgpd", "gobgp"]) else {
        return;
    };
    let n: usize = std::env::var("PREFIXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let s4: Ipv4Addr = S4.parse().unwrap();
    let d4: Ipv4Addr = D4.parse().unwrap();
    let t = Instant::now();
    let (to_daemon, sets) = table(n, s4);
    let (to_migroute, _) = table(n, d4);
    println!(
        "migroute binary: {}\ntable: {n} prefixes, {sets} attribute sets, {:.1} MB of UPDATEs (built in {:.1} s)",
        bin.display(),
        to_daemon.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let only = std::env::var("TARGETS").unwrap_or_else(|_| "migroute,bird,gobgp".into());
    let mut results = Vec::new();
    if only.contains("migroute") {
        // migroute listens in the speaker namespace; the feeder runs in the other one.
        let net = Net::new("ing-m", bin.clone());
        let mut sp = net.speak(&[
            "--local-as",
            "65001",
            "--router-id",
            S4,
            "--peer",
            D4,
            "--peer-as",
            "65100",
            "--passive",
            "--listen",
            "10.77.0.1:179",
            "--families",
            "ipv4",
            "--no-route-events",
        ]);
        let pid = sp.pid();
        let target: SocketAddr = format!("{S4}:179").parse().unwrap();
        let mut last = Instant::now();
        let t = Target {
            name: "migroute",
            feeder_ns: &net.daemon_ns,
            addr: target,
            id: d4,
            pid,
        };
        results.push(run(t, to_migroute, n, || {
            if last.elapsed() < Duration::from_millis(250) {
                std::thread::sleep(Duration::from_millis(250));
            }
            last = Instant::now();
            let from = sp.len();
            sp.send("show peers");
            let v = sp.wait_from(from, "show peers", Duration::from_secs(30), |v| {
                v.get("peers").is_some()
            });
            v["peers"][0]["prefixes_received"].as_u64().unwrap_or(0) as usize
        }));
        // A clean exit, so that a profiler wrapped around the binary (MIGROUTE_BIN
        // may be a script running it under valgrind) writes its output.
        sp.send("shutdown");
        wait_until("migroute exits", Duration::from_secs(120), || {
            (!Path::new(&format!("/proc/{pid}/status")).exists() || proc_state(pid) == Some('Z'))
                .then_some(())
        });
    }
    if only.contains("bird") {
        let net = Net::new("ing-b", bin.clone());
        net.start_bird(&format!(
            "router id {D4};\nprotocol device {{ }}\nprotocol bgp feeder {{\n  local {D4} as 65001;\n  neighbor {S4} as 65100;\n  passive on;\n  hold time 240;\n  ipv4 {{ import all; export none; }};\n}}\n"
        ));
        let pid = pid_file(&net.dir.join("daemon/bird.pid"));
        let target: SocketAddr = format!("{D4}:179").parse().unwrap();
        let t = Target {
            name: "BIRD",
            feeder_ns: &net.speaker_ns,
            addr: target,
            id: s4,
            pid,
        };
        results.push(run(t, to_daemon.clone(), n, || {
            std::thread::sleep(Duration::from_millis(250));
            let out = net.birdc("show protocols all feeder");
            out.lines()
                .find(|l| l.contains("Routes:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        }));
    }
    if only.contains("gobgp") {
        let net = Net::new("ing-g", bin);
        net.start_gobgp(&format!(
            "[global.config]\n  as = 65001\n  router-id = \"{D4}\"\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{S4}\"\n    peer-as = 65100\n  [neighbors.transport.config]\n    passive-mode = true\n  [neighbors.timers.config]\n    hold-time = 240\n"
        ));
        let pid = pid_file(&net.dir.join("daemon/gobgpd.pid"));
        let target: SocketAddr = format!("{D4}:179").parse().unwrap();
        let t = Target {
            name: "gobgpd",
            feeder_ns: &net.speaker_ns,
            addr: target,
            id: s4,
            pid,
        };
        results.push(run(t, to_daemon, n, || {
            std::thread::sleep(Duration::from_millis(250));
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &net.daemon_ns,
                    "gobgp",
                    "-u",
                    "127.0.0.1",
                    "global",
                    "rib",
                    "summary",
                    "-a",
                    "ipv4",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            out.split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse::<usize>().ok())
                .max()
                .unwrap_or(0)
        }));
    }
    let m = results.iter().find(|r| r.name == "migroute");
    let b = results.iter().find(|r| r.name == "BIRD");
    let (Some(m), Some(b)) = (m, b) else { return };
    println!(
        "migroute / BIRD: time {:.2}x, RSS {:.2}x, peak {:.2}x",
        m.secs / b.secs,
        m.rss_mb / b.rss_mb,
        m.hwm_mb / b.hwm_mb
    );
}
