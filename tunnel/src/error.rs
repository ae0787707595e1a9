//! Errors that name the kernel object that failed.
//!
//! Every variant says *which* namespace and *which* link, route or rule the kernel
//! refused, with the errno kept in `source` (`io::Error::raw_os_error()`), because an
//! operator reading "File exists" alone cannot tell which of a thousand overrides failed.

use std::io;
use std::net::IpAddr;

use crate::ids::Prefix;
use crate::netns::Netns;

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while touching kernel state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netns {netns}: cannot open namespace file")]
    NetnsOpen {
        netns: Netns,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot enter namespace or open a netlink socket in it")]
    NetnsEnter {
        netns: Netns,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: invalid link name {ifname:?}: {reason}")]
    InvalidName {
        netns: Netns,
        ifname: String,
        reason: &'static str,
    },
    #[error("netns {netns}: invalid tunnel {ifname}: {reason}")]
    InvalidSpec {
        netns: Netns,
        ifname: String,
        reason: String,
    },
    #[error("netns {netns}: underlay device {ifname} not found")]
    UnderlayNotFound { netns: Netns, ifname: String },
    #[error("netns {netns}: link {ifname} not found")]
    LinkNotFound { netns: Netns, ifname: String },
    #[error(
        "netns {netns}: cannot create {kind} link {ifname}: the kernel lacks {kind} support \
         (load module {module})"
    )]
    KernelLacksTunnel {
        netns: Netns,
        ifname: String,
        kind: &'static str,
        module: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot create link {ifname}")]
    LinkCreate {
        netns: Netns,
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot set link {ifname} up")]
    LinkUp {
        netns: Netns,
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot delete link {ifname}")]
    LinkDelete {
        netns: Netns,
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot add address {address}/{prefix_len} to {ifname}")]
    AddressAdd {
        netns: Netns,
        ifname: String,
        address: IpAddr,
        prefix_len: u8,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot add neighbour {address} on {ifname}")]
    NeighbourAdd {
        netns: Netns,
        ifname: String,
        address: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot append FDB entry to {remote} on {ifname}")]
    FdbAppend {
        netns: Netns,
        ifname: String,
        remote: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot replace route {prefix} in table {table}")]
    RouteReplace {
        netns: Netns,
        table: u32,
        prefix: Prefix,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot delete route {prefix} in table {table}")]
    RouteDelete {
        netns: Netns,
        table: u32,
        prefix: Prefix,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot add rule priority {priority} ({family}) to table {table}")]
    RuleAdd {
        netns: Netns,
        priority: u32,
        table: u32,
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot delete rule priority {priority} ({family})")]
    RuleDelete {
        netns: Netns,
        priority: u32,
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns}: cannot dump {what}")]
    Dump {
        netns: Netns,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The kernel's errno, when the kernel is what refused.
    pub fn errno(&self) -> Option<i32> {
        use std::error::Error as _;
        self.source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error)
    }
}

/// `true` when the kernel answered "already exists": an idempotent add succeeded before.
pub(crate) fn is_eexist(err: &io::Error) -> bool {
    err.raw_os_error() == Some(nix::libc::EEXIST)
}

/// `true` when the kernel answered "no such object": an idempotent delete already happened.
pub(crate) fn is_enoent(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(nix::libc::ENOENT) | Some(nix::libc::ESRCH) | Some(nix::libc::ENODEV)
    )
}
