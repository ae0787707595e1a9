//! What a `PUT /v1/migrations/{id}` asks for: the migration's identity and its spec.

use super::phase::Role;
use super::policy::RoutePolicy;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use thiserror::Error;

/// The caller-chosen name of a migration. Restricted to `[A-Za-z0-9._-]{1,64}` because it
/// ends up in journal keys, log lines and (shortened) kernel object names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MigrationId(String);

impl MigrationId {
    /// Longest accepted id.
    pub const MAX_LEN: usize = 64;

    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, SpecError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(MigrationId(id))
        } else {
            Err(SpecError::BadId(id))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MigrationId {
    type Error = SpecError;

    fn try_from(s: String) -> Result<Self, SpecError> {
        MigrationId::new(s)
    }
}

impl From<MigrationId> for String {
    fn from(id: MigrationId) -> String {
        id.0
    }
}

impl fmt::Display for MigrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The other PE of the move.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerPe {
    /// The peer's tunnel endpoint (remote address of our tunnel).
    pub tunnel_endpoint: IpAddr,
    /// The peer agent's API base URL: the destination tells the source to switch over
    /// through it when it hears the VM first.
    pub api_url: String,
}

/// Encapsulation of the tunnel between the two PEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TunnelKind {
    /// VXLAN with a 24-bit VNI.
    Vxlan {
        /// VXLAN network identifier, below 2^24.
        vni: u32,
    },
    /// GRE with a 32-bit key.
    Gre {
        /// GRE key.
        key: u32,
    },
}

/// Everything the tunnel manager needs to create (or find and delete) our tunnel. The
/// local endpoint is the agent's configuration, not the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TunnelSpec {
    /// Encapsulation and its id.
    pub kind: TunnelKind,
    /// The peer PE's tunnel endpoint.
    pub remote: IpAddr,
}

/// Convergence timers, with defaults so a request may leave them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timers {
    /// The tunnel must carry no packets for this long before teardown: ingress routers
    /// have stopped sending to the source.
    pub quiet_ms: u64,
    /// The new route must have been held (announced, session up) this long before
    /// teardown, so late-converging ingress routers have it.
    pub min_hold_ms: u64,
    /// From switchover (or announce, once announced): not converged by then means
    /// `stalled`, with nothing torn down.
    pub converge_timeout_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            quiet_ms: 2_000,
            min_hold_ms: 5_000,
            converge_timeout_ms: 120_000,
        }
    }
}

