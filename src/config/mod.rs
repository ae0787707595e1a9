//! `agent.toml`: what one PE agent is and how it behaves.
//!
//! Parsed once at start; every field is checked here so that a typo stops the agent
//! with the field's name instead of surfacing later as a kernel or BGP error.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use migroute_orchestration::pe::{Community, Preference, RoutePolicy, Timers};
use serde::Deserialize;
use thiserror::Error;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Identity of this PE.
    pub pe: PeConfig,
    /// REST API.
    pub api: ApiConfig,
    /// BGP speaker; no peers means routes are recorded but not sent.
    #[serde(default)]
    pub bgp: BgpConfig,
    /// Default route policy for requests that carry none.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Default convergence timers and the counter poll interval.
    #[serde(default)]
    pub convergence: ConvergenceConfig,
    /// Network namespace to act in (`ip netns` name); absent = the agent's own. Labs
    /// run two agents on one host, each in its PE's namespace.
    #[serde(default)]
    pub netns: Option<String>,
    /// The redb journal. Must be on persistent storage: recovery after a crash reads it.
    pub journal: PathBuf,
}

/// Who this PE is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeConfig {
    /// BGP router id.
    pub router_id: Ipv4Addr,
    /// Loopback address (BGP next hop of announced routes).
    pub loopback: IpAddr,
    /// Local underlay address of tunnels.
    pub tunnel_source: IpAddr,
    /// Underlay device tunnels are pinned to, if any.
    #[serde(default)]
    pub tunnel_underlay: Option<String>,
    /// Pool the tunnels' inside /31s come from. Both PEs must use the same pool: each
    /// derives the /31 from the tunnel's VNI/key, the source takes the even address,
    /// the destination the odd one, so no negotiation is needed.
    #[serde(default = "default_inside_pool")]
    pub tunnel_inside_pool: Ipv4Network,
    /// The interface towards the data center the VMs live in (`eth3` on the lab's
    /// pe-a/pe-b). As a destination the agent routes the VM's host routes out of it in
    /// migroute's table, so delivery never depends on what BGP put in `main` (a host
    /// route of an earlier move would send the traffic back to the source). Without it
    /// the destination relies on its FIB, as before.
    #[serde(default)]
    pub vm_interface: Option<String>,
    /// Listen on `vm_interface` for the VM's announcements after a migration (QEMU's
    /// RARP, gratuitous ARP, unsolicited neighbour advertisements) and, as the
    /// destination, announce at once and tell the source to switch over, without
    /// waiting for the migration software. Needs `CAP_NET_RAW`.
    #[serde(default)]
    pub detect_vm: bool,
}

fn default_inside_pool() -> Ipv4Network {
    Ipv4Network::new(Ipv4Addr::new(169, 254, 0, 0), 16).expect("valid")
}

/// The REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// File holding the bearer token (first line, trimmed).
    pub token_file: PathBuf,
    /// Token for calling the peer agents' APIs; defaults to our own token.
    #[serde(default)]
    pub peer_token_file: Option<PathBuf>,
    /// PEM certificate chain for TLS (leaf first). With `tls_key`, the API is served
    /// over HTTPS only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) to trust when calling a peer agent over `https://` (its
    /// `api_url`), on top of the built-in roots: PEs usually carry a private CA's
    /// certificates.
    #[serde(default)]
    pub peer_ca_file: Option<PathBuf>,
    /// Largest request body accepted.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Most prefixes in one migration.
    #[serde(default = "default_max_prefixes")]
    pub max_prefixes: usize,
}

fn default_max_body() -> usize {
    64 * 1024
}

fn default_max_prefixes() -> usize {
    256
}

/// BGP speaker settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpConfig {
    /// Local AS.
    #[serde(default)]
    pub asn: Option<u32>,
    /// Accept sessions here too (default: connect only).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Graceful-restart store (persisted Adj-RIB-Out); default `<journal dir>/bgp-state`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Peers (route reflectors).
    #[serde(default)]
    pub peers: Vec<BgpPeerConfig>,
}

