//! The logic behind `migroute bgp decode` and `migroute bgp encode`: bytes in, one
//! JSON object per message out, and back. It lives here, not in the binary, so that
//! it is tested with the codec and the CLI stays a thin shell.

use serde_json::{json, Value};

use crate::codec::{
    self, from_hex, next_message_len, AddPathFamilies, DecodeError, Decoded, HexError, Message,
    Notification, SessionContext, UpdateError,
};

/// Errors of the tools, as opposed to errors in the messages they read.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("input is not hex: {0}")]
    Hex(#[from] HexError),
    #[error("JSON message {index}: {source}")]
    Json {
        index: usize,
        source: serde_json::Error,
    },
    #[error("message {index}: {source}")]
    Encode {
        index: usize,
        source: codec::EncodeError,
    },
    #[error("unknown add-path family {0:?} (expected ipv4, ipv6)")]
    AddPathFamily(String),
}

/// Parses `ipv4,ipv6` into per-family switches.
pub fn parse_add_path(list: &str) -> Result<AddPathFamilies, ToolError> {
    let mut fams = AddPathFamilies::default();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "ipv4" => fams.ipv4_unicast = true,
            "ipv6" => fams.ipv6_unicast = true,
            other => return Err(ToolError::AddPathFamily(other.to_string())),
        }
    }
    Ok(fams)
}

/// The context the tools use: the same add-path families in both directions, so that
/// `decode | encode` reproduces its input.
pub fn tool_context(as4: bool, add_path: AddPathFamilies) -> SessionContext {
    SessionContext {
        as4,
        add_path_rx: add_path,
        add_path_tx: add_path,
        extended_message: false,
    }
}

/// Raw input bytes, or hex text when `hex` (whitespace ignored).
pub fn read_input(raw: &[u8], hex: bool) -> Result<Vec<u8>, ToolError> {
    if hex {
        Ok(from_hex(&String::from_utf8_lossy(raw))?)
    } else {
        Ok(raw.to_vec())
    }
}

/// The JSON form of one UPDATE error.
pub fn update_error_json(e: &UpdateError) -> Value {
    let n = e.notification();
    let mut v = json!({
        "field": e.field.to_string(),
        "offset": e.offset,
        "reason": e.kind.to_string(),
        "action": e.action,
        "notification": [n.code, n.subcode],
    });
    if let Some((afi, safi)) = e.afi_safi {
        v["afi_safi"] = json!([afi, safi]);
    }
    v
}

/// The JSON form of a message that resets the session.
pub fn decode_error_json(e: &DecodeError) -> Value {
    let n = Notification::from(e);
    let mut err = json!({
        "notification": [n.code, n.subcode],
        "reason": e.to_string(),
        "offset": e.offset(),
    });
    if !n.data.0.is_empty() {
        err["data"] = json!(n.data);
    }
    json!({ "error": err })
}

/// The JSON form of a decoded message: its fields, plus for an UPDATE the treatment
/// applied and each error found.
pub fn decoded_json(d: &Decoded) -> Value {
    let mut v = serde_json::to_value(&d.message).unwrap_or(Value::Null);
    if matches!(d.message, Message::Update(_)) {
        v["treatment"] = match d.treatment {
            Some(t) => json!(t),
            None => json!("none"),
        };
        v["errors"] = d.errors.iter().map(update_error_json).collect();
    }
    v
}

/// What `decode` printed and whether every message was accepted.
#[derive(Debug, Default)]
pub struct DecodeReport {
    pub objects: Vec<Value>,
    /// A message was broken (header or session-reset error).
    pub failed: bool,
}

/// Decodes every message in `input`. A broken header stops the walk, since the next
/// message cannot be found; a broken body is reported and the walk goes on.
pub fn decode_stream(input: &[u8], ctx: &SessionContext) -> DecodeReport {
    let mut report = DecodeReport::default();
    let mut rest = input;
    while !rest.is_empty() {
        let len = match next_message_len(rest, ctx) {
            Ok(Some(len)) => len,
            Ok(None) => {
                // Incomplete message at the end of the input.
                let length = match codec::frame(rest, ctx) {
                    Ok(Some(h)) => h.length,
                    _ => codec::HEADER_LEN,
                };
                let e = DecodeError::from(codec::HeaderError::Truncated {
                    length,
                    available: rest.len(),
                });
                report.objects.push(decode_error_json(&e));
                report.failed = true;
                break;
            }
            Err(e) => {
                report.objects.push(decode_error_json(&e.into()));
                report.failed = true;
                break;
            }
        };
        let (msg, tail) = rest.split_at(len);
        rest = tail;
        match codec::decode(msg, ctx) {
            Ok(d) => report.objects.push(decoded_json(&d)),
            Err(e) => {
                report.objects.push(decode_error_json(&e));
                report.failed = true;
            }
        }
    }
    report
}

/// Encodes every JSON message in `text` (any whitespace between objects), ignoring
/// the `treatment` and `errors` fields that `decode` adds.
pub fn encode_stream(text: &str, ctx: &SessionContext) -> Result<Vec<u8>, ToolError> {
    let mut out = Vec::new();
    let stream = serde_json::Deserializer::from_str(text).into_iter::<Message>();
    for (index, msg) in stream.enumerate() {
        let msg = msg.map_err(|source| ToolError::Json { index, source })?;
        codec::encode_into(&msg, ctx, &mut out)
            .map_err(|source| ToolError::Encode { index, source })?;
    }
    Ok(out)
}
