//! End to end: the `wan-migration` lab (under a test-specific name), a real
//! `migroute agent` for pe-a and for pe-b, and `migroute migrate --plan …` with the lab
//! hypervisor moving the VM's port from dc-a to dc-b. Asserts the migration completed,
//! the source's override was acknowledged before the VM resumed, the pause window, the
//! VM's reachability from pe-a through the tunnel while the override stood, and that
//! nothing migroute owns is left in either PE afterwards (no `mr-*` link, no proto-245
//! route).
//!
//! Two runs: agents without BGP peers (the destination's route is recorded, not sent),
//! and one where pe-b's agent peers with the reflector pe-in from pe-b's core-facing
//! address (pe-b's FRR holds the loopback session), so its host route reaches the
//! client's PE and the client reaches the VM at its new site.
//!
//! Needs root, iproute2, VXLAN and FRR: SKIPPED without them (a panic under CI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use migroute_labs::preflight::{self, Preflight};
use migroute_labs::{Lab, Topology};
use serde_json::Value;

const TOKEN: &str = "orchestrator-netns-token-0123";
const FRR: &[&str] = &[
    "/usr/lib/frr/zebra",
    "/usr/lib/frr/bgpd",
    "/usr/lib/frr/ospfd",
    "/usr/lib/frr/ospf6d",
];

/// Root, iproute2, FRR and VXLAN: or SKIPPED (a panic under CI).
fn can_run(test: &str) -> bool {
    Preflight::new(test)
        .root()
        .tools(&["ip", "vtysh"])
        .files(FRR)
        .check(preflight::vxlan)
        .ready()
}

/// The shipped topology under a unique name, its daemon configs referenced by absolute
/// path; torn down when dropped.
struct TestLab {
    lab: Lab,
    file: PathBuf,
}

impl TestLab {
    fn up(dir: &Path, name: &str) -> Self {
        let labs = Path::new(env!("CARGO_MANIFEST_DIR")).join("labs");
        let text = std::fs::read_to_string(labs.join("wan-migration.clab.yml")).unwrap();
        let text = text
            .replace("\nname: wan-migration\n", &format!("\nname: {name}\n"))
            .replace(
                "- wan-migration/",
                &format!("- {}/", labs.join("wan-migration").display()),
            );
        let file = dir.join(format!("{name}.clab.yml"));
        std::fs::write(&file, text).unwrap();
        let lab = Lab::new(Topology::load(&file).unwrap());
        assert_eq!(lab.name(), name);
        let _ = lab.down(); // an interrupted earlier run
        let t = TestLab { lab, file };
        t.lab.up().unwrap();
        t
    }

    fn sh(&self, node: &str, line: &str) -> Result<String, String> {
        self.lab.sh(node, line).map_err(|e| e.to_string())
    }

    /// migroute's kernel objects in a node: `mr-*` links and proto-245 routes.
    fn owned(&self, node: &str) -> String {
        let links = self
            .sh(node, "ip -o link show | grep -o 'mr-[^:@ ]*' || true")
            .unwrap();
        let routes = self
            .sh(
                node,
                "ip route show table all proto 245; ip -6 route show table all proto 245",
            )
            .unwrap();
        format!("{}{}", links.trim(), routes.trim())
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Err(e) = self.lab.down() {
            eprintln!("lab down: {e}");
        }
    }
}

/// `migroute`, inside a namespace when given.
fn in_netns(ns: Option<&str>) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_migroute")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_migroute")),
    }
}

/// One `migroute agent`, killed when dropped.
struct Agent {
    base: String,
    log: PathBuf,
    child: Child,
}

