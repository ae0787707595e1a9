//! Shared set-up of the interop tests: two network namespaces joined by a veth (the
//! speaker's and the daemon's), the daemon started with `migroute-labs`, and
//! `migroute bgp speak` as a child process in the speaker's namespace.
//!
//! Prerequisites (root, `ip`, the daemon, the migroute binary) are checked first: when
//! one is missing the test prints `SKIPPED: …` and returns, unless `CI` is set, where
//! it panics. Namespaces and processes are removed in `Drop`, also after a panic.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use migroute_labs::daemons::NodeCtx;
use serde_json::Value;

/// Speaker side addresses; the daemon is `.2` / `::2`.
pub const S4: &str = "10.77.0.1";
pub const D4: &str = "10.77.0.2";
pub const S6: &str = "fd77::1";
pub const D6: &str = "fd77::2";

/// Skips (or, under CI, fails) the test.
pub fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("interop prerequisite missing under CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

fn on_path(bin: &str) -> bool {
    if bin.contains('/') {
        return Path::new(bin).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
        .unwrap_or(false)
}

/// The `migroute` binary: `MIGROUTE_BIN`, else the workspace's debug build (which
/// `cargo test --workspace` builds before running tests).
pub fn migroute_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MIGROUTE_BIN") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug/migroute");
    p.exists().then_some(p)
}

