//! What the session machine asks the driver to do, in order.

use serde::Serialize;

use super::event::ConnId;
use crate::codec::{Decoded, Message, Notification, RouteRefresh};
use crate::negotiate::Negotiated;

/// An output of [`super::Fsm::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a TCP connection to the peer; answer with `TcpConnected` (outbound) or
    /// `TcpConnectFailed`.
    Connect,
    /// Write a message on a connection.
    Send { conn: ConnId, message: Message },
    /// Close a connection (after writing what was queued on it).
    Close { conn: ConnId },
    /// The session reached Established on `conn`.
    SessionUp {
        conn: ConnId,
        negotiated: Box<Negotiated>,
    },
    /// An Established session ended.
    SessionDown { reason: DownReason },
    /// An UPDATE to apply to the Adj-RIB-In.
    Deliver(Box<Decoded>),
    /// The peer asked for our Adj-RIB-Out (RFC 2918 / RFC 7313), or bracketed its own
    /// refresh (BoRR/EoRR).
    RouteRefresh(RouteRefresh),
}

/// Why an Established session ended. Graceful restart (RFC 4724, RFC 8538) keeps the
/// peer's routes only for some of these, see [`DownReason::keeps_routes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DownReason {
    /// The transport went away without a NOTIFICATION (peer crashed or restarted).
    ConnectionClosed,
    /// The peer opened a new session while the old one looked alive: it restarted.
    PeerRestarted,
    /// The hold timer expired; we sent NOTIFICATION 4/0.
    HoldTimerExpired,
    /// The peer sent a NOTIFICATION.
    NotificationReceived { code: u8, subcode: u8 },
    /// We sent a NOTIFICATION (error, stop or reset).
    NotificationSent { code: u8, subcode: u8 },
}

impl DownReason {
    pub(crate) fn received(n: &Notification) -> DownReason {
        DownReason::NotificationReceived {
            code: n.code,
            subcode: n.subcode,
        }
    }

    pub(crate) fn sent(n: &Notification) -> DownReason {
        DownReason::NotificationSent {
            code: n.code,
            subcode: n.subcode,
        }
    }

    /// Whether a graceful-restart capable peer's routes are kept (stale) after this:
    /// RFC 4724 only covers the loss of the transport; RFC 8538 (both sides sent the N
    /// bit) extends it to NOTIFICATIONs other than Cease/Hard Reset.
    pub fn keeps_routes(&self, notification_gr: bool) -> bool {
        match self {
            DownReason::ConnectionClosed | DownReason::PeerRestarted => true,
            DownReason::HoldTimerExpired => notification_gr,
            DownReason::NotificationReceived { code, subcode }
            | DownReason::NotificationSent { code, subcode } => {
                notification_gr && !(*code == 6 && *subcode == 9)
            }
        }
    }
}
