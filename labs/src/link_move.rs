//! Moving one end of a link to another node: the model of a live migration's port
//! move. The *other* end (the VM's interface) stays where it is, with its addresses,
//! neighbour cache and sockets, exactly as a migrated guest keeps its own state. In
//! `wan-migration` the moved end is the VM's port on dc-a's bridge, which is re-plugged
//! into dc-b's bridge: behind pe-b, whose gateway has the same MAC as pe-a's.
//!
//! The move is `ip link set IF netns NEW`, after which the kernel has dropped the
//! interface's addresses, routes and bridge port; the runner puts the same MAC,
//! addresses, bridge master (if the new node has a bridge of that name) and static
//! routes back on the new side and brings it up.

use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cmd;
use crate::error::{LabError, Result};
use crate::lab::Lab;

/// What a move did.
#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    pub interface: String,
    pub from: String,
    pub to: String,
    pub mac: String,
    pub master: Option<String>,
    pub addresses: Vec<String>,
    pub routes: Vec<String>,
    /// Time from the first to the last kernel change (pause included), in µs.
    pub elapsed_us: u64,
    /// When the port stopped carrying traffic (set down, or moved) and when it was up
    /// again on the new side, Unix ns: the outage a probe report is compared with.
    pub outage_start_unix_ns: u64,
    pub outage_end_unix_ns: u64,
}

/// How to move.
#[derive(Debug, Clone, Copy, Default)]
pub struct MoveOptions {
    /// Hold the port down this long before moving it: the VM's stop-and-copy pause.
    pub pause: Option<Duration>,
}

/// What an interface looks like before the move.
#[derive(Debug, Default)]
struct Snapshot {
    mac: String,
    master: Option<String>,
    addresses: Vec<String>,
    routes: Vec<Vec<String>>,
}

impl Lab {
    /// The node where the interface that the topology places at `node:interface` lives
    /// now, after any moves.
    pub fn current_node_of(&self, node: &str, interface: &str) -> String {
        self.state
            .moves()
            .into_iter()
            .fold(node.to_string(), |cur, (from, iface, to)| {
                if from == cur && iface == interface {
                    to
                } else {
                    cur
                }
            })
    }

    /// Moves `interface`, which now lives in `from`, to node `to`: the far end of a
    /// link changes node while the near end is untouched.
    pub fn move_link_end(&self, from: &str, interface: &str, to: &str) -> Result<MoveReport> {
        self.move_link_end_with(from, interface, to, MoveOptions::default())
    }

    /// [`Lab::move_link_end`] with options (a pause before the move).
    pub fn move_link_end_with(
        &self,
        from: &str,
        interface: &str,
        to: &str,
        opts: MoveOptions,
    ) -> Result<MoveReport> {
        let (from_ns, to_ns) = (self.netns(from)?, self.netns(to)?);
        let owned = self
            .topology
            .links
            .iter()
            .flat_map(|l| [&l.a, &l.b])
            .any(|ep| {
                ep.interface == interface && self.current_node_of(&ep.node, interface) == from
            });
        if !owned {
            return Err(LabError::UnknownInterface {
                node: from.to_string(),
                interface: interface.to_string(),
            });
        }
        let snap = snapshot(&from_ns, from, interface)?;
        let start = Instant::now();
        let ip = |ns: &str, args: &[&str]| -> Result<()> {
            cmd::run(
                format!("move {from}:{interface} to {to}"),
                Command::new("ip").args(["-n", ns]).args(args),
            )
            .map(|_| ())
        };
        let outage_start = crate::probe::unix_ns();
        if let Some(pause) = opts.pause {
            ip(&from_ns, &["link", "set", interface, "down"])?;
            std::thread::sleep(pause);
        }
        ip(&from_ns, &["link", "set", interface, "netns", &to_ns])?;
        self.state.record_move(from, interface, to)?;
        ip(&to_ns, &["link", "set", interface, "address", &snap.mac])?;
        let master = snap.master.clone().filter(|m| {
            Command::new("ip")
                .args(["-n", &to_ns, "link", "show", m])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if let Some(m) = &master {
            ip(&to_ns, &["link", "set", interface, "master", m])?;
        }
        ip(&to_ns, &["link", "set", interface, "up"])?;
        let outage_end = crate::probe::unix_ns();
        for a in &snap.addresses {
            let mut args = vec!["addr", "add", a.as_str(), "dev", interface];
            if a.contains(':') {
                args.push("nodad");
            }
            ip(&to_ns, &args)?;
        }
        for r in &snap.routes {
            let mut args: Vec<&str> = r.iter().map(String::as_str).collect();
            args.extend(["dev", interface]);
            ip(&to_ns, &args)?;
        }
        Ok(MoveReport {
            interface: interface.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            mac: snap.mac,
            master,
            addresses: snap.addresses,
            routes: snap.routes.iter().map(|r| r[2..].join(" ")).collect(),
            elapsed_us: start.elapsed().as_micros() as u64,
            outage_start_unix_ns: outage_start,
            outage_end_unix_ns: outage_end,
        })
    }
}

fn json(ns: &str, node: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = cmd::run(
        format!("node `{node}`: inspect"),
        Command::new("ip").args(["-n", ns, "-j"]).args(args),
    )?;
    Ok(serde_json::from_str(&out).unwrap_or_default())
}

fn snapshot(ns: &str, node: &str, interface: &str) -> Result<Snapshot> {
    let v = json(ns, node, &["addr", "show", "dev", interface]).map_err(|_| {
        LabError::UnknownInterface {
            node: node.to_string(),
            interface: interface.to_string(),
        }
    })?;
    let link = v.get(0).ok_or_else(|| LabError::UnknownInterface {
        node: node.to_string(),
        interface: interface.to_string(),
    })?;
    let mut snap = Snapshot {
        mac: link
            .get("address")
            .and_then(|a| a.as_str())
            .unwrap_or_default()
            .to_string(),
        master: link
            .get("master")
            .and_then(|m| m.as_str())
            .map(String::from),
        ..Default::default()
    };
    for a in link
        .get("addr_info")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
    {
        let (Some(local), Some(len)) =
            (a.get("local").and_then(|l| l.as_str()), a.get("prefixlen"))
        else {
            continue;
        };
        if local.starts_with("fe80:") {
            continue;
        }
        snap.addresses.push(format!("{local}/{len}"));
    }
    for family in ["-4", "-6"] {
        let routes = json(ns, node, &[family, "route", "show", "dev", interface])?;
        for r in routes.as_array().into_iter().flatten() {
            let proto = r.get("protocol").and_then(|p| p.as_str()).unwrap_or("boot");
            let Some(dst) = r.get("dst").and_then(|d| d.as_str()) else {
                continue;
            };
            // Connected routes come back with the addresses; routing daemons own theirs.
            if !matches!(proto, "boot" | "static")
                || dst.starts_with("fe80:")
                || dst.starts_with("ff00:")
            {
                continue;
            }
            let mut args = vec![
                family.to_string(),
                "route".into(),
                "replace".into(),
                dst.to_string(),
            ];
            if let Some(gw) = r.get("gateway").and_then(|g| g.as_str()) {
                args.extend(["via".into(), gw.to_string()]);
            }
            snap.routes.push(args);
        }
    }
    Ok(snap)
}
