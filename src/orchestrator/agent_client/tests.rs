//! The HTTP client against a stand-in agent on loopback: methods, paths, the bearer
//! token, and how each HTTP outcome maps to an `AgentError` (transient or not).

use super::*;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use migroute_orchestration::pe::{Phase, Role};
use serde_json::json;

const TOKEN: &str = "client-test-token-0123";

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn serve() -> String {
    let app = Router::new()
        .route(
            "/v1/migrations",
            get(|| async {
                Json(json!([
                    {"id": "m1", "phase": "prepared", "role": "source", "prefixes": ["10.10.0.5/32"]},
                    {"id": "m2", "phase": "torn-down", "role": "destination"},
                ]))
            }),
        )
        .route(
            "/v1/migrations/m1",
            get(|h: HeaderMap| async move {
                if !authorized(&h) {
                    return (axum::http::StatusCode::UNAUTHORIZED, Json(json!({"error": "token"})));
                }
                (
                    axum::http::StatusCode::OK,
                    Json(json!({"id": "m1", "phase": "switched-over", "role": "source", "extra": [1]})),
                )
            })
            .put(|h: HeaderMap, Json(body): Json<serde_json::Value>| async move {
                if !authorized(&h) {
                    return (axum::http::StatusCode::UNAUTHORIZED, Json(json!({"error": "token"})));
                }
                assert_eq!(body["role"], "source");
                assert_eq!(body["tunnel"]["kind"], "vxlan");
                (axum::http::StatusCode::CREATED, Json(json!({"id": "m1"})))
            }),
        )
        .route(
            "/v1/migrations/m1/switchover",
            post(|| async {
                (
                    axum::http::StatusCode::CONFLICT,
                    Json(json!({"error": "not prepared", "phase": "aborted"})),
                )
            }),
        )
        .route(
            "/v1/migrations/m1/announce",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/v1/migrations/m1/complete",
            post(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "draining") }),
        )
        .route(
            "/v1/migrations/m1/abort",
            post(|| async { (axum::http::StatusCode::NOT_FOUND, Json(json!({"error": "no such"}))) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn spec() -> MigrationSpec {
    serde_json::from_value(json!({
        "prefixes": ["10.10.0.5/32"],
        "role": "source",
        "peer": {"tunnel_endpoint": "10.0.23.3", "api_url": "http://127.0.0.1:9"},
        "tunnel": {"kind": "vxlan", "vni": 9},
    }))
    .unwrap()
}

#[tokio::test]
async fn maps_http_outcomes_to_agent_errors() {
    let base = serve().await;
    let id = MigrationId::new("m1").unwrap();
    let agent = HttpAgent::new(&base, Some(TOKEN.into()), Duration::from_millis(300)).unwrap();
    assert_eq!(spec().role, Role::Source);
    agent.prepare(&id, &spec()).await.unwrap();
    let st = agent.status(&id).await.unwrap();
    assert_eq!((st.id.as_str(), st.phase), ("m1", Phase::SwitchedOver));
    let listed = agent.list().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.id.as_str(), m.phase, m.role))
            .collect::<Vec<_>>(),
        [
            ("m1", Phase::Prepared, Role::Source),
            ("m2", Phase::TornDown, Role::Destination)
        ]
    );
    // 404 on abort: never prepared there, nothing to undo.
    agent.abort(&id).await.unwrap();

    let e = agent.switchover(&id).await.unwrap_err();
    assert!(
        matches!(&e, AgentError::Rejected { status: 409, op: AgentOp::Switchover, message, .. } if message == "not prepared"),
        "{e:?}"
    );
    assert!(!e.is_transient());
    let e = agent.complete(&id).await.unwrap_err();
    assert!(
        matches!(e, AgentError::Rejected { status: 503, .. }),
        "{e:?}"
    );
    assert!(e.is_transient());
    let e = agent.announce(&id).await.unwrap_err();
    assert!(
        matches!(
            e,
            AgentError::Timeout {
                after_ms: 300,
                op: AgentOp::Announce,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient());

    // Without the token the agent refuses: 401, not retried.
    let anon = HttpAgent::new(&base, None, Duration::from_millis(300)).unwrap();
    let e = anon.status(&id).await.unwrap_err();
    assert!(
        matches!(e, AgentError::Rejected { status: 401, .. }),
        "{e:?}"
    );
    assert!(!e.is_transient());
}

#[tokio::test]
async fn unreachable_agent_is_transient_and_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let agent = HttpAgent::new(&base, None, Duration::from_millis(300)).unwrap();
    let e = agent
        .status(&MigrationId::new("m1").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AgentError::Unreachable { url, .. } if *url == base),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert!(e.to_string().contains(&base), "{e}");
}

#[test]
fn bad_urls_and_tokens_are_refused() {
    assert!(matches!(
        HttpAgent::new("127.0.0.1:8080", None, DEFAULT_TIMEOUT),
        Err(ClientError::BadUrl { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t");
    std::fs::write(&p, "  \n").unwrap();
    assert!(matches!(
        read_token(&p),
        Err(ClientError::EmptyToken { .. })
    ));
    std::fs::write(&p, "abc-def\n").unwrap();
    assert_eq!(read_token(&p).unwrap(), "abc-def");
    assert!(matches!(
        read_token(&dir.path().join("missing")),
        Err(ClientError::TokenFile { .. })
    ));
}

#[tokio::test]
async fn https_agent_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::api::tls::test_pki::make(dir.path());
    let config = crate::api::tls::server_config(&pki.cert, &pki.key).unwrap();
    let plain = serve().await;
    let port: u16 = plain.rsplit(':').next().unwrap().parse().unwrap();
    // The same stand-in agent behind TLS, on another port.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_port = tcp.local_addr().unwrap().port();
    let listener = crate::api::tls::TlsListener::new(tcp, config);
    let app = Router::new().route(
        "/v1/migrations/m1",
        get(move |h: HeaderMap| async move {
            assert!(authorized(&h));
            let r = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/v1/migrations/m1"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            Json(r.json::<serde_json::Value>().await.unwrap())
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("https://localhost:{tls_port}");
    let id = MigrationId::new("m1").unwrap();

    let agent = HttpAgent::new(&base, Some(TOKEN.into()), Duration::from_secs(5))
        .unwrap()
        .with_ca_file(&pki.ca)
        .unwrap();
    assert_eq!(agent.status(&id).await.unwrap().phase, Phase::SwitchedOver);

    // Without the CA: unreachable, and the reason says it is the certificate.
    let untrusting = HttpAgent::new(&base, Some(TOKEN.into()), Duration::from_secs(5)).unwrap();
    match untrusting.status(&id).await {
        Err(AgentError::Unreachable { reason, .. }) => {
            assert!(reason.contains("certificate"), "{reason}")
        }
        other => panic!("expected an unreachable agent: {other:?}"),
    }
    // A CA file that is not one is refused when the client is built.
    let e = HttpAgent::new(&base, None, DEFAULT_TIMEOUT)
        .unwrap()
        .with_ca_file(&pki.key)
        .unwrap_err();
    assert!(matches!(e, ClientError::Tls(_)), "{e}");
}
