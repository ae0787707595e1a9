//! Routing daemons started inside a node's namespace: FRR, BIRD and gobgpd. Each
//! module starts its daemon with every runtime path (sockets, pid files, logs) in the
//! node's run directory, so nothing of the host (`/etc/frr`, `/run/frr`, the host's
//! own daemons) is touched, and reads BGP session states back for `status` and the
//! wait helpers.

pub mod bird;
pub mod frr;
pub mod gobgp;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{LabError, Result};
use crate::topology::Daemon;

/// Where a node's daemons live.
#[derive(Debug, Clone)]
pub struct NodeCtx {
    pub node: String,
    pub netns: String,
    /// The node's run directory (sockets, pid files, logs).
    pub dir: PathBuf,
}

/// One BGP session as the node's daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpSession {
    /// Peer address (or, for BIRD, the protocol name when no address is shown).
    pub peer: String,
    /// The daemon's state name, e.g. `Established`, `Active`, `Connect`.
    pub state: String,
    pub established: bool,
}

/// Starts the daemon(s) of a node; on failure the error names the node and the field
/// of the topology file that configured the daemon.
pub fn start(ctx: &NodeCtx, daemon: &Daemon) -> Result<()> {
    std::fs::create_dir_all(&ctx.dir).map_err(|source| LabError::State {
        path: ctx.dir.clone(),
        source,
    })?;
    match daemon {
        Daemon::None => Ok(()),
        Daemon::Frr { config, daemons } => frr::start(ctx, config, daemons.as_deref()),
        Daemon::Bird { config } => bird::start(ctx, config),
        Daemon::Gobgp { config } => gobgp::start(ctx, config),
    }
}

/// BGP sessions of a node, as its daemon reports them right now.
pub fn sessions(ctx: &NodeCtx, daemon: &Daemon) -> Result<Vec<BgpSession>> {
    match daemon {
        Daemon::None => Ok(Vec::new()),
        Daemon::Frr { .. } => frr::sessions(ctx),
        Daemon::Bird { .. } => bird::sessions(ctx),
        Daemon::Gobgp { .. } => gobgp::sessions(ctx),
    }
}

/// The last lines of a daemon's log, for start errors.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// Polls `ready` until it returns true or `timeout` passes.
pub(crate) fn poll_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Owner uid/gid of a system user, e.g. `frr`.
pub(crate) fn user_ids(user: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the two
    // integers out immediately and never keep the pointer.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null pointer from getpwnam, read before any other getpw* call.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some((uid, gid))
}
