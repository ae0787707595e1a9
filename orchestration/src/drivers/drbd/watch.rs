//! [`Watch`]: turns the source's `drbdadm status`, polled after `start_async`, into
//! [`StorageEvent`]s. Pure: the driver feeds each status (or why it could not be read)
//! with the time it was read.

use super::status::ResourceStatus;
use crate::drivers::StorageEvent;
use std::time::Duration;

/// Reports `Ready` once every replica is up to date, and `Failed` once replication has
/// been broken (peer disconnected, local disk not up to date, status unreadable) for
/// longer than the grace period: DRBD reconnects by itself after a short network
/// glitch, which is no reason to roll a migration back.
#[derive(Debug, Clone)]
pub struct Watch {
    grace: Duration,
    ready: bool,
    failed: bool,
    broken_since: Option<Duration>,
}

impl Watch {
    /// A watch that waits `grace` before reporting a break.
    pub fn new(grace: Duration) -> Watch {
        Watch {
            grace,
            ready: false,
            failed: false,
            broken_since: None,
        }
    }

    /// `Ready` was reported (or seen by the caller already).
    pub fn set_ready(&mut self) {
        self.ready = true;
    }

    /// One observation at `now` (any monotonic clock); at most one event.
    pub fn observe(
        &mut self,
        now: Duration,
        status: Result<&ResourceStatus, String>,
    ) -> Option<StorageEvent> {
        let broken = match status {
            Ok(s) => {
                let p = s.progress();
                if p.in_sync {
                    self.broken_since = None;
                    if !self.ready {
                        self.ready = true;
                        return Some(StorageEvent::Ready);
                    }
                    return None;
                }
                if !p.connected {
                    let down: Vec<String> = s
                        .replica_peers()
                        .filter(|p| !p.connected())
                        .map(|p| format!("{} connection:{}", p.name, p.connection))
                        .collect();
                    if down.is_empty() {
                        Some("no peer to replicate to".to_string())
                    } else {
                        Some(format!("peer gone: {}", down.join(", ")))
                    }
                } else if !s.local_up_to_date() {
                    let disks: Vec<&str> = s.volumes.iter().map(|v| v.disk.as_str()).collect();
                    Some(format!("source disk {}", disks.join(",")))
                } else {
                    None // resyncing
                }
            }
            Err(e) => Some(e),
        };
        let Some(why) = broken else {
            self.broken_since = None;
            return None;
        };
        let since = *self.broken_since.get_or_insert(now);
        if self.failed || now.saturating_sub(since) < self.grace {
            return None;
        }
        self.failed = true;
        Some(StorageEvent::Failed {
            error: format!(
                "DRBD replication broken for {:?}: {why}",
                now.saturating_sub(since)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::status::parse_status;
    use super::*;

    const SYNCING: &str = "r0 role:Primary\n  disk:UpToDate\n  host-b role:Secondary\n    replication:SyncSource peer-disk:Inconsistent done:45.10\n";
    const IN_SYNC: &str = "r0 role:Primary\n  disk:UpToDate\n  host-b role:Secondary\n    replication:Established peer-disk:UpToDate\n";
    const GONE: &str = "r0 role:Primary\n  disk:UpToDate\n  host-b connection:Connecting\n";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ready_once_when_the_resync_is_done() {
        let mut w = Watch::new(ms(1000));
        let s = parse_status(SYNCING, "r0").unwrap();
        let i = parse_status(IN_SYNC, "r0").unwrap();
        assert_eq!(w.observe(ms(0), Ok(&s)), None);
        assert_eq!(w.observe(ms(10), Ok(&i)), Some(StorageEvent::Ready));
        assert_eq!(w.observe(ms(20), Ok(&i)), None);
        let mut seen = Watch::new(ms(1000));
        seen.set_ready();
        assert_eq!(seen.observe(ms(0), Ok(&i)), None);
    }

    #[test]
    fn failed_once_after_the_grace_period_and_a_glitch_is_forgiven() {
        let mut w = Watch::new(ms(1000));
        let g = parse_status(GONE, "r0").unwrap();
        let s = parse_status(SYNCING, "r0").unwrap();
        assert_eq!(w.observe(ms(0), Ok(&g)), None);
        assert_eq!(w.observe(ms(900), Ok(&g)), None);
        assert_eq!(w.observe(ms(950), Ok(&s)), None, "reconnected");
        assert_eq!(w.observe(ms(1000), Ok(&g)), None, "the grace starts over");
        let Some(StorageEvent::Failed { error }) = w.observe(ms(2000), Ok(&g)) else {
            panic!("a second of disconnection is a break")
        };
        assert!(error.contains("host-b connection:Connecting"), "{error}");
        assert_eq!(w.observe(ms(3000), Ok(&g)), None, "reported once");
    }

    #[test]
    fn unreadable_status_and_failed_disk_are_breaks() {
        let mut w = Watch::new(ms(0));
        assert!(matches!(
            w.observe(ms(0), Err("ssh: connect to host a: timed out".into())),
            Some(StorageEvent::Failed { error }) if error.contains("ssh")
        ));
        let mut w = Watch::new(ms(0));
        let d = parse_status(
            &IN_SYNC.replacen("disk:UpToDate\n", "disk:Diskless\n", 1),
            "r0",
        )
        .unwrap();
        assert!(matches!(
            w.observe(ms(0), Ok(&d)),
            Some(StorageEvent::Failed { error }) if error.contains("source disk Diskless")
        ));
    }
}
