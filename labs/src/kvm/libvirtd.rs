//! A libvirtd of its own inside a site's namespace: a private mount namespace whose
//! `/etc/libvirt`, `/var/lib/libvirt`, `/run/libvirt`, `/var/log/libvirt` and
//! `/var/cache/libvirt` are bind mounts of per-instance directories, its own host UUID
//! (two libvirtds with one UUID refuse to migrate to each other), TCP without auth for
//! the peer-to-peer connection, QEMU as root without a security driver.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{LabError, Result};

/// The directories bind-mounted over the host's: (per-instance subdirectory, path).
const MOUNTS: [(&str, &str); 5] = [
    ("etc", "/etc/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("run", "/run/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
];

/// A running libvirtd. [`stop`](Self::stop) (or drop) destroys its domains and ends it.
#[derive(Debug)]
pub struct Libvirtd {
    netns: String,
    dir: PathBuf,
    child: Option<Child>,
}

fn err(context: &str, detail: impl std::fmt::Display) -> LabError {
    LabError::Command {
        context: context.to_owned(),
        command: "libvirtd".into(),
        detail: detail.to_string(),
    }
}

/// libvirt's QEMU driver refuses to start without its default user, even when
/// `qemu.conf` says `user = "root"`.
fn ensure_qemu_user() -> Result<()> {
    let present = Command::new("getent")
        .args(["passwd", "libvirt-qemu"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        cmd::run(
            "create the libvirt-qemu user libvirt's QEMU driver expects",
            Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ]),
        )?;
    }
    Ok(())
}

impl Libvirtd {
    /// Starts libvirtd in namespace `netns`, its state under `dir` (created), and waits
    /// until it answers on its UNIX socket.
    pub fn start(netns: &str, dir: &Path) -> Result<Libvirtd> {
        ensure_qemu_user()?;
        for (sub, _) in MOUNTS {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| err("instance dirs", e))?;
        }
        std::fs::create_dir_all(dir.join("lib/images")).map_err(|e| err("instance dirs", e))?;
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map_err(|e| err("host uuid", e))?;
        let conf = format!(
            "listen_tls = 0\nlisten_tcp = 1\nlisten_addr = \"0.0.0.0\"\nauth_tcp = \"none\"\n\
             auth_unix_rw = \"none\"\nhost_uuid = \"{}\"\n\
             log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
            uuid.trim()
        );
        std::fs::write(dir.join("etc/libvirtd.conf"), conf).map_err(|e| err("config", e))?;
        let qemu = "user = \"root\"\ngroup = \"root\"\nsecurity_driver = \"none\"\n\
                    stdio_handler = \"file\"\ncgroup_controllers = [ ]\nnamespaces = [ ]\n\
                    remember_owner = 0\n";
        std::fs::write(dir.join("etc/qemu.conf"), qemu).map_err(|e| err("config", e))?;
        let mut script = String::from("set -e\n");
        for (sub, target) in MOUNTS {
            script.push_str(&format!(
                "mkdir -p {target}\nmount --bind '{}' {target}\n",
                dir.join(sub).display()
            ));
        }
        script.push_str("exec libvirtd --listen --pid-file /run/libvirt/libvirtd.pid -f /etc/libvirt/libvirtd.conf\n");
        let out = std::fs::File::create(dir.join("libvirtd.out")).map_err(|e| err("log", e))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "unshare",
                "-m",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| err("log", e))?)
            .stderr(out)
            .spawn()
            .map_err(|e| err("spawn libvirtd", e))?;
        let mut d = Libvirtd {
            netns: netns.to_owned(),
            dir: dir.to_owned(),
            child: Some(child),
        };
        d.wait_ready(Duration::from_secs(60))?;
        Ok(d)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.virsh(&["uri"]).is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .map(|c| c.try_wait().ok().flatten().is_some())
                .unwrap_or(true);
            if exited || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join("log/libvirtd.log")).unwrap_or_default();
                let out =
                    std::fs::read_to_string(self.dir.join("libvirtd.out")).unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(5).collect();
                return Err(err(
                    &format!("libvirtd in {}", self.netns),
                    format!(
                        "{} (output: {}; log: {})",
                        if exited { "exited" } else { "not answering" },
                        out.trim(),
                        tail.join(" | ")
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The URI the host reaches it at (its UNIX socket, through the instance dir).
    pub fn uri(&self) -> String {
        format!(
            "qemu+unix:///system?socket={}",
            self.dir.join("run/libvirt-sock").display()
        )
    }

    /// The URI another libvirtd reaches it at, over TCP at `addr`.
    pub fn tcp_uri(addr: &str) -> String {
        format!("qemu+tcp://{addr}/system")
    }

    /// Where a path of its mount namespace (under one of the bind-mounted directories)
    /// is on the host.
    pub fn host_path(&self, inner: &Path) -> Option<PathBuf> {
        MOUNTS.iter().find_map(|(sub, target)| {
            inner
                .strip_prefix(target)
                .ok()
                .map(|rest| self.dir.join(sub).join(rest))
        })
    }

    /// The namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Runs `virsh -c URI ARGS…` against it.
    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        cmd::run(
            format!("virsh on the libvirtd in {}", self.netns),
            Command::new("virsh")
                .arg("-q")
                .arg("-c")
                .arg(self.uri())
                .args(args),
        )
    }

    /// Destroys its running domains, then stops it (SIGTERM, SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(list) = self.virsh(&["list", "--name"]) {
            for name in list.lines().map(str::trim).filter(|n| !n.is_empty()) {
                let _ = self.virsh(&["destroy", name]);
            }
        }
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        self.stop();
    }
}
