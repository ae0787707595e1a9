//! `/v1/migrations`: the request and response shapes (documented in the OpenAPI
//! document) and their handlers.
//!
//! The body is read as bytes and decoded here, not by axum's `Json`, so that every
//! failure is a JSON 400 naming the field (serde's path to the error, then our own
//! checks of prefixes, addresses and sizes).

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use ipnetwork::IpNetwork;
use migroute_orchestration::pe::{
    Community, Event, MacAddr, MigrationId, MigrationSpec, PeerPe, Preference, Role, RoutePolicy,
    Status, Timers, TunnelKind,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::agent::effector::Naming;
use crate::agent::runtime::Applied;

/// Longest accepted peer API URL.
const MAX_URL: usize = 2048;
/// Most extra communities.
const MAX_COMMUNITIES: usize = 32;
/// Longest accepted timer (a day): anything longer is a typo.
const MAX_TIMER_MS: u64 = 86_400_000;

/// Which side of the move this PE is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RoleDto {
    /// The PE the VM leaves.
    Source,
    /// The PE the VM goes to.
    Destination,
}

/// The other PE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerDto {
    /// Its tunnel endpoint (IPv4 or IPv6 address, same family as ours).
    #[schema(example = "10.0.23.3")]
    pub tunnel_endpoint: String,
    /// Its agent's API base URL (`http://` or `https://`).
    #[schema(example = "http://10.255.0.3:8080")]
    pub api_url: String,
}

/// Tunnel encapsulation and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TunnelDto {
    /// VXLAN, VNI 1..2^24-1.
    Vxlan {
        /// VXLAN network identifier.
        #[schema(minimum = 1, maximum = 16777215)]
        vni: u32,
    },
    /// GRE with a 32-bit key.
    Gre {
        /// GRE key.
        key: u32,
    },
}

/// How the destination's route wins: `"host-route"`, `{"local-pref": N}` or
/// `{"med": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PreferenceDto {
    /// Host route with NO_EXPORT (longest match wins).
    HostRoute,
    /// Same prefix, higher LOCAL_PREF.
    LocalPref(u32),
    /// Same prefix, lower MED.
    Med(u32),
}

/// Route policy overrides; the agent's configured policy applies when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDto {
    /// Preference (default `host-route`).
    #[serde(default)]
    pub preference: Option<PreferenceDto>,
    /// Extra communities, `ASN:VALUE` or `no-export`.
    #[serde(default)]
    pub communities: Vec<String>,
}

/// Convergence timers; each absent one takes the agent's configured default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimersDto {
    /// No tunnel traffic for this long before teardown.
    #[serde(default)]
    #[schema(maximum = 86_400_000)]
    pub quiet_ms: Option<u64>,
    /// Route held this long before teardown.
    #[serde(default)]
    #[schema(maximum = 86_400_000)]
    pub min_hold_ms: Option<u64>,
    /// Not converged by then: `stalled`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub converge_timeout_ms: Option<u64>,
}

/// Body of `PUT /v1/migrations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationRequest {
    /// The VM's host routes (/32, /128), one or more.
    #[schema(example = json!(["10.10.0.5/32"]))]
    pub prefixes: Vec<String>,
    /// This PE's side.
    pub role: RoleDto,
    /// The other PE.
    pub peer: PeerDto,
    /// Tunnel kind and VNI/key.
    pub tunnel: TunnelDto,
    /// Policy overrides.
    #[serde(default)]
    pub policy: Option<PolicyDto>,
    /// Timer overrides.
    #[serde(default)]
    pub timers: Option<TimersDto>,
    /// The VM's MAC address (`aa:bb:cc:dd:ee:ff`). A destination that listens for the
    /// VM (`pe.detect_vm`) recognises QEMU's RARP announcement by it.
    #[serde(default)]
    #[schema(
        example = "52:54:00:12:34:56",
        pattern = "^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$"
    )]
    pub vm_mac: Option<String>,
}

/// A phase entered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TransitionView {
    /// The phase.
    pub phase: String,
    /// When, epoch milliseconds.
    pub at_ms: u64,
}

