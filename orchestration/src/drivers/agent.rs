//! [`PeAgent`]: the orchestrator's view of one PE agent's REST API.

use crate::pe::{MigrationId, MigrationSpec, Phase};
use crate::Time;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use thiserror::Error;

/// Where [`AgentOp::List`] goes.
pub const LIST_PATH: &str = "/v1/migrations";

/// One call of the agent API. Kept here (not in the HTTP client) so the client, its
/// errors and the tests agree on methods and paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentOp {
    /// `PUT /v1/migrations/{id}` with the [`MigrationSpec`].
    Prepare,
    /// `POST /v1/migrations/{id}/switchover`.
    Switchover,
    /// `POST /v1/migrations/{id}/announce`.
    Announce,
    /// `POST /v1/migrations/{id}/complete`.
    Complete,
    /// `POST /v1/migrations/{id}/abort`.
    Abort,
    /// `GET /v1/migrations/{id}`.
    Status,
    /// `GET /v1/migrations`: every migration the agent knows.
    List,
}

impl AgentOp {
    /// The HTTP method.
    pub fn method(self) -> &'static str {
        match self {
            AgentOp::Prepare => "PUT",
            AgentOp::Status | AgentOp::List => "GET",
            _ => "POST",
        }
    }

    /// The path below the agent's base URL. `id` is safe in a path: migration ids are
    /// `[A-Za-z0-9._-]` only. [`AgentOp::List`] names no migration and ignores it.
    pub fn path(self, id: &MigrationId) -> String {
        let base = format!("/v1/migrations/{id}");
        match self {
            AgentOp::List => LIST_PATH.into(),
            AgentOp::Prepare | AgentOp::Status => base,
            AgentOp::Switchover => base + "/switchover",
            AgentOp::Announce => base + "/announce",
            AgentOp::Complete => base + "/complete",
            AgentOp::Abort => base + "/abort",
        }
    }
}

impl fmt::Display for AgentOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgentOp::Prepare => "prepare",
            AgentOp::Switchover => "switchover",
            AgentOp::Announce => "announce",
            AgentOp::Complete => "complete",
            AgentOp::Abort => "abort",
            AgentOp::Status => "status",
            AgentOp::List => "list",
        })
    }
}

/// The part of the agent's `GET /v1/migrations/{id}` answer the orchestrator uses.
/// Unknown fields are ignored, so the agent may add to its status freely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The migration.
    pub id: MigrationId,
    /// Its phase on that PE.
    pub phase: Phase,
    /// The agent's next deadline, if any.
    #[serde(default)]
    pub next_deadline: Option<Time>,
}

/// Why an agent call failed. Each names the agent and the call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AgentError {
    /// No HTTP answer (connection refused, TLS, DNS).
    #[error("agent {url}: {op}: unreachable: {reason}")]
    Unreachable {
        /// The agent's base URL.
        url: String,
        /// The call.
        op: AgentOp,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("agent {url}: {op}: no answer within {after_ms} ms")]
    Timeout {
        /// The agent's base URL.
        url: String,
        /// The call.
        op: AgentOp,
        /// How long we waited.
        after_ms: u64,
    },
    /// The agent answered with an error status (400, 404, 409, 5xx).
    #[error("agent {url}: {op}: HTTP {status}: {message}")]
    Rejected {
        /// The agent's base URL.
        url: String,
        /// The call.
        op: AgentOp,
        /// The HTTP status.
        status: u16,
        /// The agent's error message.
        message: String,
    },
    /// The answer does not decode.
    #[error("agent {url}: {op}: undecodable answer: {reason}")]
    Decode {
        /// The agent's base URL.
        url: String,
        /// The call.
        op: AgentOp,
        /// Why.
        reason: String,
    },
}

impl AgentError {
    /// Worth retrying: the agent may not have seen the call (the API is idempotent, so
    /// retrying one it did see is harmless too).
    pub fn is_transient(&self) -> bool {
        match self {
            AgentError::Unreachable { .. } | AgentError::Timeout { .. } => true,
            AgentError::Rejected { status, .. } => *status >= 500,
            AgentError::Decode { .. } => false,
        }
    }
}

/// REST client of one PE agent (the driver is built from the plan's `[source]` or
/// `[destination]`). Every call is idempotent on the agent's side: a repeated `PUT`
/// with the same body is 200, a repeated `switchover` or `announce` is accepted.
pub trait PeAgent: Send + Sync {
    /// `PUT /v1/migrations/{id}`: creates the tunnel (and, at the destination, readies
    /// delivery). Returns once the agent answered 200/201.
    fn prepare(
        &self,
        id: &MigrationId,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<(), AgentError>> + Send;

    /// `POST …/switchover`: source installs the override, destination delivers from
    /// the tunnel. Returns once the agent acknowledged: the override is in place.
    fn switchover(&self, id: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send;

    /// `POST …/announce`: destination announces its more-preferred route; source starts
    /// watching its tunnel go quiet.
    fn announce(&self, id: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send;

    /// `POST …/complete`: tear down now.
    fn complete(&self, id: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send;

    /// `POST …/abort`: undo in reverse. Must return `Ok` on 404 (never prepared).
    fn abort(&self, id: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send;

    /// `GET /v1/migrations/{id}`.
    fn status(
        &self,
        id: &MigrationId,
    ) -> impl Future<Output = Result<AgentStatus, AgentError>> + Send;
}
