//! `/v1/bgp/*`: what the speaker says about its peers and what it announces.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::ApiState;
use crate::agent::announcer::PeerInfo;

/// One announced route.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RouteView {
    /// The host route.
    pub prefix: String,
    /// LOCAL_PREF, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// MED, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    /// Communities.
    pub communities: Vec<String>,
}

/// BGP peers and session states (empty when no peers are configured).
#[utoipa::path(
    get,
    path = "/v1/bgp/peers",
    responses((status = 200, body = Vec<PeerInfo>), (status = 401, body = ErrorBody)),
    tag = "bgp"
)]
pub async fn peers(State(state): State<ApiState>) -> Json<Vec<PeerInfo>> {
    Json(state.announcer.peers())
}

/// Routes this agent announces.
#[utoipa::path(
    get,
    path = "/v1/bgp/routes",
    responses((status = 200, body = Vec<RouteView>), (status = 401, body = ErrorBody)),
    tag = "bgp"
)]
pub async fn routes(State(state): State<ApiState>) -> Json<Vec<RouteView>> {
    Json(
        state
            .announcer
            .routes()
            .into_iter()
            .map(|r| RouteView {
                prefix: r.prefix.to_string(),
                local_pref: r.attrs.local_pref,
                med: r.attrs.med,
                communities: r
                    .attrs
                    .communities
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            })
            .collect(),
    )
}
