//! The service's REST surface on loopback: auth, plan validation naming the field,
//! refusal of kinds this build lacks, 404s, the OpenAPI document, and a journaled
//! migration id refused a second time.

use super::*;
use reqwest::Client;
use serde_json::{json, Value};

const TOKEN: &str = "service-test-token-0123";

async fn start(dir: &Path) -> String {
    let journal = Arc::new(Journal::open(dir.join("j.redb")).unwrap());
    let settings = DriverSettings {
        agent_token: None,
        agent_timeout: Duration::from_millis(300),
        lab_precopy: Duration::from_millis(1),
    };
    let state = ServiceState::new(TOKEN.into(), journal, settings, dir.to_path_buf());
    assert_eq!(state.recover().unwrap(), 0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, state, std::future::pending()));
    format!("http://{addr}")
}

fn plan(id: &str) -> Value {
    json!({
        "id": id,
        "vm": {"name": "vm", "prefixes": ["10.10.0.5/32"]},
        "source": {"agent_url": "http://127.0.0.1:9", "tunnel_endpoint": "10.0.23.2"},
        "destination": {"agent_url": "http://127.0.0.1:10", "tunnel_endpoint": "10.0.23.3"},
        "tunnel": {"kind": "vxlan", "vni": 7},
        "hypervisor": {"kind": "lab", "topology": "missing.clab.yml", "node": "vm", "to": "dc-b"},
    })
}

async fn post(c: &Client, base: &str, body: &Value) -> (u16, Value) {
    let r = c
        .post(format!("{base}/v1/migrations"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rest_surface() {
    let dir = tempfile::tempdir().unwrap();
    let base = start(dir.path()).await;
    let c = Client::new();

    // Health without a token; everything else needs it.
    let r = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = c.get(format!("{base}/v1/migrations")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .get(format!("{base}/v1/migrations"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Shape and value errors name the field.
    let mut bad = plan("m1");
    bad["tunnel"]["vni"] = json!("x");
    let (s, b) = post(&c, &base, &bad).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["field"].as_str().unwrap().starts_with("tunnel"), "{b}");
    let mut bad = plan("m1");
    bad["destination"]["agent_url"] = json!("ftp://x");
    let (s, b) = post(&c, &base, &bad).await;
    assert_eq!(
        (s, b["field"].as_str()),
        (400, Some("destination.agent_url")),
        "{b}"
    );
    // A valid plan whose lab is not there: the driver's field, nothing journaled.
    let (s, b) = post(&c, &base, &plan("m1")).await;
    assert_eq!(
        (s, b["field"].as_str()),
        (400, Some("hypervisor.topology")),
        "{b}"
    );
    // A kind this build has no driver for (libvirt without the `libvirt` feature), or
    // DRBD storage whose command cannot run here. Refused before anything is journaled.
    let mut lv = plan("m2");
    lv["hypervisor"] =
        json!({"kind": "libvirt", "source_uri": "qemu:///a", "destination_uri": "qemu:///b"});
    lv["storage"] = json!({"kind": "drbd", "resource": "r0",
        "source_command": ["/nonexistent/ssh", "a"], "destination_command": ["ssh", "b"]});
    let (s, b) = post(&c, &base, &lv).await;
    let refused = if cfg!(feature = "libvirt") {
        "storage.source_command"
    } else {
        "hypervisor.kind"
    };
    assert_eq!((s, b["field"].as_str()), (400, Some(refused)), "{b}");

    let r = c
        .get(format!("{base}/v1/migrations/m1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = c
        .post(format!("{base}/v1/migrations/m1/abort"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let list: Value = c
        .get(format!("{base}/v1/migrations"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["migrations"], json!([]));

    let doc: Value = c
        .get(format!("{base}/openapi.json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in ["/v1/migrations", "/v1/migrations/{id}", "/v1/events"] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
}

#[tokio::test]
async fn a_journaled_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        // An earlier run journaled m9.
        let j = Journal::open(dir.path().join("j.redb")).unwrap();
        let p: MigrationPlan = serde_json::from_value(plan("m9")).unwrap();
        let (_m, cmds) = Migration::new(p, runtime::now()).unwrap();
        for c in &cmds {
            j.append_migration(c).unwrap();
        }
        // Planned, never started: the restart resumes it (its drivers are missing,
        // so it is logged and left).
    }
    let base = start_after_journal(dir.path()).await;
    let (s, b) = post(&Client::new(), &base, &plan("m9")).await;
    assert_eq!((s, b["id"].as_str()), (409, Some("m9")), "{b}");
}

async fn start_after_journal(dir: &Path) -> String {
    let journal = Arc::new(Journal::open(dir.join("j.redb")).unwrap());
    let settings = DriverSettings {
        agent_token: None,
        agent_timeout: Duration::from_millis(300),
        lab_precopy: Duration::from_millis(1),
    };
    let state = ServiceState::new(TOKEN.into(), journal, settings, dir.to_path_buf());
    assert_eq!(state.recover().unwrap(), 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, state, std::future::pending()));
    format!("http://{addr}")
}

#[tokio::test]
async fn wider_than_host_prefixes_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let base = start(dir.path()).await;
    let c = Client::new();
    for wide in ["10.10.0.0/24", "10.10.0.4/31", "2001:db8::/64"] {
        let mut p = plan("wide");
        p["vm"]["prefixes"] = json!([wide]);
        let (s, b) = post(&c, &base, &p).await;
        assert_eq!(
            (s, b["field"].as_str()),
            (400, Some("vm.prefixes")),
            "{wide}: {b}"
        );
        assert!(
            b["error"].as_str().unwrap_or("").contains("host route"),
            "{b}"
        );
    }
    // Nothing was started for them.
    let r = c
        .get(format!("{base}/v1/migrations/wide"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn serves_https_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::api::tls::test_pki::make(dir.path());
    let cfg: ServiceConfig = toml::from_str(&format!(
        "journal = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"t\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        dir.path().join("j.redb").display(),
        pki.cert.display(),
        pki.key.display()
    ))
    .unwrap();
    let tls = cfg.api.tls().unwrap().expect("TLS configured");
    let journal = Arc::new(Journal::open(dir.path().join("j.redb")).unwrap());
    let settings = DriverSettings {
        agent_token: None,
        agent_timeout: Duration::from_millis(300),
        lab_precopy: Duration::from_millis(1),
    };
    let state = ServiceState::new(TOKEN.into(), journal, settings, dir.path().to_path_buf());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = crate::api::tls::TlsListener::new(tcp, tls);
    tokio::spawn(serve_on(listener, state, std::future::pending()));
    let c = crate::api::tls::trust_ca(Client::builder(), &pki.ca)
        .unwrap()
        .build()
        .unwrap();
    let r = c
        .get(format!("https://localhost:{port}/v1/migrations"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let plain = Client::new()
        .get(format!("http://localhost:{port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain http answered: {plain:?}");
    // One of the pair alone is a configuration error.
    let half: ServiceConfig = toml::from_str(&format!(
        "journal = \"j\"\n[api]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"t\"\ntls_cert = \"{}\"\n",
        pki.cert.display()
    ))
    .unwrap();
    assert!(half.api.tls().is_err());
}
