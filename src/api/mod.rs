//! The REST API: axum routes, bearer auth, JSON errors, and the OpenAPI document
//! generated from the handlers.
//!
//! Handlers hold only an [`AgentHandle`]: every state change goes through the owner
//! task, so the API never touches the machines or the journal itself.

pub mod auth;
pub mod bgp;
pub mod error;
pub mod events;
pub mod health;
pub mod metrics;
pub mod migrations;
pub mod openapi;
pub mod tls;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::{broadcast, watch};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::agent::announcer::RouteAnnouncer;
use crate::agent::metrics::Metrics;
use crate::agent::runtime::{AgentEvent, AgentHandle};
use error::ApiError;
use migrations::RequestRules;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    /// The owner task.
    pub agent: AgentHandle,
    /// The bearer token.
    pub token: Arc<str>,
    /// Transition fan-out for SSE.
    pub events: broadcast::Sender<AgentEvent>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// BGP.
    pub announcer: Arc<dyn RouteAnnouncer>,
    /// Body checks and defaults.
    pub rules: Arc<RequestRules>,
    /// Largest body.
    pub max_body_bytes: usize,
    /// Flips to `true` on shutdown (ends SSE streams).
    pub shutdown: watch::Receiver<bool>,
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().2
}

/// Token-protected routes, `/healthz`, and the document describing both.
fn parts() -> (Router<ApiState>, Router<ApiState>, utoipa::openapi::OpenApi) {
    let (protected, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(
            migrations::put_migration,
            migrations::get_migration
        ))
        .routes(routes!(migrations::list_migrations))
        .routes(routes!(migrations::switchover))
        .routes(routes!(migrations::announce))
        .routes(routes!(migrations::complete))
        .routes(routes!(migrations::abort))
        .routes(routes!(events::events))
        .routes(routes!(bgp::peers))
        .routes(routes!(bgp::routes))
        .routes(routes!(metrics::metrics))
        .split_for_parts();
    let (health, health_doc) = OpenApiRouter::<ApiState>::new()
        .routes(routes!(health::healthz))
        .split_for_parts();
    doc.merge(health_doc);
    (protected, health, doc)
}

/// The whole application.
pub fn router(state: ApiState) -> Router {
    let (protected, health, doc) = parts();
    let doc = Arc::new(doc);
    let protected = protected.route(
        "/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { Json((*doc).clone()) }
        }),
    );
    protected
        .merge(health)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Outermost, so unknown routes are 401 too without a token.
        .layer(axum::middleware::from_fn_with_state(
            state.token.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}
