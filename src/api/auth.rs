//! Bearer-token check for every route but `/healthz`, unknown routes included (a
//! caller without the token learns nothing about what exists). Shared by the agent's
//! and the orchestrator's APIs: the middleware's state is the token alone.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use super::error::ApiError;

/// Lets the request through only with `Authorization: Bearer <token>`. Install with
/// `axum::middleware::from_fn_with_state(token, require_token)`.
pub async fn require_token(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => ApiError::unauthorized("missing bearer token").into_response(),
        Some(t) if !constant_time_eq(t.trim().as_bytes(), token.as_bytes()) => {
            ApiError::unauthorized("wrong bearer token").into_response()
        }
        Some(_) => next.run(req).await,
    }
}

/// Compares without an early exit, so response time does not tell how much of a
/// guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(!constant_time_eq(b"abc\xff", b"abc"));
    }
}
