//! What the speaker reports: session and route events for subscribers, and per-peer
//! status for `peers()`. All serialize to the JSON lines `migroute bgp speak` prints.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde::Serialize;

use crate::codec::{Attribute, Family, Nlri, Prefix};
use crate::config::MaxPrefixAction;
use crate::fsm::{DownReason, State};

/// An event from [`crate::Speaker::subscribe`]. Route events carry whole UPDATEs'
/// worth of prefixes, so a full table is a few hundred thousand events, not millions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SpeakerEvent {
    SessionUp {
        peer: IpAddr,
        remote_as: u32,
        remote_id: Ipv4Addr,
        hold_time: u16,
        families: Vec<Family>,
    },
    SessionDown {
        peer: IpAddr,
        #[serde(flatten)]
        reason: DownReason,
        /// Routes kept stale because the peer does graceful restart.
        stale_routes: usize,
    },
    RoutesReceived {
        peer: IpAddr,
        nlri: Vec<Nlri>,
        attributes: Arc<Vec<Attribute>>,
    },
    RoutesWithdrawn {
        peer: IpAddr,
        nlri: Vec<Nlri>,
        /// Swept stale routes (graceful restart), not withdrawn by the peer.
        stale: bool,
    },
    EndOfRib {
        peer: IpAddr,
        family: Family,
    },
    MaxPrefixExceeded {
        peer: IpAddr,
        count: usize,
        limit: usize,
        action: MaxPrefixAction,
    },
}

/// A peer's state and counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub remote_as: u32,
    pub state: State,
    pub remote_id: Option<Ipv4Addr>,
    pub hold_time: Option<u16>,
    pub families: Vec<Family>,
    /// Families disabled for the rest of the session after a malformed UPDATE
    /// (RFC 7606 "AFI/SAFI disable", RFC 4760 section 7): their routes were dropped
    /// and later ones are ignored until the session restarts.
    pub families_disabled: Vec<Family>,
    pub established_transitions: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub updates_received: u64,
    pub updates_sent: u64,
    pub prefixes_received: usize,
    pub prefixes_stale: usize,
    pub prefixes_advertised: usize,
    pub last_down: Option<DownReason>,
}

impl PeerStatus {
    pub(crate) fn new(address: IpAddr, remote_as: u32) -> PeerStatus {
        PeerStatus {
            address,
            remote_as,
            state: State::Idle,
            remote_id: None,
            hold_time: None,
            families: vec![],
            families_disabled: vec![],
            established_transitions: 0,
            messages_received: 0,
            messages_sent: 0,
            updates_received: 0,
            updates_sent: 0,
            prefixes_received: 0,
            prefixes_stale: 0,
            prefixes_advertised: 0,
            last_down: None,
        }
    }
}

/// A route in a peer's Adj-RIB-In.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedRoute {
    pub prefix: Prefix,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_id: Option<u32>,
    /// Absent when the peer is configured not to keep attributes.
    pub attributes: Option<Arc<Vec<Attribute>>>,
    pub stale: bool,
}
