//! Errors of the speaker. Each names the peer or file it concerns, so that a log line
//! says which session failed without context from elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::codec::{EncodeError, Prefix};

/// Something the speaker could not do.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("peer {peer}: {op}: {source}")]
    Socket {
        peer: IpAddr,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("peer {peer}: encoding an UPDATE: {source}")]
    Encode { peer: IpAddr, source: EncodeError },
    #[error("graceful-restart store {path}: {op}: {reason}")]
    Store {
        path: PathBuf,
        op: &'static str,
        reason: String,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("route {prefix}: {reason}")]
    Route { prefix: Prefix, reason: String },
    /// An IPv6 route without an IPv6 next hop, for a peer whose session runs over IPv4
    /// with IPv6 unicast negotiated and no IPv6 address of ours known to stand in.
    #[error(
        "route {prefix}: peer {peer} takes IPv6 routes over an IPv4 session and no IPv6 next \
         hop is known: give the route a next hop, or the peer an export next hop"
    )]
    NoIpv6NextHop { prefix: Prefix, peer: IpAddr },
    #[error("the speaker has stopped")]
    Stopped,
}