/// One BGP peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPeerConfig {
    /// Its address.
    pub address: IpAddr,
    /// Its AS.
    pub remote_as: u32,
    /// TCP port.
    #[serde(default = "default_bgp_port")]
    pub port: u16,
    /// Source address of the session (e.g. the loopback, for iBGP to reflectors).
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    /// Only accept the session, never connect.
    #[serde(default)]
    pub passive: bool,
    /// TCP-MD5 password file.
    #[serde(default)]
    pub md5_password_file: Option<PathBuf>,
}

fn default_bgp_port() -> u16 {
    179
}

/// Default preference policy (`host-route` with NO_EXPORT unless told otherwise).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `host-route`, `local-pref` or `med`.
    #[serde(default)]
    pub preference: PreferenceKind,
    /// LOCAL_PREF or MED value for those preferences.
    #[serde(default)]
    pub value: Option<u32>,
    /// Extra communities, `ASN:VALUE` or `no-export`.
    #[serde(default)]
    pub communities: Vec<String>,
}

/// Names of [`Preference`] in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PreferenceKind {
    /// Host route + NO_EXPORT.
    #[default]
    HostRoute,
    /// Higher LOCAL_PREF.
    LocalPref,
    /// Lower MED.
    Med,
}

/// Default timers and sampling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConvergenceConfig {
    /// See [`Timers::quiet_ms`].
    pub quiet_ms: u64,
    /// See [`Timers::min_hold_ms`].
    pub min_hold_ms: u64,
    /// See [`Timers::converge_timeout_ms`].
    pub converge_timeout_ms: u64,
    /// How often tunnel counters are read while a migration converges.
    pub counter_poll_ms: u64,
}

impl Default for ConvergenceConfig {
    fn default() -> Self {
        let t = Timers::default();
        ConvergenceConfig {
            quiet_ms: t.quiet_ms,
            min_hold_ms: t.min_hold_ms,
            converge_timeout_ms: t.converge_timeout_ms,
            counter_poll_ms: 50,
        }
    }
}

impl ConvergenceConfig {
    /// Timers for requests that carry none.
    pub fn timers(&self) -> Timers {
        Timers {
            quiet_ms: self.quiet_ms,
            min_hold_ms: self.min_hold_ms,
            converge_timeout_ms: self.converge_timeout_ms,
        }
    }
}

/// A configuration that cannot be used; names the file and the field.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML or not our schema.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why (names line and field).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A field has a value we cannot use.
    #[error("{path}: {field}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The token file is missing or empty.
    #[error("token file {path}: {reason}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl AgentConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks `text` (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        cfg.check(path)?;
        Ok(cfg)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            reason,
        };
        if self.pe.tunnel_inside_pool.prefix() > 30 {
            return Err(invalid(
                "pe.tunnel_inside_pool",
                "needs at least a /30 (two /31s)".into(),
            ));
        }
        if self.api.tls_cert.is_some() != self.api.tls_key.is_some() {
            return Err(invalid(
                "api.tls_cert",
                "tls_cert and tls_key go together".into(),
            ));
        }
        if self.pe.detect_vm && self.pe.vm_interface.is_none() {
            return Err(invalid(
                "pe.detect_vm",
                "needs pe.vm_interface, the interface the VM is heard on".into(),
            ));
        }
        if self.api.max_prefixes == 0 {
            return Err(invalid("api.max_prefixes", "must be at least 1".into()));
        }
        if self.convergence.counter_poll_ms == 0 {
            return Err(invalid(
                "convergence.counter_poll_ms",
                "must be at least 1".into(),
            ));
        }
        if let Some(ns) = &self.netns {
            if ns.is_empty() || ns.contains('/') || ns == "." || ns == ".." {
                return Err(invalid("netns", format!("{ns:?} is not a netns name")));
            }
        }
        if !self.bgp.peers.is_empty() && self.bgp.asn.is_none() {
            return Err(invalid("bgp.asn", "required when peers are set".into()));
        }
        self.default_policy()
            .map_err(|reason| invalid("policy", reason))?;
        Ok(())
    }

    /// The route policy for requests that carry none.
    pub fn default_policy(&self) -> Result<RoutePolicy, String> {
        let p = &self.policy;
        let preference = match (p.preference, p.value) {
            (PreferenceKind::HostRoute, None) => Preference::HostRoute,
            (PreferenceKind::HostRoute, Some(_)) => {
                return Err("value makes no sense with host-route".into())
            }
            (PreferenceKind::LocalPref, Some(n)) => Preference::LocalPref(n),
            (PreferenceKind::Med, Some(n)) => Preference::Med(n),
            (_, None) => return Err("local-pref and med need a value".into()),
        };
        let communities = p
            .communities
            .iter()
            .map(|c| c.parse::<Community>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RoutePolicy {
            preference,
            communities,
        })
    }

    /// The bearer token, read from `api.token_file`.
    pub fn token(&self) -> Result<String, ConfigError> {
        read_token(&self.api.token_file)
    }

    /// The token for calling peers.
    pub fn peer_token(&self) -> Result<String, ConfigError> {
        read_token(
            self.api
                .peer_token_file
                .as_ref()
                .unwrap_or(&self.api.token_file),
        )
    }
}

