//! API contract tests, in process: the real router, owner task and journal on
//! `127.0.0.1:0`, a fake data plane that records what it was asked, and the
//! [`LocalRib`] announcer. Driven over HTTP with reqwest.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnetwork::IpNetwork;
use migroute_orchestration::journal::Journal;
use migroute_orchestration::pe::{DesiredState, Role, RoutePolicy, Timers, TunnelSpec};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use super::migrations::RequestRules;
use super::ApiState;
use crate::agent::announcer::{LocalRib, RouteAnnouncer};
use crate::agent::effector::{Dataplane, DataplaneError, PeerNotifier, ReconcileReport};
use crate::agent::metrics::Metrics;
use crate::agent::runtime::{Owner, OwnerParts};
use crate::agent::{now, recovery, serve};

const TOKEN: &str = "test-token-0123456789";

/// What the fake kernel was asked, shared with the test.
#[derive(Default)]
struct FakeKernel {
    calls: Mutex<Vec<String>>,
    packets: AtomicU64,
    fail_create: AtomicBool,
    reconciled: Mutex<Option<DesiredState>>,
}

impl FakeKernel {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
}

struct Fake(Arc<FakeKernel>);

fn names(ps: &[IpNetwork]) -> String {
    ps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Dataplane for Fake {
    async fn create_tunnel(&mut self, t: &TunnelSpec, role: Role) -> Result<(), DataplaneError> {
        if self.0.fail_create.load(Ordering::SeqCst) {
            return Err(DataplaneError::Other("injected: EPERM".into()));
        }
        self.0.log(format!("create {} {role}", t.remote));
        Ok(())
    }
    async fn delete_tunnel(&mut self, t: &TunnelSpec) -> Result<(), DataplaneError> {
        self.0.log(format!("delete {}", t.remote));
        Ok(())
    }
    async fn install_override(
        &mut self,
        prefixes: &[IpNetwork],
        _t: &TunnelSpec,
    ) -> Result<(), DataplaneError> {
        self.0.log(format!("override {}", names(prefixes)));
        Ok(())
    }
    async fn remove_override(&mut self, prefixes: &[IpNetwork]) -> Result<(), DataplaneError> {
        self.0.log(format!("unoverride {}", names(prefixes)));
        Ok(())
    }
    async fn ensure_delivery(&mut self, t: &TunnelSpec, _r: Role) -> Result<(), DataplaneError> {
        self.0.log(format!("deliver {}", t.remote));
        Ok(())
    }
    async fn disable_delivery(&mut self, t: &TunnelSpec) -> Result<(), DataplaneError> {
        self.0.log(format!("undeliver {}", t.remote));
        Ok(())
    }
    async fn tunnel_packets(&mut self, _t: &TunnelSpec) -> Result<u64, DataplaneError> {
        Ok(self.0.packets.load(Ordering::SeqCst))
    }
    async fn reconcile(
        &mut self,
        desired: &DesiredState,
        _roles: &[(TunnelSpec, Role)],
    ) -> Result<ReconcileReport, DataplaneError> {
        *self.0.reconciled.lock().unwrap() = Some(desired.clone());
        Ok(ReconcileReport::default())
    }
}

struct Harness {
    base: String,
    client: reqwest::Client,
    kernel: Arc<FakeKernel>,
    rib: Arc<LocalRib>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<Owner<Fake>>>,
}

impl Harness {
    async fn start(journal: &std::path::Path) -> Self {
        Self::start_with(journal, Arc::default(), Arc::new(LocalRib::new())).await
    }

    async fn start_with(
        journal: &std::path::Path,
        kernel: Arc<FakeKernel>,
        rib: Arc<LocalRib>,
    ) -> Self {
        let journal = Journal::open(journal).unwrap();
        let registry = journal.load_registry(now()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let announcer: Arc<dyn RouteAnnouncer> = rib.clone();
        let (events, _) = broadcast::channel(64);
        let mut owner = Owner::new(OwnerParts {
            registry,
            journal,
            dataplane: Fake(kernel.clone()),
            announcer: announcer.clone(),
            notifier: PeerNotifier::new(TOKEN.into()),
            events: events.clone(),
            metrics: metrics.clone(),
            counter_poll: Duration::from_millis(10),
        });
        recovery::recover(&mut owner).await.unwrap();
        let (agent, rx) = Owner::<Fake>::channel();
        let (stop, shutdown) = watch::channel(false);
        let state = ApiState {
            agent,
            token: TOKEN.into(),
            events,
            metrics,
            announcer,
            rules: Arc::new(RequestRules {
                max_prefixes: 4,
                tunnel_source: "10.0.23.2".parse().unwrap(),
                default_policy: RoutePolicy::default(),
                default_timers: Timers::default(),
            }),
            max_body_bytes: 4096,
            shutdown,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(serve(owner, rx, state, listener));
        Harness {
            base,
            client: reqwest::Client::new(),
            kernel,
            rib,
            stop,
            task,
        }
    }

    async fn stop(self) -> (Arc<FakeKernel>, Arc<LocalRib>) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("shutdown in time")
            .unwrap()
            .unwrap();
        (self.kernel, self.rib)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    async fn put(&self, id: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::PUT,
            &format!("/v1/migrations/{id}"),
            Some(body),
        )
        .await
    }

    async fn post(&self, id: &str, what: &str) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/migrations/{id}/{what}"),
            None,
        )
        .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// Polls `GET /v1/migrations/{id}` until its phase is `phase`.
    async fn wait_phase(&self, id: &str, phase: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, v) = self.get(&format!("/v1/migrations/{id}")).await;
            if v["phase"] == phase {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reached {phase}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn body(role: &str, prefix: &str, vni: u32) -> Value {
    json!({
        "prefixes": [prefix],
        "role": role,
        "peer": {"tunnel_endpoint": "10.0.23.3", "api_url": "http://127.0.0.1:9"},
        "tunnel": {"kind": "vxlan", "vni": vni},
        "timers": {"quiet_ms": 100, "min_hold_ms": 150, "converge_timeout_ms": 5000}
    })
}

#[tokio::test]
async fn token_is_required_everywhere_but_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&dir.path().join("j.redb")).await;
    for path in [
        "/v1/migrations",
        "/v1/migrations/x",
        "/metrics",
        "/openapi.json",
        "/v1/bgp/peers",
        "/nowhere",
    ] {
        let r = h.client.get(h.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
        let r = h
            .client
            .get(h.url(path))
            .bearer_auth("wrong-token-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
    }
    let r = h
        .client
        .put(h.url("/v1/migrations/m1"))
        .json(&body("source", "10.10.0.5/32", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(h.kernel.calls().is_empty(), "nothing done without a token");
    let r = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, v) = h.get("/nowhere").await;
    assert_eq!((s, v["error"].is_string()), (StatusCode::NOT_FOUND, true));
    h.stop().await;
}

#[tokio::test]
async fn put_is_idempotent_and_conflicts_are_409_with_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&dir.path().join("j.redb")).await;
    let b = body("source", "10.10.0.5/32", 100);
    let (s, v) = h.put("m1", &b).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["phase"], "prepared");
    assert_eq!(v["effects"]["tunnel"], true);
    assert!(v["tunnel_device"].as_str().unwrap().starts_with("mr-v"));
    assert_eq!(h.kernel.calls(), vec!["create 10.0.23.3 source"]);

    let (s, _) = h.put("m1", &b).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.kernel.calls().len(), 1, "same body: nothing changes");

    let (s, v) = h.put("m1", &body("source", "10.10.0.6/32", 100)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["id"], "m1");

    let (s, v) = h.put("m2", &body("source", "10.10.0.5/32", 101)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["id"], "m1", "names the live migration holding the prefix");
    assert!(v["error"].as_str().unwrap().contains("10.10.0.5/32"));

    let (s, v) = h.get("/v1/migrations/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());
    let (s, _) = h.post("nope", "switchover").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.get("/v1/migrations").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn concurrent_conflicting_puts_admit_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(Harness::start(&dir.path().join("j.redb")).await);
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.put(&format!("c{i}"), &body("source", "10.10.0.9/32", 200 + i))
                .await
        }));
    }
    let mut created = 0;
    let mut winner = None;
    let mut losers = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (s, v) = t.await.unwrap();
        match s {
            StatusCode::CREATED => {
                created += 1;
                winner = Some(format!("c{i}"));
            }
            StatusCode::CONFLICT => losers.push(v["id"].as_str().unwrap().to_owned()),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(created, 1);
    assert!(
        losers.iter().all(|l| Some(l) == winner.as_ref()),
        "{losers:?} vs {winner:?}"
    );
    Arc::into_inner(h).unwrap().stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&dir.path().join("j.redb")).await;
    let ok = body("source", "10.10.0.5/32", 7);
    let with = |path: &[&str], v: Value| {
        let mut b = ok.clone();
        let mut at = &mut b;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = v;
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            with(&["prefixes"], json!(["10.10.0.300/32"])),
            "prefixes[0]",
        ),
        (with(&["prefixes"], json!(["10.10.0.0/24"])), "prefixes[0]"),
        (
            with(&["prefixes"], json!(["10.10.0.5/32", "10.10.0.5/32"])),
            "prefixes[1]",
        ),
        (with(&["prefixes"], json!([])), "prefixes"),
        (
            with(
                &["prefixes"],
                json!([
                    "10.0.0.1/32",
                    "10.0.0.2/32",
                    "10.0.0.3/32",
                    "10.0.0.4/32",
                    "10.0.0.5/32"
                ]),
            ),
            "prefixes",
        ),
        (with(&["prefixes"], json!([5])), "prefixes[0]"),
        (with(&["role"], json!("sideways")), "role"),
        (
            with(&["peer", "tunnel_endpoint"], json!("pe-b")),
            "peer.tunnel_endpoint",
        ),
        (
            with(&["peer", "tunnel_endpoint"], json!("2001:db8::1")),
            "peer.tunnel_endpoint",
        ),
        (with(&["peer", "api_url"], json!("ftp://x")), "peer.api_url"),
        (with(&["tunnel", "vni"], json!(0)), "tunnel.vni"),
        (with(&["tunnel", "vni"], json!(16777216)), "tunnel.vni"),
        // Internally tagged: serde reports the enclosing object.
        (with(&["tunnel", "vni"], json!(-1)), "tunnel"),
        (
            with(&["policy"], json!({"communities": ["1:2:3"]})),
            "policy.communities[0]",
        ),
        (
            with(&["timers", "quiet_ms"], json!(100_000_000_000u64)),
            "timers.quiet_ms",
        ),
        (with(&["surprise"], json!(1)), "surprise"),
        // serde would take a struct as an array of its fields; the document says object.
        (with(&["timers"], json!([null, null])), "timers"),
        (with(&["peer"], json!(["10.0.23.3", "http://x"])), "peer"),
        (with(&["tunnel"], json!(["vxlan", 7])), "tunnel"),
        (with(&["policy"], json!([])), "policy"),
    ];
    for (b, field) in cases {
        let (s, v) = h.put("m1", &b).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{field}: {v}");
        assert_eq!(v["field"], field, "{v}");
        assert!(v["error"].as_str().unwrap().starts_with(field), "{v}");
    }
    let (s, v) = h.put("bad/id", &ok).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a slash is another route: {v}");
    let (s, v) = h.put(&"x".repeat(65), &ok).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    for raw in ["", "{", "[]", "null"] {
        let r = h
            .client
            .put(h.url("/v1/migrations/m1"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{raw:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["field"], "body", "{raw:?}: {v}");
    }
    let huge = with(
        &["peer", "api_url"],
        json!(format!("http://{}", "a".repeat(5000))),
    );
    let (s, v) = h.put("m1", &huge).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].is_string());
    assert!(
        h.kernel.calls().is_empty(),
        "no malformed request reached the kernel"
    );
    h.stop().await;
}

