//! [`LabHypervisor`]: the netns lab's "VM" as a hook-style [`Hypervisor`].
//!
//! The VM is a namespace; migrating it moves the *site end* of its link (e.g. `dc-a:eth2`)
//! to the destination site's node (`dc-b`), so the VM's own interface, addresses and
//! sockets survive as in a live-migrated guest. The lab library's paused move has no
//! callback between detach and attach, so the stop-and-copy is built from its public
//! pieces: detach = set the site end down where it is (traffic stops, the pause window
//! opens), wait for the orchestrator's [`QuiesceGate`] (released only once the source's
//! override is acknowledged), keep the pause at least `pause`, attach = the lab's
//! link move (netns change, MAC, bridge master, up) to the destination. A cancel sets
//! the site end up again where it was.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use migroute_labs::Lab;
use migroute_orchestration::drivers::{
    EventSink, GateDecision, Hypervisor, HypervisorError, HypervisorEvent, QuiesceGate,
};
use serde::Serialize;

/// Default simulated pre-copy before the VM is suspended.
pub const DEFAULT_PRECOPY: Duration = Duration::from_millis(200);

/// The pause window as the VM saw it, wall clock: for reports next to probe gaps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PauseWindow {
    /// The site end went down (epoch ms).
    pub start_ms: u64,
    /// The site end is up at the destination (epoch ms).
    pub end_ms: u64,
}

impl PauseWindow {
    /// Its length.
    pub fn ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

/// The lab VM to move: which link end, from where, to where.
#[derive(Debug, Clone)]
pub struct LabVm {
    /// The VM node.
    pub node: String,
    /// The site end's node as the topology file places it (e.g. `dc-a`).
    pub site_node: String,
    /// The site end's interface (e.g. `eth2`).
    pub site_interface: String,
    /// The destination site's node (e.g. `dc-b`).
    pub to: String,
}

/// A hook-style hypervisor over a running lab.
pub struct LabHypervisor {
    lab: Lab,
    vm: LabVm,
    pause: Duration,
    precopy: Duration,
    /// Serializes migrate and cancel: a cancel waits for a move in progress to settle.
    busy: tokio::sync::Mutex<()>,
    window: Mutex<Option<PauseWindow>>,
}

/// Why the lab hypervisor cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum LabHypervisorError {
    /// The topology does not load.
    #[error("lab topology: {0}")]
    Lab(#[from] migroute_labs::LabError),
    /// The VM node has no link (or more than one).
    #[error("lab vm {node}: expected exactly one link, found {found}")]
    Links {
        /// The VM node.
        node: String,
        /// How many.
        found: usize,
    },
}

impl LabHypervisor {
    /// The hypervisor for `node` of `lab`, moving its (only) link's far end to `to`.
    pub fn new(
        lab: Lab,
        node: &str,
        to: &str,
        pause: Duration,
        precopy: Duration,
    ) -> Result<Self, LabHypervisorError> {
        lab.node(node)?;
        lab.node(to)?;
        let ends: Vec<_> = lab
            .topology
            .links
            .iter()
            .filter_map(|l| {
                if l.a.node == node {
                    Some(l.b.clone())
                } else if l.b.node == node {
                    Some(l.a.clone())
                } else {
                    None
                }
            })
            .collect();
        let [site] = ends.as_slice() else {
            return Err(LabHypervisorError::Links {
                node: node.into(),
                found: ends.len(),
            });
        };
        Ok(LabHypervisor {
            vm: LabVm {
                node: node.into(),
                site_node: site.node.clone(),
                site_interface: site.interface.clone(),
                to: to.into(),
            },
            lab,
            pause,
            precopy,
            busy: tokio::sync::Mutex::new(()),
            window: Mutex::new(None),
        })
    }

    /// The last pause window, once the VM resumed (or was resumed at the source).
    pub fn pause_window(&self) -> Option<PauseWindow> {
        *self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, reason: impl std::fmt::Display) -> HypervisorError {
        HypervisorError::Connect {
            vm: self.vm.node.clone(),
            uri: format!("lab {}", self.lab.name()),
            reason: reason.to_string(),
        }
    }

    /// Where the site end lives now.
    fn site_now(&self) -> String {
        self.lab
            .current_node_of(&self.vm.site_node, &self.vm.site_interface)
    }

    /// `ip link set IF up|down` on the site end, in whichever node holds it.
    async fn set_site(&self, node: &str, state: &str) -> Result<(), HypervisorError> {
        let line = format!("ip link set {} {state}", self.vm.site_interface);
        let (lab, node) = (self.lab.clone(), node.to_owned());
        tokio::task::spawn_blocking(move || lab.sh(&node, &line))
            .await
            .map_err(|e| self.err(e))?
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    async fn attach(&self, from: &str) -> Result<(), HypervisorError> {
        let (lab, from, iface, to) = (
            self.lab.clone(),
            from.to_owned(),
            self.vm.site_interface.clone(),
            self.vm.to.clone(),
        );
        tokio::task::spawn_blocking(move || lab.move_link_end(&from, &iface, &to))
            .await
            .map_err(|e| self.err(e))?
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn record(&self, start_ms: u64) {
        let end_ms = super::runtime::now().as_millis();
        *self.window.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(PauseWindow { start_ms, end_ms });
    }
}

impl Hypervisor for LabHypervisor {
    async fn migrate<S, G>(&self, events: S, mut gate: G) -> Result<(), HypervisorError>
    where
        S: EventSink<HypervisorEvent>,
        G: QuiesceGate,
    {
        let _busy = self.busy.lock().await;
        let from = self.site_now();
        if from == self.vm.to {
            // Already there (a repeated call): say so and succeed.
            events.emit(HypervisorEvent::Resumed);
            events.emit(HypervisorEvent::Completed);
            return Ok(());
        }
        tokio::time::sleep(self.precopy).await;
        let start_ms = super::runtime::now().as_millis();
        let paused = Instant::now();
        self.set_site(&from, "down").await?;
        events.emit(HypervisorEvent::Suspended);
        match gate.quiesced().await {
            GateDecision::Cancel => {
                let up = self.set_site(&from, "up").await;
                self.record(start_ms);
                up?;
                return Err(HypervisorError::Cancelled {
                    vm: self.vm.node.clone(),
                });
            }
            GateDecision::Resume => {}
        }
        let left = self.pause.saturating_sub(paused.elapsed());
        tokio::time::sleep(left).await;
        if let Err(e) = self.attach(&from).await {
            // Not moved: put the VM back on its source site, report a failure.
            let _ = self.set_site(&self.site_now(), "up").await;
            self.record(start_ms);
            events.emit(HypervisorEvent::Failed {
                error: e.to_string(),
            });
            return Err(HypervisorError::Job {
                vm: self.vm.node.clone(),
                reason: e.to_string(),
            });
        }
        self.record(start_ms);
        events.emit(HypervisorEvent::Resumed);
        events.emit(HypervisorEvent::Completed);
        Ok(())
    }

    async fn cancel(&self) -> Result<(), HypervisorError> {
        let _busy = self.busy.lock().await;
        let at = self.site_now();
        if at == self.vm.to {
            return Err(HypervisorError::AlreadyCompleted {
                vm: self.vm.node.clone(),
            });
        }
        // Idempotent: the site end is up at the source whatever happened before.
        self.set_site(&at, "up").await
    }
}