fn read_token(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Token {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        return Err(ConfigError::Token {
            path: path.to_owned(),
            reason: "token must be at least 16 characters".into(),
        });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        journal = "/var/lib/migroute/journal.redb"
        [pe]
        router_id = "10.255.0.2"
        loopback = "10.255.0.2"
        tunnel_source = "10.0.23.2"
        [api]
        listen = "127.0.0.1:8080"
        token_file = "/etc/migroute/token"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = AgentConfig::parse(MINIMAL, Path::new("agent.toml")).unwrap();
        assert_eq!(c.default_policy().unwrap(), RoutePolicy::default());
        assert_eq!(c.convergence.timers(), Timers::default());
        assert_eq!(c.convergence.counter_poll_ms, 50);
        assert_eq!(c.pe.tunnel_inside_pool.to_string(), "169.254.0.0/16");
        assert!(c.netns.is_none());
        assert!(!c.pe.detect_vm);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                format!("{MINIMAL}\n[policy]\npreference = \"med\"\n"),
                "policy",
            ),
            (
                format!("{MINIMAL}\n[policy]\ncommunities = [\"1:99999\"]\n"),
                "policy",
            ),
            (format!("netns = \"a/b\"\n{MINIMAL}"), "netns"),
            (
                format!("{MINIMAL}\n[[bgp.peers]]\naddress = \"10.255.0.1\"\nremote_as = 65000\n"),
                "bgp.asn",
            ),
            (
                MINIMAL.replace("[api]", "detect_vm = true\n[api]"),
                "pe.detect_vm",
            ),
        ];
        for (text, field) in cases {
            let e = AgentConfig::parse(&text, Path::new("a.toml")).unwrap_err();
            assert!(e.to_string().contains(field), "{e} should name {field}");
        }
        let e = AgentConfig::parse(&MINIMAL.replace("10.0.23.2", "nope"), Path::new("a.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("tunnel_source"), "{e}");
    }

    #[test]
    fn lab_example_configs_parse() {
        for pe in ["pe-a", "pe-b"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("labs/agent/{pe}.toml"));
            let c = AgentConfig::load(&path).unwrap();
            // `migroute lab up` names namespaces `<lab>-<node>`.
            let ns = format!("wan-migration-{pe}");
            assert_eq!(c.netns.as_deref(), Some(ns.as_str()));
            assert!(c.default_policy().is_ok());
        }
    }

    #[test]
    fn policy_from_config() {
        let text = format!(
            "{MINIMAL}\n[policy]\npreference = \"local-pref\"\nvalue = 300\ncommunities = [\"65000:7\"]\n"
        );
        let c = AgentConfig::parse(&text, Path::new("a.toml")).unwrap();
        let p = c.default_policy().unwrap();
        assert_eq!(p.preference, Preference::LocalPref(300));
        assert_eq!(p.communities, vec![Community::new(65000, 7)]);
    }
}
