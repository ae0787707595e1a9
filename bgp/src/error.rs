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
    #[error("the speaker has stopped")]
    Stopped,
}
