//! NOTIFICATION (RFC 4271 section 4.5) and the shutdown communication carried by
//! Cease/Administrative Shutdown and Administrative Reset (RFC 8203, RFC 9003).

use serde::{Deserialize, Serialize};

use super::bytes::HexBytes;
use super::iana::notif;
use super::reader::Reader;

/// A NOTIFICATION. `data` is kept as bytes because its meaning depends on the code;
/// [`Notification::shutdown_message`] reads the one structured case migroute uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "NotificationRepr", try_from = "NotificationRepr")]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: HexBytes,
}

/// JSON form: the shutdown message is shown decoded, and may be given instead of data.
#[derive(Serialize, Deserialize)]
struct NotificationRepr {
    code: u8,
    subcode: u8,
    #[serde(default)]
    data: HexBytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shutdown_message: Option<String>,
}

impl From<Notification> for NotificationRepr {
    fn from(n: Notification) -> Self {
        NotificationRepr {
            shutdown_message: n.shutdown_message().map(str::to_string),
            code: n.code,
            subcode: n.subcode,
            data: n.data,
        }
    }
}

impl TryFrom<NotificationRepr> for Notification {
    type Error = String;
    fn try_from(r: NotificationRepr) -> Result<Self, String> {
        match r.shutdown_message {
            Some(msg) if r.data.0.is_empty() => {
                Notification::shutdown(r.subcode, &msg).map(|mut n| {
                    n.code = r.code;
                    n
                })
            }
            _ => Ok(Notification::new(r.code, r.subcode, r.data.0)),
        }
    }
}

/// Longest shutdown communication (RFC 9003 section 2).
pub const MAX_SHUTDOWN_MESSAGE_LEN: usize = 255;

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data: HexBytes(data),
        }
    }

    /// A Cease with a shutdown communication, so an operator on the other side sees
    /// why the session went down (e.g. "migrating vm42 to pe-b").
    pub fn shutdown(subcode: u8, message: &str) -> Result<Notification, String> {
        if message.len() > MAX_SHUTDOWN_MESSAGE_LEN {
            return Err(format!(
                "shutdown message is {} bytes, the limit is {MAX_SHUTDOWN_MESSAGE_LEN}",
                message.len()
            ));
        }
        let mut data = Vec::with_capacity(message.len() + 1);
        data.push(message.len() as u8);
        data.extend_from_slice(message.as_bytes());
        Ok(Notification::new(notif::CEASE, subcode, data))
    }

    /// The shutdown communication, if this is a Cease/Administrative Shutdown or
    /// Reset whose data is a well-formed length-prefixed UTF-8 string.
    pub fn shutdown_message(&self) -> Option<&str> {
        if self.code != notif::CEASE
            || !matches!(
                self.subcode,
                notif::ADMINISTRATIVE_SHUTDOWN | notif::ADMINISTRATIVE_RESET
            )
        {
            return None;
        }
        let (len, text) = self.data.0.split_first()?;
        if usize::from(*len) != text.len() || text.is_empty() {
            return None;
        }
        std::str::from_utf8(text).ok()
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Notification {
        // The header check guarantees the two code bytes.
        let code = r.u8().unwrap_or(0);
        let subcode = r.u8().unwrap_or(0);
        Notification::new(code, subcode, r.rest().to_vec())
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(&self.data.0);
    }
}
