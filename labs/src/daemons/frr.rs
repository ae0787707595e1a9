//! FRR inside a namespace: zebra first, then the daemons the node's `daemons` file
//! enables (staticd always), each with `-P 0` (no TCP vty), `--vty_socket` and `-z` in
//! the node's run directory (owned by the `frr` user: zebra exits when it cannot write
//! there), `-i` pid and `--log` files; then `vtysh --vty_socket DIR -f frr.conf` pushes
//! the node's configuration. `/etc/frr` of the host is never read or written.

use std::path::Path;
use std::process::Command;

use std::time::Duration;

use super::{log_tail, poll_until, user_ids, BgpSession, NodeCtx};
use crate::cmd;
use crate::error::{LabError, Result};
use crate::netns;
use crate::state::{pid_alive_as, read_pid};

/// Where the distribution installs FRR's daemons.
pub const FRR_BIN_DIR: &str = "/usr/lib/frr";
/// Daemons started when the node binds no `daemons` file.
const DEFAULT_DAEMONS: &[&str] = &["ospfd", "ospf6d", "bgpd"];
/// Daemons the runner knows how to start from a `daemons` file.
const KNOWN: &[&str] = &[
    "bgpd", "ospfd", "ospf6d", "ripd", "ripngd", "isisd", "pimd", "ldpd", "nhrpd", "eigrpd",
    "babeld", "pbrd", "bfdd", "fabricd", "vrrpd", "pathd",
];

/// FRR's compiled-in directories that get a per-node private copy: (host path, name of
/// the node's directory).
const PRIVATE_DIRS: [(&str, &str); 2] = [("/run/frr", "run"), ("/var/tmp/frr", "tmp")];

/// `sh -c` script: bind-mount two (source, target) pairs, then exec the daemon. `ip
/// netns exec` already gave the shell its own mount namespace (slave of the host's),
/// so the mounts are seen by this daemon only and vanish with it.
const PRIVATE_MOUNTS_SCRIPT: &str = r#"set -e
for i in 1 2; do
  mkdir -p "$2"
  mount --bind "$1" "$2"
  shift 2
done
exec "$@""#;

/// Which daemons a `daemons` file enables (`bgpd=yes`), in start order.
pub fn enabled_daemons(text: &str) -> Vec<String> {
    let mut out = vec!["zebra".to_string(), "staticd".to_string()];
    for line in text.lines() {
        let line = line.trim();
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"');
            if KNOWN.contains(&k.trim()) && v == "yes" {
                out.push(k.trim().to_string());
            }
        }
    }
    out
}

