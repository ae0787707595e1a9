//! The planned-migration scenario: the VM's port is moved back and forth between the
//! two sites of `wan-migration` while the probe measures what the client sees, once
//! per move, and the report compares ways of moving the network along ("modes").
//!
//! A mode is a [`Mover`]: it performs one move (port move with the VM's pause plus
//! whatever routing change the mode makes) and returns its phases as wall-clock
//! windows. The runner owns everything else — lab up/down, the probe around each move,
//! slicing loss by the pause window, settling between runs and the report — so a new
//! mode (migroute's agent + orchestrator) only has to implement [`Mover`].
//!
//! Clock: every timestamp here is `CLOCK_REALTIME` in Unix ns, the clock the probe
//! stamps its packets with and the link move stamps its outage with; probe, lab and
//! movers run on the same host, so the windows compare directly.

pub mod fib_watch;
pub mod naive;
pub mod report;
mod runner;
pub mod svg;
pub mod timeline;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::lab::Lab;

pub use naive::NaiveMover;
pub use report::{DiskReport, HypervisorRecord, Report, RunRecord, Stat, Summary};
pub use runner::{MoverFactory, Scenario, ScenarioOptions};

/// How the network follows the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// migroute: the orchestrator drives the agents on pe-a and pe-b (tunnel, override,
    /// announce, withdraw).
    Migroute,
    /// The baseline: move the VM, then announce its host route from the new site.
    Naive,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Migroute => "migroute",
            Mode::Naive => "naive",
        })
    }
}

/// Which way the VM moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// From site A (dc-a, behind pe-a) to site B (dc-b, behind pe-b).
    #[serde(rename = "A->B")]
    AToB,
    /// Back from site B to site A.
    #[serde(rename = "B->A")]
    BToA,
}

impl Direction {
    /// The opposite direction: runs alternate so the VM always ends where the next
    /// move starts.
    pub fn reverse(self) -> Self {
        match self {
            Direction::AToB => Direction::BToA,
            Direction::BToA => Direction::AToB,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::AToB => "A->B",
            Direction::BToA => "B->A",
        })
    }
}

/// The scenario asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    /// N migroute moves, then N naive moves, in the same run.
    PlannedMigration,
    /// Only the naive baseline.
    Naive,
    /// N migroute moves of a real guest between two libvirtds (`wan-migration-kvm`):
    /// libvirt live-migrates it with its disk while the orchestrator moves the
    /// network.
    PlannedMigrationKvm,
    /// The same guest moved by a plain `virsh migrate` alone: migroute's libvirt hook
    /// and the agents' `detect_vm` move the network, no orchestrator runs.
    VirshMigrateKvm,
}

impl ScenarioKind {
    /// The modes the scenario runs, in order.
    pub fn modes(self) -> &'static [Mode] {
        match self {
            ScenarioKind::PlannedMigration => &[Mode::Migroute, Mode::Naive],
            ScenarioKind::Naive => &[Mode::Naive],
            ScenarioKind::PlannedMigrationKvm | ScenarioKind::VirshMigrateKvm => &[Mode::Migroute],
        }
    }

    /// Whether the VM is a real guest under libvirt (`wan-migration-kvm`).
    pub fn kvm(self) -> bool {
        matches!(
            self,
            ScenarioKind::PlannedMigrationKvm | ScenarioKind::VirshMigrateKvm
        )
    }

    /// The report's `scenario`.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::PlannedMigration => "planned-migration",
            ScenarioKind::Naive => "naive",
            ScenarioKind::PlannedMigrationKvm => "planned-migration-kvm",
            ScenarioKind::VirshMigrateKvm => "virsh-migrate-kvm",
        }
    }
}

/// A time window in Unix ns (same clock as the probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
}

impl Window {
    /// Length in ms (0 if the window is inverted).
    pub fn ms(&self) -> f64 {
        ns_to_ms(self.end_unix_ns.saturating_sub(self.start_unix_ns))
    }

