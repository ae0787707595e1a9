//! Helpers shared by the agent tests that need root: network namespaces joined by a
//! veth, agent processes (killed when dropped), a REST client. Every namespace name
//! carries the test's tag and the process id, and every helper removes what it made.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const TOKEN: &str = "netns-test-token-0123456789";
pub const A4: &str = "10.0.23.2";
pub const B4: &str = "10.0.23.3";
pub const VM: &str = "10.10.0.5";

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

/// `why` is `None` when the test can run; otherwise SKIPPED (a panic under CI).
pub fn skip_unless(test: &str, why: Option<&str>) -> bool {
    match why {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("{test}: {why} (CI is set)"),
        Some(why) => {
            eprintln!("SKIPPED: {test}: {why}");
            false
        }
    }
}

/// Root, `ip`, and the kernel's VXLAN: or SKIPPED (a panic under CI).
pub fn can_run(test: &str) -> bool {
    skip_unless(test, missing_basics())
}

pub fn missing_basics() -> Option<&'static str> {
    if !sh(&["id", "-u"]).stdout.starts_with(b"0\n") {
        Some("needs root")
    } else if !sh(&["ip", "-V"]).status.success() {
        Some("needs iproute2")
    } else {
        // Probed once per process: tests of one binary run in parallel, and the kernel
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
    }
}

/// Two namespaces joined by a veth; the destination holds the "VM" address.
pub struct Lab {
    pub a: String,
    pub b: String,
}