impl Agent {
    /// Starts the agent acting in `netns`; the process itself runs in `run_in` (a lab
    /// namespace) when given, else on the host.
    fn start(
        dir: &Path,
        name: &str,
        netns: &str,
        addr: &str,
        token: &Path,
        extra: &str,
        run_in: Option<&str>,
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join(format!("{name}.toml"));
        // labs/agent/<pe>.toml with the lab's namespace, a private journal, a free
        // port and short convergence timers; no [bgp] peers.
        std::fs::write(
            &config,
            format!(
                r#"netns = "{netns}"
journal = "{journal}"
[pe]
router_id = "{addr}"
loopback = "{loopback}"
tunnel_source = "{addr}"
tunnel_inside_pool = "169.254.0.0/16"
[api]
listen = "127.0.0.1:{port}"
token_file = "{token}"
[convergence]
quiet_ms = 500
min_hold_ms = 800
converge_timeout_ms = 30000
counter_poll_ms = 50
{extra}"#,
                journal = dir.join(format!("{name}.redb")).display(),
                token = token.display(),
                // The BGP next hop: the PE's own loopback, which OSPF carries.
                loopback = if addr.ends_with(".2") {
                    "10.255.0.2"
                } else {
                    "10.255.0.3"
                },
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = in_netns(run_in)
            .args(["agent", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn agent");
        let mut a = Agent {
            base: format!("http://127.0.0.1:{port}"),
            log,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !a.logs().contains("API listening") {
            if let Some(st) = a.child.try_wait().unwrap() {
                panic!("agent {name} exited with {st}: {}", a.logs());
            }
            assert!(
                Instant::now() < deadline,
                "agent {name} not listening: {}",
                a.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn migrate_moves_the_vm_with_the_override_in_place_before_it_resumes() {
    let test = "migrate_moves_the_vm_with_the_override_in_place_before_it_resumes";
    if can_run(test) {
        migrate_e2e("mro", Mode::Plain);
    }
}

#[test]
fn migrate_with_bgp_announces_the_vm_to_the_client() {
    let test = "migrate_with_bgp_announces_the_vm_to_the_client";
    if can_run(test) {
        migrate_e2e("mrb", Mode::Bgp);
    }
}

#[test]
fn switchover_missing_its_deadline_rolls_back_and_the_vm_stays_at_its_site() {
    let test = "switchover_missing_its_deadline_rolls_back_and_the_vm_stays_at_its_site";
    if can_run(test) {
        migrate_e2e("mrr", Mode::Rollback);
    }
}

#[test]
fn migrate_killed_in_the_pause_window_rolls_back_when_run_again() {
    let test = "migrate_killed_in_the_pause_window_rolls_back_when_run_again";
    if can_run(test) {
        migrate_e2e("mrk", Mode::Crash);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `migrate` is killed (SIGKILL) inside a 3 s pause, then run again.
    Crash,
    /// Agents without BGP.
    Plain,
    /// pe-b's agent announces to the reflector.
    Bgp,
    /// The switchover deadline (1 ms) passes while the VM is suspended.
    Rollback,
}

/// pe-b's agent as a route-reflector client of pe-in, from 10.0.13.3.
const PE_B_BGP: &str = r#"[bgp]
asn = 65000
[[bgp.peers]]
address = "10.0.13.1"
remote_as = 65000
local_address = "10.0.13.3"
"#;

fn migrate_e2e(prefix: &str, mode: Mode) {
    let bgp = mode == Mode::Bgp;
    let pid = std::process::id() % 100_000;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let lab = TestLab::up(dir.path(), &format!("{prefix}{pid}"));
    lab.lab
        .wait_route("pe-in", "10.10.0.0/24", Duration::from_secs(40))
        .unwrap();
    lab.sh("client", "ping -c1 -W2 10.10.0.5").unwrap();
    if bgp {
        let vty = lab.lab.state_dir().join("nodes").join("pe-in");
        let n = "neighbor 10.0.13.3";
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&vty)
            .args(["-c", "configure terminal", "-c", "router bgp 65000"])
            .args(["-c", &format!("{n} remote-as 65000")])
            .args(["-c", &format!("{n} timers 3 9")])
            .args(["-c", &format!("{n} timers connect 1")])
            .args(["-c", "address-family ipv4 unicast"])
            .args(["-c", &format!("{n} activate")])
            .args(["-c", &format!("{n} route-reflector-client")])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !said.contains("% "),
            "vtysh: {said}"
        );
    }

    let ns = |node: &str| lab.lab.netns(node).unwrap();
    // The agent's BGP sockets live in the agent process's own namespace: with BGP, the
    // agents and the orchestrator all run inside pe-b's (the API on its loopback),
    // acting on each PE through `netns`.
    let pe_b = ns("pe-b");
    let run_in = bgp.then_some(pe_b.as_str());
    let a = Agent::start(
        dir.path(),
        "pe-a",
        &ns("pe-a"),
        "10.0.23.2",
        &token,
        "",
        run_in,
    );
    let b = Agent::start(
        dir.path(),
        "pe-b",
        &pe_b,
        "10.0.23.3",
        &token,
        if bgp { PE_B_BGP } else { "" },
        run_in,
    );

    // The shipped plan, pointed at this lab and these agents.
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/plans/wan-migration-a-to-b.toml");
    let plan = std::fs::read_to_string(shipped)
        .unwrap()
        .replace("id = \"vm-a-to-b\"", &format!("id = \"e2e-{pid}\""))
        .replace("../wan-migration.clab.yml", &lab.file.display().to_string())
        .replace("http://127.0.0.1:8081", &a.base)
        .replace("http://127.0.0.1:8082", &b.base)
        .replace("quiet_ms = 1000", "quiet_ms = 500")
        .replace("min_hold_ms = 3000", "min_hold_ms = 800")
        // The session to pe-in carries IPv4 only.
        .replace(", \"2001:db8:10::5/128\"", "")
        .replace(
            "switchover_ms = 2000",
            if mode == Mode::Rollback {
                "switchover_ms = 1"
            } else {
                "switchover_ms = 2000"
            },
        )
        .replace(
            "pause_ms = 100",
            if mode == Mode::Crash {
                "pause_ms = 3000"
            } else {
                "pause_ms = 100"
            },
        );
    let plan_path = dir.path().join("plan.toml");
    std::fs::write(&plan_path, plan).unwrap();

    // While the VM moves, pe-a pings it every 20 ms: through the override and the
    // tunnel once it left dc-a.
    let pinger = lab
        .lab
        .command("pe-a", "ping")
        .unwrap()
        .args(["-i", "0.02", "-W", "1", "-w", "8", "10.10.0.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    if mode == Mode::Crash {
        // Killed once the override is in place and the VM is held in its pause.
        let mut first = in_netns(run_in)
            .args(["migrate", "--json", "--plan"])
            .arg(&plan_path)
            .arg("--journal")
            .arg(dir.path().join("orchestrator.redb"))
            .arg("--token-file")
            .arg(&token)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = std::io::BufRead::lines(std::io::BufReader::new(first.stdout.take().unwrap()));
        let mut seen = String::new();
        for line in lines {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("\"phase\":\"resuming\"") {
                break;
            }
        }
        assert!(seen.contains("resuming"), "{seen}");
        first.kill().unwrap(); // SIGKILL
        first.wait().unwrap();
        assert_ne!(lab.owned("pe-a"), "", "the override should be in place");
    }
    let out = in_netns(run_in)
        .args(["migrate", "--json", "--plan"])
        .arg(&plan_path)
        .arg("--journal")
        .arg(dir.path().join("orchestrator.redb"))
        .arg("--token-file")
        .arg(&token)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let context = format!(
        "migrate stdout:\n{stdout}\nstderr:\n{}\nagent a:\n{}\nagent b:\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.logs(),
        b.logs()
    );
    if matches!(mode, Mode::Rollback | Mode::Crash) {
        let _ = pinger.wait_with_output();
        assert_eq!(out.status.code(), Some(1), "{context}");
        let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(report["phase"], "rolled-back", "{context}");
        // The VM was suspended, then cancelled: back up at dc-a, never resumed at dc-b.
        assert!(report["marks"]["suspended_at"].is_u64(), "{context}");
        assert!(report["marks"]["resumed_at"].is_null(), "{context}");
        if mode == Mode::Crash {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("resuming migration"),
                "{context}"
            );
            assert!(
                report["errors"].to_string().contains("restarted"),
                "{context}"
            );
        } else {
            assert!(report["pause_window"]["end_ms"].is_u64(), "{context}");
        }
        assert!(stdout.contains("\"phase\":\"rolling-back\""), "{context}");
        assert_eq!(lab.lab.current_node_of("dc-a", "eth2"), "dc-a");
        lab.sh("client", "ping -c2 -W2 10.10.0.5")
            .unwrap_or_else(|e| panic!("{e}\n{context}"));
        for node in ["pe-a", "pe-b"] {
            assert_eq!(
                lab.owned(node),
                "",
                "{node} keeps migroute objects\n{context}"
            );
        }
        return;
    }
    assert!(out.status.success(), "{context}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{context}")))
        .collect();
    let report = lines.last().unwrap();
    assert_eq!(report["update"], "report", "{context}");
    assert_eq!(report["phase"], "completed", "{context}");
    assert_eq!(report["override_before_resume"], true, "{context}");
    // The phases as they went by, one JSON line each.
    let phases: Vec<&str> = lines
        .iter()
        .filter(|l| l["update"] == "phase")
        .filter_map(|l| l["phase"].as_str())
        .collect();
    assert_eq!(
        phases,
        [
            "preparing",
            "migrating",
            "switching-over",
            "resuming",
            "announcing",
            "converging",
            "tearing-down",
            "completed"
        ],
        "{context}"
    );
    // The lab's pause lasted at least the plan's 100 ms, and the orchestrator saw the
    // override acknowledged inside it.
    let w = &report["pause_window"];
    let (start, end) = (
        w["start_ms"].as_u64().unwrap(),
        w["end_ms"].as_u64().unwrap(),
    );
    assert!(end - start >= 100, "{w}");
    let marks = &report["marks"];
    let acked = marks["override_acked_at"].as_u64().unwrap();
    let resumed = marks["resumed_at"].as_u64().unwrap();
    assert!(acked <= resumed, "{marks}");
    assert!(start <= acked && acked <= end, "{w} {marks}");

    // The VM lives behind dc-b now.
    assert_eq!(lab.lab.current_node_of("dc-a", "eth2"), "dc-b");
    lab.sh("pe-b", "ping -c1 -W2 10.10.0.5").unwrap();
    // pe-a reached it all along, through the tunnel after the move.
    let ping = pinger.wait_with_output().unwrap();
    let ping = String::from_utf8_lossy(&ping.stdout);
    let replies = ping.lines().filter(|l| l.contains("bytes from")).count();
    assert!(replies > 100, "pe-a's pings to the VM: {ping}");

    if bgp {
        // The destination's host route reached the client's PE: the client reaches
        // the VM at its new site, with nothing of migroute's left on pe-a.
        lab.lab
            .wait_route("pe-in", "10.10.0.5/32", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}\n{context}"));
        lab.sh("client", "ping -c2 -W2 10.10.0.5")
            .unwrap_or_else(|e| panic!("{e}\n{context}"));
    }
    // Nothing of migroute's is left in either PE.
    for node in ["pe-a", "pe-b"] {
        assert_eq!(lab.owned(node), "", "{node} keeps migroute objects");
    }
    if mode == Mode::Plain {
        // And back again, through the orchestrator service this time.
        back_through_the_service(dir.path(), &lab, &a, &b, &token, pid);
        assert_eq!(lab.lab.current_node_of("dc-a", "eth2"), "dc-a");
        lab.sh("client", "ping -c2 -W2 10.10.0.5").unwrap();
        for node in ["pe-a", "pe-b"] {
            assert_eq!(lab.owned(node), "", "{node} keeps migroute objects");
        }
    }
    drop((a, b));
}

/// `migroute orchestrator` with the shipped b-to-a plan posted as JSON: 202, the SSE
/// stream shows the phases up to `completed`, and `GET` ends with the report.
fn back_through_the_service(
    dir: &Path,
    lab: &TestLab,
    a: &Agent,
    b: &Agent,
    token: &Path,
    pid: u32,
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "journal = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{t}\"\n[agents]\ntoken_file = \"{t}\"\n",
            dir.join("service.redb").display(),
            t = token.display(),
        ),
    )
    .unwrap();
    let log = dir.join("orchestrator.log");
    let mut service = Agent {
        base: format!("http://127.0.0.1:{port}"),
        child: Command::new(env!("CARGO_BIN_EXE_migroute"))
            .args(["orchestrator", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !service.logs().contains("orchestrator API listening") {
        if let Some(st) = service.child.try_wait().unwrap() {
            panic!("orchestrator exited with {st}: {}", service.logs());
        }
        assert!(Instant::now() < deadline, "{}", service.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/plans/wan-migration-b-to-a.toml");
    let mut plan: Value = toml::from_str(&std::fs::read_to_string(shipped).unwrap()).unwrap();
    let id = format!("e2e-back-{pid}");
    plan["id"] = Value::from(id.clone());
    plan["hypervisor"]["topology"] = Value::from(lab.file.display().to_string());
    plan["source"]["agent_url"] = Value::from(b.base.clone());
    plan["destination"]["agent_url"] = Value::from(a.base.clone());
    plan["policy"]["convergence"]["quiet_ms"] = Value::from(500);
    plan["policy"]["convergence"]["min_hold_ms"] = Value::from(800);
    let secret = std::fs::read_to_string(token).unwrap().trim().to_string();
    let base = service.base.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sse, status) = rt.block_on(async move {
        let c = reqwest::Client::new();
        let mut events = c
            .get(format!("{base}/v1/events"))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap();
        assert_eq!(events.status().as_u16(), 200);
        let r = c
            .post(format!("{base}/v1/migrations"))
            .bearer_auth(&secret)
            .json(&plan)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
        let mut sse = String::new();
        let read = async {
            while let Some(chunk) = events.chunk().await.unwrap() {
                sse.push_str(&String::from_utf8_lossy(&chunk));
                if sse.contains("\"phase\":\"completed\"") || sse.contains("rolled-back") {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .unwrap_or_else(|_| panic!("no end in the event stream: {sse}"));
        // The runtime stores the report right after its last step.
        let mut status = Value::Null;
        for _ in 0..50 {
            status = c
                .get(format!("{base}/v1/migrations/{id}"))
                .bearer_auth(&secret)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if !status["report"].is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (sse, status)
    });
    let context = format!(
        "sse:\n{sse}\nstatus: {status}\nservice:\n{}",
        service.logs()
    );
    assert!(sse.contains("event: phase"), "{context}");
    assert!(sse.contains("\"phase\":\"switching-over\""), "{context}");
    assert_eq!(status["report"]["phase"], "completed", "{context}");
    assert_eq!(
        status["report"]["marks"]["override_before_resume"], true,
        "{context}"
    );
    assert_eq!(status["status"]["phase"], "completed", "{context}");
    let _ = service.child.kill();
}
