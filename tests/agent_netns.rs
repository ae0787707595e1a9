//! Two real agents, each acting in its own network namespace (source `A`, destination
//! `B`, joined by a veth), driven over their REST APIs: prepare → switchover →
//! announce → automatic teardown once the tunnel is quiet, with real VXLAN tunnels and
//! overrides checked in the kernel and a ping to the "VM" crossing the tunnel. Each
//! agent is killed with SIGKILL between phases and restarted: the kernel matches the
//! journal again (even after the tunnel was deleted behind its back) and the
//! migration finishes. Needs root and VXLAN: SKIPPED without them (panics under CI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "netns-test-token-0123456789";
const A4: &str = "10.0.23.2";
const B4: &str = "10.0.23.3";
const VM: &str = "10.10.0.5";

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Root, `ip`, and the kernel's VXLAN: or SKIPPED (a panic under CI).
fn can_run(test: &str) -> bool {
    let why = if !sh(&["id", "-u"]).stdout.starts_with(b"0\n") {
        Some("needs root")
    } else if !sh(&["ip", "-V"]).status.success() {
        Some("needs iproute2")
    } else {
        // Probed once per process: tests of this binary run in parallel, and the kernel
        // refuses a second VXLAN with the same VNI and port in one namespace.
        static VXLAN_OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let vxlan_ok = *VXLAN_OK.get_or_init(|| {
            let probe = format!("mrpprobe{}", std::process::id() % 100_000);
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

/// Two namespaces joined by a veth; the destination holds the "VM" address.
struct Lab {
    a: String,
    b: String,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let lab = Lab {
            a: format!("mra-{tag}-{pid}-a"),
            b: format!("mra-{tag}-{pid}-b"),
        };
        for ns in [&lab.a, &lab.b] {
            ok(&["ip", "netns", "add", ns]);
            ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        ok(&[
            "ip", "link", "add", "mra0", "netns", &lab.a, "type", "veth", "peer", "name", "mrb0",
            "netns", &lab.b,
        ]);
        ok(&[
            "ip",
            "-n",
            &lab.a,
            "addr",
            "add",
            &format!("{A4}/24"),
            "dev",
            "mra0",
        ]);
        ok(&[
            "ip",
            "-n",
            &lab.b,
            "addr",
            "add",
            &format!("{B4}/24"),
            "dev",
            "mrb0",
        ]);
        ok(&["ip", "-n", &lab.a, "link", "set", "mra0", "up"]);
        ok(&["ip", "-n", &lab.b, "link", "set", "mrb0", "up"]);
        // The "VM" lives on B's loopback (CI kernels may lack the dummy driver).
        ok(&[
            "ip",
            "-n",
            &lab.b,
            "addr",
            "add",
            &format!("{VM}/32"),
            "dev",
            "lo",
        ]);
        lab
    }

    fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", ns];
        v.extend_from_slice(args);
        ok(&v)
    }

    fn ping_vm_from_a(&self) -> bool {
        sh(&[
            "ip", "netns", "exec", &self.a, "ping", "-c", "2", "-i", "0.2", "-W", "1", VM,
        ])
        .status
        .success()
    }

    fn sysctl(&self, ns: &str, key: &str) -> String {
        ok(&[
            "ip",
            "netns",
            "exec",
            ns,
            "cat",
            &format!("/proc/sys/{key}"),
        ])
        .trim()
        .to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

/// One agent process; killed when dropped.
struct Agent {
    config: PathBuf,
    log: PathBuf,
    base: String,
    child: Option<Child>,
}

impl Agent {
    fn new(dir: &Path, name: &str, netns: &str, source: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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

    fn start(&mut self) {
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
        loop {
            if let Ok(r) = reqwest_blocking_get(&format!("{}/healthz", self.base)) {
                if r == 200 {
                    return;
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited with {st}: {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "agent not healthy: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Minimal status probe without a runtime (used while waiting for start-up).
fn reqwest_blocking_get(url: &str) -> Result<u16, ()> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").split('/').next().unwrap();
    let path = &url[url.find(addr).unwrap() + addr.len()..];
    let mut s = std::net::TcpStream::connect(addr).map_err(|_| ())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|_| ())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|_| ())?;
    buf.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(())
}

struct Api {
    client: reqwest::Client,
}

impl Api {
    async fn call(
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

    async fn put(&self, agent: &Agent, id: &str, body: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::PUT,
            format!("{}/v1/migrations/{id}", agent.base),
            Some(body),
        )
        .await
    }

    async fn post(&self, agent: &Agent, id: &str, what: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            format!("{}/v1/migrations/{id}/{what}", agent.base),
            None,
        )
        .await
    }

    async fn get(&self, agent: &Agent, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, format!("{}{path}", agent.base), None)
            .await
    }

    async fn wait_phase(&self, agent: &Agent, id: &str, phase: &str, within: Duration) -> Value {
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

fn body(role: &str, peer: &str, peer_api: &str) -> Value {
    json!({
        "prefixes": [format!("{VM}/32")],
        "role": role,
        "peer": {"tunnel_endpoint": peer, "api_url": peer_api},
        "tunnel": {"kind": "vxlan", "vni": 4242},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_full_cycle_with_kill9_between_phases() {
    if !can_run("two_agents_full_cycle_with_kill9_between_phases") {
        return;
    }
    let lab = Lab::new("cyc");
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::new(dir.path(), "a", &lab.a, A4);
    let mut b = Agent::new(dir.path(), "b", &lab.b, B4);
    let api = Api {
        client: reqwest::Client::new(),
    };

    // Contract checks against a real process.
    let r = api
        .client
        .get(format!("{}/v1/migrations", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (code, v) = api
        .put(&a, "m1", json!({"prefixes": ["10.10.0.0/24"]}))
        .await;
    assert_eq!(code, 400, "{v}");

    // Prepare: the tunnel exists when PUT returns.
    let (code, v) = api.put(&b, "m1", body("destination", A4, &a.base)).await;
    assert_eq!(code, 201, "{v}\n{}", b.logs());
    let (code, va) = api.put(&a, "m1", body("source", B4, &b.base)).await;
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
    let (code, v) = api.put(&a, "m1", body("source", B4, &b.base)).await;
    assert_eq!(code, 200, "same body again: {v}");
    let (code, v) = api
        .put(&a, "m2", body("source", "10.0.23.4", &b.base))
        .await;
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
    let (code, v) = api.post(&b, "m1", "switchover").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        lab.sysctl(&lab.b, &format!("net/ipv4/conf/{dev_b}/forwarding")),
        "1"
    );
    let (code, v) = api.post(&a, "m1", "switchover").await;
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
    a.start();
    let table = lab.ip(&lab.a, &["route", "show", "table", "4245"]);
    assert!(
        table.contains(VM) && table.contains(&dev_a),
        "reconciled: {table}\n{}",
        a.logs()
    );
    let (_, v) = api.get(&a, "/v1/migrations/m1").await;
    assert_eq!(v["phase"], "switched-over");
    assert!(lab.ping_vm_from_a(), "ping through the recreated tunnel");

    // Announce at the destination, then kill -9 it: the route comes back from the
    // journal on restart.
    let (code, v) = api.post(&b, "m1", "announce").await;
    assert_eq!(code, 200, "{v}");
    let (_, routes) = api.get(&b, "/v1/bgp/routes").await;
    assert_eq!(routes[0]["prefix"], format!("{VM}/32"));
    assert!(routes[0]["communities"]
        .as_array()
        .unwrap()
        .contains(&json!("no-export")));
    b.kill9();
    b.start();
    let (_, routes) = api.get(&b, "/v1/bgp/routes").await;
    assert_eq!(
        routes[0]["prefix"],
        format!("{VM}/32"),
        "re-announced after restart"
    );
    let (code, v) = api.post(&a, "m1", "announce").await;
    assert_eq!(code, 200, "{v}");

    // Converged (held, then quiet): both sides tear down by themselves.
    let va = api
        .wait_phase(&a, "m1", "torn-down", Duration::from_secs(20))
        .await;
    api.wait_phase(&b, "m1", "torn-down", Duration::from_secs(20))
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
    let (_, routes) = api.get(&b, "/v1/bgp/routes").await;
    assert_eq!(
        routes[0]["prefix"],
        format!("{VM}/32"),
        "the VM lives at B: keep announcing"
    );
    let text = api
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
    a.start();
    assert!(!lab.ip(&lab.a, &["link"]).contains(&dev_a));
    let (_, v) = api.get(&a, "/v1/migrations/m1").await;
    assert_eq!(v["phase"], "torn-down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_prepared_then_abort_leaves_nothing() {
    if !can_run("kill9_while_prepared_then_abort_leaves_nothing") {
        return;
    }
    let lab = Lab::new("abt");
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::new(dir.path(), "a", &lab.a, A4);
    let api = Api {
        client: reqwest::Client::new(),
    };
    let (code, v) = api
        .put(&a, "m1", body("source", B4, "http://127.0.0.1:9"))
        .await;
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
    a.start();
    let links = lab.ip(&lab.a, &["link"]);
    assert!(links.contains(&dev), "journaled tunnel kept: {links}");
    assert!(!links.contains("mr-vorphan"), "orphan removed: {links}");
    let (_, v) = api.get(&a, "/v1/migrations/m1").await;
    assert_eq!(v["phase"], "prepared");
    let (code, v) = api.post(&a, "m1", "switchover").await;
    assert_eq!(code, 200, "{v}");
    a.kill9();
    a.start();
    let (code, v) = api.post(&a, "m1", "abort").await;
    assert_eq!((code, v["phase"].as_str()), (200, Some("aborted")), "{v}");
    assert!(!lab.ip(&lab.a, &["link"]).contains(&dev));
    assert!(!lab
        .ip(&lab.a, &["route", "show", "table", "4245"])
        .contains(VM));
}
