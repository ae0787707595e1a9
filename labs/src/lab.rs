//! A lab: a checked topology plus its state directory. `up` builds it (namespaces,
//! veths, `exec:` commands, daemons) and, on any failure, tears down whatever it had
//! built before returning the error; `down` undoes a lab from its state directory alone,
//! so it also cleans up after a crashed or interrupted `up`.

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cmd;
use crate::daemons::{self, NodeCtx};
use crate::error::{LabError, Result};
use crate::netns;
use crate::state::{pid_alive_as, read_pid, StateDir};
use crate::topology::{Node, Topology};

/// Sysctls of every node: no duplicate address detection, so IPv6 addresses are usable
/// at once (the lab's addresses are unique by construction).
const HOST_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
];
/// Sysctls of routers: forward both families, no reverse-path filter (asymmetric
/// paths are normal during a migration).
const ROUTER_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.default.forwarding", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
];

/// How long `down` lets daemons exit on SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// A lab loaded from its topology file.
#[derive(Debug, Clone)]
pub struct Lab {
    pub topology: Topology,
    pub(crate) state: StateDir,
}

/// What `up` did, with timings.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub lab: String,
    pub nodes: usize,
    pub links: usize,
    pub daemons_started: Vec<String>,
    pub elapsed_ms: u64,
}

/// What `down` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    pub lab: String,
    pub daemons_stopped: Vec<String>,
    pub processes_killed: Vec<u32>,
    pub namespaces_deleted: Vec<String>,
    pub elapsed_ms: u64,
}

