//! `migroute orchestrator`: the orchestrator as a service. Migration software (a
//! libvirt hook, Nova, scripts) posts a plan to `POST /v1/migrations` and gets `202`
//! with the id at once; the migration runs in its own [`runtime::drive`] task. `GET
//! /v1/migrations/{id}` shows the machine's status (and the report once it ended),
//! `GET /v1/events` streams every update as server-sent events, and
//! `POST /v1/migrations/{id}/{abort|complete|retry}` are the operator's words. Same
//! bearer auth and error bodies as the agent's API; `/openapi.json` documents it.
//!
//! On start, every unfinished migration in the journal is resumed (restart contract).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{Stream, StreamExt};
use migroute_orchestration::journal::Journal;
use migroute_orchestration::migration::{
    Command, Event, Migration, MigrationError, MigrationPlan, Report, Status,
};
use migroute_orchestration::pe::MigrationId;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::wrappers::BroadcastStream;
use utoipa::OpenApi;

use super::runtime::{self, Observer, OperatorRequest, Options, Update};
use super::setup::{self, DriverSettings};
use crate::api::auth::require_token;
use crate::api::error::{ApiError, ErrorBody};

/// `migroute orchestrator --config F`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The orchestrator's journal.
    pub journal: PathBuf,
    /// The REST API.
    pub api: ApiConfig,
    /// How to reach the agents.
    #[serde(default)]
    pub agents: AgentsConfig,
    /// Lab hypervisor settings.
    #[serde(default)]
    pub lab: LabConfig,
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token callers must send (one line, at least 16 characters).
    pub token_file: PathBuf,
    /// PEM certificate chain; with `tls_key` the service speaks HTTPS only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl ApiConfig {
    /// The TLS configuration, if `tls_cert` and `tls_key` are set (one without the
    /// other is an error).
    pub fn tls(&self) -> anyhow::Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            anyhow::bail!("api.tls_cert and api.tls_key go together");
        }
        Ok(crate::api::tls::optional_server_config(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )?)
    }
}

/// `[agents]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// The agents' bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Deadline of each agent call (default 5000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `[lab]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// Simulated pre-copy before the VM is suspended (default 200).
    #[serde(default)]
    pub precopy_ms: Option<u64>,
}

impl ServiceConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        let cfg: ServiceConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        Ok(cfg)
    }
}

/// One migration this process drives (or drove).
struct Running {
    status: watch::Receiver<Status>,
    operator: mpsc::Sender<OperatorRequest>,
    report: Arc<Mutex<Option<Report>>>,
}

/// Shared by the handlers.
#[derive(Clone)]
pub struct ServiceState {
    token: Arc<str>,
    journal: Arc<Journal>,
    settings: Arc<DriverSettings>,
    /// Relative paths in posted plans are relative to this (the config's directory).
    base_dir: Arc<PathBuf>,
    migrations: Arc<Mutex<BTreeMap<MigrationId, Running>>>,
    events: broadcast::Sender<Update>,
    opts: Options,
}

impl ServiceState {
    /// State for a service over `journal`.
    pub fn new(
        token: String,
        journal: Arc<Journal>,
        settings: DriverSettings,
        base_dir: PathBuf,
    ) -> Self {
        ServiceState {
            token: token.into(),
            journal,
            settings: Arc::new(settings),
            base_dir: Arc::new(base_dir),
            migrations: Arc::default(),
            events: broadcast::channel(1024).0,
            opts: Options {
                stop_on_stall: false,
                ..Options::default()
            },
        }
    }

