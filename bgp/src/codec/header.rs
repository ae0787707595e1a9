//! The 19-byte message header and framing (RFC 4271 sections 4.1 and 6.1).
//!
//! Framing is separate from decoding so that a driver can cut a TCP byte stream into
//! messages before it decodes any: [`frame`] says how long the next message is, or
//! that more bytes are needed, or that the stream is broken (a header error always
//! ends the session, since the next message boundary is unknown).

use super::context::SessionContext;
use super::error::HeaderError;
use super::iana::msg_type;

/// Length of the marker, length and type fields.
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended message capability (RFC 4271 section 4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message with the extended message capability (RFC 8654 section 3).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// The marker: all ones (RFC 4271 section 4.1).
pub const MARKER: [u8; 16] = [0xff; 16];

/// Smallest legal length per message type (RFC 4271 section 6.1, RFC 2918).
fn min_len(t: u8) -> usize {
    match t {
        msg_type::OPEN => 29,
        msg_type::UPDATE => 23,
        msg_type::NOTIFICATION => 21,
        // ROUTE-REFRESH lengths are checked by its decoder (RFC 7313 section 5 gives
        // them their own NOTIFICATION code).
        _ => HEADER_LEN,
    }
}

/// A validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total message length, header included.
    pub length: usize,
    /// The message type code.
    pub msg_type: u8,
}

/// Validates the header at the start of `buf`.
///
/// Returns `Ok(None)` when fewer than 19 bytes are buffered, `Ok(Some(header))` when
/// the header is valid (the body may still be incomplete: compare `header.length` with
/// `buf.len()`), or the header error, whose NOTIFICATION is derived from it.
pub fn frame(buf: &[u8], ctx: &SessionContext) -> Result<Option<Header>, HeaderError> {
    // A wrong marker is reported as soon as the wrong byte is seen.
    if let Some(pos) = buf.iter().take(16).position(|&b| b != 0xff) {
        return Err(HeaderError::BadMarker { offset: pos });
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let t = buf[18];
    let max = match t {
        // RFC 8654 section 4: OPEN and KEEPALIVE stay within 4096 bytes.
        msg_type::OPEN | msg_type::KEEPALIVE => MAX_MESSAGE_LEN,
        msg_type::UPDATE | msg_type::NOTIFICATION | msg_type::ROUTE_REFRESH => {
            ctx.max_message_len()
        }
        _ => {
            return Err(HeaderError::BadType {
                msg_type: t,
                offset: 18,
            })
        }
    };
    let bad_len =
        length < min_len(t) || length > max || (t == msg_type::KEEPALIVE && length != HEADER_LEN);
    if bad_len {
        return Err(HeaderError::BadLength {
            length: length as u16,
            offset: 16,
        });
    }
    Ok(Some(Header {
        length,
        msg_type: t,
    }))
}

/// Length of the complete next message in `buf`, or `None` while it is incomplete.
///
/// This is what a driver calls on its receive buffer before [`super::decode`].
pub fn next_message_len(buf: &[u8], ctx: &SessionContext) -> Result<Option<usize>, HeaderError> {
    Ok(frame(buf, ctx)?.and_then(|h| (buf.len() >= h.length).then_some(h.length)))
}

/// Writes a header for a message of `length` bytes.
pub(crate) fn write_header(out: &mut Vec<u8>, length: u16, t: u8) {
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&length.to_be_bytes());
    out.push(t);
}