/// The body of `PUT /v1/migrations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationSpec {
    /// The VM's host routes (/32 or /128), one or more.
    pub prefixes: Vec<IpNetwork>,
    /// This PE's side of the move.
    pub role: Role,
    /// The other PE.
    pub peer: PeerPe,
    /// Tunnel encapsulation and VNI/key.
    pub tunnel: TunnelKind,
    /// Route preference policy (destination).
    #[serde(default)]
    pub policy: RoutePolicy,
    /// Convergence timers.
    #[serde(default)]
    pub timers: Timers,
    /// The VM's MAC address. A destination that listens on its VM-facing interface
    /// recognises the VM by it in the RARP announcement QEMU sends after a migration,
    /// which carries no IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_mac: Option<MacAddr>,
}

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` (case-insensitive, `-` also
/// accepted as separator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

/// Text that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad MAC address {0:?}: want aa:bb:cc:dd:ee:ff")]
pub struct MacParseError(pub String);

impl std::str::FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, MacParseError> {
        let bad = || MacParseError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = MacParseError;

    fn try_from(s: String) -> Result<Self, MacParseError> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl MigrationSpec {
    /// Checks the request and puts it in canonical form (sorted prefixes and
    /// communities), so that "the same body again" compares equal however it was
    /// ordered.
    pub fn normalized(mut self) -> Result<Self, SpecError> {
        if self.prefixes.is_empty() {
            return Err(SpecError::NoPrefixes);
        }
        for p in &self.prefixes {
            let host_len = if p.is_ipv4() { 32 } else { 128 };
            if p.prefix() != host_len {
                return Err(SpecError::NotHostRoute(*p));
            }
        }
        self.prefixes.sort_unstable();
        if let Some(w) = self.prefixes.windows(2).find(|w| w[0] == w[1]) {
            return Err(SpecError::DuplicatePrefix(w[0]));
        }
        if let TunnelKind::Vxlan { vni } = self.tunnel {
            if vni == 0 || vni >= 1 << 24 {
                return Err(SpecError::BadVni(vni));
            }
        }
        if self.peer.api_url.trim().is_empty() {
            return Err(SpecError::NoPeerApi);
        }
        self.policy.normalize();
        Ok(self)
    }

    /// The tunnel this migration needs.
    pub fn tunnel_spec(&self) -> TunnelSpec {
        TunnelSpec {
            kind: self.tunnel,
            remote: self.peer.tunnel_endpoint,
        }
    }
}

/// A request the agent refuses before any state changes (REST: 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    /// The id is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("bad migration id {0:?}: want 1-64 of [A-Za-z0-9._-]")]
    BadId(String),
    /// A migration moves at least one address.
    #[error("no prefixes: a migration moves at least one host route")]
    NoPrefixes,
    /// Only host routes move with a VM.
    #[error("{0} is not a host route (/32 or /128)")]
    NotHostRoute(IpNetwork),
    /// The same prefix twice.
    #[error("prefix {0} listed twice")]
    DuplicatePrefix(IpNetwork),
    /// VXLAN VNIs are 24 bits and 0 is reserved here.
    #[error("VXLAN VNI {0} out of range 1..2^24")]
    BadVni(u32),
    /// The peer's API URL is needed to tell it to switch over.
    #[error("peer api_url is empty")]
    NoPeerApi,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pe::policy::{Community, Preference};

    pub(crate) fn spec(role: Role, prefixes: &[&str]) -> MigrationSpec {
        MigrationSpec {
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            role,
            peer: PeerPe {
                tunnel_endpoint: "192.0.2.2".parse().unwrap(),
                api_url: "https://pe-b.example:8443".into(),
            },
            tunnel: TunnelKind::Vxlan { vni: 4242 },
            policy: RoutePolicy::default(),
            timers: Timers {
                quiet_ms: 1_000,
                min_hold_ms: 3_000,
                converge_timeout_ms: 30_000,
            },
            vm_mac: None,
        }
    }

    #[test]
    fn mac_addresses_parse_and_print() {
        let m: MacAddr = "52:54:00:AB:cd:0e".parse().unwrap();
        assert_eq!(m.0, [0x52, 0x54, 0, 0xab, 0xcd, 0x0e]);
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0e");
        assert_eq!("52-54-00-ab-cd-0e".parse::<MacAddr>(), Ok(m));
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0e:ff",
            "5:54:00:ab:cd:0e",
            "zz:54:00:ab:cd:0e",
        ] {
            assert_eq!(
                bad.parse::<MacAddr>(),
                Err(MacParseError(bad.into())),
                "{bad}"
            );
        }
        let s: MigrationSpec = serde_json::from_str(
            r#"{"prefixes":["10.0.0.1/32"],"role":"destination","peer":{"tunnel_endpoint":"192.0.2.1","api_url":"x"},"tunnel":{"kind":"vxlan","vni":1},"vm_mac":"52:54:00:ab:cd:0e"}"#,
        )
        .unwrap();
        assert_eq!(s.vm_mac, Some(m));
        // Absent stays absent in the journal's JSON, so older agents read it.
        let mut s = s;
        s.vm_mac = None;
        assert!(!serde_json::to_string(&s).unwrap().contains("vm_mac"));
    }

    #[test]
    fn ids_are_validated() {
        assert!(MigrationId::new("vm-42.move_1").is_ok());
        for bad in ["", "a/b", "with space", &"x".repeat(65)] {
            assert_eq!(MigrationId::new(bad), Err(SpecError::BadId(bad.to_owned())));
        }
        assert!(serde_json::from_str::<MigrationId>("\"../etc\"").is_err());
    }

    #[test]
    fn normalization_sorts_and_checks() {
        let mut s = spec(
            Role::Source,
            &["10.0.0.9/32", "2001:db8::1/128", "10.0.0.1/32"],
        );
        s.policy.communities = vec![Community::new(2, 2), Community::new(1, 1)];
        let n = s.normalized().unwrap();
        assert_eq!(n.prefixes[0].to_string(), "10.0.0.1/32");
        assert_eq!(n.policy.communities[0], Community::new(1, 1));

        let cases: Vec<(MigrationSpec, SpecError)> = vec![
            (spec(Role::Source, &[]), SpecError::NoPrefixes),
            (
                spec(Role::Source, &["10.0.0.0/24"]),
                SpecError::NotHostRoute("10.0.0.0/24".parse().unwrap()),
            ),
            (
                spec(Role::Source, &["10.0.0.1/32", "10.0.0.1/32"]),
                SpecError::DuplicatePrefix("10.0.0.1/32".parse().unwrap()),
            ),
            (
                MigrationSpec {
                    tunnel: TunnelKind::Vxlan { vni: 1 << 24 },
                    ..spec(Role::Source, &["10.0.0.1/32"])
                },
                SpecError::BadVni(1 << 24),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.normalized(), Err(want));
        }
    }

    #[test]
    fn request_body_json_shape() {
        let body = r#"{
            "prefixes": ["10.0.0.1/32", "2001:db8::1/128"],
            "role": "destination",
            "peer": {"tunnel_endpoint": "192.0.2.1", "api_url": "http://pe-a:8080"},
            "tunnel": {"kind": "gre", "key": 7},
            "policy": {"preference": {"med": 10}}
        }"#;
        let s: MigrationSpec = serde_json::from_str(body).unwrap();
        assert_eq!(s.role, Role::Destination);
        assert_eq!(s.tunnel, TunnelKind::Gre { key: 7 });
        assert_eq!(s.policy.preference, Preference::Med(10));
        assert_eq!(s.timers, Timers::default());
        assert!(serde_json::from_str::<MigrationSpec>(
            r#"{"prefixes":[],"role":"source","peer":{"tunnel_endpoint":"192.0.2.1","api_url":"x"},"tunnel":{"kind":"vxlan","vni":1},"surprise":1}"#
        )
        .is_err());
    }
}