#[tokio::test]
async fn source_cycle_tears_down_once_the_tunnel_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&dir.path().join("j.redb")).await;
    let (s, _) = h.put("m1", &body("source", "10.10.0.5/32", 5)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = h.post("m1", "announce").await;
    assert_eq!(s, StatusCode::CONFLICT, "announce before switchover: {v}");
    assert_eq!(v["phase"], "prepared");
    let (s, v) = h.post("m1", "switchover").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["phase"], "switched-over");
    assert_eq!(v["effects"]["override_installed"], true);
    let (s, _) = h.post("m1", "switchover").await;
    assert_eq!(s, StatusCode::OK, "repeated switchover is accepted");
    h.kernel.packets.store(10, Ordering::SeqCst);
    let (s, v) = h.post("m1", "announce").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = h.wait_phase("m1", "torn-down").await;
    let phases: Vec<&str> = v["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "prepared",
            "switched-over",
            "announced",
            "converging",
            "torn-down"
        ]
    );
    let held = v["transitions"][4]["at_ms"].as_u64().unwrap()
        - v["transitions"][2]["at_ms"].as_u64().unwrap();
    assert!(held >= 150, "torn down only after min_hold_ms: {held}");
    assert_eq!(
        h.kernel.calls(),
        vec![
            "create 10.0.23.3 source",
            "override 10.10.0.5/32",
            "unoverride 10.10.0.5/32",
            "delete 10.0.23.3"
        ]
    );
    assert_eq!(v["counters"]["tunnel_packets"], 10);
    let (_, m) = h.get("/metrics").await; // not JSON: read as text below
    assert_eq!(m, Value::Null);
    let text = h
        .client
        .get(h.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("migroute_migrations{phase=\"torn-down\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("migroute_phase_duration_seconds_count{phase=\"announced\"} 1"),
        "{text}"
    );
    let (s, v) = h.post("m1", "complete").await;
    assert_eq!(
        (s, v["phase"].as_str()),
        (StatusCode::OK, Some("torn-down")),
        "complete after teardown is a no-op"
    );
    // The prefix is free again.
    let (s, _) = h.put("m2", &body("source", "10.10.0.5/32", 5)).await;
    assert_eq!(s, StatusCode::CREATED);
    h.stop().await;
}

