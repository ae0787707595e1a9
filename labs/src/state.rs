//! The per-lab state directory (`/run/migroute-lab/<lab>/` by default): which
//! namespaces the runner created (journalled *before* creating them, so `down` after a
//! crash still finds them), the daemons' run directories with their pid files, and
//! link-end moves. `/run` is a tmpfs, like `/run/netns`, so both vanish together on a
//! reboot.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{LabError, Result};

/// Default root of all labs' state; `MIGROUTE_LAB_STATE_DIR` overrides it.
pub const DEFAULT_ROOT: &str = "/run/migroute-lab";

/// State directory of one lab.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::State {
        path: path.to_path_buf(),
        source,
    }
}

impl StateDir {
    /// The state directory of lab `name` under the default (or overridden) root.
    pub fn for_lab(name: &str) -> Self {
        let root = std::env::var_os("MIGROUTE_LAB_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        StateDir {
            dir: root.join(name),
        }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether the lab has state (is up, or was not cleaned).
    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// Creates the directory (readable by the `frr` user, whose daemons live below).
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        set_mode(&self.dir, 0o755)?;
        if let Some(parent) = self.dir.parent() {
            set_mode(parent, 0o755)?;
        }
        Ok(())
    }

    /// The run directory of a node's daemons.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }

    fn journal(&self) -> PathBuf {
        self.dir.join("namespaces")
    }

    /// Notes a namespace as ours; call before creating it.
    pub fn record_netns(&self, netns: &str) -> Result<()> {
        let path = self.journal();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        writeln!(f, "{netns}").map_err(io_err(&path))?;
        f.sync_data().map_err(io_err(&path))
    }

    /// Namespaces this lab created (possibly already deleted).
    pub fn namespaces(&self) -> Vec<String> {
        std::fs::read_to_string(self.journal())
            .map(|s| {
                s.lines()
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every `*.pid` file in the node run directories, with the node it belongs to.
    /// The file stem is the process name (`/proc/PID/comm`) the pid must have.
    pub fn pid_files(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        let Ok(nodes) = std::fs::read_dir(self.dir.join("nodes")) else {
            return out;
        };
        for node in nodes.filter_map(|e| e.ok()) {
            let name = node.file_name().to_string_lossy().into_owned();
            if let Ok(files) = std::fs::read_dir(node.path()) {
                for f in files.filter_map(|e| e.ok()) {
                    let p = f.path();
                    if p.extension().is_some_and(|e| e == "pid") {
                        out.push((name.clone(), p));
                    }
                }
            }
        }
        out.sort();
        out
    }

    fn moves_file(&self) -> PathBuf {
        self.dir.join("moves")
    }

    /// Records that the end `from_node:interface` now lives in `to_node`.
    pub fn record_move(&self, from_node: &str, interface: &str, to_node: &str) -> Result<()> {
        let path = self.moves_file();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        writeln!(f, "{from_node} {interface} {to_node}").map_err(io_err(&path))
    }

    /// Moves so far, in order: (from node, interface, to node).
    pub fn moves(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.moves_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.into(), it.next()?.into(), it.next()?.into()))
            })
            .collect()
    }

    /// Removes the whole directory.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.dir)(e)),
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// Reads a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is alive and named `comm` (guards against a recycled pid). A process
/// whose main thread has exited while other threads still run (FRR daemons shutting
/// down) counts as alive: killing it then would cut its clean-up short.
pub fn pid_alive_as(pid: u32, comm: &str) -> bool {
    let named = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == comm)
        .unwrap_or(false);
    named && (!is_zombie(pid) || live_threads(pid) > 1)
}

fn live_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}
