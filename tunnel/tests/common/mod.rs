//! Two network namespaces joined by a veth, for tests that need a real kernel.
#![allow(dead_code)]

use std::process::Command;

/// `true` when the test can run; otherwise prints `SKIPPED: why` (or panics under CI).
pub fn can_run(test: &str) -> bool {
    let why = if !nix_is_root() {
        Some("needs root (network namespaces)")
    } else if !Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        Some("needs iproute2 (`ip`)")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("{test}: {why}"),
        Some(why) => {
            eprintln!("SKIPPED: {test}: {why}");
            false
        }
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Runs a command, panicking with its stderr on failure.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `true` when `ping` from `ns` to `dst` gets an answer.
pub fn ping(ns: &str, dst: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", "-q", dst])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Two namespaces `a` and `b`, veth `ua`—`ub` between them with
/// 198.51.100.1/24 ↔ 198.51.100.2/24 and 2001:db8:ff::1/64 ↔ 2001:db8:ff::2/64.
/// Removed on drop.
pub struct Pair {
    pub a: String,
    pub b: String,
}

pub const A4: &str = "198.51.100.1";
pub const B4: &str = "198.51.100.2";
pub const A6: &str = "2001:db8:ff::1";
pub const B6: &str = "2001:db8:ff::2";

impl Pair {
    pub fn new(test: &str) -> Self {
        let pid = std::process::id();
        let a = format!("mrt-{pid}-{test}-a");
        let b = format!("mrt-{pid}-{test}-b");
        let pair = Pair { a, b };
        for ns in [&pair.a, &pair.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "-n", &pair.a, "link", "add", "ua", "type", "veth", "peer", "name", "ub",
            "netns", &pair.b,
        ]);
        for (ns, dev, v4, v6) in [(&pair.a, "ua", A4, A6), (&pair.b, "ub", B4, B6)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        pair
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