/// Checks root, `ip`, the given daemon binaries and migroute; `None` after skipping.
pub fn prerequisites(bins: &[&str]) -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root for network namespaces");
        return None;
    }
    for b in std::iter::once(&"ip").chain(bins) {
        if !on_path(b) {
            skip(&format!("{b} is not installed"));
            return None;
        }
    }
    let Some(bin) = migroute_bin() else {
        skip("migroute binary not built (cargo build -p migroute, or set MIGROUTE_BIN)");
        return None;
    };
    Some(bin)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip` with arguments.
pub fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// Polls `f` every 50 ms until it gives a value, or panics after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two namespaces joined by a veth, with a run directory for the daemon.
pub struct Net {
    pub speaker_ns: String,
    pub daemon_ns: String,
    pub dir: PathBuf,
    pub bin: PathBuf,
}

impl Net {
    /// Creates `mrb-<tag>-<pid>-s` and `-d` with 10.77.0.0/24 and fd77::/64 between
    /// them.
    pub fn new(tag: &str, bin: PathBuf) -> Net {
        let pid = std::process::id();
        let s = format!("mrb-{tag}-{pid}-s");
        let d = format!("mrb-{tag}-{pid}-d");
        // The daemon's run dir must be reachable by the `frr` user: not under a 0700
        // temporary directory.
        let dir = PathBuf::from(format!("/tmp/mrb-{tag}-{pid}"));
        let net = Net {
            speaker_ns: s.clone(),
            daemon_ns: d.clone(),
            dir: dir.clone(),
            bin,
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("daemon")).unwrap();
        std::fs::create_dir_all(dir.join("speaker")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ip(&["netns", "add", &s]);
        ip(&["netns", "add", &d]);
        ip(&[
            "-n", &s, "link", "add", "mrs0", "type", "veth", "peer", "name", "mrd0", "netns", &d,
        ]);
        for (ns, ifc, a4, a6) in [(&s, "mrs0", S4, S6), (&d, "mrd0", D4, D6)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{a4}/24"), "dev", ifc]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{a6}/64"),
                "dev",
                ifc,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", ifc, "up"]);
        }
        net
    }

    pub fn daemon_ctx(&self) -> NodeCtx {
        NodeCtx {
            node: "dut".into(),
            netns: self.daemon_ns.clone(),
            dir: self.dir.join("daemon"),
        }
    }

    /// Writes a file in the run directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Starts FRR (zebra, staticd, bgpd) with `conf`.
    pub fn start_frr(&self, conf: &str) {
        let c = self.write("frr.conf", conf);
        let d = self.write("daemons", "bgpd=yes\n");
        migroute_labs::daemons::frr::start(&self.daemon_ctx(), &c, Some(&d))
            .unwrap_or_else(|e| panic!("FRR: {e}"));
    }

    /// `vtysh -c CMD` against this test's FRR, parsed as JSON.
    pub fn vtysh_json(&self, cmd: &str) -> Value {
        let out = run(Command::new("vtysh")
            .arg("--vty_socket")
            .arg(self.dir.join("daemon"))
            .args(["-c", cmd]));
        serde_json::from_str(&out).unwrap_or(Value::Null)
    }

    pub fn start_bird(&self, conf: &str) {
        let c = self.write("bird.conf", conf);
        migroute_labs::daemons::bird::start(&self.daemon_ctx(), &c)
            .unwrap_or_else(|e| panic!("BIRD: {e}"));
    }

    pub fn birdc(&self, cmd: &str) -> String {
        let mut c = Command::new("birdc");
        c.arg("-s").arg(self.dir.join("daemon/bird.ctl"));
        c.args(cmd.split_whitespace());
        // birdc exits non-zero for "Network not found": callers look at the text.
        let out = c.output().unwrap_or_else(|e| panic!("birdc: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn start_gobgp(&self, conf: &str) {
        let c = self.write("gobgpd.toml", conf);
        migroute_labs::daemons::gobgp::start(&self.daemon_ctx(), &c)
            .unwrap_or_else(|e| panic!("gobgpd: {e}"));
    }

    /// `gobgp ARGS -j` in the daemon's namespace, parsed as JSON.
    pub fn gobgp_json(&self, args: &[&str]) -> Value {
        let out = run(Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.daemon_ns,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50051",
            ])
            .args(args)
            .arg("-j"));
        serde_json::from_str(&out).unwrap_or(Value::Null)
    }

    /// Kernel routes for `prefix` in the daemon's namespace (its FIB).
    pub fn fib(&self, prefix: &str) -> Vec<Value> {
        let v6 = prefix.contains(':');
        let out = run(Command::new("ip")
            .args(["-j", if v6 { "-6" } else { "-4" }, "-n", &self.daemon_ns])
            .args(["route", "show", prefix]));
        serde_json::from_str::<Vec<Value>>(&out).unwrap_or_default()
    }

    /// Starts `migroute bgp speak ARGS` in the speaker namespace.
    pub fn speak(&self, args: &[&str]) -> Speak {
        Speak::start(self, args)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Only processes inside this test's own namespaces are ours.
        for ns in [&self.speaker_ns, &self.daemon_ns] {
            for pid in migroute_labs::netns::pids(ns) {
                // SAFETY: kill has no memory preconditions; the pid is in our netns.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        for ns in [&self.speaker_ns, &self.daemon_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

/// A `migroute bgp speak` child: commands to its stdin, its JSON lines collected.
pub struct Speak {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Speak {
    fn start(net: &Net, args: &[&str]) -> Speak {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(net.dir.join("speaker/stderr.log"))
            .unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &net.speaker_ns])
            .arg(&net.bin)
            .args(["bgp", "speak"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn migroute bgp speak");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let out_log = net.dir.join("speaker/stdout.log");
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out_log)
                .ok();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(f) = f.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    l.lock().unwrap().push(v);
                }
            }
        });
        Speak {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// Sends one command line without waiting (for latency measurements).
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The child's pid (migroute itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command line and waits for its acknowledgement.
    pub fn cmd(&mut self, line: &str) {
        let seen = self.lines.lock().unwrap().len();
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let ack = self.wait_from(
            seen,
            &format!("ack of {line:?}"),
            Duration::from_secs(10),
            |v| v["event"] == "command" && v["command"] == line.trim(),
        );
        assert_eq!(ack["ok"], true, "{line:?}: {ack}");
    }

    /// Waits for a line matching `pred`, searching from the start.
    pub fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_from(0, what, timeout, pred)
    }

    pub fn wait_from(
        &self,
        from: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(what, timeout, || {
            let lines = self.lines.lock().unwrap();
            lines[from.min(lines.len())..]
                .iter()
                .find(|v| pred(v))
                .cloned()
        })
    }

    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGKILL: no NOTIFICATION, the kernel just closes the sockets.
    pub fn kill9(&mut self) {
        // `ip netns exec` execs the binary, so the child's pid is migroute's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Speak {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TCP segments the kernel of namespace `ns` dropped for a missing or wrong TCP-MD5
/// signature (`TcpExtTCPMD5Unexpected`, `TCPMD5NotFound` and `TCPMD5Failure`):
/// evidence that a session attempt was made and refused.
pub fn md5_drops(ns: &str) -> u64 {
    let out = run(Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/netstat"]));
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = lines[..] else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| n.starts_with("TCPMD5"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// Whether a `route_received` line is for `prefix`.
pub fn received(v: &Value, prefix: &str) -> bool {
    v["event"] == "route_received" && v["prefix"] == prefix
}

pub fn session_up(v: &Value) -> bool {
    v["event"] == "session_up"
}