#[tokio::test]
async fn destination_announces_with_no_export_and_abort_undoes_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&dir.path().join("j.redb")).await;
    let mut b = body("destination", "10.10.0.5/32", 6);
    b["policy"] = json!({"communities": ["65000:7"]});
    let (s, _) = h.put("d1", &b).await;
    assert_eq!(s, StatusCode::CREATED);
    h.post("d1", "switchover").await;
    let (s, v) = h.post("d1", "announce").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, routes) = h.get("/v1/bgp/routes").await;
    assert_eq!(
        routes,
        json!([{"prefix": "10.10.0.5/32", "communities": ["65000:7", "no-export"]}])
    );
    let (s, v) = h.post("d1", "abort").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["phase"], "aborted");
    assert_eq!(
        h.kernel.calls(),
        vec![
            "create 10.0.23.3 destination",
            "deliver 10.0.23.3",
            "undeliver 10.0.23.3",
            "delete 10.0.23.3"
        ]
    );
    let (_, routes) = h.get("/v1/bgp/routes").await;
    assert_eq!(routes, json!([]), "abort withdrew the route");
    let (s, v) = h.post("d1", "switchover").await;
    assert_eq!(
        (s, v["phase"].as_str()),
        (StatusCode::CONFLICT, Some("aborted"))
    );
    h.stop().await;
}

