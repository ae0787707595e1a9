//! Every error the API returns is JSON `{"error": "...", ...}` with the status that
//! says what to do about it; the extra keys name the field (400), the conflicting
//! migration (409) or the phase the migration ended in (500).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use migroute_orchestration::pe::{ConflictReason, PeError, RegistryError, SpecError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::agent::runtime::AgentError;

/// The body of every error response.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
    /// 400: the request field at fault (dotted path, `prefixes[1]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// 409: the migration the request conflicts with (may be the requested one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// 409/500: the phase the migration is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                ..ErrorBody::default()
            },
        }
    }

    /// 400 naming `field`.
    pub fn bad_field(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        let field = field.into();
        let mut e = Self::new(StatusCode::BAD_REQUEST, format!("{field}: {reason}"));
        e.body.field = Some(field);
        e
    }

    /// 401.
    pub fn unauthorized(reason: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, reason)
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    }

    /// 413.
    pub fn too_large(reason: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, format!("body: {reason}"))
    }

    /// 500 after an action failed; the migration went on to `phase`.
    pub fn action_failed(id: &str, phase: &str, errors: &[(u64, String)]) -> Self {
        let detail: Vec<String> = errors
            .iter()
            .map(|(seq, e)| format!("command {seq}: {e}"))
            .collect();
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "action failed ({}); migration is now {phase}",
                detail.join("; ")
            ),
        );
        e.body.id = Some(id.to_owned());
        e.body.phase = Some(phase.to_owned());
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// The request field a spec error is about.
pub fn spec_field(e: &SpecError) -> &'static str {
    match e {
        SpecError::BadId(_) => "id",
        SpecError::NoPrefixes | SpecError::NotHostRoute(_) | SpecError::DuplicatePrefix(_) => {
            "prefixes"
        }
        SpecError::BadVni(_) => "tunnel.vni",
        SpecError::NoPeerApi => "peer.api_url",
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Registry(r) => r.into(),
            AgentError::Journal(_) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            AgentError::Stopped => Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match &e {
            RegistryError::Spec(s) => Self::bad_field(spec_field(s), s),
            RegistryError::Conflict { id, reason } => {
                let mut a = Self::new(StatusCode::CONFLICT, e.to_string());
                a.body.id = Some(id.to_string());
                if let ConflictReason::PrefixInUse(p) = reason {
                    a.body.field = Some(format!("prefixes ({p})"));
                }
                a
            }
            RegistryError::NotFound(_)
            | RegistryError::NoMigrationFor(_)
            | RegistryError::NoMigrationForMac(_) => Self::not_found(e.to_string()),
            RegistryError::Machine(m) => {
                let mut a = Self::new(StatusCode::CONFLICT, e.to_string());
                match m {
                    PeError::InvalidEvent { id, phase, .. } => {
                        a.body.id = Some(id.to_string());
                        a.body.phase = Some(phase.to_string());
                    }
                    PeError::WrongRole { id, .. } | PeError::UnknownCommand { id, .. } => {
                        a.body.id = Some(id.to_string());
                    }
                }
                a
            }
        }
    }
}