impl Lab {
    pub fn new(tag: &str) -> Self {
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
        lab.ip(&lab.a, &["addr", "add", &format!("{A4}/24"), "dev", "mra0"]);
        lab.ip(&lab.b, &["addr", "add", &format!("{B4}/24"), "dev", "mrb0"]);
        lab.ip(&lab.a, &["link", "set", "mra0", "up"]);
        lab.ip(&lab.b, &["link", "set", "mrb0", "up"]);
        // The "VM" lives on B's loopback (CI kernels may lack the dummy driver).
        lab.ip(&lab.b, &["addr", "add", &format!("{VM}/32"), "dev", "lo"]);
        lab
    }

    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", ns];
        v.extend_from_slice(args);
        ok(&v)
    }

    pub fn ping_vm_from_a(&self) -> bool {
        sh(&[
            "ip", "netns", "exec", &self.a, "ping", "-c", "2", "-i", "0.2", "-W", "1", VM,
        ])
        .status
        .success()
    }

    pub fn sysctl(&self, ns: &str, key: &str) -> String {
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

/// What an agent's config holds beyond the basics.
#[derive(Default, Clone)]
pub struct Extra {
    /// Lines for `[pe]`.
    pub pe: String,
    /// Lines for `[api]`.
    pub api: String,
    /// Whole sections after `[convergence]` (e.g. `[bgp]`).
    pub tail: String,
    /// Serve https (the `[api]` lines must name the certificate).
    pub https: bool,
    /// CA the test's client trusts (PEM).
    pub ca_pem: Option<String>,
}

/// One agent process; killed when dropped.
pub struct Agent {
    pub config: PathBuf,
    pub log: PathBuf,
    pub base: String,
    pub client: reqwest::Client,
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Agent {
    pub async fn new(dir: &Path, name: &str, netns: &str, source: &str) -> Self {
        Self::with(dir, name, netns, source, Extra::default()).await
    }

    pub async fn with(dir: &Path, name: &str, netns: &str, source: &str, extra: Extra) -> Self {
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
{pe}
[api]
listen = "127.0.0.1:{port}"
token_file = "{token}"
{api}
[convergence]
quiet_ms = 400
min_hold_ms = 600
converge_timeout_ms = 30000
{tail}
"#,
                journal = dir.join(format!("{name}.redb")).display(),
                token = token.display(),
                pe = extra.pe,
                api = extra.api,
                tail = extra.tail,
            ),
        )
        .unwrap();
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(ca) = &extra.ca_pem {
            client =
                client.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
        }
        let scheme = if extra.https { "https" } else { "http" };
        let mut a = Agent {
            config,
            log: dir.join(format!("{name}.log")),
            // `localhost`, the name the test certificates carry.
            base: format!("{scheme}://localhost:{port}"),
            client: client.build().unwrap(),
            child: None,
        };
        a.start().await;
        a
    }

    /// Starts the process and waits until `/healthz` answers.
    pub async fn start(&mut self) {
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if r.status().as_u16() == 200 {
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
            tokio::time::sleep(Duration::from_millis(50)).await;
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

    pub async fn put(&self, id: &str, body: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::PUT,
            format!("{}/v1/migrations/{id}", self.base),
            Some(body),
        )
        .await
    }

    pub async fn post(&self, id: &str, what: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            format!("{}/v1/migrations/{id}/{what}", self.base),
            None,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, format!("{}{path}", self.base), None)
            .await
    }

    /// Polls the migration until it is in `phase`.
    pub async fn wait_phase(&self, id: &str, phase: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, v) = self.get(&format!("/v1/migrations/{id}")).await;
            if v["phase"] == phase {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "never {phase}: {v}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `PUT` body moving the VM.
pub fn body(role: &str, peer: &str, peer_api: &str) -> Value {
    json!({
        "prefixes": [format!("{VM}/32")],
        "role": role,
        "peer": {"tunnel_endpoint": peer, "api_url": peer_api},
        "tunnel": {"kind": "vxlan", "vni": 4242},
    })
}

/// A CA and a certificate for `localhost`/127.0.0.1 it signed, as PEM files in `dir`
/// (`ca.pem`, `agent.pem`, `agent.key`); returns the CA's PEM.
pub fn make_pki(dir: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "migroute test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("agent.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("agent.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

/// Config for an agent serving https with [`make_pki`]'s certificate and trusting its
/// CA for peer calls; the test's client trusts it too.
pub fn tls_extra(dir: &Path) -> Extra {
    let ca = make_pki(dir);
    let d = dir.display();
    Extra {
        api: format!(
            "tls_cert = \"{d}/agent.pem\"\ntls_key = \"{d}/agent.key\"\npeer_ca_file = \"{d}/ca.pem\"\n"
        ),
        https: true,
        ca_pem: Some(ca),
        ..Extra::default()
    }
}

/// B's side of the link to the route reflector, and the reflector's address.
pub const B_RR: &str = "10.0.24.3";
pub const RR: &str = "10.0.24.4";

/// FRR (bgpd, AS 65000, graceful restart) in a third namespace reachable only from B,
/// over a veth `10.0.24.0/24`: B's agent peers with it from inside B.
pub struct RouteReflector {
    pub ns: String,
    pub dir: PathBuf,
}

/// FRR's binaries, or why the test cannot use them.
pub fn missing_frr() -> Option<&'static str> {
    missing_basics().or_else(|| {
        ["/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "/usr/bin/vtysh"]
            .iter()
            .any(|b| !Path::new(b).exists())
            .then_some("needs FRR (apt-get install frr)")
    })
}

impl RouteReflector {
    pub fn new(lab: &Lab, tag: &str) -> Self {
        let pid = std::process::id();
        let ns = format!("mra-{tag}-{pid}-r");
        // FRR's run directory must be reachable by the `frr` user: not under a 0700
        // temporary directory.
        let dir = PathBuf::from(format!("/tmp/mra-{tag}-{pid}-frr"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("node")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ok(&["ip", "netns", "add", &ns]);
        let rr = RouteReflector { ns, dir };
        lab.ip(&rr.ns, &["link", "set", "lo", "up"]);
        ok(&[
            "ip", "link", "add", "mrr0", "netns", &rr.ns, "type", "veth", "peer", "name", "mrbr",
            "netns", &lab.b,
        ]);
        lab.ip(&rr.ns, &["addr", "add", &format!("{RR}/24"), "dev", "mrr0"]);
        lab.ip(
            &lab.b,
            &["addr", "add", &format!("{B_RR}/24"), "dev", "mrbr"],
        );
        lab.ip(&rr.ns, &["link", "set", "mrr0", "up"]);
        lab.ip(&lab.b, &["link", "set", "mrbr", "up"]);
        let conf = format!(
            "hostname rr
!
router bgp 65000
 bgp router-id {RR}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 bgp graceful-restart
 neighbor {B_RR} remote-as 65000
 neighbor {B_RR} timers 3 9
 neighbor {B_RR} timers connect 1
 !
 address-family ipv4 unicast
  neighbor {B_RR} activate
 exit-address-family
exit
!
end
"
        );
        let c = rr.dir.join("frr.conf");
        std::fs::write(&c, conf).unwrap();
        let d = rr.dir.join("daemons");
        std::fs::write(&d, "bgpd=yes\n").unwrap();
        let ctx = migroute_labs::daemons::NodeCtx {
            node: "rr".into(),
            netns: rr.ns.clone(),
            dir: rr.dir.join("node"),
        };
        migroute_labs::daemons::frr::start(&ctx, &c, Some(&d))
            .unwrap_or_else(|e| panic!("FRR: {e}"));
        rr
    }

    /// `vtysh -c CMD` against this FRR, as JSON.
    pub fn vtysh_json(&self, cmd: &str) -> Value {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(self.dir.join("node"))
            .args(["-c", cmd])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The session with B's agent is established.
    pub fn established(&self) -> bool {
        let v = self.vtysh_json(&format!("show bgp neighbors {B_RR} json"));
        v[B_RR]["bgpState"] == "Established"
    }

    /// FRR holds a path for `prefix` (learnt from the agent).
    pub fn has_route(&self, prefix: &str) -> bool {
        let v = self.vtysh_json(&format!("show bgp ipv4 unicast {prefix} json"));
        v["paths"].as_array().is_some_and(|p| !p.is_empty())
    }

    /// Config lines making B's agent peer with this reflector.
    pub fn agent_bgp(&self, state_dir: &Path) -> String {
        format!(
            "[bgp]\nasn = 65000\nstate_dir = \"{}\"\n[[bgp.peers]]\naddress = \"{RR}\"\nremote_as = 65000\nlocal_address = \"{B_RR}\"\n",
            state_dir.display()
        )
    }
}

impl Drop for RouteReflector {
    fn drop(&mut self) {
        // Only processes inside this test's own namespace are ours.
        for pid in migroute_labs::netns::pids(&self.ns) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
        let _ = sh(&["ip", "netns", "del", &self.ns]);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `f` until it holds, or panics naming `what`.
pub async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
