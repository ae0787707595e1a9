//! [`HostWatch`]: every domain's lifecycle on one libvirtd, for a process that stays
//! up on a hypervisor host (`migroute libvirt-watch`).
//!
//! libvirt's qemu hook runs at the start and the end of a migration, never at the
//! instant the guest stops for its final copy. Without an orchestrator driving the
//! migration, only a resident listener hears that instant, and it is the one the
//! source PE's override must follow to lose nothing outside the pause.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use thiserror::Error;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

use super::ffi::{self, DomainEventKind, EventId, EventRegistration, Side};

/// What happened to a domain, as far as a migration is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Paused for the stop-and-copy of an outgoing migration.
    SuspendedForMigration,
    /// Running again: at the destination after a migration, at the source after a
    /// failed one, or after any pause.
    Resumed {
        /// libvirt's detail says the resume ends an (incoming) migration.
        migrated: bool,
    },
    /// Stopped (shut off, crashed, or migrated away).
    Stopped {
        /// libvirt's detail says it left by migration.
        migrated: bool,
    },
    /// Anything else (defined, started, other pauses…).
    Other,
}

impl Lifecycle {
    /// Maps libvirt's (event, detail) numbers.
    pub fn from_libvirt(event: i32, detail: i32) -> Self {
        let (event, detail) = (event as u32, detail as u32);
        match event {
            sys::VIR_DOMAIN_EVENT_SUSPENDED
                if detail == sys::VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED =>
            {
                Lifecycle::SuspendedForMigration
            }
            sys::VIR_DOMAIN_EVENT_RESUMED => Lifecycle::Resumed {
                migrated: detail == sys::VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
            },
            sys::VIR_DOMAIN_EVENT_STOPPED => Lifecycle::Stopped {
                migrated: detail == sys::VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
            },
            _ => Lifecycle::Other,
        }
    }
}

/// One domain's lifecycle change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// The domain's name.
    pub domain: String,
    /// What happened.
    pub change: Lifecycle,
}

/// Why watching failed; the caller reconnects.
#[derive(Debug, Error)]
pub enum WatchError {
    /// libvirtd not reachable, or refused us.
    #[error("libvirt {uri}: {reason}")]
    Connect {
        /// The connection URI.
        uri: String,
        /// libvirt's message.
        reason: String,
    },
    /// The connection went away (libvirtd restarted or stopped).
    #[error("libvirt {uri}: connection lost")]
    Lost {
        /// The connection URI.
        uri: String,
    },
    /// A call on a live connection failed.
    #[error("libvirt {uri}: {what}: {reason}")]
    Call {
        /// The connection URI.
        uri: String,
        /// The call.
        what: &'static str,
        /// libvirt's message.
        reason: String,
    },
}

/// The lifecycle events of every domain on one libvirtd, including domains that
/// arrive later by migration. Blocking: run it on a thread of its own.
pub struct HostWatch {
    uri: String,
    conn: Connect,
    events: Receiver<ffi::DomainEvent>,
    _registration: EventRegistration,
}

impl HostWatch {
    /// Connects to `uri` and registers for lifecycle events.
    pub fn open(uri: &str) -> Result<Self, WatchError> {
        let connect = |reason: String| WatchError::Connect {
            uri: uri.to_owned(),
            reason,
        };
        ffi::ensure_event_loop().map_err(connect)?;
        let conn = Connect::open(Some(uri)).map_err(|e| connect(e.to_string()))?;
        let (tx, events) = mpsc::channel();
        let registration =
            ffi::register(&conn, EventId::Lifecycle, Side::Source, tx).map_err(|reason| {
                WatchError::Call {
                    uri: uri.to_owned(),
                    what: "event registration",
                    reason,
                }
            })?;
        Ok(HostWatch {
            uri: uri.to_owned(),
            conn,
            events,
            _registration: registration,
        })
    }

    /// The URI watched.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The next lifecycle change, or `None` after `timeout` without one. An error
    /// means the connection is gone.
    pub fn next(&self, timeout: Duration) -> Result<Option<LifecycleEvent>, WatchError> {
        match self.events.recv_timeout(timeout) {
            Ok(ffi::DomainEvent {
                domain,
                kind: DomainEventKind::Lifecycle { event, detail },
                ..
            }) => Ok(Some(LifecycleEvent {
                domain,
                change: Lifecycle::from_libvirt(event, detail),
            })),
            Ok(_) => Ok(None),
            Err(RecvTimeoutError::Timeout) => {
                if self.conn.is_alive().unwrap_or(false) {
                    Ok(None)
                } else {
                    Err(WatchError::Lost {
                        uri: self.uri.clone(),
                    })
                }
            }
            Err(RecvTimeoutError::Disconnected) => Err(WatchError::Lost {
                uri: self.uri.clone(),
            }),
        }
    }

    /// The live XML of domain `name`, `None` when libvirt no longer has it.
    pub fn domain_xml(&self, name: &str) -> Result<Option<String>, WatchError> {
        let call = |what, e: virt::error::Error| WatchError::Call {
            uri: self.uri.clone(),
            what,
            reason: e.to_string(),
        };
        let dom = match Domain::lookup_by_name(&self.conn, name) {
            Ok(d) => d,
            Err(e) if e.code() as i32 == super::session::ERR_NO_DOMAIN => return Ok(None),
            Err(e) => return Err(call("domain lookup", e)),
        };
        dom.get_xml_desc(0)
            .map(Some)
            .map_err(|e| call("domain XML", e))
    }

    /// Names of the domains that run now (to learn their XML at start-up).
    pub fn running_domains(&self) -> Result<Vec<String>, WatchError> {
        let doms = self
            .conn
            .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .map_err(|e| WatchError::Call {
                uri: self.uri.clone(),
                what: "list domains",
                reason: e.to_string(),
            })?;
        Ok(doms.iter().filter_map(|d| d.get_name().ok()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_numbers_map_to_what_a_migration_needs() {
        let n = |v: u32| v as i32;
        assert_eq!(
            Lifecycle::from_libvirt(
                n(sys::VIR_DOMAIN_EVENT_SUSPENDED),
                n(sys::VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED)
            ),
            Lifecycle::SuspendedForMigration
        );
        assert_eq!(
            Lifecycle::from_libvirt(
                n(sys::VIR_DOMAIN_EVENT_SUSPENDED),
                n(sys::VIR_DOMAIN_EVENT_SUSPENDED_PAUSED)
            ),
            Lifecycle::Other
        );
        assert_eq!(
            Lifecycle::from_libvirt(
                n(sys::VIR_DOMAIN_EVENT_RESUMED),
                n(sys::VIR_DOMAIN_EVENT_RESUMED_MIGRATED)
            ),
            Lifecycle::Resumed { migrated: true }
        );
        assert_eq!(
            Lifecycle::from_libvirt(
                n(sys::VIR_DOMAIN_EVENT_RESUMED),
                n(sys::VIR_DOMAIN_EVENT_RESUMED_UNPAUSED)
            ),
            Lifecycle::Resumed { migrated: false }
        );
        assert_eq!(
            Lifecycle::from_libvirt(
                n(sys::VIR_DOMAIN_EVENT_STOPPED),
                n(sys::VIR_DOMAIN_EVENT_STOPPED_MIGRATED)
            ),
            Lifecycle::Stopped { migrated: true }
        );
        assert_eq!(
            Lifecycle::from_libvirt(n(sys::VIR_DOMAIN_EVENT_STARTED), 0),
            Lifecycle::Other
        );
    }
}
