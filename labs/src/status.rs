//! `status`: what is up in a lab right now: nodes and their namespaces, links and
//! where their ends live, daemons alive (by pid file), BGP session states per router.

use std::collections::BTreeMap;
use std::fmt;
use std::process::Command;

use serde::Serialize;

use crate::daemons::{self, BgpSession};
use crate::error::Result;
use crate::lab::Lab;
use crate::netns;
use crate::state::{pid_alive_as, read_pid};

/// The state of a whole lab.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub lab: String,
    pub up: bool,
    pub nodes: Vec<NodeStatus>,
    pub links: Vec<LinkStatus>,
}

/// One node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub netns: String,
    pub netns_exists: bool,
    pub daemon: String,
    pub processes: Vec<ProcessStatus>,
    pub bgp: Vec<BgpSession>,
    /// Why sessions could not be read (daemon down, socket missing, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp_error: Option<String>,
}

/// A daemon process recorded by a pid file.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    pub name: String,
    pub pid: Option<u32>,
    pub alive: bool,
}

/// One link; an end's `node` reflects link-end moves.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    pub a: EndStatus,
    pub b: EndStatus,
}

/// One end of a link.
#[derive(Debug, Clone, Serialize)]
pub struct EndStatus {
    pub node: String,
    pub interface: String,
    /// `operstate` of the interface, or `missing`.
    pub state: String,
}

impl LabStatus {
    /// Whether every router reports at least one session and all are Established.
    pub fn all_established(&self) -> bool {
        self.nodes.iter().filter(|n| n.daemon != "none").all(|n| {
            n.bgp_error.is_none() && !n.bgp.is_empty() && n.bgp.iter().all(|s| s.established)
        })
    }
}

impl Lab {
    /// Collects the lab's status. Never fails because a part of the lab is down: that
    /// is what status is for.
    pub fn status(&self) -> Result<LabStatus> {
        let up = self.is_up();
        let mut nodes = Vec::new();
        let mut pid_files: BTreeMap<String, Vec<(String, Option<u32>)>> = BTreeMap::new();
        for (node, file) in self.state.pid_files() {
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            pid_files
                .entry(node)
                .or_default()
                .push((name, read_pid(&file)));
        }
        let mut oper: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for node in self.topology.nodes.values() {
            let ns = self.topology.netns(&node.name);
            let exists = netns::exists(&ns);
            if exists {
                oper.insert(node.name.clone(), link_states(&ns));
            }
            let processes = pid_files
                .get(&node.name)
                .map(|v| {
                    v.iter()
                        .map(|(name, pid)| ProcessStatus {
                            name: name.clone(),
                            pid: *pid,
                            alive: pid.is_some_and(|p| pid_alive_as(p, name)),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (bgp, bgp_error) = if node.daemon.is_router() && up {
                match daemons::sessions(&self.ctx(&node.name), &node.daemon) {
                    Ok(s) => (s, None),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                }
            } else {
                (Vec::new(), None)
            };
            nodes.push(NodeStatus {
                name: node.name.clone(),
                netns: ns,
                netns_exists: exists,
                daemon: node.daemon.name().into(),
                processes,
                bgp,
                bgp_error,
            });
        }
        let end = |node: &str, interface: &str| {
            let node = self.current_node_of(node, interface);
            let state = oper
                .get(&node)
                .and_then(|m| m.get(interface))
                .cloned()
                .unwrap_or_else(|| "missing".into());
            EndStatus {
                node,
                interface: interface.to_string(),
                state,
            }
        };
        let links = self
            .topology
            .links
            .iter()
            .map(|l| LinkStatus {
                a: end(&l.a.node, &l.a.interface),
                b: end(&l.b.node, &l.b.interface),
            })
            .collect();
        Ok(LabStatus {
            lab: self.name().into(),
            up,
            nodes,
            links,
        })
    }
}

/// Interface name → operstate inside a namespace.
fn link_states(ns: &str) -> BTreeMap<String, String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show"])
        .output();
    let Ok(out) = out else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| {
                    Some((
                        l.get("ifname")?.as_str()?.to_string(),
                        l.get("operstate")?.as_str()?.to_ascii_lowercase(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "lab {}: {}",
            self.lab,
            if self.up { "up" } else { "down" }
        )?;
        writeln!(f, "nodes:")?;
        for n in &self.nodes {
            let procs: Vec<String> = n
                .processes
                .iter()
                .map(|p| format!("{}{}", p.name, if p.alive { "" } else { "(dead)" }))
                .collect();
            writeln!(
                f,
                "  {:<10} netns {:<24} {:<6} daemon {:<6} {}",
                n.name,
                n.netns,
                if n.netns_exists { "exists" } else { "absent" },
                n.daemon,
                procs.join(" ")
            )?;
            for s in &n.bgp {
                writeln!(f, "      bgp {:<28} {}", s.peer, s.state)?;
            }
            if let Some(e) = &n.bgp_error {
                writeln!(f, "      bgp error: {e}")?;
            }
        }
        writeln!(f, "links:")?;
        for l in &self.links {
            writeln!(
                f,
                "  {}:{} ({}) -- {}:{} ({})",
                l.a.node, l.a.interface, l.a.state, l.b.node, l.b.interface, l.b.state
            )?;
        }
        Ok(())
    }
}
