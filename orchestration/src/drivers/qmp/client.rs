//! [`QmpClient`]: the thin tokio layer around [`Protocol`]. One task owns the socket
//! and the machine; callers send commands through a channel and get their answer on a
//! oneshot, events fan out on a broadcast channel. A QMP monitor serves one client at a
//! time, so one `QmpClient` (cheap to clone) is shared by everything that talks to a
//! given QEMU.

use super::protocol::{CommandError, Event, Greeting, Output, Protocol, ProtocolError};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Where a QMP monitor listens: `unix:/path`, a bare absolute path, or `tcp:host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A unix socket.
    Unix(String),
    /// A TCP address (`host:port`).
    Tcp(String),
}

impl Endpoint {
    /// Parses the plan's spelling.
    pub fn parse(s: &str) -> Option<Endpoint> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix:") {
            (!p.is_empty()).then(|| Endpoint::Unix(p.to_string()))
        } else if let Some(a) = s.strip_prefix("tcp:") {
            a.rsplit_once(':')
                .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                .map(|_| Endpoint::Tcp(a.to_string()))
        } else if s.starts_with('/') {
            Some(Endpoint::Unix(s.to_string()))
        } else {
            None
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{p}"),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Why a QMP exchange failed. Each names the monitor or the command.
#[derive(Debug, Clone, Error)]
pub enum QmpError {
    /// The socket cannot be opened.
    #[error("QMP {endpoint}: cannot connect: {reason}")]
    Connect {
        /// The monitor.
        endpoint: String,
        /// The OS's reason.
        reason: String,
    },
    /// The connection ended (QEMU exited, or the socket broke) before the answer.
    #[error("QMP {endpoint}: connection closed")]
    Closed {
        /// The monitor.
        endpoint: String,
    },
    /// The peer does not speak QMP as expected.
    #[error("QMP {endpoint}: {source}")]
    Protocol {
        /// The monitor.
        endpoint: String,
        /// What was wrong.
        #[source]
        source: ProtocolError,
    },
    /// QEMU refused or failed the command.
    #[error("QMP {command}: {source}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error.
        #[source]
        source: CommandError,
    },
}

impl QmpError {
    /// QEMU's error description, if QEMU answered with an error.
    pub fn desc(&self) -> Option<&str> {
        match self {
            QmpError::Command { source, .. } => Some(&source.desc),
            _ => None,
        }
    }
}

struct Request {
    command: String,
    arguments: Value,
    reply: oneshot::Sender<Result<Value, QmpError>>,
}

/// A connected, negotiated QMP monitor. Clones share the connection; it closes when
/// the last clone is dropped or the peer goes away.
#[derive(Clone)]
pub struct QmpClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    greeting: Greeting,
    requests: mpsc::UnboundedSender<Request>,
    events: broadcast::Sender<Event>,
}

impl fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QmpClient")
            .field("endpoint", &self.inner.endpoint)
            .field("version", &self.inner.greeting.version)
            .finish()
    }
}

impl QmpClient {
    /// Connects to `endpoint` and negotiates capabilities.
    pub async fn connect(endpoint: &Endpoint) -> Result<QmpClient, QmpError> {
        let connect_err = |e: std::io::Error| QmpError::Connect {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        };
        match endpoint {
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(connect_err)?;
                Self::over(s, endpoint.clone()).await
            }
            Endpoint::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(connect_err)?;
                let _ = s.set_nodelay(true);
                Self::over(s, endpoint.clone()).await
            }
        }
    }

    /// Runs the protocol over an already-open stream (tests use an in-memory duplex).
    pub async fn over<S>(stream: S, endpoint: Endpoint) -> Result<QmpClient, QmpError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (greeted_tx, greeted_rx) = oneshot::channel();
        let (requests, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        tokio::spawn(drive(
            stream,
            endpoint.clone(),
            rx,
            events.clone(),
            greeted_tx,
        ));
        let greeting = greeted_rx.await.unwrap_or_else(|_| {
            Err(QmpError::Closed {
                endpoint: endpoint.to_string(),
            })
        })?;
        Ok(QmpClient {
            inner: Arc::new(Inner {
                endpoint,
                greeting,
                requests,
                events,
            }),
        })
    }

    /// What QEMU said when the connection opened.
    pub fn greeting(&self) -> &Greeting {
        &self.inner.greeting
    }

    /// The monitor's address.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Whether the connection is gone (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.inner.requests.is_closed()
    }

    /// Events from now on. A receiver that lags behind by more than 1024 events misses
    /// some (`RecvError::Lagged`); the channel closes with the connection.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Runs `command` with `arguments` (`Value::Null` for none) and returns its
    /// `return` member.
    pub async fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let (reply, rx) = oneshot::channel();
        let closed = || QmpError::Closed {
            endpoint: self.inner.endpoint.to_string(),
        };
        self.inner
            .requests
            .send(Request {
                command: command.to_string(),
                arguments,
                reply,
            })
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

/// The connection task: the only code touching the socket.
async fn drive<S>(
    stream: S,
    endpoint: Endpoint,
    mut requests: mpsc::UnboundedReceiver<Request>,
    events: broadcast::Sender<Event>,
    greeted: oneshot::Sender<Result<Greeting, QmpError>>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut proto = Protocol::new();
    let mut waiting: HashMap<u64, (String, oneshot::Sender<Result<Value, QmpError>>)> =
        HashMap::new();
    let mut greeted = Some(greeted);
    let mut buf = vec![0u8; 64 * 1024];
    let failure = loop {
        let mut write_failed = false;
        while let Some(bytes) = proto.poll_transmit() {
            if wr.write_all(&bytes).await.is_err() {
                write_failed = true;
                break;
            }
        }
        if write_failed {
            break None;
        }
        while let Some(out) = proto.poll_output() {
            match out {
                Output::Connected(g) => {
                    if let Some(tx) = greeted.take() {
                        let _ = tx.send(Ok(g));
                    }
                }
                Output::Response { id, result } => {
                    if let Some((command, tx)) = waiting.remove(&id) {
                        let _ =
                            tx.send(result.map_err(|source| QmpError::Command { command, source }));
                    }
                }
                Output::Event(e) => {
                    let _ = events.send(e);
                }
            }
        }
        tokio::select! {
            req = requests.recv(), if greeted.is_none() => match req {
                Some(r) => {
                    let id = proto.send(&r.command, r.arguments);
                    waiting.insert(id, (r.command, r.reply));
                }
                None => break None,
            },
            n = rd.read(&mut buf) => match n {
                Ok(0) | Err(_) => break None,
                Ok(n) => {
                    if let Err(source) = proto.handle_input(&buf[..n]) {
                        break Some(QmpError::Protocol { endpoint: endpoint.to_string(), source });
                    }
                }
            },
        }
    };
    // Closed before the waiters hear of it, so that `is_closed` is already true when
    // they do.
    requests.close();
    let err = failure.unwrap_or(QmpError::Closed {
        endpoint: endpoint.to_string(),
    });
    if let Some(tx) = greeted.take() {
        let _ = tx.send(Err(err.clone()));
    }
    for (_, (_, tx)) in waiting.drain() {
        let _ = tx.send(Err(err.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// A scripted QMP server on the other end of an in-memory pipe: greets, accepts
    /// capabilities, then answers `query-block-jobs` after emitting an event, and
    /// `boom` with an error, in the order the client sent them.
    async fn fake_server(stream: tokio::io::DuplexStream) {
        let (rd, mut wr) = tokio::io::split(stream);
        let mut lines = BufReader::new(rd).lines();
        wr.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n")
            .await
            .unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let cmd: Value = serde_json::from_str(&line).unwrap();
            let id = &cmd["id"];
            let reply = match cmd["execute"].as_str().unwrap() {
                "qmp_capabilities" => json!({"return": {}, "id": id}),
                "query-block-jobs" => {
                    let ev = json!({"event": "BLOCK_JOB_READY", "data": {"device": "mj"},
                        "timestamp": {"seconds": 1, "microseconds": 2}});
                    wr.write_all(format!("{ev}\r\n").as_bytes()).await.unwrap();
                    json!({"return": [], "id": id})
                }
                _ => {
                    json!({"error": {"class": "CommandNotFound", "desc": "The command boom has not been found"}, "id": id})
                }
            };
            // Split each answer in two writes: the client must reassemble.
            let text = format!("{reply}\r\n");
            let (a, b) = text.split_at(text.len() / 2);
            wr.write_all(a.as_bytes()).await.unwrap();
            wr.flush().await.unwrap();
            wr.write_all(b.as_bytes()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn commands_events_errors_and_close_over_a_stream() {
        let (client_end, server_end) = tokio::io::duplex(4096);
        let server = tokio::spawn(fake_server(server_end));
        let c = QmpClient::over(client_end, Endpoint::Unix("/fake.qmp".into()))
            .await
            .unwrap();
        assert_eq!(c.greeting().version.major, 7);
        let mut events = c.subscribe();
        let (jobs, boom) = tokio::join!(
            c.execute("query-block-jobs", Value::Null),
            c.execute("boom", json!({"x": 1}))
        );
        assert_eq!(jobs.unwrap(), json!([]));
        let err = boom.unwrap_err();
        assert!(matches!(&err, QmpError::Command { command, source }
            if command == "boom" && source.class == "CommandNotFound"));
        assert_eq!(err.desc(), Some("The command boom has not been found"));
        assert_eq!(events.recv().await.unwrap().name, "BLOCK_JOB_READY");
        server.abort();
        let _ = server.await;
        let closed = c.execute("query-block-jobs", Value::Null).await;
        assert!(matches!(closed, Err(QmpError::Closed { .. })), "{closed:?}");
        assert!(c.is_closed());
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("unix:/run/a.qmp"),
            Some(Endpoint::Unix("/run/a.qmp".into()))
        );
        assert_eq!(
            Endpoint::parse("/run/a.qmp"),
            Some(Endpoint::Unix("/run/a.qmp".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp:host-b:4444"),
            Some(Endpoint::Tcp("host-b:4444".into()))
        );
        for bad in ["a.qmp", "tcp:host-b", "tcp::4444", "unix:"] {
            assert_eq!(Endpoint::parse(bad), None, "{bad}");
        }
    }
}
