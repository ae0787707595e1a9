//! Speaker and peer settings. Deserializable so that `migroute bgp speak --config`
//! and the agent's TOML share one schema; every field but the identities has a default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::Family;
use crate::policy::ExportPolicy;

/// The whole speaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Where to accept connections; `None` means active peers only.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Directory of the graceful-restart store (persisted Adj-RIB-Out). Without it a
    /// restart loses the announced routes, as ExaBGP does.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default = "default_hold")]
    pub hold_time: u16,
    /// Seconds peers should keep our routes while we restart (RFC 4724).
    #[serde(default = "default_restart")]
    pub restart_time: u16,
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
}

fn default_hold() -> u16 {
    90
}
fn default_restart() -> u16 {
    120
}
fn default_port() -> u16 {
    179
}
fn yes() -> bool {
    true
}

impl SpeakerConfig {
    pub fn new(local_as: u32, router_id: Ipv4Addr) -> SpeakerConfig {
        SpeakerConfig {
            local_as,
            router_id,
            listen: None,
            state_dir: None,
            hold_time: default_hold(),
            restart_time: default_restart(),
            peers: Vec::new(),
        }
    }
}

/// One neighbor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub address: IpAddr,
    #[serde(default = "default_port")]
    pub port: u16,
    pub remote_as: u32,
    /// Source address (and, for next-hop-self, the next hop of its family).
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    /// Only accept connections, never connect.
    #[serde(default)]
    pub passive: bool,
    /// TCP-MD5 (RFC 2385) password.
    #[serde(default)]
    pub md5_password: Option<String>,
    /// GTSM (RFC 5082): send with TTL 255, accept only TTL >= 254.
    #[serde(default)]
    pub ttl_security: bool,
    /// Families to negotiate; default IPv4 and IPv6 unicast.
    #[serde(default = "default_families")]
    pub families: Vec<Family>,
    #[serde(default)]
    pub hold_time: Option<u16>,
    #[serde(default)]
    pub connect_retry_secs: Option<u64>,
    /// Keep the peer's routes (Adj-RIB-In). Off, only events are emitted and the
    /// prefixes (not attributes) are counted for max-prefix and graceful restart.
    #[serde(default = "yes")]
    pub keep_adj_rib_in: bool,
    #[serde(default)]
    pub max_prefixes: Option<MaxPrefix>,
    #[serde(default)]
    pub export: ExportPolicy,
    #[serde(default = "yes")]
    pub extended_message: bool,
    #[serde(default)]
    pub add_path_receive: bool,
    /// DelayOpen (RFC 4271 section 8.1.1): on a new connection, wait this many
    /// seconds for the peer's OPEN before sending ours.
    #[serde(default)]
    pub delay_open_secs: Option<u64>,
}

fn default_families() -> Vec<Family> {
    vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
}

impl PeerConfig {
    pub fn new(address: IpAddr, remote_as: u32) -> PeerConfig {
        PeerConfig {
            address,
            port: default_port(),
            remote_as,
            local_address: None,
            passive: false,
            md5_password: None,
            ttl_security: false,
            families: default_families(),
            hold_time: None,
            connect_retry_secs: None,
            keep_adj_rib_in: true,
            max_prefixes: None,
            export: ExportPolicy::default(),
            extended_message: true,
            add_path_receive: false,
            delay_open_secs: None,
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// What to do when a peer sends more prefixes than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxPrefixAction {
    /// Emit an event and keep the session.
    Warn,
    /// Send Cease/Maximum Number of Prefixes Reached (RFC 4486) and stay down for
    /// `restart_secs` (or until restarted by hand).
    Cease,
}

/// Per-peer prefix limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPrefix {
    pub limit: usize,
    pub action: MaxPrefixAction,
    #[serde(default)]
    pub restart_secs: Option<u64>,
}

impl MaxPrefix {
    pub fn restart_after(&self) -> Option<Duration> {
        self.restart_secs.map(Duration::from_secs)
    }
}

impl SpeakerConfig {
    /// Reads the TOML form (`migroute bgp speak --config`): top-level speaker keys and
    /// one `[[peer]]` table per neighbor, field names as in these structs.
    pub fn from_toml(text: &str) -> Result<SpeakerConfig, crate::error::SpeakerError> {
        toml::from_str(text).map_err(|e| crate::error::SpeakerError::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_form() {
        let c = SpeakerConfig::from_toml(
            r#"
local_as = 65001
router_id = "192.0.2.1"
listen = "0.0.0.0:1179"
state_dir = "/var/lib/migroute/bgp"

[[peer]]
address = "192.0.2.2"
remote_as = 65002
md5_password = "s3cret"
max_prefixes = { limit = 1000, action = "cease", restart_secs = 60 }
export = { local_pref = 200, communities = ["65001:666"], prepend = 1 }

[[peer]]
address = "2001:db8::2"
port = 1179
remote_as = 65001
families = ["ipv6_unicast"]
passive = true
"#,
        )
        .unwrap();
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.hold_time, 90);
        assert_eq!(c.peers[0].port, 179);
        assert_eq!(c.peers[0].export.prepend, 1);
        assert_eq!(
            c.peers[0].max_prefixes.unwrap().action,
            MaxPrefixAction::Cease
        );
        assert!(c.peers[1].passive);
        assert_eq!(c.peers[1].families, vec![Family::Ipv6Unicast]);
        assert!(
            SpeakerConfig::from_toml("local_as = 1\nrouter_id = \"1.1.1.1\"\nbogus = 1").is_err()
        );
    }
}
