//! Carrying out one hook invocation: the agent calls and the per-domain state file.
//!
//! State: `STATE_DIR/UUID.json` records the migration the hook prepared for a domain,
//! so that the `release` that follows (here, maybe much later) knows which migration
//! it concerns. Everything is idempotent: libvirt may run a hook again after its own
//! restart.

use std::path::PathBuf;

use migroute_orchestration::drivers::PeAgent;
use migroute_orchestration::pe::{MigrationId, MigrationSpec, PeerPe, Phase, Role, TunnelKind};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::config::{HookConfig, Site};
use super::domain::Domain;
use super::event::HookEvent;
use crate::orchestrator::agent_client::{ClientError, HttpAgent};

/// What the hook did, for its log line and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not an invocation, or not a domain, migroute acts on.
    Nothing,
    /// Both agents prepared migration `id`.
    Prepared {
        /// The migration.
        id: String,
    },
    /// Preparing failed; both agents were told to abort. With `fail_closed` the hook
    /// then fails, and libvirt refuses the migration.
    PrepareFailed {
        /// The migration.
        id: String,
        /// The agent's error.
        error: String,
    },
    /// The domain left this host with its migration never switched over: aborted on
    /// both agents.
    Aborted {
        /// The migration.
        id: String,
    },
    /// The domain left this host after its migration had switched over: left to
    /// converge and tear itself down.
    LeftToConverge {
        /// The migration.
        id: String,
        /// Its phase on this host's agent.
        phase: Phase,
    },
}

/// Why the hook failed outside the agents' answers.
#[derive(Debug, Error)]
pub enum HookError {
    /// The state directory or a state file.
    #[error("{path}: {source}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An agent client cannot be built (bad URL, unreadable token).
    #[error("{field}: {source}")]
    Client {
        /// The config field.
        field: &'static str,
        /// Why.
        source: ClientError,
    },
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    id: String,
}

/// The hook bound to its configuration and both agents.
pub struct Hook {
    config: HookConfig,
    pub(super) local: HttpAgent,
    pub(super) peer: HttpAgent,
}

impl Hook {
    /// Builds the agent clients of `config`.
    pub fn new(config: HookConfig) -> Result<Self, HookError> {
        let token = match &config.token_file {
            Some(p) => Some(crate::orchestrator::agent_client::read_token(p).map_err(
                |source| HookError::Client {
                    field: "token_file",
                    source,
                },
            )?),
            None => None,
        };
        let client = |field, site: &Site| {
            HttpAgent::new(&site.agent_url, token.clone(), config.timeout())
                .map_err(|source| HookError::Client { field, source })
        };
        Ok(Hook {
            local: client("local.agent_url", &config.local)?,
            peer: client("peer.agent_url", &config.peer)?,
            config,
        })
    }

    /// Acts on one invocation.
    pub async fn handle(&self, event: HookEvent, domain: &Domain) -> Result<Outcome, HookError> {
        if domain.prefixes.is_empty() {
            return Ok(Outcome::Nothing);
        }
        match event {
            HookEvent::IncomingMigration => self.incoming(domain).await,
            HookEvent::Released => self.released(domain).await,
            HookEvent::Ignored => Ok(Outcome::Nothing),
        }
    }

    async fn incoming(&self, domain: &Domain) -> Result<Outcome, HookError> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let id = format!("lv-{}-{millis}", domain.uuid);
        let mid = MigrationId::new(id.clone()).unwrap_or_else(|_| {
            // A UUID libvirt would never produce; keep the id valid regardless.
            MigrationId::new(format!("lv-{millis}")).expect("digits make a valid id")
        });
        let id = mid.as_str().to_owned();
        // Remembered before the agents are called: a release after a half-done prepare
        // must still find the migration to abort.
        self.remember(domain, &id)?;
        let (dst_spec, src_spec) = (
            self.spec(Role::Destination, domain, &id),
            self.spec(Role::Source, domain, &id),
        );
        let (dst, src) = tokio::join!(
            self.local.prepare(&mid, &dst_spec),
            self.peer.prepare(&mid, &src_spec),
        );
        match dst.and(src) {
            Ok(()) => Ok(Outcome::Prepared { id }),
            Err(e) => {
                let _ = tokio::join!(self.local.abort(&mid), self.peer.abort(&mid));
                Ok(Outcome::PrepareFailed {
                    id,
                    error: e.to_string(),
                })
            }
        }
    }

    async fn released(&self, domain: &Domain) -> Result<Outcome, HookError> {
        let Some(id) = self.recall(domain)? else {
            return Ok(Outcome::Nothing);
        };
        let Ok(mid) = MigrationId::new(id.clone()) else {
            self.forget(domain)?;
            return Ok(Outcome::Nothing);
        };
        let outcome = match self.local.status(&mid).await {
            Ok(s) if !matches!(s.phase, Phase::Prepared | Phase::Aborting | Phase::Aborted) => {
                Outcome::LeftToConverge { id, phase: s.phase }
            }
            // Never switched over (or unknown here): the VM never ran behind this
            // migration's tunnel; undo both sides.
            _ => {
                let _ = tokio::join!(self.local.abort(&mid), self.peer.abort(&mid));
                Outcome::Aborted { id }
            }
        };
        self.forget(domain)?;
        Ok(outcome)
    }

    fn spec(&self, role: Role, domain: &Domain, id: &str) -> MigrationSpec {
        // Each agent's peer is the other site.
        let peer = match role {
            Role::Destination => &self.config.peer,
            Role::Source => &self.config.local,
        };
        MigrationSpec {
            prefixes: domain.prefixes.clone(),
            role,
            peer: PeerPe {
                tunnel_endpoint: peer.tunnel_endpoint,
                api_url: peer.agent_url.clone(),
            },
            tunnel: TunnelKind::Vxlan {
                vni: self.config.vni_for(id),
            },
            policy: self.config.policy.clone(),
            timers: self.config.timers,
            vm_mac: domain.mac,
        }
    }

    fn state_file(&self, domain: &Domain) -> PathBuf {
        let safe: String = domain
            .uuid
            .chars()
            .filter(|c| c.is_ascii_hexdigit() || *c == '-')
            .collect();
        self.config.state_dir.join(format!("{safe}.json"))
    }

    fn remember(&self, domain: &Domain, id: &str) -> Result<(), HookError> {
        let dir = &self.config.state_dir;
        std::fs::create_dir_all(dir).map_err(|source| HookError::State {
            path: dir.clone(),
            source,
        })?;
        let path = self.state_file(domain);
        let body = serde_json::to_vec(&Remembered { id: id.to_owned() })
            .expect("a struct of strings serializes");
        std::fs::write(&path, body).map_err(|source| HookError::State { path, source })
    }

    fn recall(&self, domain: &Domain) -> Result<Option<String>, HookError> {
        let path = self.state_file(domain);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice::<Remembered>(&bytes)
                .ok()
                .map(|r| r.id)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HookError::State { path, source }),
        }
    }

    fn forget(&self, domain: &Domain) -> Result<(), HookError> {
        let path = self.state_file(domain);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(HookError::State { path, source }),
        }
    }
}
