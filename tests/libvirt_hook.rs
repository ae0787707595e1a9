//! `migroute libvirt-hook`, run as libvirt runs it (arguments, domain XML on stdin)
//! against two real agents in network namespaces: `migrate begin` at the destination
//! prepares both agents (tunnels in both kernels), `release end` of a migration that
//! never switched over aborts both, one that switched over is left alone, an
//! unreachable peer refuses the migration. Needs root and VXLAN: SKIPPED without them
//! (panics under CI).

mod agent_lab;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agent_lab::{can_run, free_port, Agent, Lab, A4, B4};

const UUID: &str = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0";

fn domain_xml(with_metadata: bool) -> String {
    let meta = if with_metadata {
        r#"<metadata>
    <migroute:vm xmlns:migroute="https://migroute.dev/xmlns/libvirt/1">
      <migroute:prefix>10.10.0.5/32</migroute:prefix>
    </migroute:vm>
  </metadata>"#
    } else {
        ""
    };
    format!("<domain type='kvm'>\n  <name>vm1</name>\n  <uuid>{UUID}</uuid>\n  {meta}\n</domain>\n")
}

fn hook_config(dir: &Path, local: &Agent, peer_url: &str, fail_closed: bool) -> std::path::PathBuf {
    let path = dir.join(format!("hook-{}.toml", free_port()));
    std::fs::write(
        &path,
        format!(
            r#"fail_closed = {fail_closed}
timeout_ms = 3000
token_file = "{token}"
state_dir = "{state}"
[local]
agent_url = "{local}"
tunnel_endpoint = "{B4}"
[peer]
agent_url = "{peer_url}"
tunnel_endpoint = "{A4}"
[timers]
quiet_ms = 400
min_hold_ms = 600
converge_timeout_ms = 30000
"#,
            token = dir.join("token").display(),
            state = dir.join("hook-state").display(),
            local = local.base,
        ),
    )
    .unwrap();
    path
}

/// Runs the hook as libvirt does: `DOMAIN OP SUBOP -`, XML on stdin.
fn hook(config: &Path, op: &str, sub: &str, xml: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_migroute"))
        .arg("libvirt-hook")
        .arg("--config")
        .arg(config)
        .args(["vm1", op, sub, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hook");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // libvirt would take anything on stdout for a replacement domain XML.
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    out
}

/// Names of migroute's links (`mr-…`) in `ns`.
fn migroute_links(lab: &Lab, ns: &str) -> Vec<String> {
    lab.ip(ns, &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("mr-"))
        .collect()
}

async fn live_ids(agent: &Agent) -> Vec<(String, String, String)> {
    let (code, all) = agent.get("/v1/migrations").await;
    assert_eq!(code, 200, "{all}");
    all.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_owned(),
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["phase"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .filter(|(_, _, phase)| phase != "aborted" && phase != "torn-down")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_begin_prepares_both_agents_and_release_aborts_what_never_switched() {
    if !can_run("migrate_begin_prepares_both_agents_and_release_aborts_what_never_switched") {
        return;
    }
    let lab = Lab::new("hook");
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::new(dir.path(), "a", &lab.a, A4).await;
    let b = Agent::new(dir.path(), "b", &lab.b, B4).await;
    let config = hook_config(dir.path(), &b, &a.base, true);

    // Operations the hook does not act on need neither config nor XML.
    let out = hook(Path::new("/nonexistent/hook.toml"), "prepare", "begin", "");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A domain without migroute metadata is none of our business.
    let out = hook(&config, "migrate", "begin", &domain_xml(false));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(live_ids(&a).await.is_empty() && live_ids(&b).await.is_empty());

    // 1. An incoming migration that fails: prepared on both, then aborted on both.
    let out = hook(&config, "migrate", "begin", &domain_xml(true));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let on_b = live_ids(&b).await;
    let on_a = live_ids(&a).await;
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    let id = on_b[0].0.clone();
    assert!(id.starts_with(&format!("lv-{UUID}-")), "{id}");
    assert_eq!(on_b[0].1, "destination");
    assert_eq!(on_a, vec![(id.clone(), "source".into(), "prepared".into())]);
    assert_eq!(migroute_links(&lab, &lab.a).len(), 1);
    assert_eq!(migroute_links(&lab, &lab.b).len(), 1);
    let out = hook(&config, "release", "end", &domain_xml(true));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.wait_phase(&id, "aborted", Duration::from_secs(15)).await;
    a.wait_phase(&id, "aborted", Duration::from_secs(15)).await;
    assert!(migroute_links(&lab, &lab.a).is_empty());
    assert!(migroute_links(&lab, &lab.b).is_empty());

    // 2. One that switches over (as the VM-seen detection would make it): a later
    //    release leaves it to converge and tear itself down.
    let out = hook(&config, "migrate", "begin", &domain_xml(true));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id2 = live_ids(&b).await[0].0.clone();
    assert_ne!(id2, id, "every migration gets its own id");
    for agent in [&a, &b] {
        let (code, v) = agent.post(&id2, "switchover").await;
        assert_eq!(code, 200, "{v}");
    }
    let out = hook(&config, "release", "end", &domain_xml(true));
    assert_eq!(out.status.code(), Some(0));
    let (_, v) = b.get(&format!("/v1/migrations/{id2}")).await;
    assert_ne!(v["phase"], "aborted", "{v}");
    // Announce, then the quiet tunnel lets both tear down by themselves.
    for agent in [&b, &a] {
        let (code, v) = agent.post(&id2, "announce").await;
        assert_eq!(code, 200, "{v}");
    }
    for agent in [&a, &b] {
        agent
            .wait_phase(&id2, "torn-down", Duration::from_secs(30))
            .await;
    }
    assert!(migroute_links(&lab, &lab.a).is_empty());
    assert!(migroute_links(&lab, &lab.b).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_refuses_the_migration_and_leaves_nothing() {
    if !can_run("an_unreachable_peer_refuses_the_migration_and_leaves_nothing") {
        return;
    }
    let lab = Lab::new("hookf");
    let dir = tempfile::tempdir().unwrap();
    let b = Agent::new(dir.path(), "b", &lab.b, B4).await;
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let closed = hook_config(dir.path(), &b, &nobody, true);
    let out = hook(&closed, "migrate", "begin", &domain_xml(true));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing the migration of vm1"), "{stderr}");
    assert!(live_ids(&b).await.is_empty());
    assert!(migroute_links(&lab, &lab.b).is_empty());
    // fail_closed = false: the VM may move; the error is logged, the hook succeeds.
    let open = hook_config(dir.path(), &b, &nobody, false);
    let out = hook(&open, "migrate", "begin", &domain_xml(true));
    assert_eq!(out.status.code(), Some(0));
    assert!(live_ids(&b).await.is_empty());
}
