//! `GET /v1/events`: server-sent events of every transition, error and notice.
//!
//! Each subscriber gets its own broadcast receiver; a slow one that falls behind is
//! told how many events it missed (`event: lagged`) instead of stalling the runtime.
//! Streams end when the agent shuts down, so graceful shutdown does not wait on them.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{Stream, StreamExt};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::error::ErrorBody;
use super::ApiState;

/// Transitions as they happen: `event: phase|error|notice`, `data:` an `AgentEvent`.
#[utoipa::path(
    get,
    path = "/v1/events",
    responses(
        (status = 200, description = "text/event-stream of AgentEvent objects", body = crate::agent::runtime::AgentEvent, content_type = "text/event-stream"),
        (status = 401, body = ErrorBody),
    ),
    tag = "migrations"
)]
pub async fn events(
    State(state): State<ApiState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.events.subscribe();
    let mut stop = state.shutdown.clone();
    let stream = BroadcastStream::new(rx)
        .map(|item| {
            let ev = match item {
                Ok(e) => Event::default()
                    .event(e.kind.clone())
                    .json_data(&e)
                    .unwrap_or_else(|_| Event::default().event("error")),
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    Event::default().event("lagged").data(n.to_string())
                }
            };
            Ok(ev)
        })
        .take_until(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
