//! The BGP message codec: migroute's own message types, decoded and encoded in the
//! context of a session, with RFC 7606 treatment of malformed UPDATEs.
//!
//! Entry points: [`next_message_len`] to cut a byte stream into messages,
//! [`decode`] for one message, [`encode`] for the way back. Everything else is the
//! vocabulary of those three. See the crate documentation for the RFC 7606 table.

mod attribute;
mod builder;
mod bytes;
mod capability;
mod community;
mod context;
mod error;
mod header;
pub mod iana;
mod notification;
mod open;
mod prefix;
mod reader;
mod route_refresh;
mod update;

use serde::{Deserialize, Serialize};

pub(crate) use attribute::{decode_stored, encode_stored};
pub use attribute::{
    Aggregator, AsSegment, Attribute, MpNextHop, MpReach, MpUnreach, Origin, RawAttribute,
};
pub use builder::pack_announcements;
pub use bytes::{from_hex, to_hex, HexBytes, HexError};
pub use community::{Community, ExtendedCommunity, LargeCommunity};
pub use context::{AddPathFamilies, SessionContext};
pub use error::{
    AttrAction, DecodeError, EncodeError, HeaderError, OpenError, RouteRefreshError, UpdateError,
    UpdateErrorKind, UpdateField,
};
pub use header::{
    frame, next_message_len, Header, HEADER_LEN, MARKER, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN,
};
pub use iana::{Afi, Family, Safi};
pub use notification::{Notification, MAX_SHUTDOWN_MESSAGE_LEN};
pub use open::{
    AddPathFamily, AddPathMode, Capability, GracefulRestart, GracefulRestartFamily, Open, AS_TRANS,
};
pub use prefix::{Nlri, NlriError, Prefix, PrefixParseError};
pub use route_refresh::{RouteRefresh, RouteRefreshSubtype};
pub use update::{Update, UpdateOutcome};

use iana::msg_type;
use reader::Reader;

/// A BGP message. In JSON, `{"type": "keepalive"}` and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The message type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Message::Open(_) => msg_type::OPEN,
            Message::Update(_) => msg_type::UPDATE,
            Message::Notification(_) => msg_type::NOTIFICATION,
            Message::Keepalive => msg_type::KEEPALIVE,
            Message::RouteRefresh(_) => msg_type::ROUTE_REFRESH,
        }
    }
}

/// A decoded message. For an UPDATE, `treatment` and `errors` say what RFC 7606
/// did to it (the message itself is already treated); for others they are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
    pub treatment: Option<AttrAction>,
    pub errors: Vec<UpdateError>,
}

impl Decoded {
    /// The End-of-RIB family, if this is an untreated End-of-RIB UPDATE. An UPDATE
    /// emptied by treat-as-withdraw looks like one but is not.
    pub fn end_of_rib(&self) -> Option<Family> {
        match &self.message {
            Message::Update(u) if self.treatment.is_none() => u.end_of_rib(),
            _ => None,
        }
    }

    /// Families to disable for the rest of the session (RFC 4760 section 7).
    pub fn disabled_families(&self) -> Vec<(Afi, Safi)> {
        let mut v: Vec<_> = self.errors.iter().filter_map(|e| e.afi_safi).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Decodes exactly one message: `buf` must be the whole message and nothing more (use
/// [`next_message_len`] to find it in a stream).
///
/// `Err` means the session must be reset, with `Notification::from(&err)`. An UPDATE
/// with lesser errors decodes, already treated (see [`Decoded`]).
pub fn decode(buf: &[u8], ctx: &SessionContext) -> Result<Decoded, DecodeError> {
    let header = frame(buf, ctx)?.ok_or(HeaderError::Truncated {
        length: HEADER_LEN,
        available: buf.len(),
    })?;
    if buf.len() != header.length {
        return Err(HeaderError::Truncated {
            length: header.length,
            available: buf.len(),
        }
        .into());
    }
    let mut body = Reader::new(&buf[HEADER_LEN..], HEADER_LEN);
    let plain = |message| Decoded {
        message,
        treatment: None,
        errors: Vec::new(),
    };
    Ok(match header.msg_type {
        msg_type::OPEN => plain(Message::Open(Open::decode(&mut body)?)),
        msg_type::UPDATE => {
            let outcome = Update::decode(&mut body, ctx)?;
            Decoded {
                message: Message::Update(outcome.update),
                treatment: outcome.treatment,
                errors: outcome.errors,
            }
        }
        msg_type::NOTIFICATION => plain(Message::Notification(Notification::decode(&mut body))),
        msg_type::KEEPALIVE => plain(Message::Keepalive),
        // `frame` accepts no other type.
        _ => plain(Message::RouteRefresh(RouteRefresh::decode(buf)?)),
    })
}

/// Encodes one message for a session.
pub fn encode(msg: &Message, ctx: &SessionContext) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    encode_into(msg, ctx, &mut out)?;
    Ok(out)
}

/// Appends one encoded message to `out` (for drivers that batch writes). On error
/// `out` is left as it was.
pub fn encode_into(
    msg: &Message,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let r = encode_body(msg, ctx, out, start);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn encode_body(
    msg: &Message,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
    start: usize,
) -> Result<(), EncodeError> {
    header::write_header(out, 0, msg.type_code());
    match msg {
        Message::Open(o) => o.encode_body(out)?,
        Message::Update(u) => u.encode_body(out, ctx)?,
        Message::Notification(n) => n.encode_body(out),
        Message::Keepalive => {}
        Message::RouteRefresh(r) => r.encode_body(out),
    }
    let length = out.len() - start;
    let max = match msg {
        Message::Open(_) | Message::Keepalive => MAX_MESSAGE_LEN,
        _ => ctx.max_message_len(),
    };
    if length > max {
        return Err(EncodeError::TooLong { length, max });
    }
    out[start + 16..start + 18].copy_from_slice(&(length as u16).to_be_bytes());
    Ok(())
}