/// Starts FRR in the node and applies `config`.
pub fn start(ctx: &NodeCtx, config: &Path, daemons_file: Option<&Path>) -> Result<()> {
    let fail = |daemon: &str, field: &'static str, detail: String| LabError::DaemonStart {
        node: ctx.node.clone(),
        daemon: daemon.to_string(),
        field,
        detail,
    };
    let daemons = match daemons_file {
        Some(p) => enabled_daemons(
            &std::fs::read_to_string(p)
                .map_err(|e| fail("frr", "binds", format!("cannot read {}: {e}", p.display())))?,
        ),
        None => {
            let mut d = vec!["zebra".to_string(), "staticd".to_string()];
            d.extend(DEFAULT_DAEMONS.iter().map(|s| s.to_string()));
            d
        }
    };
    let (uid, gid) = user_ids("frr")
        .ok_or_else(|| fail("zebra", "image", "no `frr` user on this host".into()))?;
    std::os::unix::fs::chown(&ctx.dir, Some(uid), Some(gid)).map_err(|e| {
        fail(
            "zebra",
            "binds",
            format!("chown {}: {e}", ctx.dir.display()),
        )
    })?;
    // FRR's compiled-in state directories (graceful-restart and sequence-number files
    // in /run/frr, crash logs in /var/tmp/frr) become per-node directories, bind-mounted
    // in the daemon's private mount namespace.
    let mut private = Vec::new();
    for (host, sub) in PRIVATE_DIRS {
        let p = ctx.dir.join(sub);
        std::fs::create_dir_all(&p)
            .and_then(|()| std::os::unix::fs::chown(&p, Some(uid), Some(gid)))
            .map_err(|e| fail("zebra", "binds", format!("{}: {e}", p.display())))?;
        private.push((host, p));
    }
    let dir = ctx.dir.display().to_string();
    for d in &daemons {
        let bin = Path::new(FRR_BIN_DIR).join(d);
        let log = ctx.dir.join(format!("{d}.log"));
        let mut c = netns::command(&ctx.netns, "sh");
        c.args(["-c", PRIVATE_MOUNTS_SCRIPT, "sh"]);
        for (host, p) in &private {
            c.arg(p).arg(host);
        }
        c.arg(&bin)
            .args(["-d", "-P", "0", "-u", "frr", "-g", "frr", "-f", "/dev/null"])
            .arg("-i")
            .arg(ctx.dir.join(format!("{d}.pid")))
            .arg("--vty_socket")
            .arg(&dir)
            .arg("-z")
            .arg(ctx.dir.join("zserv.api"))
            .arg("--log")
            .arg(format!("file:{}", log.display()));
        let field = if d == "zebra" || d == "staticd" {
            "image"
        } else {
            "binds (/etc/frr/daemons)"
        };
        let out = c
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| fail(d, field, format!("cannot run {}: {e}", bin.display())))?;
        if !out.status.success() {
            let mut detail = cmd::failure_detail(&out);
            let tail = log_tail(&log, 5);
            if !tail.is_empty() {
                detail.push_str(&format!("; log: {tail}"));
            }
            return Err(fail(d, field, detail));
        }
        // `-d` forks; the child writes the pid file that `status` and `down` rely on.
        let pid_file = ctx.dir.join(format!("{d}.pid"));
        if !poll_until(Duration::from_secs(5), || {
            read_pid(&pid_file).is_some_and(|p| pid_alive_as(p, d))
        }) {
            return Err(fail(
                d,
                field,
                format!(
                    "no live {d} behind {} within 5 s; log: {}",
                    pid_file.display(),
                    log_tail(&log, 5)
                ),
            ));
        }
    }
    let mut c = Command::new("vtysh");
    c.arg("--vty_socket").arg(&dir).arg("-f").arg(config);
    let out = c
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail("vtysh", "binds (/etc/frr/frr.conf)", e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || stdout.contains("% ") || stderr.contains("% ") {
        return Err(fail(
            "vtysh",
            "binds (/etc/frr/frr.conf)",
            format!(
                "{} rejected {}: {} {}",
                cmd::describe(&c),
                config.display(),
                stdout.trim(),
                stderr.trim()
            ),
        ));
    }
    Ok(())
}

/// BGP sessions from `show bgp neighbors json`.
pub fn sessions(ctx: &NodeCtx) -> Result<Vec<BgpSession>> {
    let out = cmd::run(
        format!("node `{}`: read BGP neighbors", ctx.node),
        Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&ctx.dir)
            .args(["-c", "show bgp neighbors json"]),
    )?;
    parse_neighbors(&out).map_err(|detail| LabError::Command {
        context: format!("node `{}`: read BGP neighbors", ctx.node),
        command: "vtysh -c 'show bgp neighbors json'".into(),
        detail,
    })
}

/// Parses FRR's `show bgp neighbors json` (an object keyed by peer address).
pub fn parse_neighbors(json: &str) -> std::result::Result<Vec<BgpSession>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("bad JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    Ok(obj
        .iter()
        .filter_map(|(peer, n)| {
            let state = n.get("bgpState")?.as_str()?.to_string();
            Some(BgpSession {
                peer: peer.clone(),
                established: state == "Established",
                state,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemons_file_enables_listed_daemons_after_zebra_and_staticd() {
        let d = enabled_daemons("bgpd=yes\nospfd=no\nospf6d=yes\n# x=yes\nvtysh_enable=yes\n");
        assert_eq!(d, ["zebra", "staticd", "bgpd", "ospf6d"]);
    }

    #[test]
    fn neighbors_json_yields_states() {
        let s = parse_neighbors(
            r#"{"10.0.0.1":{"bgpState":"Established"},"2001:db8::1":{"bgpState":"Active"}}"#,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].established);
        assert_eq!(s[1].state, "Active");
        assert!(!s[1].established);
    }
}
