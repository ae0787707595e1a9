//! Per-device sysctls inside the agent's network namespace.
//!
//! `/proc/sys/net` shows the namespace of the thread that opens it, so for a named
//! namespace a short-lived thread enters it, writes, and exits: no other code ever runs
//! in the wrong namespace (the same rule the tunnel crate follows for its sockets).

use std::fs::File;
use std::io;
use std::path::PathBuf;

use migroute_tunnel::Netns;
use nix::sched::{setns, CloneFlags};

/// Writes `value` to `/proc/sys/<key>` (slashes, e.g. `net/ipv4/conf/mr-v1/forwarding`)
/// in `netns`. A missing key is `io::ErrorKind::NotFound`.
pub async fn write(netns: &Netns, key: String, value: &'static str) -> io::Result<()> {
    let path = PathBuf::from("/proc/sys").join(key);
    run_in(netns, move || std::fs::write(&path, value)).await
}

/// Runs `f` on a short-lived thread inside `netns` (the caller's namespace for the
/// default one) and returns its result. Sockets `f` creates stay in that namespace.
pub(crate) async fn run_in<T: Send + 'static>(
    netns: &Netns,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let file = match netns.path() {
        None => None,
        Some(p) => Some(File::open(p)?),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("migroute-sysctl".into())
        .spawn(move || {
            let r = (|| {
                if let Some(file) = file {
                    setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                }
                f()
            })();
            let _ = tx.send(r);
        })?;
    rx.await
        .map_err(|_| io::Error::other("sysctl helper thread died"))?
}
