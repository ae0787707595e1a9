//! What the driver tells the session machine. Each variant names the RFC 4271
//! section 8.1 events it stands for.

use std::time::Duration;

use crate::codec::{Decoded, Notification};

/// A transport connection, numbered by the driver. Two can exist at once while a
/// connection collision (RFC 4271 section 6.8) is being resolved.
pub type ConnId = u64;

/// Who opened a connection; collision resolution keeps the one opened by the speaker
/// with the higher BGP Identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We connected to the peer.
    Outbound,
    /// The peer connected to us.
    Inbound,
}

/// An input to [`super::Fsm::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Events 1/3 (ManualStart, AutomaticStart; passive when configured so).
    Start,
    /// Event 2 (ManualStop): send `notification` if a connection is open, stay Idle.
    Stop(Option<Notification>),
    /// Like Stop, but for a local reason (max-prefix exceeded): after `idle_for` the
    /// session starts again by itself; `None` keeps it down until [`Event::Start`].
    Reset {
        notification: Notification,
        idle_for: Option<Duration>,
    },
    /// Events 16/17 (Tcp_CR_Acked, TcpConnectionConfirmed).
    TcpConnected { conn: ConnId, direction: Direction },
    /// Event 18 for an outbound attempt that never connected.
    TcpConnectFailed,
    /// Event 18 (TcpConnectionFails) on an open connection.
    TcpClosed { conn: ConnId },
    /// Events 19-28: a message decoded on `conn`.
    Message { conn: ConnId, message: Decoded },
    /// Events 21/22/25/28 (header, OPEN or UPDATE errors): the decoder said the session
    /// must be reset with this NOTIFICATION.
    MessageError {
        conn: ConnId,
        notification: Notification,
    },
    /// Events 9-13: every timer whose deadline has passed fires.
    Timeout,
}