#[tokio::test]
async fn no_convergence_means_stalled_and_nothing_torn_down() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&dir.path().join("j.redb")).await;
    let mut b = body("source", "10.10.0.5/32", 8);
    b["timers"] = json!({"quiet_ms": 200, "min_hold_ms": 50, "converge_timeout_ms": 400});
    h.put("s1", &b).await;
    h.post("s1", "switchover").await;
    h.post("s1", "announce").await;
    let kernel = h.kernel.clone();
    let busy = tokio::spawn(async move {
        for i in 0..100 {
            kernel.packets.store(i, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let v = h.wait_phase("s1", "stalled").await;
    busy.abort();
    assert_eq!(v["effects"]["override_installed"], true);
    assert!(!h
        .kernel
        .calls()
        .iter()
        .any(|c| c.starts_with("unoverride") || c.starts_with("delete")));
    let (s, v) = h.post("s1", "complete").await;
    assert_eq!(
        (s, v["phase"].as_str()),
        (StatusCode::OK, Some("torn-down"))
    );
    h.stop().await;
}

#[tokio::test]
async fn failed_tunnel_creation_is_500_and_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&dir.path().join("j.redb")).await;
    h.kernel.fail_create.store(true, Ordering::SeqCst);
    let (s, v) = h.put("f1", &body("source", "10.10.0.5/32", 9)).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(v["phase"], "aborted");
    assert!(
        v["error"].as_str().unwrap().contains("injected: EPERM"),
        "{v}"
    );
    let (_, v) = h.get("/v1/migrations/f1").await;
    assert!(v["errors"][0]["error"].as_str().unwrap().contains("EPERM"));
    h.stop().await;
}

#[tokio::test]
async fn restart_restores_the_machine_and_the_kernel_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let h = Harness::start(&path).await;
    h.put("r1", &body("destination", "10.10.0.7/32", 11)).await;
    h.post("r1", "switchover").await;
    h.post("r1", "announce").await;
    let (_, rib) = h.stop().await;
    assert_eq!(rib.routes().len(), 1);

    // A new process: fresh kernel view and an empty speaker.
    let h = Harness::start(&path).await;
    let desired = h.kernel.reconciled.lock().unwrap().clone().unwrap();
    assert_eq!(desired.tunnels.len(), 1);
    assert_eq!(desired.deliveries.len(), 1);
    assert_eq!(desired.routes.len(), 1);
    assert_eq!(
        h.rib.routes().len(),
        1,
        "the journal's announced route is announced again"
    );
    let (_, v) = h.get("/v1/migrations/r1").await;
    assert_eq!(v["phase"], "announced");
    let (s, v) = h.post("r1", "complete").await;
    assert_eq!(
        (s, v["phase"].as_str()),
        (StatusCode::OK, Some("torn-down")),
        "{v}"
    );
    h.stop().await;
}