/// A failed command.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorView {
    /// Its journal sequence number.
    pub seq: u64,
    /// What went wrong.
    pub error: String,
    /// When, epoch milliseconds.
    pub at_ms: u64,
}

/// What the migration holds in kernel and BGP, as journaled.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EffectsView {
    /// The tunnel exists.
    pub tunnel: bool,
    /// Source: the override is installed.
    pub override_installed: bool,
    /// Destination: tunnel traffic is delivered.
    pub delivery: bool,
    /// Prefixes announced.
    pub announced: Vec<String>,
}

/// Tunnel counters as last sampled.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CountersView {
    /// Packets through the tunnel (rx + tx), if sampled since start.
    pub tunnel_packets: Option<u64>,
    /// When that count last changed, epoch milliseconds.
    pub tunnel_last_change_ms: Option<u64>,
}

/// Timers in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimersView {
    /// See the request.
    pub quiet_ms: u64,
    /// See the request.
    pub min_hold_ms: u64,
    /// See the request.
    pub converge_timeout_ms: u64,
}

/// Policy in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    /// Preference.
    pub preference: PreferenceDto,
    /// Extra communities.
    pub communities: Vec<String>,
}

/// A migration on this PE.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MigrationView {
    /// The id.
    pub id: String,
    /// Current phase: prepared, switched-over, announced, converging, torn-down,
    /// stalled, aborting, aborted.
    pub phase: String,
    /// This PE's side.
    pub role: RoleDto,
    /// Host routes, sorted.
    pub prefixes: Vec<String>,
    /// The other PE.
    pub peer: PeerDto,
    /// Tunnel.
    pub tunnel: TunnelDto,
    /// Kernel link name of the tunnel.
    pub tunnel_device: String,
    /// Policy.
    pub policy: PolicyView,
    /// Timers.
    pub timers: TimersView,
    /// Every phase entered, with its time.
    pub transitions: Vec<TransitionView>,
    /// What is in place.
    pub effects: EffectsView,
    /// Tunnel counters.
    pub counters: CountersView,
    /// Failed commands.
    pub errors: Vec<ErrorView>,
    /// Next deadline (hold, stall), epoch milliseconds.
    pub next_deadline_ms: Option<u64>,
    /// The VM's MAC address, if the request gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_mac: Option<String>,
}

impl From<&Status> for MigrationView {
    fn from(s: &Status) -> Self {
        let spec = &s.spec;
        MigrationView {
            id: s.id.to_string(),
            phase: s.phase.to_string(),
            role: match spec.role {
                Role::Source => RoleDto::Source,
                Role::Destination => RoleDto::Destination,
            },
            prefixes: spec.prefixes.iter().map(ToString::to_string).collect(),
            peer: PeerDto {
                tunnel_endpoint: spec.peer.tunnel_endpoint.to_string(),
                api_url: spec.peer.api_url.clone(),
            },
            tunnel: match spec.tunnel {
                TunnelKind::Vxlan { vni } => TunnelDto::Vxlan { vni },
                TunnelKind::Gre { key } => TunnelDto::Gre { key },
            },
            tunnel_device: Naming::link_name(&spec.tunnel_spec()),
            policy: PolicyView {
                preference: match spec.policy.preference {
                    Preference::HostRoute => PreferenceDto::HostRoute,
                    Preference::LocalPref(n) => PreferenceDto::LocalPref(n),
                    Preference::Med(n) => PreferenceDto::Med(n),
                },
                communities: spec
                    .policy
                    .communities
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            timers: TimersView {
                quiet_ms: spec.timers.quiet_ms,
                min_hold_ms: spec.timers.min_hold_ms,
                converge_timeout_ms: spec.timers.converge_timeout_ms,
            },
            transitions: s
                .transitions
                .iter()
                .map(|t| TransitionView {
                    phase: t.phase.to_string(),
                    at_ms: t.at.as_millis(),
                })
                .collect(),
            effects: EffectsView {
                tunnel: s.effects.tunnel,
                override_installed: s.effects.override_installed,
                delivery: s.effects.delivery,
                announced: s
                    .effects
                    .announced
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            counters: CountersView {
                tunnel_packets: s.tunnel_packets,
                tunnel_last_change_ms: s.tunnel_last_change.map(|t| t.as_millis()),
            },
            errors: s
                .errors
                .iter()
                .map(|e| ErrorView {
                    seq: e.seq,
                    error: e.error.clone(),
                    at_ms: e.at.as_millis(),
                })
                .collect(),
            next_deadline_ms: s.next_deadline.map(|t| t.as_millis()),
            vm_mac: spec.vm_mac.map(|m| m.to_string()),
        }
    }
}

/// Limits and defaults the body is checked against.
#[derive(Debug, Clone)]
pub struct RequestRules {
    /// Most prefixes.
    pub max_prefixes: usize,
    /// Our tunnel source: the peer's endpoint must be of the same family.
    pub tunnel_source: IpAddr,
    /// Policy when the request has none.
    pub default_policy: RoutePolicy,
    /// Timers the request leaves out.
    pub default_timers: Timers,
}

/// Decodes and checks a `PUT` body.
pub fn parse_request(bytes: &[u8], rules: &RequestRules) -> Result<MigrationSpec, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_field("body", "empty; expected a JSON object"));
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        objects_are_objects(&value, "")?;
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let req: MigrationRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path == "?" || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        ApiError::bad_field(field, e.into_inner())
    })?;
    to_spec(req, rules)
}