    /// Starts the runtime task of a created (or restored and resumed) migration.
    fn spawn(&self, machine: Migration, first: Vec<Command>) -> Result<(), ApiError> {
        let plan = machine.plan().clone();
        let drivers = setup::drivers(&plan, &self.base_dir, &self.settings)
            .map_err(|e| ApiError::bad_field(setup_field(&e), e))?;
        let (status_tx, status) = watch::channel(machine.status());
        let (operator, op_rx) = mpsc::channel(8);
        let report = Arc::new(Mutex::new(None));
        let events = self.events.clone();
        let observer: Observer = Arc::new(move |u: &Update| {
            let _ = events.send(u.clone());
        });
        self.migrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                plan.id.clone(),
                Running {
                    status,
                    operator,
                    report: report.clone(),
                },
            );
        let (journal, opts) = (self.journal.clone(), self.opts);
        tokio::spawn(async move {
            let r = runtime::drive_published(
                machine,
                first,
                journal,
                drivers,
                opts,
                observer,
                op_rx,
                Some(status_tx),
            )
            .await;
            match r {
                Ok(rep) => *report.lock().unwrap_or_else(|e| e.into_inner()) = Some(rep),
                Err(e) => tracing::error!(migration = %plan.id, error = %e, "runtime stopped"),
            }
        });
        Ok(())
    }

    /// Resumes every unfinished journaled migration; returns how many.
    pub fn recover(&self) -> anyhow::Result<usize> {
        let found = runtime::recover(&self.journal, runtime::now())?;
        let n = found.len();
        for (m, cmds) in found {
            let id = m.id().clone();
            if let Err(e) = self.spawn(m, cmds) {
                tracing::error!(migration = %id, error = %e.body.error, "cannot resume");
            }
        }
        Ok(n)
    }
}

fn setup_field(e: &setup::SetupError) -> String {
    match e {
        setup::SetupError::Unsupported { field, .. } | setup::SetupError::Agent { field, .. } => {
            (*field).to_string()
        }
        setup::SetupError::Lab(_) => "hypervisor.topology".into(),
    }
}

/// Answer of `POST /v1/migrations`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The migration's id (the plan's).
    pub id: String,
    /// Where to watch it.
    pub status_url: String,
}

/// The API document.
#[derive(OpenApi)]
#[openapi(
    info(title = "migroute orchestrator", description = "Whole-migration orchestration: plans in, phases out."),
    paths(create, list, show, operate, events),
    components(schemas(Accepted, ErrorBody)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The router: every route but `/healthz` needs the bearer token.
pub fn router(state: ServiceState) -> Router {
    Router::new()
        .route("/v1/migrations", post(create).get(list))
        .route("/v1/migrations/{id}", get(show))
        .route("/v1/migrations/{id}/{op}", post(operate))
        .route("/v1/events", get(events))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.token.clone(),
            require_token,
        ))
        .with_state(state)
}

fn conflict(id: &MigrationId, phase: String, error: String) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        body: ErrorBody {
            error,
            id: Some(id.to_string()),
            phase: Some(phase),
            ..ErrorBody::default()
        },
    }
}

/// Starts a migration from a plan (JSON, same shape as the TOML plan file).
#[utoipa::path(
    post,
    path = "/v1/migrations",
    request_body(content = Object, description = "MigrationPlan, as in labs/plans/*.toml"),
    responses(
        (status = 202, body = Accepted),
        (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "id already journaled"),
    ),
    tag = "migrations"
)]
async fn create(
    State(state): State<ServiceState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let plan: MigrationPlan = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "body".into()
        } else {
            path
        };
        ApiError::bad_field(field, e.into_inner())
    })?;
    plan.validate().map_err(|e| {
        let field = match &e {
            migroute_orchestration::migration::PlanError::Invalid { field, .. } => field.clone(),
            migroute_orchestration::migration::PlanError::Spec { field, .. } => {
                (*field).to_string()
            }
        };
        ApiError::bad_field(field, e)
    })?;
    let id = plan.id.clone();
    let journaled = state
        .journal
        .load_migrations()
        .map_err(|e| internal(e.to_string()))?;
    if journaled.contains_key(&id) {
        return Err(conflict(
            &id,
            "journaled".into(),
            format!("migration {id} already exists"),
        ));
    }
    let now = runtime::now();
    let (mut m, mut first) =
        Migration::new(plan, now).map_err(|e| ApiError::bad_field("body", e))?;
    first.extend(
        m.handle(Event::Start, now)
            .map_err(|e| internal(e.to_string()))?,
    );
    state.spawn(m, first)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status_url: format!("/v1/migrations/{id}"),
            id: id.to_string(),
        }),
    ))
}

