//! The agent's API over TLS: two real agents serving https with certificates of a CA
//! made at test time, driven prepare → switchover → announce → automatic teardown with
//! the bearer token; the destination's own call to the source (`vm-seen` notice) goes
//! over https too, trusting the CA through `api.peer_ca_file`. Plain http to the
//! https port and a client that does not trust the CA both fail. Needs root and VXLAN
//! (the agents act in namespaces): SKIPPED without them (panics under CI).

mod agent_lab;

use std::time::Duration;

use agent_lab::{body, can_run, tls_extra, Agent, Lab, A4, B4, TOKEN};

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_over_https_full_cycle() {
    if !can_run("two_agents_over_https_full_cycle") {
        return;
    }
    let lab = Lab::new("tls");
    let dir = tempfile::tempdir().unwrap();
    let extra = tls_extra(dir.path());
    let a = Agent::with(dir.path(), "a", &lab.a, A4, extra.clone()).await;
    let b = Agent::with(dir.path(), "b", &lab.b, B4, extra).await;
    assert!(a.base.starts_with("https://"), "{}", a.base);

    // Plain http to the https port: no answer.
    let plain = a.base.replacen("https://", "http://", 1);
    let r = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(r.is_err(), "plain http answered: {r:?}");
    // A client that does not trust the CA: refused, and the error says why.
    let e = reqwest::Client::new()
        .get(format!("{}/healthz", a.base))
        .send()
        .await
        .unwrap_err();
    let why = error_chain(&e);
    assert!(why.contains("certificate"), "{why}");
    // The token is still required over TLS.
    let r = a
        .client
        .get(format!("{}/v1/migrations", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = a
        .client
        .get(format!("{}/v1/migrations", a.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // The whole migration over https.
    let (code, v) = b.put("m1", body("destination", A4, &a.base)).await;
    assert_eq!(code, 201, "{v}\n{}", b.logs());
    let (code, v) = a.put("m1", body("source", B4, &b.base)).await;
    assert_eq!(code, 201, "{v}\n{}", a.logs());
    for (agent, what) in [
        (&b, "switchover"),
        (&a, "switchover"),
        (&b, "announce"),
        (&a, "announce"),
    ] {
        let (code, v) = agent.post("m1", what).await;
        assert_eq!(code, 200, "{what}: {v}");
    }
    assert!(lab.ping_vm_from_a(), "ping through the override");
    a.wait_phase("m1", "torn-down", Duration::from_secs(30))
        .await;
    b.wait_phase("m1", "torn-down", Duration::from_secs(30))
        .await;
}
