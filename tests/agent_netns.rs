//! Two real agents, each acting in its own network namespace (source `A`, destination
//! `B`, joined by a veth), driven over their REST APIs: prepare → switchover →
//! announce → automatic teardown once the tunnel is quiet, with real VXLAN tunnels and
//! overrides checked in the kernel and a ping to the "VM" crossing the tunnel. Each
//! agent is killed with SIGKILL between phases and restarted: the kernel matches the
//! journal again (even after the tunnel was deleted behind its back) and the
//! migration finishes. Needs root and VXLAN: SKIPPED without them (panics under CI).

mod agent_lab;

use std::time::Duration;

use agent_lab::{body, can_run, Agent, Lab, A4, B4, TOKEN, VM};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_full_cycle_with_kill9_between_phases() {
    if !can_run("two_agents_full_cycle_with_kill9_between_phases") {
        return;
    }
    let lab = Lab::new("cyc");
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::new(dir.path(), "a", &lab.a, A4).await;
    let mut b = Agent::new(dir.path(), "b", &lab.b, B4).await;

    // Contract checks against a real process.
    let r = a
        .client
        .get(format!("{}/v1/migrations", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (code, v) = a.put("m1", json!({"prefixes": ["10.10.0.0/24"]})).await;
    assert_eq!(code, 400, "{v}");

    // Prepare: the tunnel exists when PUT returns.
    let (code, v) = b.put("m1", body("destination", A4, &a.base)).await;
    assert_eq!(code, 201, "{v}\n{}", b.logs());
    let (code, va) = a.put("m1", body("source", B4, &b.base)).await;
    assert_eq!(code, 201, "{va}\n{}", a.logs());
    let dev_a = va["tunnel_device"].as_str().unwrap().to_owned();
    let dev_b = v["tunnel_device"].as_str().unwrap().to_owned();
    let link = lab.ip(&lab.a, &["-d", "link", "show", &dev_a]);
    assert!(
        link.contains("vxlan id 4242") && link.contains(&format!("local {A4}")),
        "{link}"
    );
    assert!(lab
        .ip(&lab.b, &["-d", "link", "show", &dev_b])
        .contains("vxlan id 4242"));
    let (code, v) = a.put("m1", body("source", B4, &b.base)).await;
    assert_eq!(code, 200, "same body again: {v}");
    let (code, v) = a.put("m2", body("source", "10.0.23.4", &b.base)).await;
    assert_eq!(
        (code, v["id"].as_str()),
        (409, Some("m1")),
        "prefix in use: {v}"
    );
    assert!(
        !lab.ping_vm_from_a(),
        "no override yet: the VM is unreachable from A"
    );

    // Switchover: destination delivers, source overrides; the ping crosses the tunnel.
    let (code, v) = b.post("m1", "switchover").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        lab.sysctl(&lab.b, &format!("net/ipv4/conf/{dev_b}/forwarding")),
        "1"
    );
    let (code, v) = a.post("m1", "switchover").await;
    assert_eq!(code, 200, "{v}");
    let table = lab.ip(&lab.a, &["route", "show", "table", "4245"]);
    assert!(table.contains(VM) && table.contains(&dev_a), "{table}");
    assert!(lab.ip(&lab.a, &["rule"]).contains("4245"));
    assert!(lab.ping_vm_from_a(), "ping through the override");

    // kill -9 the source while switched over; delete its tunnel behind its back.
    a.kill9();
    lab.ip(&lab.a, &["link", "del", &dev_a]);
    assert!(!lab
        .ip(&lab.a, &["route", "show", "table", "4245"])
        .contains(VM));
    a.start().await;
    let table = lab.ip(&lab.a, &["route", "show", "table", "4245"]);
    assert!(
        table.contains(VM) && table.contains(&dev_a),
        "reconciled: {table}\n{}",
        a.logs()
    );
    let (_, v) = a.get("/v1/migrations/m1").await;
    assert_eq!(v["phase"], "switched-over");
    assert!(lab.ping_vm_from_a(), "ping through the recreated tunnel");

    // Announce at the destination, then kill -9 it: the route comes back from the
    // journal on restart.
    let (code, v) = b.post("m1", "announce").await;
    assert_eq!(code, 200, "{v}");
    let (_, routes) = b.get("/v1/bgp/routes").await;
    assert_eq!(routes[0]["prefix"], format!("{VM}/32"));
    assert!(routes[0]["communities"]
        .as_array()
        .unwrap()
        .contains(&json!("no-export")));
    b.kill9();
    b.start().await;
    let (_, routes) = b.get("/v1/bgp/routes").await;
    assert_eq!(
        routes[0]["prefix"],
        format!("{VM}/32"),
        "re-announced after restart"
    );
    let (code, v) = a.post("m1", "announce").await;
    assert_eq!(code, 200, "{v}");

    // Converged (held, then quiet): both sides tear down by themselves.
    let va = a
        .wait_phase("m1", "torn-down", Duration::from_secs(20))
        .await;
    b.wait_phase("m1", "torn-down", Duration::from_secs(20))
        .await;
    assert!(
        va["counters"]["tunnel_packets"].as_u64().unwrap() > 0,
        "{va}"
    );
    assert!(!lab
        .ip(&lab.a, &["route", "show", "table", "4245"])
        .contains(VM));
    assert!(
        !lab.ip(&lab.a, &["link"]).contains(&dev_a),
        "source tunnel deleted"
    );
    assert!(
        !lab.ip(&lab.b, &["link"]).contains(&dev_b),
        "destination tunnel deleted"
    );
    let (_, routes) = b.get("/v1/bgp/routes").await;
    assert_eq!(
        routes[0]["prefix"],
        format!("{VM}/32"),
        "the VM lives at B: keep announcing"
    );
    let text = a
        .client
        .get(format!("{}/metrics", a.base))
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

    // A restart after the end changes nothing in the kernel.
    a.kill9();
    a.start().await;
    assert!(!lab.ip(&lab.a, &["link"]).contains(&dev_a));
    let (_, v) = a.get("/v1/migrations/m1").await;
    assert_eq!(v["phase"], "torn-down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_prepared_then_abort_leaves_nothing() {
    if !can_run("kill9_while_prepared_then_abort_leaves_nothing") {
        return;
    }
    let lab = Lab::new("abt");
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::new(dir.path(), "a", &lab.a, A4).await;
    let (code, v) = a.put("m1", body("source", B4, "http://127.0.0.1:9")).await;
    assert_eq!(code, 201, "{v}");
    let dev = v["tunnel_device"].as_str().unwrap().to_owned();
    // An orphan a crash could leave: a migroute link nobody journaled.
    lab.ip(
        &lab.a,
        &[
            "link",
            "add",
            "mr-vorphan",
            "type",
            "vxlan",
            "id",
            "77",
            "dstport",
            "4789",
            "local",
            A4,
            "remote",
            B4,
        ],
    );
    a.kill9();
    a.start().await;
    let links = lab.ip(&lab.a, &["link"]);
    assert!(links.contains(&dev), "journaled tunnel kept: {links}");
    assert!(!links.contains("mr-vorphan"), "orphan removed: {links}");
    let (_, v) = a.get("/v1/migrations/m1").await;
    assert_eq!(v["phase"], "prepared");
    let (code, v) = a.post("m1", "switchover").await;
    assert_eq!(code, 200, "{v}");
    a.kill9();
    a.start().await;
    let (code, v) = a.post("m1", "abort").await;
    assert_eq!((code, v["phase"].as_str()), (200, Some("aborted")), "{v}");
    assert!(!lab.ip(&lab.a, &["link"]).contains(&dev));
    assert!(!lab
        .ip(&lab.a, &["route", "show", "table", "4245"])
        .contains(VM));
}