fn internal(error: String) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: ErrorBody {
            error,
            ..ErrorBody::default()
        },
    }
}

/// Ids and phases of the migrations this process drives.
#[utoipa::path(get, path = "/v1/migrations", responses((status = 200, body = Object)), tag = "migrations")]
async fn list(State(state): State<ServiceState>) -> Json<serde_json::Value> {
    let map = state.migrations.lock().unwrap_or_else(|e| e.into_inner());
    let items: Vec<_> = map
        .iter()
        .map(|(id, r)| serde_json::json!({"id": id, "phase": r.status.borrow().phase}))
        .collect();
    Json(serde_json::json!({ "migrations": items }))
}

fn lookup<T>(state: &ServiceState, id: &str, f: impl FnOnce(&Running) -> T) -> Result<T, ApiError> {
    let map = state.migrations.lock().unwrap_or_else(|e| e.into_inner());
    MigrationId::new(id)
        .ok()
        .and_then(|id| map.get(&id).map(f))
        .ok_or_else(|| ApiError::not_found(format!("migration {id}")))
}

/// The machine's status; with `report` once the migration ended.
#[utoipa::path(
    get,
    path = "/v1/migrations/{id}",
    params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
    tag = "migrations"
)]
async fn show(
    State(state): State<ServiceState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (status, report) = lookup(&state, &id, |r| {
        (
            r.status.borrow().clone(),
            r.report.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        )
    })?;
    Ok(Json(
        serde_json::json!({ "status": status, "report": report }),
    ))
}

/// Operator: `abort` (before the point of no return), `complete` (tear down now),
/// `retry` (after a stall).
#[utoipa::path(
    post,
    path = "/v1/migrations/{id}/{op}",
    params(("id" = String, Path), ("op" = String, Path, description = "abort, complete or retry")),
    responses((status = 202), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    tag = "migrations"
)]
async fn operate(
    State(state): State<ServiceState>,
    UrlPath((id, op)): UrlPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let event = match op.as_str() {
        "abort" => Event::Abort,
        "complete" => Event::Complete,
        "retry" => Event::Retry,
        _ => return Err(ApiError::not_found(format!("operation {op}"))),
    };
    let (tx, mid) = lookup(&state, &id, |r| {
        (r.operator.clone(), r.status.borrow().id.clone())
    })?;
    let (reply, answer) = oneshot::channel();
    let ended = || conflict(&mid, "ended".into(), format!("migration {mid} has ended"));
    tx.send((event, reply)).await.map_err(|_| ended())?;
    match answer.await.map_err(|_| ended())? {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(e @ MigrationError::InvalidEvent { phase, .. })
        | Err(e @ MigrationError::PastPointOfNoReturn { phase, .. }) => {
            Err(conflict(&mid, phase.to_string(), e.to_string()))
        }
        Err(e) => Err(conflict(&mid, "unknown".into(), e.to_string())),
    }
}

/// Every update of every migration: `event: phase|failed|notice`, `data:` JSON.
#[utoipa::path(
    get,
    path = "/v1/events",
    responses((status = 200, description = "text/event-stream of updates", content_type = "text/event-stream")),
    tag = "migrations"
)]
async fn events(
    State(state): State<ServiceState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = BroadcastStream::new(state.events.subscribe()).map(|item| {
        Ok(match item {
            Ok(u) => {
                let kind = match &u {
                    Update::Phase { .. } => "phase",
                    Update::Failed { .. } => "failed",
                    Update::Notice { .. } => "notice",
                };
                SseEvent::default()
                    .event(kind)
                    .json_data(&u)
                    .unwrap_or_else(|_| SseEvent::default().event("error"))
            }
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                SseEvent::default().event("lagged").data(n.to_string())
            }
        })
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Runs the service until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServiceState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(listener, state, shutdown).await
}

/// [`serve`] on any listener, e.g. [`crate::api::tls::TlsListener`].
pub async fn serve_on<L>(
    listener: L,
    state: ServiceState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests;