/// serde lets a struct be written as a JSON array of its fields (`"timers": [1, 2, 3]`),
/// which the OpenAPI document does not allow and no client means: only `prefixes` and
/// `policy.communities` are arrays, and everything else that is not a scalar must be an
/// object.
fn objects_are_objects(value: &serde_json::Value, path: &str) -> Result<(), ApiError> {
    use serde_json::Value;
    match value {
        Value::Array(_) if path == "prefixes" || path == "policy.communities" => Ok(()),
        Value::Array(_) => Err(ApiError::bad_field(
            if path.is_empty() { "body" } else { path },
            "expected a JSON object, not an array",
        )),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            let sub = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            objects_are_objects(v, &sub)
        }),
        _ => Ok(()),
    }
}

fn to_spec(req: MigrationRequest, rules: &RequestRules) -> Result<MigrationSpec, ApiError> {
    if req.prefixes.is_empty() {
        return Err(ApiError::bad_field("prefixes", "at least one host route"));
    }
    if req.prefixes.len() > rules.max_prefixes {
        return Err(ApiError::bad_field(
            "prefixes",
            format!("at most {} prefixes", rules.max_prefixes),
        ));
    }
    let mut prefixes = Vec::with_capacity(req.prefixes.len());
    for (i, p) in req.prefixes.iter().enumerate() {
        let field = format!("prefixes[{i}]");
        let net: IpNetwork = p
            .parse()
            .map_err(|_| ApiError::bad_field(&field, format!("{p:?} is not an IP prefix")))?;
        let host = if net.is_ipv4() { 32 } else { 128 };
        if net.prefix() != host {
            return Err(ApiError::bad_field(
                &field,
                format!("{p} is not a host route (/32 or /128)"),
            ));
        }
        let ip = net.ip();
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return Err(ApiError::bad_field(
                &field,
                format!("{p} is not a unicast host"),
            ));
        }
        if prefixes.contains(&net) {
            return Err(ApiError::bad_field(&field, format!("{p} listed twice")));
        }
        prefixes.push(net);
    }
    let endpoint: IpAddr = req.peer.tunnel_endpoint.parse().map_err(|_| {
        ApiError::bad_field(
            "peer.tunnel_endpoint",
            format!("{:?} is not an IP address", req.peer.tunnel_endpoint),
        )
    })?;
    if endpoint.is_unspecified() || endpoint.is_multicast() {
        return Err(ApiError::bad_field(
            "peer.tunnel_endpoint",
            "not a unicast address",
        ));
    }
    if endpoint.is_ipv4() != rules.tunnel_source.is_ipv4() {
        return Err(ApiError::bad_field(
            "peer.tunnel_endpoint",
            format!(
                "{endpoint} is not of the family of this PE's tunnel source {}",
                rules.tunnel_source
            ),
        ));
    }
    if endpoint == rules.tunnel_source {
        return Err(ApiError::bad_field(
            "peer.tunnel_endpoint",
            "is this PE's own address",
        ));
    }
    let url = &req.peer.api_url;
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    let host_ok = url
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty());
    if !scheme_ok || !host_ok || url.len() > MAX_URL || url.chars().any(char::is_whitespace) {
        return Err(ApiError::bad_field(
            "peer.api_url",
            format!("want an http:// or https:// URL of at most {MAX_URL} bytes"),
        ));
    }
    let tunnel = match req.tunnel {
        TunnelDto::Vxlan { vni } => {
            if vni == 0 || vni >= 1 << 24 {
                return Err(ApiError::bad_field(
                    "tunnel.vni",
                    format!("{vni} not in 1..16777215"),
                ));
            }
            TunnelKind::Vxlan { vni }
        }
        TunnelDto::Gre { key } => TunnelKind::Gre { key },
    };
    let policy = match req.policy {
        None => rules.default_policy.clone(),
        Some(p) => {
            if p.communities.len() > MAX_COMMUNITIES {
                return Err(ApiError::bad_field(
                    "policy.communities",
                    format!("at most {MAX_COMMUNITIES}"),
                ));
            }
            let mut communities = Vec::new();
            for (i, c) in p.communities.iter().enumerate() {
                communities.push(
                    c.parse::<Community>()
                        .map_err(|e| ApiError::bad_field(format!("policy.communities[{i}]"), e))?,
                );
            }
            let preference = match p.preference.unwrap_or(PreferenceDto::HostRoute) {
                PreferenceDto::HostRoute => Preference::HostRoute,
                PreferenceDto::LocalPref(n) => Preference::LocalPref(n),
                PreferenceDto::Med(n) => Preference::Med(n),
            };
            RoutePolicy {
                preference,
                communities,
            }
        }
    };
    let t = req.timers.unwrap_or_default();
    let d = rules.default_timers;
    let timers = Timers {
        quiet_ms: t.quiet_ms.unwrap_or(d.quiet_ms),
        min_hold_ms: t.min_hold_ms.unwrap_or(d.min_hold_ms),
        converge_timeout_ms: t.converge_timeout_ms.unwrap_or(d.converge_timeout_ms),
    };
    for (field, v) in [
        ("timers.quiet_ms", timers.quiet_ms),
        ("timers.min_hold_ms", timers.min_hold_ms),
        ("timers.converge_timeout_ms", timers.converge_timeout_ms),
    ] {
        if v > MAX_TIMER_MS {
            return Err(ApiError::bad_field(
                field,
                format!("{v} ms is more than a day"),
            ));
        }
    }
    if timers.converge_timeout_ms == 0 {
        return Err(ApiError::bad_field(
            "timers.converge_timeout_ms",
            "must be positive",
        ));
    }
    let vm_mac = req
        .vm_mac
        .as_deref()
        .map(|m| {
            m.parse::<MacAddr>()
                .map_err(|e| ApiError::bad_field("vm_mac", e.to_string()))
        })
        .transpose()?;
    if vm_mac.is_some_and(|m| m.0[0] & 1 == 1 || m.0 == [0; 6]) {
        return Err(ApiError::bad_field("vm_mac", "not a unicast MAC address"));
    }
    Ok(MigrationSpec {
        vm_mac,
        prefixes,
        role: match req.role {
            RoleDto::Source => Role::Source,
            RoleDto::Destination => Role::Destination,
        },
        peer: PeerPe {
            tunnel_endpoint: endpoint,
            api_url: url.clone(),
        },
        tunnel,
        policy,
        timers,
    })
}

