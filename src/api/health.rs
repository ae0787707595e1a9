//! `GET /healthz`: unauthenticated liveness, for systemd and load balancers.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the agent answers: recovery finished before it listened.
    pub status: &'static str,
}

/// The agent is up and has recovered.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)), tag = "ops", security(()))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}
