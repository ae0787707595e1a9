//! Shared harness of the root package's netns tests: two namespaces joined by a veth
//! (site A and site B), and real `migroute agent` processes acting in them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "netns-test-token-0123456789";
pub const A4: &str = "10.0.23.2";
pub const B4: &str = "10.0.23.3";

pub fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

pub fn ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Root, `ip`, and the kernel's VXLAN: or SKIPPED (a panic under CI).
pub fn can_run(test: &str) -> bool {
    let why = if !sh(&["id", "-u"]).stdout.starts_with(b"0\n") {
        Some("needs root")
    } else if !sh(&["ip", "-V"]).status.success() {
        Some("needs iproute2")
    } else {
        // Probed once per process: tests of one binary run in parallel, and the kernel
        // refuses a second VXLAN with the same VNI and port in one namespace.
        static VXLAN_OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let vxlan_ok = *VXLAN_OK.get_or_init(|| {
            let probe = format!("mrsprobe{}", std::process::id() % 100_000);
            let made = sh(&[
                "ip", "link", "add", &probe, "type", "vxlan", "id", "1", "dstport", "0",
            ]);
            let _ = sh(&["ip", "link", "del", &probe]);
            made.status.success()
        });
        (!vxlan_ok).then_some("kernel lacks vxlan")
    };
    match why {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("{test}: {why} (CI is set)"),
        Some(why) => {
            eprintln!("SKIPPED: {test}: {why}");
            false
        }
    }
}

/// Sites A and B: two namespaces joined by a veth, A4 and B4 on its ends.
pub struct Sites {
    pub a: String,
    pub b: String,
}

impl Sites {
    pub fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let sites = Sites {
            a: format!("mrs-{tag}-{pid}-a"),
            b: format!("mrs-{tag}-{pid}-b"),
        };
        for ns in [&sites.a, &sites.b] {
            ok(&["ip", "netns", "add", ns]);
            ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        ok(&[
            "ip", "link", "add", "mrsa0", "netns", &sites.a, "type", "veth", "peer", "name",
            "mrsb0", "netns", &sites.b,
        ]);
        for (ns, dev, addr) in [(&sites.a, "mrsa0", A4), (&sites.b, "mrsb0", B4)] {
            ok(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        sites
    }

    /// Names of migroute's links (`mr-…`) in `ns`.
    pub fn migroute_links(&self, ns: &str) -> Vec<String> {
        ok(&["ip", "-n", ns, "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with("mr-"))
            .collect()
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

/// One agent process acting in a namespace; killed when dropped.
pub struct Agent {
    pub config: PathBuf,
    pub log: PathBuf,
    pub base: String,
    child: Option<Child>,
}

impl Agent {
    pub fn new(dir: &Path, name: &str, netns: &str, source: &str) -> Self {
        let port = free_port();
        let token = dir.join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"netns = "{netns}"
journal = "{journal}"
[pe]
router_id = "{source}"
loopback = "{source}"
tunnel_source = "{source}"
[api]
listen = "127.0.0.1:{port}"
token_file = "{token}"
[convergence]
quiet_ms = 400
min_hold_ms = 600
converge_timeout_ms = 30000
"#,
                journal = dir.join(format!("{name}.redb")).display(),
                token = token.display(),
            ),
        )
        .unwrap();
        let mut a = Agent {
            config,
            log: dir.join(format!("{name}.log")),
            base: format!("http://127.0.0.1:{port}"),
            child: None,
        };
        a.start();
        a
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_migroute"))
            .args(["agent", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = self.base.trim_start_matches("http://").to_owned();
        loop {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited with {st}: {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "agent not listening: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The agents' REST API, with the token.
pub struct Api {
    pub client: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            client: reqwest::Client::new(),
        }
    }
}

impl Api {
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, url).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, agent: &Agent, id: &str, what: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            format!("{}/v1/migrations/{id}/{what}", agent.base),
            None,
        )
        .await
    }

    pub async fn get(&self, agent: &Agent, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, format!("{}{path}", agent.base), None)
            .await
    }

    /// Every migration the agent holds.
    pub async fn migrations(&self, agent: &Agent) -> Vec<Value> {
        let (code, v) = self.get(agent, "/v1/migrations").await;
        assert_eq!(code, 200, "{v}");
        v.as_array().cloned().unwrap_or_default()
    }

    pub async fn wait_phase(
        &self,
        agent: &Agent,
        id: &str,
        phase: &str,
        within: Duration,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, v) = self.get(agent, &format!("/v1/migrations/{id}")).await;
            if v["phase"] == phase {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "never {phase}: {v}\n{}",
                agent.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
