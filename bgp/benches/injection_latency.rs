//! Injection latency: `announce` on migroute's stdin → the route in the ingress
//! router's kernel FIB (FRR bgpd + zebra, watched with `ip monitor route`), 20 samples,
//! median and max; side by side in the same run with gobgpd (`gobgp global rib add`)
//! peering with the same FRR, and with migroute persisting to its graceful-restart
//! store (`--state-dir`, an fsync per announce).
//!
//! Run as root: `cargo build --release -p migroute && cargo bench -p migroute-bgp
//! --bench injection_latency` (uses target/release/migroute, or MIGROUTE_BIN).

#[path = "../tests/interop_support/mod.rs"]
mod interop_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use interop_support::*;

const SAMPLES: usize = 20;
const G4: &str = "10.78.0.1";
const F4: &str = "10.78.0.2";

fn frr_conf() -> String {
    format!(
        "hostname ingress
router bgp 65001
 bgp router-id {D4}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor {S4} remote-as 65001
 neighbor {S4} timers 3 9
 neighbor {S4} timers connect 1
 neighbor {G4} remote-as 65001
 neighbor {G4} timers 3 9
 neighbor {G4} timers connect 1
 address-family ipv4 unicast
  neighbor {S4} activate
  neighbor {G4} activate
 exit-address-family
exit
end
"
    )
}

fn gobgp_conf() -> String {
    format!(
        r#"[global.config]
  as = 65001
  router-id = "{G4}"
  port = -1
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{F4}"
    peer-as = 65001
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

/// A third namespace for gobgpd, removed on drop.
struct GobgpNs {
    name: String,
    dir: PathBuf,
}

impl Drop for GobgpNs {
    fn drop(&mut self) {
        for pid in migroute_labs::netns::pids(&self.name) {
            // SAFETY: plain kill of a process inside our own namespace.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kernel route additions in `ns`, as (prefix, arrival time).
fn monitor(ns: &str) -> (std::process::Child, mpsc::Receiver<(String, Instant)>) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "monitor", "route"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ip monitor");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let t = Instant::now();
            if line.starts_with("Deleted") {
                continue;
            }
            if let Some(p) = line.split_whitespace().next() {
                let _ = tx.send((p.to_string(), t));
            }
        }
    });
    (child, rx)
}

fn wait_prefix(rx: &mpsc::Receiver<(String, Instant)>, prefix: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (p, t) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{prefix} never reached the FIB"));
        if p == prefix {
            return t;
        }
    }
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<34} median {:>7.1} ms   min {:>7.1} ms   max {:>7.1} ms   (n={})",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    );
}

fn series(
    rx: &mpsc::Receiver<(String, Instant)>,
    base: u8,
    mut inject: impl FnMut(&str),
) -> Vec<Duration> {
    (0..SAMPLES)
        .map(|i| {
            let prefix = format!("198.18.{}.0/24", usize::from(base) + i);
            std::thread::sleep(Duration::from_millis(300));
            let t0 = Instant::now();
            inject(&prefix);
            wait_prefix(rx, &prefix) - t0
        })
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/migroute");
    if std::env::var_os("MIGROUTE_BIN").is_none() && release.exists() {
        std::env::set_var("MIGROUTE_BIN", &release);
    }
    let Some(bin) = prerequisites(&["/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "gobgpd"]) else {
        return;
    };
    println!("migroute binary: {}", bin.display());
    let net = Net::new("lat", bin);
    // gobgpd in a third namespace, linked to the FRR one.
    let g = GobgpNs {
        name: format!("mrb-lat-{}-g", std::process::id()),
        dir: net.dir.join("gobgp"),
    };
    std::fs::create_dir_all(&g.dir).unwrap();
    ip(&["netns", "add", &g.name]);
    ip(&[
        "-n",
        &g.name,
        "link",
        "add",
        "mrg0",
        "type",
        "veth",
        "peer",
        "name",
        "mrf0",
        "netns",
        &net.daemon_ns,
    ]);
    for (ns, ifc, a) in [(&g.name, "mrg0", G4), (&net.daemon_ns, "mrf0", F4)] {
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{a}/24"), "dev", ifc]);
        ip(&["-n", ns, "link", "set", ifc, "up"]);
    }
    net.start_frr(&frr_conf());
    let gconf = net.write("gobgpd.toml", &gobgp_conf());
    migroute_labs::daemons::gobgp::start(
        &migroute_labs::daemons::NodeCtx {
            node: "gobgp".into(),
            netns: g.name.clone(),
            dir: g.dir.clone(),
        },
        &gconf,
    )
    .expect("gobgpd");
    let (mut mon, rx) = monitor(&net.daemon_ns);
    let t = Duration::from_secs(30);

    let args = [
        "--local-as",
        "65001",
        "--router-id",
        S4,
        "--peer",
        D4,
        "--peer-as",
        "65001",
        "--families",
        "ipv4",
        "--hold-time",
        "9",
    ];
    let mut sp = net.speak(&args);
    sp.wait("migroute session", t, session_up);
    wait_until("gobgpd session", t, || {
        let v = net.vtysh_json(&format!("show bgp neighbors {G4} json"));
        (v[G4]["bgpState"] == "Established").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));

    let m = series(&rx, 0, |p| sp.send(&format!("announce {p}")));
    let gobgp = series(&rx, 40, |p| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &g.name,
                "gobgp",
                "-u",
                "127.0.0.1",
                "global",
                "rib",
                "add",
                p,
                "-a",
                "ipv4",
                "nexthop",
                G4,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
    });
    sp.kill9();
    let state = net.dir.join("speaker/state");
    let mut args2: Vec<&str> = args.to_vec();
    let state_s = state.to_str().unwrap().to_string();
    args2.extend(["--state-dir", &state_s]);
    let mut sp2 = net.speak(&args2);
    sp2.wait("migroute session (state dir)", t, session_up);
    std::thread::sleep(Duration::from_secs(1));
    let persisted = series(&rx, 80, |p| sp2.send(&format!("announce {p}")));

    println!("announce -> route in the ingress router's kernel FIB (FRR 8.4 bgpd+zebra, iBGP):");
    report("migroute (stdin announce)", m);
    report("migroute --state-dir (fsync)", persisted);
    report("gobgpd (gobgp global rib add)", gobgp);
    let _ = mon.kill();
    let _ = mon.wait();
}
