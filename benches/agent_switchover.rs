//! Quiesce webhook → override in the kernel, through a real agent process acting in a
//! fresh network namespace: `POST /v1/migrations/{id}/switchover` sent → response
//! received (the response is sent after the netlink ACK of the override and the
//! journal's fsyncs). 1000 prepare → switchover → abort cycles; prints p50/p99 of the
//! switchover round trip, and the agent's own netlink-only figure from `/metrics`.
//!
//!   cargo bench -p migroute --bench agent_switchover [-- CYCLES [JOURNAL_DIR]]
//!
//! `MIGROUTE_BIN=/path/to/migroute` runs another build of the agent (to compare two
//! builds with the same client on the same machine minutes apart).
//!
//! Needs root (netns, VXLAN); prints SKIPPED otherwise.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const TOKEN: &str = "bench-token-0123456789abcdef";

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        sh(&["ip", "netns", "del", &self.0]);
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let cycles: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let dir = match args.get(1) {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let ns = Netns(format!("mrbench-{}", std::process::id()));
    if !sh(&["ip", "netns", "add", &ns.0]) {
        eprintln!("SKIPPED: agent_switchover: needs root and iproute2");
        return;
    }
    for cmd in [
        vec!["ip", "-n", &ns.0, "link", "set", "lo", "up"],
        vec![
            "ip", "-n", &ns.0, "link", "add", "u0", "type", "veth", "peer", "name", "u1",
        ],
        vec![
            "ip",
            "-n",
            &ns.0,
            "addr",
            "add",
            "10.0.23.2/24",
            "dev",
            "u0",
        ],
        vec!["ip", "-n", &ns.0, "link", "set", "u0", "up"],
        vec!["ip", "-n", &ns.0, "link", "set", "u1", "up"],
    ] {
        assert!(sh(&cmd), "{cmd:?}");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "netns = \"{}\"\njournal = \"{}\"\n[pe]\nrouter_id = \"10.255.0.2\"\nloopback = \"10.255.0.2\"\ntunnel_source = \"10.0.23.2\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            ns.0,
            dir.path().join("journal.redb").display(),
            dir.path().join("token").display()
        ),
    )
    .unwrap();
    let bin =
        std::env::var_os("MIGROUTE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_migroute").into());
    let mut agent = Command::new(bin)
        .args(["agent", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn agent");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(run(port, cycles));
    let _ = agent.kill();
    let _ = agent.wait();
    let (mut samples, netlink) = result;
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "agent_switchover: {} switchovers, HTTP request sent -> response (after netlink ACK + journal fsync): p50 {:?} p99 {:?} max {:?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples.last().unwrap()
    );
    println!("agent_switchover: agent's netlink-only override install (from /metrics): {netlink}");
}

async fn run(port: u16, cycles: usize) -> (Vec<Duration>, String) {
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "agent did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = json!({
        "prefixes": ["10.10.0.5/32"],
        "role": "source",
        "peer": {"tunnel_endpoint": "10.0.23.3", "api_url": "http://127.0.0.1:9"},
        "tunnel": {"kind": "vxlan", "vni": 4242},
    });
    let mut samples = Vec::with_capacity(cycles);
    for i in 0..cycles {
        let id = format!("bench-{i}");
        let r = client
            .put(format!("{base}/v1/migrations/{id}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
        let url = format!("{base}/v1/migrations/{id}/switchover");
        let start = Instant::now();
        let r = client.post(&url).bearer_auth(TOKEN).send().await.unwrap();
        let status = r.status().as_u16();
        let _ = r.bytes().await.unwrap();
        samples.push(start.elapsed());
        assert_eq!(status, 200);
        let r = client
            .post(format!("{base}/v1/migrations/{id}/abort"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let count = line("migroute_override_install_seconds_count");
    let sum = line("migroute_override_install_seconds_sum");
    let under_1ms = line("migroute_override_install_seconds_bucket{le=\"0.001\"}");
    let netlink = format!(
        "mean {:.1} µs over {count} installs, {:.1}% under 1 ms",
        sum / count.max(1.0) * 1e6,
        under_1ms / count.max(1.0) * 100.0
    );
    (samples, netlink)
}
