//! The libvirt hook end to end with a real guest: a plain `virsh migrate --live` moves
//! the network with the VM, and no orchestrator drives the agents.
//!
//! Lab: sites A and B are network namespaces, each with its own libvirtd (the KVM lab's
//! `Libvirtd`), a bridge `br0` for the guest's tap, and a migroute agent acting in that
//! namespace (`[pe] vm_interface = "br0"`, `detect_vm = true`); a veth (192.168.77.1 ↔
//! .2) carries libvirt's peer-to-peer connection, the memory and disk streams and the
//! agents' VXLAN underlay. Each libvirtd has `/etc/libvirt/hooks/qemu` exec'ing
//! `migroute libvirt-hook` with that site's hook config (the hook enters the test's
//! network namespace, where the agents' APIs listen, as a hypervisor host would reach
//! its PE over the network). The guest (Debian kernel + busybox initramfs, 10.10.0.5/24,
//! TCP echo on port 7) carries migroute metadata for 10.10.0.5/32.
//!
//! 1. `virsh migrate --live --p2p --copy-storage-all` A → B: B's `migrate begin` hook
//!    prepares both agents before the migration starts; after the guest resumes at B,
//!    QEMU's announcement (RARP, or the guest's own gratuitous ARP) reaches B's agent,
//!    which announces and switches A over: no announce webhook, no orchestrator. Both
//!    converge and tear down by themselves.
//! 2. The same migration aborted during pre-copy (`virsh domjobabort`): B's `release
//!    end` hook aborts both agents; nothing is left.
//!
//! Needs root, VXLAN, libvirt-daemon(-driver-qemu), libvirt-clients, qemu-utils,
//! busybox-static, util-linux (nsenter) and apt-get (the private QEMU and the guest are
//! fetched once and cached under /var/cache/migroute). SKIPPED without them (panics
//! under CI). tcpdump, when present, records what B's bridge saw, for the report.

mod agent_lab;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_lab::{Agent, Extra};
use migroute_labs::kvm::{
    domain_xml, ensure_guest, ensure_qemu, link_sites, with_migroute_metadata, Accel, GuestSpec,
    Libvirtd, Site,
};
use migroute_labs::preflight::{self, on_path, Preflight};
use serde_json::Value;

const GUEST: &str = "mghook";
const GUEST_IP: &str = "10.10.0.5";
/// The MAC `domain_xml` gives the guest's NIC.
const GUEST_MAC: &str = "52:54:00:0a:0a:05";
const A_WAN: &str = "192.168.77.1";
const B_WAN: &str = "192.168.77.2";
const DISK: &str = "/var/lib/libvirt/images/mghook.qcow2";
/// migroute's routing table (the agent's default `[pe] table`).
const TABLE: &str = "4245";