fn parse_id(id: String) -> Result<MigrationId, ApiError> {
    MigrationId::new(id).map_err(|e| ApiError::bad_field("id", e))
}

fn answer(applied: Applied) -> Result<(StatusCode, Json<MigrationView>), ApiError> {
    let view = MigrationView::from(&applied.status);
    if !applied.failed.is_empty() {
        return Err(ApiError::action_failed(
            &view.id,
            &view.phase,
            &applied.failed,
        ));
    }
    let code = if applied.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(view)))
}

/// Prepare a migration: the tunnel exists when this returns.
#[utoipa::path(
    put,
    path = "/v1/migrations/{id}",
    params(("id" = String, Path, description = "Migration id, 1-64 of [A-Za-z0-9._-]", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = MigrationRequest,
    responses(
        (status = 201, description = "Prepared", body = MigrationView),
        (status = 200, description = "Same body again: nothing changed", body = MigrationView),
        (status = 400, description = "Malformed body or id", body = ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
        (status = 409, description = "Different body for the id, or a prefix/tunnel of another live migration", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 500, description = "The tunnel could not be created; the migration aborted", body = ErrorBody),
    ),
    tag = "migrations"
)]
pub async fn put_migration(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<MigrationView>), ApiError> {
    let id = parse_id(id)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(e.body_text())
        } else {
            ApiError::bad_field("body", e.body_text())
        }
    })?;
    let spec = parse_request(&body, &state.rules)?;
    answer(state.agent.prepare(id, spec).await?)
}

