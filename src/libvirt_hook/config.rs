//! `/etc/migroute/libvirt-hook.toml`: this host's agent, the peer site's agent, and what
//! every migration gets (tunnel kind, VNI range, policy). One file per host; the two
//! sites' files mirror each other.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use migroute_orchestration::pe::{RoutePolicy, Timers};
use serde::Deserialize;
use thiserror::Error;

/// The default location, as `packaging/libvirt-hook-qemu` passes it.
pub const DEFAULT_PATH: &str = "/etc/migroute/libvirt-hook.toml";

/// One site's agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// The agent's API base URL.
    pub agent_url: String,
    /// The PE's tunnel endpoint (its agent's `[pe] tunnel_source`).
    pub tunnel_endpoint: IpAddr,
}

/// The tunnel every migration gets: VXLAN with a VNI picked from a range by the
/// migration id, so concurrent migrations of different VMs use different VNIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelRange {
    /// First VNI of the range.
    pub vni_base: u32,
    /// How many VNIs the range holds.
    pub vni_span: u32,
}

impl Default for TunnelRange {
    fn default() -> Self {
        TunnelRange {
            vni_base: 100_000,
            vni_span: 100_000,
        }
    }
}

/// The hook's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// This host's site.
    pub local: Site,
    /// The other site: with a pair of sites, an incoming migration comes from there.
    pub peer: Site,
    /// Bearer token for both agents (one line).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Where the hook remembers, per domain UUID, the migration it prepared.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Deadline of each agent call; libvirt waits for the hook.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Refuse an incoming migration whose network side cannot be prepared (default),
    /// rather than let the VM move while its traffic still goes to the old site.
    #[serde(default = "yes")]
    pub fail_closed: bool,
    /// VNI range.
    #[serde(default)]
    pub tunnel: TunnelRange,
    /// How the destination's route wins (the agents' own default when absent).
    #[serde(default)]
    pub policy: RoutePolicy,
    /// Convergence timers passed to both agents.
    #[serde(default)]
    pub timers: Timers,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/run/migroute/libvirt-hook")
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn yes() -> bool {
    true
}

/// Why the configuration cannot be used; each names the file.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// Parsed, but inconsistent.
    #[error("{path}: {field}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl HookConfig {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: HookConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |field, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            reason,
        };
        let TunnelRange { vni_base, vni_span } = config.tunnel;
        if vni_base == 0 || vni_span == 0 || u64::from(vni_base) + u64::from(vni_span) > 1 << 24 {
            return Err(invalid(
                "tunnel",
                format!("VNIs {vni_base}..{vni_base}+{vni_span} must lie in 1..2^24"),
            ));
        }
        if config.local.tunnel_endpoint.is_ipv4() != config.peer.tunnel_endpoint.is_ipv4() {
            return Err(invalid(
                "peer.tunnel_endpoint",
                "must be of the same family as local.tunnel_endpoint".into(),
            ));
        }
        Ok(config)
    }

    /// Deadline of each agent call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The VNI of a migration: FNV-1a of its id, folded into the range. Both hooks of
    /// a pair compute the same one, and two live migrations rarely collide (an agent
    /// refusing a VNI in use makes the collision visible, never silent).
    pub fn vni_for(&self, id: &str) -> u32 {
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        self.tunnel.vni_base + (hash % u64::from(self.tunnel.vni_span)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<HookConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hook.toml");
        std::fs::write(&p, text).unwrap();
        HookConfig::load(&p)
    }

    const MIN: &str = r#"
[local]
agent_url = "http://127.0.0.1:8080"
tunnel_endpoint = "10.0.23.3"
[peer]
agent_url = "http://10.255.0.2:8080"
tunnel_endpoint = "10.0.23.2"
"#;

    #[test]
    fn defaults_fail_closed_with_a_vni_range() {
        let c = load(MIN).unwrap();
        assert!(c.fail_closed);
        assert_eq!(c.timeout(), Duration::from_secs(5));
        let vni = c.vni_for("lv-x-1");
        assert!((100_000..200_000).contains(&vni));
        assert_eq!(vni, c.vni_for("lv-x-1"));
        assert_ne!(vni, c.vni_for("lv-x-2"));
    }

    #[test]
    fn bad_files_name_the_field() {
        let e = load(&format!(
            "{MIN}[tunnel]\nvni_base = 16777000\nvni_span = 1000\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("tunnel"), "{e}");
        let e = load(&MIN.replace("10.0.23.2", "2001:db8::2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("peer.tunnel_endpoint"), "{e}");
        let e = load(&format!("{MIN}surprise = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("surprise"), "{e}");
    }
}