/// One lab at a time: each runs two libvirtds and an emulated guest on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn can_run(test: &str) -> bool {
    Preflight::new(test)
        .root()
        .tools(&[
            "ip", "unshare", "nsenter", "libvirtd", "virsh", "qemu-img", "apt-get", "dpkg", "gzip",
            "ping", "bash",
        ])
        .package("busybox-static", "/bin/busybox")
        .check(preflight::vxlan)
        .ready()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(site: &Site) -> bool {
    site.command("ping")
        .args(["-c", "1", "-W", "1", GUEST_IP])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the guest's TCP echo (port 7) answers from `site`.
fn tcp_echo(site: &Site) -> bool {
    site.command("bash")
        .args([
            "-c",
            &format!(
                "exec 3<>/dev/tcp/{GUEST_IP}/7 && echo migroute-probe >&3 && \
                 read -t 10 line <&3 && [ \"$line\" = migroute-probe ]"
            ),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// migroute's links (`mr-…`) in a site's namespace.
fn mr_links(site: &Site) -> Vec<String> {
    site.ip(&["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("mr-"))
        .collect()
}

/// The routes of migroute's table in a site's namespace (IPv4 and IPv6).
fn table_routes(site: &Site) -> Vec<String> {
    ["-4", "-6"]
        .iter()
        .flat_map(|family| {
            site.ip(&[family, "route", "show", "table", TABLE])
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A `tcpdump` of RARP and ARP on a site's bridge, if tcpdump is installed: the
/// evidence of what announced the guest at B. Stopped (and read) by [`Capture::frames`].
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(site: &Site, file: PathBuf) -> Option<Capture> {
        on_path("tcpdump")?;
        let child = site
            .command("tcpdump")
            .args(["-i", "br0", "-U", "-n", "-w"])
            .arg(&file)
            .args(["ether proto 0x8035 or arp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Capture { child, file })
    }

    /// Stops the capture and returns its frames, one line each, with link headers.
    fn frames(mut self) -> Vec<String> {
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.wait();
        let out = Command::new("tcpdump")
            .args(["-r"])
            .arg(&self.file)
            .args(["-n", "-e", "-tt"])
            .output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The two sites with their agents, hooks and libvirtds, the guest running at A. Field
/// order is drop order: libvirtds (and their domains) first, then the agents, then the
/// namespaces (with every link and route the agents made in them).
struct Lab {
    lv_a: Libvirtd,
    lv_b: Libvirtd,
    agent_a: Agent,
    agent_b: Agent,
    site_a: Site,
    site_b: Site,
    dir: tempfile::TempDir,
    /// The guest's UUID (libvirt's, read back after `define`).
    uuid: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.lv_a.stop();
        self.lv_b.stop();
    }
}

/// One site's hook: its config (this site's agent local, the other's the peer) and
/// `/etc/libvirt/hooks/qemu` in the libvirtd's private `/etc/libvirt` (under
/// `instance`), which must exist before that libvirtd starts: libvirt looks for hook
/// scripts once, at daemon start.
fn install_hook(
    dir: &Path,
    site: &str,
    instance: &Path,
    local: (&Agent, &str),
    peer: (&Agent, &str),
) {
    let config = dir.join(format!("hook-{site}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"fail_closed = true
timeout_ms = 5000
token_file = "{token}"
state_dir = "{state}"
[local]
agent_url = "{local_url}"
tunnel_endpoint = "{local_ep}"
[peer]
agent_url = "{peer_url}"
tunnel_endpoint = "{peer_ep}"
[timers]
quiet_ms = 400
min_hold_ms = 600
converge_timeout_ms = 30000
"#,
            token = dir.join("token").display(),
            state = dir.join(format!("hook-state-{site}")).display(),
            local_url = local.0.base,
            local_ep = local.1,
            peer_url = peer.0.base,
            peer_ep = peer.1,
        ),
    )
    .unwrap();
    let hooks = instance.join("etc/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let script = hooks.join("qemu");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Runs in the libvirtd's namespace; the agents' APIs listen in the \
             test's.\nexec {nsenter} --net=/proc/{pid}/ns/net {bin} libvirt-hook --config {config} \
             \"$@\" 2>>{log}\n",
            nsenter = on_path("nsenter").unwrap().display(),
            pid = std::process::id(),
            bin = env!("CARGO_BIN_EXE_migroute"),
            config = config.display(),
            log = dir.join(format!("hook-{site}.log")).display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The domain XML of the KVM lab, with migroute's metadata for the guest's address.
fn guest_xml(spec: &GuestSpec) -> String {
    let xml = domain_xml(spec);
    assert!(
        xml.contains(GUEST_MAC),
        "the lab guest's MAC changed: {xml}"
    );
    with_migroute_metadata(&xml, &[&format!("{GUEST_IP}/32")])
}

impl Lab {
    fn up(tag: &str) -> Lab {
        let qemu = ensure_qemu().expect("private QEMU");
        let image = ensure_guest().expect("guest image");
        let accel = Accel::detect(&qemu, &image);
        eprintln!("{tag}: guest runs with {}", accel.name());
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix(&format!("migroute-hookkvm-{tag}-"))
            .tempdir()
            .unwrap();
        let site_a = Site::create(&format!("mghk{tag}a{pid}"), "10.10.0.1/24").expect("site a");
        let site_b = Site::create(&format!("mghk{tag}b{pid}"), "10.10.0.2/24").expect("site b");
        link_sites(
            &site_a,
            &site_b,
            &format!("{A_WAN}/24"),
            &format!("{B_WAN}/24"),
        )
        .expect("wan link");
        let extra = Extra {
            pe: "vm_interface = \"br0\"\ndetect_vm = true".into(),
            ..Extra::default()
        };
        // Lab::up runs in `block_in_place`, where blocking on the runtime is allowed.
        let rt = tokio::runtime::Handle::current();
        let agent_a = rt.block_on(Agent::with(
            dir.path(),
            "agent-a",
            &site_a.netns,
            A_WAN,
            extra.clone(),
        ));
        let agent_b = rt.block_on(Agent::with(
            dir.path(),
            "agent-b",
            &site_b.netns,
            B_WAN,
            extra,
        ));
        let (inst_a, inst_b) = (dir.path().join("lv-a"), dir.path().join("lv-b"));
        install_hook(
            dir.path(),
            "a",
            &inst_a,
            (&agent_a, A_WAN),
            (&agent_b, B_WAN),
        );
        install_hook(
            dir.path(),
            "b",
            &inst_b,
            (&agent_b, B_WAN),
            (&agent_a, A_WAN),
        );
        let lv_a = Libvirtd::start(&site_a.netns, &inst_a).expect("libvirtd a");
        let lv_b = Libvirtd::start(&site_b.netns, &inst_b).expect("libvirtd b");
        let mut lab = Lab {
            lv_a,
            lv_b,
            agent_a,
            agent_b,
            site_a,
            site_b,
            dir,
            uuid: String::new(),
        };
        for lv in [&lab.lv_a, &lab.lv_b] {
            let disk = lv.host_path(Path::new(DISK)).expect("disk path");
            run(Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&disk)
                .arg("64M"));
        }
        let spec = GuestSpec {
            name: GUEST.into(),
            emulator: qemu,
            image,
            disk: DISK.into(),
            bridge: lab.site_a.bridge.clone(),
            memory_mib: 128,
            accel,
            console_log: "/var/log/libvirt/mghook-console.log".into(),
        };
        let xml = lab.dir.path().join("guest.xml");
        std::fs::write(&xml, guest_xml(&spec)).expect("write xml");
        lab.lv_a
            .virsh(&["define", &xml.to_string_lossy()])
            .expect("define");
        lab.uuid = lab
            .lv_a
            .virsh(&["domuuid", GUEST])
            .expect("uuid")
            .trim()
            .into();
        lab.lv_a.virsh(&["start", GUEST]).expect("start");
        let booted = Instant::now();
        wait_for(
            "the guest to answer ping at A",
            Duration::from_secs(180),
            || ping(&lab.site_a),
        );
        eprintln!(
            "{tag}: guest answers at A after {:.1} s",
            booted.elapsed().as_secs_f64()
        );
        lab
    }

    /// `virsh migrate --live --p2p --copy-storage-all` A → B, as an operator types it.
    fn migrate(&self, bandwidth_mib_s: u32) -> Child {
        Command::new("virsh")
            .args(["-q", "-c", &self.lv_a.uri(), "migrate", "--live", "--p2p"])
            .args([
                "--copy-storage-all",
                "--bandwidth",
                &bandwidth_mib_s.to_string(),
            ])
            .args(["--migrateuri", &format!("tcp://{B_WAN}")])
            .args(["--listen-address", B_WAN, GUEST])
            .arg(Libvirtd::tcp_uri(B_WAN))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("virsh migrate")
    }

    /// `virsh domstate` at a site, "absent" when it has no such domain.
    fn state(lv: &Libvirtd) -> String {
        lv.virsh(&["domstate", GUEST])
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "absent".into())
    }

    /// What a site's hook wrote (its stderr).
    fn hook_log(&self, site: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("hook-{site}.log")))
            .unwrap_or_default()
    }

    /// The hooks' stderr and both agents' logs, for a failure message.
    fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "hook a:\n{}\nhook b:\n{}\nagent a:\n{}\nagent b:\n{}",
            read("hook-a.log"),
            read("hook-b.log"),
            self.agent_a.logs(),
            self.agent_b.logs()
        )
    }
}

/// (id, role, phase) of every migration an agent holds.
async fn migrations(agent: &Agent) -> Vec<(String, String, String)> {
    let (code, v) = agent.get("/v1/migrations").await;
    assert_eq!(code, 200, "{v}");
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m: &Value| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (s("id"), s("role"), s("phase"))
        })
        .collect()
}

/// The phases a migration went through, in order (its status' `transitions`).
async fn transitions(agent: &Agent, id: &str) -> Vec<String> {
    let (_, v) = agent.get(&format!("/v1/migrations/{id}")).await;
    v["transitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["phase"].as_str().map(str::to_owned))
        .collect()
}

async fn phase(agent: &Agent, id: &str) -> String {
    let (_, v) = agent.get(&format!("/v1/migrations/{id}")).await;
    v["phase"].as_str().unwrap_or_default().to_owned()
}

async fn wait_phase_in(
    agent: &Agent,
    id: &str,
    want: &[&str],
    within: Duration,
    lab: &Lab,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let p = phase(agent, id).await;
        if want.contains(&p.as_str()) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{id} at {}: {p}, never {want:?}\n{}",
            agent.base,
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `text` without its ANSI colour sequences (the agents' log is coloured).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The time of the first line of `log` containing `needle` (the agent's RFC 3339
/// timestamps), as seconds since the epoch.
fn logged_at(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let stamp = line.split_whitespace().next()?;
    parse_rfc3339(stamp)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` → seconds since the epoch (days from the civil date).
fn parse_rfc3339(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let sec = t.next()?.parse::<f64>().ok()?;
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virsh_migrate_alone_moves_the_network_with_the_guest() {
    let test = "virsh_migrate_alone_moves_the_network_with_the_guest";
    let _serial = SERIAL.lock().await;
    if !can_run(test) {
        return;
    }
    let lab = tokio::task::block_in_place(|| Lab::up("m"));
    assert!(migrations(&lab.agent_a).await.is_empty());
    assert!(migrations(&lab.agent_b).await.is_empty());
    let capture = Capture::start(&lab.site_b, lab.dir.path().join("br0-b.pcap"));

    // Slow enough that the migration is still running when the hook's work is checked.
    let t0 = Instant::now();
    let mut virsh = lab.migrate(20);
    // (1) B's `migrate begin` hook prepared both agents, tunnels in both kernels, while
    // the guest still runs at A.
    let id = loop {
        let on_b = migrations(&lab.agent_b).await;
        if let Some((id, role, _)) = on_b.first() {
            assert_eq!(on_b.len(), 1, "{on_b:?}");
            assert!(id.starts_with(&format!("lv-{}-", lab.uuid)), "{id}");
            assert_eq!(role, "destination");
            break id.clone();
        }
        if let Some(status) = virsh.try_wait().unwrap() {
            panic!(
                "virsh migrate ended ({status}) before B's agent held a migration\n{}",
                lab.logs()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no migration at B\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let prepared_seen = t0.elapsed();
    let on_a = migrations(&lab.agent_a).await;
    assert_eq!(on_a.len(), 1, "{on_a:?}");
    assert_eq!(
        (on_a[0].0.as_str(), on_a[0].1.as_str()),
        (id.as_str(), "source")
    );
    let (phase_a, phase_b) = (
        phase(&lab.agent_a, &id).await,
        phase(&lab.agent_b, &id).await,
    );
    let (links_a, links_b) = (mr_links(&lab.site_a), mr_links(&lab.site_b));
    let still_at_a = Lab::state(&lab.lv_a);
    eprintln!(
        "migrate: {id} held by both agents {:.1} s after virsh migrate started \
         (A {phase_a}, B {phase_b}; links A {links_a:?}, B {links_b:?}; guest at A {still_at_a})",
        prepared_seen.as_secs_f64()
    );
    assert_eq!(
        (phase_a.as_str(), phase_b.as_str()),
        ("prepared", "prepared")
    );
    assert_eq!(links_a.len(), 1, "{links_a:?}");
    assert_eq!(links_b.len(), 1, "{links_b:?}");
    assert_eq!(still_at_a, "running", "the migration already finished");

    // The migration itself.
    let out = tokio::task::block_in_place(|| virsh.wait_with_output().unwrap());
    assert!(
        out.status.success(),
        "virsh migrate: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.logs()
    );
    eprintln!(
        "migrate: virsh migrate returned after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    tokio::task::block_in_place(|| {
        assert_eq!(Lab::state(&lab.lv_b), "running");
        assert_ne!(Lab::state(&lab.lv_a), "running");
    });

    // (2) The guest's announcement at B made B announce and A switch over; nobody
    // called announce or switchover.
    let later = ["announced", "converging", "torn-down"];
    let b_phase = wait_phase_in(&lab.agent_b, &id, &later, Duration::from_secs(60), &lab).await;
    let a_phase = wait_phase_in(
        &lab.agent_a,
        &id,
        &["switched-over", "announced", "converging", "torn-down"],
        Duration::from_secs(60),
        &lab,
    )
    .await;
    eprintln!("migrate: after virsh returned, B {b_phase}, A {a_phase}");

    // (3) The guest answers at B.
    tokio::task::block_in_place(|| {
        wait_for(
            "the guest to answer ping at B",
            Duration::from_secs(60),
            || ping(&lab.site_b),
        );
        wait_for("the guest's TCP echo at B", Duration::from_secs(60), || {
            tcp_echo(&lab.site_b)
        });
    });

    // (4) Both converge and tear down by themselves: no tunnel left, nothing of the
    // move in A's table; B keeps the delivery route of the prefix it now announces.
    for agent in [&lab.agent_a, &lab.agent_b] {
        wait_phase_in(agent, &id, &["torn-down"], Duration::from_secs(60), &lab).await;
    }
    // Each went the whole way by itself: no stall, no abort.
    for agent in [&lab.agent_a, &lab.agent_b] {
        let went = transitions(agent, &id).await;
        assert_eq!(
            went,
            [
                "prepared",
                "switched-over",
                "announced",
                "converging",
                "torn-down"
            ],
            "{}",
            agent.base
        );
    }
    // B's hook prepared it; A's hook, run when the guest's QEMU left A, found nothing
    // of its own to undo.
    let (hook_a, hook_b) = (plain(&lab.hook_log("a")), plain(&lab.hook_log("b")));
    assert!(
        hook_b.contains("agents prepared") && hook_b.contains(&id),
        "{hook_b}"
    );
    assert!(!hook_a.contains("aborted"), "{hook_a}");
    assert!(
        mr_links(&lab.site_a).is_empty(),
        "{:?}",
        mr_links(&lab.site_a)
    );
    assert!(
        mr_links(&lab.site_b).is_empty(),
        "{:?}",
        mr_links(&lab.site_b)
    );
    let routes_a = table_routes(&lab.site_a);
    assert!(routes_a.is_empty(), "A's table {TABLE}: {routes_a:?}");
    let routes_b = table_routes(&lab.site_b);
    assert!(
        routes_b
            .iter()
            .all(|r| r.starts_with(&format!("{GUEST_IP} dev br0"))),
        "B's table {TABLE}: {routes_b:?}"
    );
    eprintln!(
        "migrate: torn down after {:.1} s; B's table {TABLE}: {routes_b:?}",
        t0.elapsed().as_secs_f64()
    );

    // What was heard, and how fast each agent acted on it (their log timestamps).
    let first_rarp = capture.map(|capture| {
        let frames = capture.frames();
        let rarp: Vec<&String> = frames.iter().filter(|l| l.contains("Reverse")).collect();
        eprintln!(
            "migrate: B's br0 saw {} RARP frame(s) among {} ARP/RARP frames:",
            rarp.len(),
            frames.len()
        );
        for f in frames.iter().take(10) {
            eprintln!("  {f}");
        }
        rarp.first()
            .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
    });
    let (log_a, log_b) = (plain(&lab.agent_a.logs()), plain(&lab.agent_b.logs()));
    let seen = logged_at(&log_b, "VM seen here");
    assert!(seen.is_some(), "B never logged the VM seen:\n{log_b}");
    let mut steps = vec![("B heard the VM", seen)];
    if let Some(first) = first_rarp.flatten() {
        steps.insert(0, ("first RARP on B's br0", Some(first)));
    }
    steps.extend([
        ("B announced", logged_at(&log_b, "phase=announced")),
        ("A switched over", logged_at(&log_a, "phase=switched-over")),
        ("A announced", logged_at(&log_a, "phase=announced")),
        ("B torn down", logged_at(&log_b, "phase=torn-down")),
        ("A torn down", logged_at(&log_a, "phase=torn-down")),
    ]);
    let origin = steps[0].1.unwrap_or_default();
    for (what, at) in steps {
        if let Some(at) = at {
            eprintln!("migrate: +{:7.1} ms {what}", (at - origin) * 1000.0);
        }
    }
    drop(lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_aborted_in_precopy_is_undone_by_the_release_hook() {
    let test = "a_migration_aborted_in_precopy_is_undone_by_the_release_hook";
    let _serial = SERIAL.lock().await;
    if !can_run(test) {
        return;
    }
    let lab = tokio::task::block_in_place(|| Lab::up("c"));
    // 1 MiB/s: pre-copy of the guest's memory and disk lasts minutes.
    let t0 = Instant::now();
    let virsh = lab.migrate(1);
    let id = loop {
        let on_b = migrations(&lab.agent_b).await;
        if let Some((id, _, _)) = on_b.first() {
            break id.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no migration at B\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(phase(&lab.agent_a, &id).await, "prepared");
    assert_eq!(mr_links(&lab.site_a).len(), 1);
    assert_eq!(mr_links(&lab.site_b).len(), 1);
    // The operator gives up during pre-copy: once B's incoming QEMU waits (paused) for
    // the stream, abort A's job (retried: libvirt refuses it in some job phases).
    tokio::task::block_in_place(|| {
        wait_for("the incoming guest at B", Duration::from_secs(60), || {
            Lab::state(&lab.lv_b) == "paused"
        });
        wait_for("domjobabort at A", Duration::from_secs(60), || {
            lab.lv_a.virsh(&["domjobabort", GUEST]).is_ok()
        });
    });
    let out = tokio::task::block_in_place(|| virsh.wait_with_output().unwrap());
    assert!(
        !out.status.success(),
        "virsh migrate succeeded after domjobabort"
    );
    eprintln!(
        "abort: virsh migrate failed after {:.1} s: {}",
        t0.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    // B's `release end` hook of the incoming domain aborted both agents.
    for agent in [&lab.agent_b, &lab.agent_a] {
        wait_phase_in(agent, &id, &["aborted"], Duration::from_secs(60), &lab).await;
    }
    for site in [&lab.site_a, &lab.site_b] {
        assert!(
            mr_links(site).is_empty(),
            "{}: {:?}",
            site.netns,
            mr_links(site)
        );
        assert!(
            table_routes(site).is_empty(),
            "{}: {:?}",
            site.netns,
            table_routes(site)
        );
    }
    tokio::task::block_in_place(|| {
        assert_eq!(Lab::state(&lab.lv_a), "running");
        assert_ne!(Lab::state(&lab.lv_b), "running");
        wait_for(
            "the guest to answer ping at A",
            Duration::from_secs(60),
            || ping(&lab.site_a),
        );
    });
    let hook_b = plain(&lab.hook_log("b"));
    assert!(
        hook_b.contains("released before switchover: aborted") && hook_b.contains(&id),
        "B's release hook did not abort {id}:\n{hook_b}"
    );
    eprintln!(
        "abort: both agents aborted, nothing left, after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    drop(lab);
}