impl Lab {
    /// Loads and checks a topology file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(Topology::load(path)?))
    }

    /// The lab to tear down: the full topology when the file still checks, else just
    /// its name (`down` needs nothing else: the state directory knows the rest).
    pub fn load_for_teardown(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match Topology::load(path) {
            Ok(t) => Ok(Self::new(t)),
            Err(_) => Ok(Self::new(Topology::name_only(path)?)),
        }
    }

    /// A lab of an already checked topology.
    pub fn new(topology: Topology) -> Self {
        let state = StateDir::for_lab(&topology.name);
        Lab { topology, state }
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.topology.name
    }

    /// The state directory (run directories, pid files, journal).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Whether the lab has been brought up (and not torn down).
    pub fn is_up(&self) -> bool {
        self.state.exists()
    }

    /// The node, or [`LabError::UnknownNode`].
    pub fn node(&self, node: &str) -> Result<&Node> {
        self.topology
            .nodes
            .get(node)
            .ok_or_else(|| LabError::UnknownNode {
                lab: self.topology.name.clone(),
                node: node.to_string(),
            })
    }

    /// The namespace of a node.
    pub fn netns(&self, node: &str) -> Result<String> {
        self.node(node)?;
        Ok(self.topology.netns(node))
    }

    pub(crate) fn ctx(&self, node: &str) -> NodeCtx {
        NodeCtx {
            node: node.to_string(),
            netns: self.topology.netns(node),
            dir: self.state.node_dir(node),
        }
    }

    /// Brings the lab up. On failure everything created so far is removed again and
    /// the first error is returned.
    pub fn up(&self) -> Result<UpReport> {
        let start = Instant::now();
        if self.state.exists() {
            return Err(LabError::AlreadyUp {
                lab: self.name().into(),
                what: format!("state directory {} exists", self.state.path().display()),
            });
        }
        if let Some(ns) = self
            .topology
            .nodes
            .keys()
            .map(|n| self.topology.netns(n))
            .find(|ns| netns::exists(ns))
        {
            return Err(LabError::AlreadyUp {
                lab: self.name().into(),
                what: format!("namespace {ns} exists"),
            });
        }
        match self.build() {
            Ok(daemons_started) => Ok(UpReport {
                lab: self.name().into(),
                nodes: self.topology.nodes.len(),
                links: self.topology.links.len(),
                daemons_started,
                elapsed_ms: start.elapsed().as_millis() as u64,
            }),
            Err(e) => {
                if let Err(cleanup) = self.down() {
                    tracing_like_warn(&format!("cleanup after failed up: {cleanup}"));
                }
                Err(e)
            }
        }
    }

    fn build(&self) -> Result<Vec<String>> {
        self.state.create()?;
        for node in self.topology.nodes.values() {
            let ns = self.topology.netns(&node.name);
            self.state.record_netns(&ns)?;
            netns::create(&ns)?;
            netns::sysctls(&ns, HOST_SYSCTLS)?;
            if node.daemon.is_router() {
                netns::sysctls(&ns, ROUTER_SYSCTLS)?;
            }
        }
        for link in &self.topology.links {
            let (na, nb) = (
                self.topology.netns(&link.a.node),
                self.topology.netns(&link.b.node),
            );
            cmd::run(
                format!("link {} -- {}", link.a, link.b),
                Command::new("ip").args([
                    "link",
                    "add",
                    &link.a.interface,
                    "netns",
                    &na,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &link.b.interface,
                    "netns",
                    &nb,
                ]),
            )?;
            for (ns, ep) in [(&na, &link.a), (&nb, &link.b)] {
                cmd::run(
                    format!("link {ep} up"),
                    Command::new("ip").args(["-n", ns, "link", "set", &ep.interface, "up"]),
                )?;
            }
        }
        for node in self.topology.nodes.values() {
            let ns = self.topology.netns(&node.name);
            for (index, line) in node.exec.iter().enumerate() {
                let mut c = netns::command(&ns, "sh");
                c.args(["-c", line]);
                cmd::output("exec", &mut c).map_err(|e| LabError::Exec {
                    node: node.name.clone(),
                    index,
                    command: line.clone(),
                    detail: match e {
                        LabError::Command { detail, .. } => detail,
                        other => other.to_string(),
                    },
                })?;
            }
        }
        // Daemons start in parallel: FRR's start-up dominates bring-up time.
        let routers: Vec<&Node> = self
            .topology
            .nodes
            .values()
            .filter(|n| n.daemon.is_router())
            .collect();
        let results: Vec<Result<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = routers
                .iter()
                .map(|n| {
                    let ctx = self.ctx(&n.name);
                    s.spawn(move || {
                        daemons::start(&ctx, &n.daemon)
                            .map(|()| format!("{}:{}", n.name, n.daemon.name()))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LabError::Command {
                            context: "daemon start".into(),
                            command: "thread".into(),
                            detail: "panicked".into(),
                        })
                    })
                })
                .collect()
        });
        results.into_iter().collect()
    }

    /// Tears the lab down: stops the daemons recorded by pid files (SIGTERM, then
    /// SIGKILL after a grace period), kills any other process still inside the lab's
    /// namespaces (it would keep them alive), deletes the namespaces this lab created,
    /// and removes the state directory. Nothing outside the lab's journal is touched.
    pub fn down(&self) -> Result<DownReport> {
        let start = Instant::now();
        let mut report = DownReport {
            lab: self.name().into(),
            ..Default::default()
        };
        if !self.state.exists() {
            return Ok(report);
        }
        let namespaces = self.state.namespaces();
        // 1. Our daemons, by pid file, checked against name and namespace.
        let mut pending: Vec<(String, u32, String)> = Vec::new();
        for (node, pid_file) in self.state.pid_files() {
            let comm = pid_file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(pid) = read_pid(&pid_file) else {
                continue;
            };
            let ns = self.topology.netns(&node);
            if pid_alive_as(pid, &comm) && (netns::pid_in(pid, &ns) || !netns::exists(&ns)) {
                signal(pid, libc::SIGTERM);
                pending.push((format!("{node}:{comm}"), pid, comm));
            }
        }
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline && pending.iter().any(|(_, p, c)| pid_alive_as(*p, c)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (label, pid, comm) in pending {
            if pid_alive_as(pid, &comm) {
                signal(pid, libc::SIGKILL);
            }
            report.daemons_stopped.push(label);
        }
        // 2. Anything else still living in our namespaces.
        for ns in &namespaces {
            for pid in netns::pids(ns) {
                signal(pid, libc::SIGKILL);
                report.processes_killed.push(pid);
            }
        }
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline && namespaces.iter().any(|ns| !netns::pids(ns).is_empty()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // 3. The namespaces (their veths go with them).
        let mut failures = Vec::new();
        for ns in &namespaces {
            if netns::exists(ns) {
                match netns::delete(ns) {
                    Ok(()) => report.namespaces_deleted.push(ns.clone()),
                    Err(e) => failures.push(e.to_string()),
                }
            }
        }
        if !failures.is_empty() {
            return Err(LabError::Teardown {
                lab: self.name().into(),
                detail: failures.join("; "),
            });
        }
        self.state.remove()?;
        report.elapsed_ms = start.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// A command that runs `program` inside `node` (the caller adds arguments).
    pub fn command(&self, node: &str, program: &str) -> Result<Command> {
        let ns = self.netns(node)?;
        if !netns::exists(&ns) {
            return Err(LabError::NotUp {
                lab: self.name().into(),
                state_dir: self.state.path().to_path_buf(),
            });
        }
        Ok(netns::command(&ns, program))
    }

    /// Runs `argv` inside `node` with the caller's stdin/stdout/stderr.
    pub fn exec(&self, node: &str, argv: &[String]) -> Result<ExitStatus> {
        let (program, args) = argv.split_first().ok_or_else(|| LabError::Command {
            context: format!("node `{node}`: exec"),
            command: String::new(),
            detail: "no command given".into(),
        })?;
        let mut c = self.command(node, program)?;
        c.args(args);
        c.status().map_err(|e| LabError::Command {
            context: format!("node `{node}`: exec"),
            command: cmd::describe(&c),
            detail: e.to_string(),
        })
    }

    /// Runs a shell command line inside `node` and returns its stdout; fails on a
    /// non-zero exit, naming the node.
    pub fn sh(&self, node: &str, line: &str) -> Result<String> {
        let mut c = self.command(node, "sh")?;
        c.args(["-c", line]);
        cmd::run(format!("node `{node}`"), &mut c)
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a positive pid we checked belongs to the lab.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn tracing_like_warn(msg: &str) {
    eprintln!("migroute-labs: warning: {msg}");
}