/// One migration: phase, transition times, counters, errors.
#[utoipa::path(
    get,
    path = "/v1/migrations/{id}",
    params(("id" = String, Path, description = "Migration id, 1-64 of [A-Za-z0-9._-]", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, body = MigrationView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    tag = "migrations"
)]
pub async fn get_migration(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<MigrationView>, ApiError> {
    let id = parse_id(id)?;
    match state.agent.get(id.clone()).await? {
        Some(s) => Ok(Json(MigrationView::from(&s))),
        None => Err(ApiError::not_found(format!("no migration {id}"))),
    }
}

/// Every migration this PE knows, live or finished.
#[utoipa::path(
    get,
    path = "/v1/migrations",
    responses((status = 200, body = Vec<MigrationView>), (status = 401, body = ErrorBody)),
    tag = "migrations"
)]
pub async fn list_migrations(
    State(state): State<ApiState>,
) -> Result<Json<Vec<MigrationView>>, ApiError> {
    let all = state.agent.list().await?;
    Ok(Json(all.iter().map(MigrationView::from).collect()))
}

async fn event(
    state: ApiState,
    id: String,
    event: Event,
) -> Result<(StatusCode, Json<MigrationView>), ApiError> {
    let id = parse_id(id)?;
    answer(state.agent.event(id, event).await?)
}

/// The quiesce signal. Source: install the override; destination: deliver what
/// arrives through the tunnel.
#[utoipa::path(
    post,
    path = "/v1/migrations/{id}/switchover",
    params(("id" = String, Path, description = "Migration id, 1-64 of [A-Za-z0-9._-]", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, body = MigrationView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not allowed in this phase", body = ErrorBody),
        (status = 500, description = "An action failed; the migration aborted", body = ErrorBody),
    ),
    tag = "migrations"
)]
pub async fn switchover(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<MigrationView>), ApiError> {
    event(state, id, Event::Switchover).await
}

/// Destination: inject the more-preferred routes now. Source: withdraw its own host
/// route if it had announced one.
#[utoipa::path(
    post,
    path = "/v1/migrations/{id}/announce",
    params(("id" = String, Path, description = "Migration id, 1-64 of [A-Za-z0-9._-]", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, body = MigrationView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not allowed in this phase (e.g. before switchover)", body = ErrorBody),
        (status = 500, body = ErrorBody),
    ),
    tag = "migrations"
)]
pub async fn announce(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<MigrationView>), ApiError> {
    event(state, id, Event::Announce).await
}

/// Tear down now, converged or not.
#[utoipa::path(
    post,
    path = "/v1/migrations/{id}/complete",
    params(("id" = String, Path, description = "Migration id, 1-64 of [A-Za-z0-9._-]", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, body = MigrationView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 500, body = ErrorBody),
    ),
    tag = "migrations"
)]
pub async fn complete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<MigrationView>), ApiError> {
    event(state, id, Event::Complete).await
}

/// Undo in reverse order from wherever the migration is.
#[utoipa::path(
    post,
    path = "/v1/migrations/{id}/abort",
    params(("id" = String, Path, description = "Migration id, 1-64 of [A-Za-z0-9._-]", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, body = MigrationView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 500, body = ErrorBody),
    ),
    tag = "migrations"
)]
pub async fn abort(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<MigrationView>), ApiError> {
    event(state, id, Event::Abort).await
}
