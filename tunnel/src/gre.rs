//! GRE (IPv4 underlay) and ip6gre (IPv6 underlay) point-to-point L3 tunnels.
//!
//! The CI kernel has no GRE, so these builders are proven against the bytes iproute2
//! sends (see `tests/gre_capture.rs`) and creation there fails with
//! [`crate::Error::KernelLacksTunnel`].

use std::net::IpAddr;

use netlink_packet_route::link::{GreIOFlags, LinkMessage};
use rtnetlink::{LinkGre, LinkGre6};
use serde::{Deserialize, Serialize};

/// TTL of the outer header unless told otherwise (iproute2's "inherit" would copy the
/// inner TTL, which lets a VM's traceroute see the underlay).
pub const DEFAULT_TTL: u8 = 64;

/// What a GRE tunnel is made of; the family of `local` selects gre or ip6gre.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GreSpec {
    pub local: IpAddr,
    pub remote: IpAddr,
    #[serde(default = "default_ttl")]
    pub ttl: u8,
    /// Same key both ways (`ip … key K`), which sets the K bit in both directions.
    #[serde(default)]
    pub key: Option<u32>,
    #[serde(default)]
    pub underlay: Option<String>,
}

fn default_ttl() -> u8 {
    DEFAULT_TTL
}

impl GreSpec {
    pub fn new(local: IpAddr, remote: IpAddr) -> Self {
        Self {
            local,
            remote,
            ttl: DEFAULT_TTL,
            key: None,
            underlay: None,
        }
    }

    /// `"gre"` or `"ip6gre"`, the kernel's link kind.
    pub fn kind(&self) -> &'static str {
        if self.local.is_ipv4() {
            "gre"
        } else {
            "ip6gre"
        }
    }

    /// The module whose absence makes creation fail.
    pub fn module(&self) -> &'static str {
        if self.local.is_ipv4() {
            "ip_gre"
        } else {
            "ip6_gre"
        }
    }

    /// `RTM_NEWLINK` for the link, brought up in the same message. `None` when local
    /// and remote are of different families.
    pub fn build(&self, name: &str, underlay_index: Option<u32>) -> Option<LinkMessage> {
        match (self.local, self.remote) {
            (IpAddr::V4(l), IpAddr::V4(r)) => {
                let mut b = LinkGre::new(name).local(l).remote(r).ttl(self.ttl).up();
                if let Some(k) = self.key {
                    b = b
                        .iflags(GreIOFlags::Key)
                        .oflags(GreIOFlags::Key)
                        .ikey(k)
                        .okey(k);
                }
                if let Some(i) = underlay_index {
                    b = b.dev(i);
                }
                Some(b.build())
            }
            (IpAddr::V6(l), IpAddr::V6(r)) => {
                let mut b = LinkGre6::new(name).local(l).remote(r).ttl(self.ttl).up();
                if let Some(k) = self.key {
                    b = b
                        .iflags(GreIOFlags::Key)
                        .oflags(GreIOFlags::Key)
                        .ikey(k)
                        .okey(k);
                }
                if let Some(i) = underlay_index {
                    b = b.dev(i);
                }
                Some(b.build())
            }
            _ => None,
        }
    }
}
