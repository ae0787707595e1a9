//! Network namespaces: one per node. Namespaces are the named ones of iproute2
//! (`/run/netns/NAME`), so `ip netns list` and `ip netns exec` work on a lab too.

use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::error::{LabError, Result};

/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The bind-mounted namespace file of `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether a named namespace exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Creates a named namespace and brings its loopback up.
pub fn create(name: &str) -> Result<()> {
    cmd::run(
        format!("create namespace {name}"),
        Command::new("ip").args(["netns", "add", name]),
    )?;
    cmd::run(
        format!("namespace {name}: loopback up"),
        Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]),
    )?;
    Ok(())
}

/// Deletes a named namespace (its interfaces go with it once no process is left in it).
pub fn delete(name: &str) -> Result<()> {
    cmd::run(
        format!("delete namespace {name}"),
        Command::new("ip").args(["netns", "delete", name]),
    )?;
    Ok(())
}

/// A command that runs `program` inside namespace `name` (via `ip netns exec`, which
/// also gives it a `/sys` of that namespace).
pub fn command(name: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", name, program]);
    c
}

/// Sets sysctls inside a namespace in one call.
pub fn sysctls(name: &str, settings: &[(&str, &str)]) -> Result<()> {
    let mut c = command(name, "sysctl");
    c.arg("-qw");
    for (k, v) in settings {
        c.arg(format!("{k}={v}"));
    }
    cmd::run(format!("namespace {name}: sysctls"), &mut c)?;
    Ok(())
}

/// Processes whose network namespace is `name`.
pub fn pids(name: &str) -> Vec<u32> {
    let Some(ino) = inode(&path(name)) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| inode(Path::new(&format!("/proc/{pid}/ns/net"))) == Some(ino))
        .collect()
}

/// Whether process `pid` lives in namespace `name`.
pub fn pid_in(pid: u32, name: &str) -> bool {
    match (
        inode(&path(name)),
        inode(Path::new(&format!("/proc/{pid}/ns/net"))),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn inode(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.ino())
}

/// Runs `f` on a fresh thread that has entered namespace `name`: sockets it opens stay
/// in that namespace. This is how the probe runs in a node without a subprocess.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn_in(name, f)?.join()
}

/// A thread running inside a namespace (see [`spawn_in`]).
pub struct NsThread<T> {
    netns: String,
    handle: std::thread::JoinHandle<Option<T>>,
}

impl<T> NsThread<T> {
    /// Waits for the thread's result.
    pub fn join(self) -> Result<T> {
        match self.handle.join() {
            Ok(Some(v)) => Ok(v),
            _ => Err(LabError::Command {
                context: format!("namespace {}", self.netns),
                command: "thread".into(),
                detail: "panicked".into(),
            }),
        }
    }

    /// Whether the thread has finished.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Starts `f` on a thread inside namespace `name`; fails (without running `f`) if the
/// namespace cannot be entered.
pub fn spawn_in<T, F>(name: &str, f: F) -> Result<NsThread<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let p = path(name);
    let enter_err = |detail: String| LabError::Command {
        context: format!("enter namespace {name}"),
        command: format!("setns {}", p.display()),
        detail,
    };
    let file = std::fs::File::open(&p).map_err(|e| enter_err(e.to_string()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // SAFETY: setns only changes this thread's network namespace; the fd is valid
        // for the duration of the call because `file` is alive.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        drop(file);
        if rc != 0 {
            let _ = tx.send(Err(std::io::Error::last_os_error()));
            return None;
        }
        let _ = tx.send(Ok(()));
        Some(f())
    });
    match rx.recv() {
        Ok(Ok(())) => Ok(NsThread {
            netns: name.to_string(),
            handle,
        }),
        Ok(Err(e)) => Err(enter_err(e.to_string())),
        Err(_) => Err(enter_err("thread died".into())),
    }
}
