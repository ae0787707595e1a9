//! The QMP wire protocol as a sans-IO machine: bytes in ([`Protocol::handle_input`]),
//! bytes out ([`Protocol::poll_transmit`]), parsed greeting, responses and events out
//! ([`Protocol::poll_output`]). No sockets, no clock.
//!
//! QMP (QEMU Machine Protocol) is line-delimited JSON: the server greets with
//! `{"QMP": {...}}`, the client must send `qmp_capabilities` before anything else, then
//! every command may carry an `id` that its `{"return": ...}` or `{"error": ...}` echoes.
//! Asynchronous `{"event": ...}` lines may arrive between any two lines. This machine
//! numbers commands itself, sends `qmp_capabilities` on the greeting, and holds
//! commands submitted earlier until that negotiation succeeded.
//!
//! Method order, as in quinn-proto: feed input with `handle_input`, then drain
//! `poll_transmit` (bytes to write) and `poll_output` (what happened), in any order.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use thiserror::Error;

/// A command's number, echoed by its response.
pub type CommandId = u64;

/// QEMU's version, from the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct QemuVersion {
    /// Major version (e.g. 10).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Micro version.
    pub micro: u32,
}

/// What the server said about itself when the connection opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The QEMU version.
    pub version: QemuVersion,
    /// Distribution package string, e.g. `Debian 1:10.0.2+ds-2`.
    pub package: String,
    /// Capabilities the server offers (e.g. `oob`); none is enabled by this client.
    pub capabilities: Vec<String>,
}

/// An asynchronous event, e.g. `BLOCK_JOB_READY`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// Its `data` member (`Value::Null` when absent).
    pub data: Value,
    /// Server time as (seconds, microseconds), when given.
    pub timestamp: Option<(i64, i64)>,
}

/// A command the server refused or failed: QMP's `{"error": {"class", "desc"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{class}: {desc}")]
pub struct CommandError {
    /// Error class, almost always `GenericError`.
    pub class: String,
    /// Human-readable reason.
    pub desc: String,
}

/// What [`Protocol::poll_output`] returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Capabilities negotiated: commands can flow. Comes once, before any response.
    Connected(Greeting),
    /// The answer to the command numbered `id`.
    Response {
        /// The number [`Protocol::send`] returned.
        id: CommandId,
        /// `return` member, or the error.
        result: Result<Value, CommandError>,
    },
    /// An asynchronous event.
    Event(Event),
}

/// The peer broke the protocol; the connection is unusable afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// A line is not a JSON object.
    #[error("line is not a JSON object ({reason}): {line}")]
    BadJson {
        /// The line (truncated to 200 bytes).
        line: String,
        /// The parser's reason.
        reason: String,
    },
    /// The first line is not a QMP greeting.
    #[error("expected the QMP greeting, got: {0}")]
    NoGreeting(String),
    /// `qmp_capabilities` was refused.
    #[error("capabilities negotiation refused: {0}")]
    Negotiation(CommandError),
    /// A response whose `id` matches no command in flight (or has no id at all, which
    /// QEMU does when it could not parse what it got).
    #[error("response to no command in flight: {0}")]
    UnmatchedResponse(String),
    /// A line that is neither greeting, response nor event.
    #[error("unexpected message: {0}")]
    Unexpected(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitGreeting,
    Negotiating(CommandId),
    Ready,
    Broken,
}

/// The client side of one QMP connection. See the module documentation.
#[derive(Debug)]
pub struct Protocol {
    state: State,
    rx: Vec<u8>,
    tx: VecDeque<Vec<u8>>,
    held: VecDeque<Vec<u8>>,
    in_flight: HashMap<CommandId, String>,
    next_id: CommandId,
    outputs: VecDeque<Output>,
    greeting: Option<Greeting>,
}

impl Default for Protocol {
    fn default() -> Self {
        Self::new()
    }
}

const MAX_LINE: usize = 64 << 20;

fn truncated(line: &str) -> String {
    line.chars().take(200).collect()
}

impl Protocol {
    /// A connection just opened: waiting for the greeting.
    pub fn new() -> Self {
        Protocol {
            state: State::AwaitGreeting,
            rx: Vec::new(),
            tx: VecDeque::new(),
            held: VecDeque::new(),
            in_flight: HashMap::new(),
            next_id: 1,
            outputs: VecDeque::new(),
            greeting: None,
        }
    }

    // ---- getters ----

    /// Whether capabilities are negotiated.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// The greeting, once received.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Names of the commands sent (or held) and not answered yet, by number.
    pub fn in_flight(&self) -> impl Iterator<Item = (CommandId, &str)> {
        self.in_flight.iter().map(|(id, c)| (*id, c.as_str()))
    }

    // ---- mutators ----

