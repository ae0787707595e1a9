//! Waiting for convergence: until BGP sessions are Established, or a prefix is in a
//! node's FIB. Each helper polls with a deadline and, on timeout, names the node and
//! exactly what was still missing, so a slow lab says why it is slow.

use std::time::{Duration, Instant};

use crate::daemons;
use crate::error::{LabError, Result};
use crate::lab::Lab;

const POLL: Duration = Duration::from_millis(100);

impl Lab {
    /// Waits until every BGP session of `node` is Established (and there is at least one).
    pub fn wait_established(&self, node: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let n = self.node(node)?;
        loop {
            let missing = match daemons::sessions(&self.ctx(node), &n.daemon) {
                Ok(s) if s.is_empty() => "no BGP session configured or reported yet".to_string(),
                Ok(s) => s
                    .iter()
                    .filter(|s| !s.established)
                    .map(|s| format!("session {} is {}", s.peer, s.state))
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => format!("BGP state unreadable: {e}"),
            };
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::WaitTimeout {
                    node: node.to_string(),
                    timeout,
                    missing,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every router of the lab has all its BGP sessions Established.
    pub fn wait_all_established(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for node in self
            .topology
            .nodes
            .values()
            .filter(|n| n.daemon.is_router())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_established(&node.name, left.max(Duration::from_millis(1)))
                .map_err(|e| match e {
                    LabError::WaitTimeout { node, missing, .. } => LabError::WaitTimeout {
                        node,
                        timeout,
                        missing,
                    },
                    other => other,
                })?;
        }
        Ok(())
    }

    /// Waits until `prefix` (e.g. `10.10.0.0/24`, `2001:db8:10::/64`) is in the main
    /// routing table of `node`.
    pub fn wait_route(&self, node: &str, prefix: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let family = if prefix.contains(':') { "-6" } else { "-4" };
        loop {
            let mut c = self.command(node, "ip")?;
            c.args([family, "route", "show", "exact", prefix]);
            let found = c
                .output()
                .map(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
                .unwrap_or(false);
            if found {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::WaitTimeout {
                    node: node.to_string(),
                    timeout,
                    missing: format!("route {prefix} not in the FIB"),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}
