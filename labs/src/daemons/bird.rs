//! BIRD 2 inside a namespace: `bird -c CONF -s SOCK -P PIDFILE` (it daemonizes after
//! checking its config, so a bad config fails the start with BIRD's own message);
//! sessions are read with `birdc -s SOCK show protocols all`.

use std::path::Path;
use std::process::Command;

use std::time::Duration;

use super::{poll_until, BgpSession, NodeCtx};
use crate::cmd;
use crate::error::{LabError, Result};
use crate::netns;
use crate::state::{pid_alive_as, read_pid};

/// Starts BIRD in the node.
pub fn start(ctx: &NodeCtx, config: &Path) -> Result<()> {
    let mut c = netns::command(&ctx.netns, "bird");
    c.arg("-c")
        .arg(config)
        .arg("-s")
        .arg(ctx.dir.join("bird.ctl"))
        .arg("-P")
        .arg(ctx.dir.join("bird.pid"));
    cmd::output("bird", &mut c).map_err(|e| LabError::DaemonStart {
        node: ctx.node.clone(),
        daemon: "bird".into(),
        field: "binds (bird.conf)",
        detail: match e {
            LabError::Command { detail, .. } => detail,
            other => other.to_string(),
        },
    })?;
    // The parent returns once the config checks; the daemonized child writes the pid
    // file a moment later. `status` and `down` find BIRD by that file, so `up` waits.
    let pid_file = ctx.dir.join("bird.pid");
    if !poll_until(Duration::from_secs(5), || {
        read_pid(&pid_file).is_some_and(|p| pid_alive_as(p, "bird"))
    }) {
        return Err(LabError::DaemonStart {
            node: ctx.node.clone(),
            daemon: "bird".into(),
            field: "binds (bird.conf)",
            detail: format!("no live bird behind {} within 5 s", pid_file.display()),
        });
    }
    Ok(())
}

/// BGP sessions of the node's BIRD.
pub fn sessions(ctx: &NodeCtx) -> Result<Vec<BgpSession>> {
    let out = cmd::run(
        format!("node `{}`: read BGP protocols", ctx.node),
        Command::new("birdc")
            .arg("-s")
            .arg(ctx.dir.join("bird.ctl"))
            .args(["show", "protocols", "all"]),
    )?;
    Ok(parse_protocols(&out))
}

/// Parses `birdc show protocols all`: one block per protocol, BGP blocks carry
/// `BGP state:` and `Neighbor address:` lines.
pub fn parse_protocols(text: &str) -> Vec<BgpSession> {
    let mut out = Vec::new();
    let mut current: Option<(String, Option<String>, Option<String>)> = None;
    let flush = |cur: Option<(String, Option<String>, Option<String>)>,
                 out: &mut Vec<BgpSession>| {
        if let Some((name, Some(state), addr)) = cur {
            out.push(BgpSession {
                peer: addr.unwrap_or(name),
                established: state == "Established",
                state,
            });
        }
    };
    for line in text.lines() {
        if line.is_empty() || line.starts_with("BIRD ") || line.starts_with("Name ") {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            flush(current.take(), &mut out);
            let mut cols = line.split_whitespace();
            let name = cols.next().unwrap_or_default().to_string();
            if cols.next() == Some("BGP") {
                current = Some((name, None, None));
            }
            continue;
        }
        if let Some((_, state, addr)) = current.as_mut() {
            let l = line.trim();
            if let Some(v) = l.strip_prefix("BGP state:") {
                *state = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("Neighbor address:") {
                *addr = Some(v.trim().to_string());
            }
        }
    }
    flush(current.take(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_all_yields_bgp_sessions_only() {
        let text = [
            "BIRD 2.0.12 ready.",
            "Name       Proto      Table      State  Since         Info",
            "device1    Device     ---        up     10:00:00.000  ",
            "",
            "frr        BGP        ---        up     10:00:01.000  Established   ",
            "  BGP state:          Established",
            "    Neighbor address: 10.20.1.1",
            "    Neighbor AS:      65001",
            "",
            "down1      BGP        ---        start  10:00:01.000  Active",
            "  BGP state:          Active",
        ]
        .join("\n");
        let s = parse_protocols(&text);
        assert_eq!(
            s,
            vec![
                BgpSession {
                    peer: "10.20.1.1".into(),
                    state: "Established".into(),
                    established: true
                },
                BgpSession {
                    peer: "down1".into(),
                    state: "Active".into(),
                    established: false
                },
            ]
        );
    }
}