    /// A libvirt guest's pause: QEMU's STOP → RESUME stamps (`self`), reaching back to
    /// libvirt's own `downtime` before the resume when that starts earlier. QEMU stamps
    /// STOP only after it has paused the vCPUs and run its stop handlers (which drain
    /// the guest's block I/O), while its downtime clock starts before both. The probe's
    /// loss begins with the vCPUs' pause, not with the stamp: in one CI run it began
    /// 7 ms before the STOP stamp, inside libvirt's downtime.
    pub fn with_downtime(self, downtime_ms: Option<f64>) -> Window {
        let Some(d) = downtime_ms.filter(|d| d.is_finite() && *d > 0.0) else {
            return self;
        };
        let from_downtime = self
            .end_unix_ns
            .saturating_sub((d * 1_000_000.0).round() as u64);
        Window {
            start_unix_ns: self.start_unix_ns.min(from_downtime),
            end_unix_ns: self.end_unix_ns,
        }
    }
}

/// Nanoseconds as ms rounded to the µs: finer is noise, and the report stays readable.
pub fn ns_to_ms(ns: u64) -> f64 {
    (ns as f64 / 1e3).round() / 1e3
}

/// One named phase of a move, e.g. `pause`, `announce`, `convergence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub window: Window,
}

/// What a mover reports about one move. The runner adds the probe's view.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveRecord {
    /// When the VM's port carried no traffic (port down → up on the new side): loss
    /// inside it (±5 ms) is the VM's own pause, loss outside it is the network's fault.
    pub pause: Window,
    /// Phases in time order; they may overlap (a mode can act during the pause).
    pub phases: Vec<Phase>,
    /// From the routing change (announce, or withdraw on the way back) to the ingress
    /// PE's kernel FIB reflecting it; `None` if the mode changes no route.
    pub announce_to_ingress_fib_ms: Option<f64>,
    /// What the hypervisor reported of the move (a real guest's migration).
    pub hypervisor: Option<HypervisorRecord>,
}

/// The nodes, interfaces and addresses of the scenario: `wan-migration`'s by default.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Probe sender.
    pub client: String,
    /// Probe receiver: the migrating VM (a lab node, or a guest's domain name).
    pub vm: String,
    /// The VM is a real guest, not a lab node: it reflects the probe (UDP echo, TCP
    /// echo) instead of hosting the receiver, and its port is a tap, not a lab link.
    pub vm_is_guest: bool,
    /// The ingress PE whose FIB decides where the client's traffic goes.
    pub ingress: String,
    /// The PEs of site A and site B.
    pub pe_a: String,
    pub pe_b: String,
    /// The PEs' interface towards their data center (the VM's subnet).
    pub pe_dc_interface: String,
    /// The site bridges the VM's port is plugged into.
    pub dc_a: String,
    pub dc_b: String,
    /// The moving end of the VM's link, as named in the topology (on `dc_a`).
    pub port: String,
    /// The VM's addresses.
    pub vm_v4: IpAddr,
    pub vm_v6: IpAddr,
    /// The BGP AS of the PEs' FRR.
    pub asn: u32,
}

impl Site {
    /// `labs/wan-migration.clab.yml`.
    pub fn wan_migration() -> Self {
        Site {
            client: "client".into(),
            vm: "vm".into(),
            vm_is_guest: false,
            ingress: "pe-in".into(),
            pe_a: "pe-a".into(),
            pe_b: "pe-b".into(),
            pe_dc_interface: "eth3".into(),
            dc_a: "dc-a".into(),
            dc_b: "dc-b".into(),
            port: "eth2".into(),
            vm_v4: IpAddr::from([10, 10, 0, 5]),
            vm_v6: "2001:db8:10::5".parse().expect("literal"),
            asn: 65000,
        }
    }

    /// `labs/wan-migration-kvm.clab.yml`: the same routers and addresses, the VM a
    /// libvirt guest (domain `vm`) whose tap sits in dc-a's or dc-b's bridge.
    pub fn wan_migration_kvm() -> Self {
        Site {
            vm_is_guest: true,
            ..Site::wan_migration()
        }
    }