#[tokio::test]
async fn events_stream_every_transition() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&dir.path().join("j.redb")).await;
    let mut sse = h
        .client
        .get(h.url("/v1/events"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    assert!(sse.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    h.put("e1", &body("source", "10.10.0.5/32", 12)).await;
    h.post("e1", "switchover").await;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !text.contains("switched-over") {
        let chunk = tokio::time::timeout_at(deadline, sse.chunk())
            .await
            .expect("events in time");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(text.contains("event: phase"), "{text}");
    assert!(text.contains("\"phase\":\"prepared\""), "{text}");
    assert!(text.find("prepared") < text.find("switched-over"));
    drop(sse);
    h.stop().await;
}

#[tokio::test]
async fn openapi_document_lists_every_route_and_the_bearer_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&dir.path().join("j.redb")).await;
    let (s, doc) = h.get("/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (p, m) in [
        ("/v1/migrations/{id}", "put"),
        ("/v1/migrations/{id}", "get"),
        ("/v1/migrations", "get"),
        ("/v1/migrations/{id}/switchover", "post"),
        ("/v1/migrations/{id}/announce", "post"),
        ("/v1/migrations/{id}/complete", "post"),
        ("/v1/migrations/{id}/abort", "post"),
        ("/v1/events", "get"),
        ("/v1/bgp/peers", "get"),
        ("/v1/bgp/routes", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths.get(p).and_then(|x| x.get(m)).is_some(),
            "{m} {p} missing"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["MigrationRequest"].is_object());
    assert_eq!(doc, serde_json::to_value(super::openapi()).unwrap());
    h.stop().await;
}
