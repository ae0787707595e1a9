//! `GET /metrics`: Prometheus text.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::error::ErrorBody;
use super::ApiState;

/// Migrations by phase, phase durations, override install latency, BGP sessions and
/// UPDATE counts.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "Prometheus text exposition 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, body = ErrorBody),
    ),
    tag = "ops"
)]
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&*state.announcer),
    )
}