    /// Queues `command` with `arguments` (an object, or `Value::Null` for none) and
    /// returns the number its response will carry. Held until capabilities are
    /// negotiated.
    pub fn send(&mut self, command: &str, arguments: Value) -> CommandId {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = Map::new();
        msg.insert("execute".into(), Value::String(command.into()));
        if !arguments.is_null() {
            msg.insert("arguments".into(), arguments);
        }
        msg.insert("id".into(), Value::from(id));
        let mut line = serde_json::to_vec(&Value::Object(msg)).expect("JSON value serializes");
        line.push(b'\n');
        self.in_flight.insert(id, command.to_string());
        if self.state == State::Ready {
            self.tx.push_back(line);
        } else {
            self.held.push_back(line);
        }
        id
    }

    // ---- handle_* ----

    /// Feeds bytes read from the connection; complete lines are parsed at once. After an
    /// error the machine is broken and ignores further input.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        if self.state == State::Broken {
            return Ok(());
        }
        self.rx.extend_from_slice(bytes);
        let mut start = 0;
        let mut result = Ok(());
        while let Some(pos) = self.rx[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let line = String::from_utf8_lossy(&self.rx[start..end]).into_owned();
            start = end + 1;
            if line.trim().is_empty() {
                continue;
            }
            if let Err(e) = self.handle_line(line.trim()) {
                self.state = State::Broken;
                result = Err(e);
                break;
            }
        }
        self.rx.drain(..start);
        if result.is_ok() && self.rx.len() > MAX_LINE {
            self.state = State::Broken;
            return Err(ProtocolError::BadJson {
                line: truncated(&String::from_utf8_lossy(&self.rx)),
                reason: format!("no end of line after {MAX_LINE} bytes"),
            });
        }
        result
    }

    fn handle_line(&mut self, line: &str) -> Result<(), ProtocolError> {
        let value: Value = serde_json::from_str(line).map_err(|e| ProtocolError::BadJson {
            line: truncated(line),
            reason: e.to_string(),
        })?;
        let Value::Object(mut obj) = value else {
            return Err(ProtocolError::BadJson {
                line: truncated(line),
                reason: "not an object".into(),
            });
        };
        if let State::AwaitGreeting = self.state {
            let greeting = obj
                .remove("QMP")
                .and_then(parse_greeting)
                .ok_or_else(|| ProtocolError::NoGreeting(truncated(line)))?;
            self.greeting = Some(greeting);
            let id = self.next_id;
            self.next_id += 1;
            let mut l = serde_json::to_vec(&serde_json::json!({
                "execute": "qmp_capabilities",
                "id": id,
            }))
            .expect("JSON value serializes");
            l.push(b'\n');
            self.tx.push_back(l);
            self.state = State::Negotiating(id);
            return Ok(());
        }
        if let Some(name) = obj.get("event").and_then(Value::as_str) {
            let timestamp = obj.get("timestamp").and_then(|t| {
                Some((
                    t.get("seconds")?.as_i64()?,
                    t.get("microseconds")?.as_i64()?,
                ))
            });
            self.outputs.push_back(Output::Event(Event {
                name: name.to_string(),
                data: obj.remove("data").unwrap_or(Value::Null),
                timestamp,
            }));
            return Ok(());
        }
        let result = if let Some(r) = obj.remove("return") {
            Ok(r)
        } else if let Some(e) = obj.remove("error") {
            Err(CommandError {
                class: e
                    .get("class")
                    .and_then(Value::as_str)
                    .unwrap_or("GenericError")
                    .to_string(),
                desc: e
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
        } else {
            return Err(ProtocolError::Unexpected(truncated(line)));
        };
        let id = obj
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| ProtocolError::UnmatchedResponse(truncated(line)))?;
        if let State::Negotiating(nid) = self.state {
            if id != nid {
                return Err(ProtocolError::UnmatchedResponse(truncated(line)));
            }
            result.map_err(ProtocolError::Negotiation)?;
            self.state = State::Ready;
            self.tx.append(&mut self.held);
            let greeting = self.greeting.clone().expect("greeting before negotiation");
            self.outputs.push_back(Output::Connected(greeting));
            return Ok(());
        }
        if self.in_flight.remove(&id).is_none() {
            return Err(ProtocolError::UnmatchedResponse(truncated(line)));
        }
        self.outputs.push_back(Output::Response { id, result });
        Ok(())
    }

    // ---- poll_* ----

    /// The next bytes to write, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// The next parsed message, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }
}

fn parse_greeting(v: Value) -> Option<Greeting> {
    let version = v.get("version")?;
    Some(Greeting {
        version: QemuVersion::deserialize(version.get("qemu")?).ok()?,
        package: version
            .get("package")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string(),
        capabilities: v
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
