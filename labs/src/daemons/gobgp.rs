//! gobgpd inside a namespace. gobgpd neither daemonizes nor writes a pid file, so it
//! is started detached (`setsid -f`) through a shell that records its own pid and then
//! execs into the daemon; the gRPC API listens on the node's own loopback, so every
//! node can use the default port. The config is checked first with `gobgpd -d`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{log_tail, poll_until, BgpSession, NodeCtx};
use crate::cmd;
use crate::error::{LabError, Result};
use crate::netns;
use crate::state::{pid_alive_as, read_pid};

const API: &str = "127.0.0.1:50051";

fn config_type(config: &Path) -> &'static str {
    match config.extension().and_then(|e| e.to_str()) {
        Some("yml" | "yaml") => "yaml",
        Some("json") => "json",
        _ => "toml",
    }
}

/// Starts gobgpd in the node and waits until its API answers.
pub fn start(ctx: &NodeCtx, config: &Path) -> Result<()> {
    let fail = |detail: String| LabError::DaemonStart {
        node: ctx.node.clone(),
        daemon: "gobgpd".into(),
        field: "binds (gobgpd config)",
        detail,
    };
    let ty = config_type(config);
    let out = Command::new("gobgpd")
        .arg("-f")
        .arg(config)
        .args(["-t", ty, "-d"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run gobgpd: {e}")))?;
    if !out.status.success() {
        return Err(fail(cmd::failure_detail(&out)));
    }
    let pid_file = ctx.dir.join("gobgpd.pid");
    let log = ctx.dir.join("gobgpd.log");
    let script =
        "echo $$ > \"$1\"; shift; log=\"$1\"; shift; exec \"$@\" >\"$log\" 2>&1 </dev/null";
    let mut c = Command::new("setsid");
    c.args(["-f", "sh", "-c", script, "sh"])
        .arg(&pid_file)
        .arg(&log)
        .args(["ip", "netns", "exec", &ctx.netns, "gobgpd", "-f"])
        .arg(config)
        .args(["-t", ty, "-p", "--pprof-disable", "--api-hosts", API]);
    cmd::run("gobgpd", &mut c).map_err(|e| fail(e.to_string()))?;
    let ready = poll_until(Duration::from_secs(10), || {
        let alive = read_pid(&pid_file).is_some_and(|p| pid_alive_as(p, "gobgpd"));
        alive && api(ctx, &["global"]).is_ok()
    });
    if !ready {
        return Err(fail(format!(
            "gobgpd did not answer on {API} within 10 s; log: {}",
            log_tail(&log, 5)
        )));
    }
    Ok(())
}

fn api(ctx: &NodeCtx, args: &[&str]) -> Result<String> {
    let mut c = netns::command(&ctx.netns, "gobgp");
    c.args(["-u", "127.0.0.1", "-p", "50051"]).args(args);
    cmd::run(
        format!("node `{}`: gobgp {}", ctx.node, args.join(" ")),
        &mut c,
    )
}

/// BGP sessions from `gobgp neighbor -j`.
pub fn sessions(ctx: &NodeCtx) -> Result<Vec<BgpSession>> {
    let out = api(ctx, &["neighbor", "-j"])?;
    parse_neighbors(&out).map_err(|detail| LabError::Command {
        context: format!("node `{}`: read BGP neighbors", ctx.node),
        command: "gobgp neighbor -j".into(),
        detail,
    })
}

/// Parses `gobgp neighbor -j`: an array of peers with `conf.neighbor_address` and
/// `state.session_state` (a name, or the number of the gRPC enum; 6 = established).
pub fn parse_neighbors(json: &str) -> std::result::Result<Vec<BgpSession>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("bad JSON: {e}"))?;
    let peers = match &v {
        serde_json::Value::Null => return Ok(Vec::new()),
        serde_json::Value::Array(a) => a,
        _ => return Err("not a JSON array".into()),
    };
    Ok(peers
        .iter()
        .map(|p| {
            let peer = p
                .pointer("/conf/neighbor_address")
                .or_else(|| p.pointer("/state/neighbor_address"))
                .and_then(|a| a.as_str())
                .unwrap_or("?")
                .to_string();
            let raw = p.pointer("/state/session_state");
            let state = match raw {
                Some(serde_json::Value::String(s)) => s.to_ascii_lowercase(),
                Some(serde_json::Value::Number(n)) => match n.as_u64() {
                    Some(1) => "idle",
                    Some(2) => "connect",
                    Some(3) => "active",
                    Some(4) => "opensent",
                    Some(5) => "openconfirm",
                    Some(6) => "established",
                    _ => "unknown",
                }
                .to_string(),
                _ => "unknown".to_string(),
            };
            let established = state == "established";
            BgpSession {
                peer,
                state: if established {
                    "Established".into()
                } else {
                    state
                },
                established,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbors_json_numeric_and_named_states() {
        let s = parse_neighbors(
            r#"[{"conf":{"neighbor_address":"10.20.2.1"},"state":{"session_state":6}},
                {"conf":{"neighbor_address":"10.20.3.1"},"state":{"session_state":"ACTIVE"}}]"#,
        )
        .unwrap();
        assert!(s[0].established);
        assert_eq!(s[0].state, "Established");
        assert_eq!(s[1].state, "active");
        assert!(!s[1].established);
        assert!(parse_neighbors("null").unwrap().is_empty());
    }
}
