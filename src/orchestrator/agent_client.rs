//! [`HttpAgent`]: the [`PeAgent`] driver over the agent's REST API (`src/api`).
//!
//! Every call has its own deadline, so a hung agent costs one timeout, not the phase's
//! whole budget; errors are [`AgentError`]s naming the agent and the call, and
//! [`AgentError::is_transient`] tells the runtime which are worth another attempt.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use migroute_orchestration::drivers::{AgentError, AgentOp, AgentStatus, PeAgent, LIST_PATH};
use migroute_orchestration::pe::{MigrationId, MigrationSpec, Phase, Role};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use thiserror::Error;

/// Per-call deadline unless the caller sets one: an agent answers from its journal and
/// kernel in milliseconds; seconds mean it is stuck.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the client could not be built.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The token file cannot be read.
    #[error("token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The token file is empty.
    #[error("token file {path}: empty")]
    EmptyToken {
        /// The file.
        path: String,
    },
    /// The base URL is not `http://…` or `https://…`.
    #[error("agent url {url:?}: expected http:// or https://")]
    BadUrl {
        /// The URL.
        url: String,
    },
    /// The CA file to trust is unusable.
    #[error(transparent)]
    Tls(Box<crate::api::tls::TlsError>),
    /// reqwest could not build its client.
    #[error("http client: {0}")]
    Build(#[from] reqwest::Error),
}

/// Reads a bearer token the way the agent does: one line, surrounding whitespace
/// ignored.
pub fn read_token(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClientError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ClientError::EmptyToken {
            path: path.display().to_string(),
        });
    }
    Ok(token.to_owned())
}

/// One entry of `GET /v1/migrations`, the fields a client needs to pick a migration.
// Only `libvirt-watch` (feature `libvirt`) lists migrations.
#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedMigration {
    /// The migration.
    pub id: MigrationId,
    /// Its phase on that PE.
    pub phase: Phase,
    /// That PE's side of the move.
    pub role: Role,
}

/// One agent's REST client.
#[derive(Debug, Clone)]
pub struct HttpAgent {
    base: String,
    token: Option<String>,
    timeout: Duration,
    client: reqwest::Client,
}

impl HttpAgent {
    /// A client of the agent at `base` (e.g. `http://127.0.0.1:8081`), sending
    /// `Authorization: Bearer <token>` when a token is given.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, ClientError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl { url: base.into() });
        }
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()?;
        Ok(HttpAgent {
            base: base.trim_end_matches('/').to_owned(),
            token,
            timeout,
            client,
        })
    }

    /// Also trusts the CA certificates in `ca_file` (PEM), for an agent served over
    /// `https://` with a private CA's certificate.
    pub fn with_ca_file(mut self, ca_file: &Path) -> Result<Self, ClientError> {
        let builder = reqwest::Client::builder().connect_timeout(self.timeout);
        self.client = crate::api::tls::trust_ca(builder, ca_file)
            .map_err(|e| ClientError::Tls(Box::new(e)))?
            .build()?;
        Ok(self)
    }

    /// One call: the HTTP status and body, or an error naming the call. Statuses are
    /// left to the caller (`abort` takes 404 for done).
    async fn call(
        &self,
        op: AgentOp,
        id: &MigrationId,
        body: Option<&MigrationSpec>,
    ) -> Result<(StatusCode, bytes_body::Body), AgentError> {
        self.send(op, &op.path(id), body).await
    }

    /// `GET /v1/migrations`: every migration the agent knows, with its phase and this
    /// PE's role (for `libvirt-watch`, which knows a VM but not its migration's id).
    #[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
    pub async fn list(&self) -> Result<Vec<ListedMigration>, AgentError> {
        let op = AgentOp::List;
        let (status, body) = self.send(op, LIST_PATH, None).await?;
        self.decode(op, status, &body)
    }

    /// A successful answer's JSON body, or the error naming the call.
    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        op: AgentOp,
        status: StatusCode,
        body: &bytes_body::Body,
    ) -> Result<T, AgentError> {
        if !status.is_success() {
            return Err(self.rejected(op, status, body));
        }
        serde_json::from_slice(&body.0).map_err(|e| AgentError::Decode {
            url: self.base.clone(),
            op,
            reason: e.to_string(),
        })
    }

    async fn send(
        &self,
        op: AgentOp,
        path: &str,
        body: Option<&MigrationSpec>,
    ) -> Result<(StatusCode, bytes_body::Body), AgentError> {
        let method = Method::from_bytes(op.method().as_bytes()).unwrap_or(Method::GET);
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method, &url).timeout(self.timeout);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport(op, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport(op, e))?;
        Ok((status, bytes_body::Body(bytes.to_vec())))
    }

    fn transport(&self, op: AgentOp, e: reqwest::Error) -> AgentError {
        if e.is_timeout() {
            AgentError::Timeout {
                url: self.base.clone(),
                op,
                after_ms: self.timeout.as_millis() as u64,
            }
        } else {
            AgentError::Unreachable {
                url: self.base.clone(),
                op,
                reason: error_chain(&e),
            }
        }
    }

    fn rejected(&self, op: AgentOp, status: StatusCode, body: &bytes_body::Body) -> AgentError {
        AgentError::Rejected {
            url: self.base.clone(),
            op,
            status: status.as_u16(),
            message: body.message(),
        }
    }

    async fn expect_ok(
        &self,
        op: AgentOp,
        id: &MigrationId,
        body: Option<&MigrationSpec>,
        also_ok: Option<StatusCode>,
    ) -> Result<(), AgentError> {
        let (status, body) = self.call(op, id, body).await?;
        if status.is_success() || Some(status) == also_ok {
            Ok(())
        } else {
            Err(self.rejected(op, status, &body))
        }
    }
}

/// reqwest's errors hide the cause (connection refused, …) in their source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

mod bytes_body {
    /// A response body kept for the error message.
    pub struct Body(pub Vec<u8>);

    impl Body {
        /// The agent's `{"error": …}` text, or the raw body (shortened).
        pub fn message(&self) -> String {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.0) {
                if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                    return match v.get("field").and_then(|f| f.as_str()) {
                        Some(f) => format!("{e} (field {f})"),
                        None => e.to_owned(),
                    };
                }
            }
            let text = String::from_utf8_lossy(&self.0);
            text.chars().take(200).collect()
        }
    }
}

impl PeAgent for HttpAgent {
    fn prepare(
        &self,
        id: &MigrationId,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<(), AgentError>> + Send {
        self.expect_ok(AgentOp::Prepare, id, Some(spec), None)
    }

    fn switchover(&self, id: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send {
        self.expect_ok(AgentOp::Switchover, id, None, None)
    }

    fn announce(&self, id: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send {
        self.expect_ok(AgentOp::Announce, id, None, None)
    }

    fn complete(&self, id: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send {
        self.expect_ok(AgentOp::Complete, id, None, None)
    }

    fn abort(&self, id: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send {
        // Never prepared there: nothing to undo.
        self.expect_ok(AgentOp::Abort, id, None, Some(StatusCode::NOT_FOUND))
    }

    async fn status(&self, id: &MigrationId) -> Result<AgentStatus, AgentError> {
        let op = AgentOp::Status;
        let (status, body) = self.call(op, id, None).await?;
        self.decode(op, status, &body)
    }
}

#[cfg(test)]
mod tests;