    /// The VM's address probed (and host route announced) for the family.
    pub fn vm_addr(&self, ipv6: bool) -> IpAddr {
        if ipv6 {
            self.vm_v6
        } else {
            self.vm_v4
        }
    }

    /// Where the VM's port is now.
    pub fn vm_at_b(&self, lab: &Lab) -> bool {
        lab.current_node_of(&self.dc_a, &self.port) == self.dc_b
    }

    /// (from, to) site bridges of a move.
    pub fn bridges(&self, d: Direction) -> (&str, &str) {
        match d {
            Direction::AToB => (&self.dc_a, &self.dc_b),
            Direction::BToA => (&self.dc_b, &self.dc_a),
        }
    }
}

/// One way of moving the network along with the VM. Implementations must leave the
/// network converged when `run_move` returns (the runner then only waits `settle`),
/// and must be able to start from the VM at site A with nothing of theirs installed.
pub trait Mover {
    /// Which mode this is (the report's `mode`).
    fn mode(&self) -> Mode;

    /// Called once per scenario after the lab is up and converged and before the first
    /// measured move: start agents, check preconditions, put the VM at site A.
    fn prepare(&mut self, lab: &Lab) -> Result<(), ScenarioError>;

    /// Moves the VM's port in `direction` with the VM paused for `pause`, moving the
    /// network along in this mode's way, and returns the phases it went through.
    fn run_move(
        &mut self,
        lab: &Lab,
        direction: Direction,
        pause: Duration,
    ) -> Result<MoveRecord, ScenarioError>;

    /// Called once after the mode's last move, before the next mode prepares: a mode
    /// that keeps routes announced while it runs (migroute's agents) must take them
    /// back here, or the next mode would start from a network it did not set up.
    fn finish(&mut self, _lab: &Lab) -> Result<(), ScenarioError> {
        Ok(())
    }

    /// What the mode found of the guest's disk after its last move (a real guest's
    /// scenario): read by the runner after [`finish`](Self::finish).
    fn disk_report(&self) -> Option<DiskReport> {
        None
    }
}

/// What can go wrong in a scenario; each variant says where.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The lab runner failed (up, move, command in a node, probe).
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A mode that cannot run yet (e.g. migroute before the agent and orchestrator).
    #[error("mode `{mode}` is not available: {why}")]
    ModeUnavailable { mode: Mode, why: String },
    /// The ingress FIB never showed the expected change.
    #[error("node `{node}`: route {prefix} not {change} in the kernel FIB within {timeout:?}")]
    FibTimeout {
        node: String,
        prefix: String,
        change: &'static str,
        timeout: Duration,
    },
    /// The netlink route monitor could not be opened or read.
    #[error("node `{node}`: netlink route monitor: {source}")]
    Netlink {
        node: String,
        source: std::io::Error,
    },
    /// FRR refused a configuration change.
    #[error("node `{node}`: vtysh {action} failed: {detail}")]
    Frr {
        node: String,
        action: String,
        detail: String,
    },
    /// The lab is not in the state the scenario needs.
    #[error("{0}")]
    Precondition(String),
    /// Writing the report or the SVG.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Stopped on request (ctrl-c).
    #[error("scenario cancelled")]
    Cancelled,
}

#[cfg(test)]
mod window_tests {
    use super::Window;

    #[test]
    fn libvirts_downtime_reaches_back_before_the_stop_stamp() {
        let ms = 1_000_000u64;
        let stamps = Window {
            start_unix_ns: 1000 * ms,
            end_unix_ns: 1137 * ms,
        };
        // libvirt counted 141 ms ending at the resume: the pause began 4 ms earlier.
        assert_eq!(
            stamps.with_downtime(Some(141.0)),
            Window {
                start_unix_ns: 996 * ms,
                end_unix_ns: 1137 * ms
            }
        );
        // A shorter downtime never shrinks what QEMU stamped; no figure, no change.
        assert_eq!(stamps.with_downtime(Some(100.0)), stamps);
        assert_eq!(stamps.with_downtime(None), stamps);
        assert_eq!(stamps.with_downtime(Some(f64::NAN)), stamps);
    }
}
