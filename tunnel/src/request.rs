//! A netlink request as plain data: the message plus its header flags.
//!
//! Builders in this crate return `Request`s and never touch a socket, so tests can
//! emit them to bytes and parse them back; [`crate::handle::NetlinkHandle`] is the
//! only place that sends them.

use netlink_packet_core::{
    NetlinkMessage, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;

/// Create, failing with EEXIST if the object is there (`ip … add`).
pub const FLAGS_CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
/// Create or replace in place (`ip route replace`): never EEXIST.
pub const FLAGS_REPLACE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
/// Create or append to an existing list (`bridge fdb append`): needed for the all-zero
/// VXLAN FDB entry, which `NLM_F_EXCL` would refuse with EEXIST.
pub const FLAGS_APPEND: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
/// Change or delete an existing object.
pub const FLAGS_ACK: u16 = NLM_F_REQUEST | NLM_F_ACK;
/// Dump a table.
pub const FLAGS_DUMP: u16 = NLM_F_REQUEST | NLM_F_DUMP;

/// One rtnetlink request, not yet sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub message: RouteNetlinkMessage,
    pub flags: u16,
}

impl Request {
    pub fn new(message: RouteNetlinkMessage, flags: u16) -> Self {
        Self { message, flags }
    }

    /// The netlink message as it will be sent (sequence number 0, pid 0).
    pub fn to_netlink(&self) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut nl = NetlinkMessage::from(self.message.clone());
        nl.header.flags = self.flags;
        nl.finalize();
        nl
    }

    /// Wire bytes, for byte-level tests and fixtures comparison.
    pub fn to_bytes(&self) -> Vec<u8> {
        let nl = self.to_netlink();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        buf
    }
}
