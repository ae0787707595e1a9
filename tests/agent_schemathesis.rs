//! Schemathesis against a real agent: every operation of `/openapi.json` fuzzed with
//! `--checks all` (no 5xx, every response matching the document, invalid requests
//! refused; see below for the one check left out). The agent acts in a scratch network
//! namespace, so the tunnels the fuzzer prepares are real and vanish with it.
//!
//! Needs root, iproute2, the kernel's VXLAN and the `schemathesis` CLI
//! (`pip install 'schemathesis==4.32.5'`): SKIPPED without them, a panic under CI.
//! `GET /v1/events` is left out: it is an endless SSE stream.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use migroute_labs::preflight::{self, Preflight};

const TOKEN: &str = "schemathesis-token-0123456789";

fn sh(args: &[&str]) -> Option<std::process::Output> {
    Command::new(args[0]).args(&args[1..]).output().ok()
}

fn succeeds(args: &[&str]) -> bool {
    sh(args).is_some_and(|o| o.status.success())
}

fn can_run() -> bool {
    Preflight::new("agent_schemathesis")
        .root()
        .tools(&["ip"])
        .check(|| {
            (!succeeds(&["schemathesis", "--version"]))
                .then(|| "schemathesis (pip install 'schemathesis==4.32.5')".to_string())
        })
        .check(preflight::vxlan)
        .ready()
}

/// Whether the kernel can make GRE links: the fuzzer asks for GRE tunnels too.
fn kernel_has_gre() -> bool {
    let probe = format!("mrstg{}", std::process::id());
    let made = succeeds(&[
        "ip",
        "link",
        "add",
        &probe,
        "type",
        "gre",
        "remote",
        "192.0.2.1",
        "local",
        "192.0.2.2",
    ]);
    let _ = sh(&["ip", "link", "del", &probe]);
    made
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn healthy(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    if write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    s.read_to_string(&mut buf).is_ok() && buf.starts_with("HTTP/1.1 200")
}

fn start_agent(dir: &Path, netns: &str) -> (Agent, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"netns = "{netns}"
journal = "{journal}"
[pe]
router_id = "10.255.0.2"
loopback = "10.255.0.2"
tunnel_source = "10.0.23.2"
[api]
listen = "127.0.0.1:{port}"
token_file = "{token}"
"#,
            journal = dir.join("journal.redb").display(),
            token = token.display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_migroute"))
        .args(["agent", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn agent");
    let mut agent = Agent(child);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !healthy(&addr) {
        if let Some(st) = agent.0.try_wait().unwrap() {
            panic!(
                "agent exited with {st}: {}",
                std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "agent did not become healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    (agent, addr)
}

#[test]
fn openapi_document_holds_under_schemathesis() {
    if !can_run() {
        return;
    }
    let ns = Netns(format!("mrst-{}", std::process::id()));
    assert!(succeeds(&["ip", "netns", "add", &ns.0]), "netns add");
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
        assert!(succeeds(&cmd), "{cmd:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (_agent, addr) = start_agent(dir.path(), &ns.0);

    let mut args = vec![
        "run".to_owned(),
        format!("http://{addr}/openapi.json"),
        "-H".into(),
        format!("Authorization: Bearer {TOKEN}"),
        "--checks".into(),
        "all".into(),
        // Bounded so the run stays well under a minute on a loaded 2-core machine.
        "--max-examples".into(),
        "10".into(),
        "--seed".into(),
        "1".into(),
        "--workers".into(),
        "1".into(),
        "--request-timeout".into(),
        "5".into(),
        "--exclude-path".into(),
        "/v1/events".into(),
        "--report".into(),
        "junit".into(),
        "--report-dir".into(),
        dir.path().join("report").display().to_string(),
    ];
    // Host routes ("10.10.0.5/32") and a v4 tunnel endpoint are strings the document
    // cannot pin down further, so the fuzzer's "valid" bodies are mostly refused with
    // 400: `positive_data_acceptance` would only measure that.
    let mut excluded = vec!["positive_data_acceptance"];
    if !kernel_has_gre() {
        // A GRE prepare then fails in the kernel with the documented 500; that is the
        // host, not the API. Every other check still runs.
        eprintln!("NOTE: agent_schemathesis: kernel lacks gre; not_a_server_error excluded");
        excluded.push("not_a_server_error");
    }
    args.extend(["--exclude-checks".into(), excluded.join(",")]);
    let started = Instant::now();
    let out = Command::new("schemathesis")
        .args(&args)
        .env("NO_COLOR", "1")
        // It keeps a `.schemathesis/` cache in its working directory.
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("schemathesis took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{}\nagent log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
    );
    // It really tested something: a run with no operations also exits 0.
    assert!(stdout.contains("Tested: 11"), "{stdout}");
}
