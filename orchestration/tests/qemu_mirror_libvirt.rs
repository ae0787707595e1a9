//! The qemu-mirror storage driver against a libvirt-managed QEMU (Debian 12's 7.2, the
//! KVM lab's private prefix), through a second QMP monitor libvirt passes to QEMU
//! (`<qemu:commandline>` with `-qmp unix:PATH,server=on,wait=off`).
//!
//! Lab: site A is a namespace with a libvirtd of its own running the lab guest (which
//! writes sequence-numbered 512-byte blocks to its disk all the time); site B is a
//! namespace with a qemu-storage-daemon (the host's) serving a raw image; a veth joins
//! them (192.168.79.1 ↔ .2) and carries the mirror's NBD stream.
//!
//! Asserted, forward: `Ready` then `InSync`; QEMU 7.2 is probed to have no
//! `block-job-change`, so the job is restarted in write-blocking mode (the guest paused
//! around it with `virsh suspend`/`resume`, as the driver's 7.2 path requires); after
//! the cutover, with the guest paused, the destination's raw contents equal the
//! source's. Abort after `Ready`: no job, node or export is left, the guest still runs
//! and writes, and the source image passes `qemu-img check`.
//!
//! Needs root, libvirt-daemon(-driver-qemu), libvirt-clients, qemu-utils (with
//! qemu-storage-daemon), busybox-static and apt-get (see libvirt_migration.rs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use migroute_labs::kvm::{
    domain_xml, ensure_guest, ensure_qemu, link_sites, with_qmp_monitor, Accel, GuestSpec,
    Libvirtd, Site,
};
use migroute_labs::preflight::Preflight;
use migroute_orchestration::drivers::qmp::{Endpoint, QmpClient};
use migroute_orchestration::drivers::{QemuMirrorStorage, Storage, StorageEvent};
use migroute_orchestration::migration::{QemuMirrorPlan, SwitchMethod};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const GUEST: &str = "mqmguest";
const GUEST_IP: &str = "10.10.0.5";
const A_WAN: &str = "192.168.79.1";
const B_WAN: &str = "192.168.79.2";
const DISK: &str = "/var/lib/libvirt/images/mqmguest.qcow2";
/// The second monitor, inside the libvirtd's mount namespace.
const QMP: &str = "/run/libvirt/mqm-mirror.qmp";
const DISK_MIB: u64 = 64;
/// The guest's writer: 512-byte records in the first 2048 sectors.
const RECORDS: usize = 2048;

/// One lab at a time: each runs a libvirtd and an emulated guest on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn can_run() -> bool {
    Preflight::new("qemu-mirror libvirt test")
        .root()
        .tools(&[
            "ip",
            "tc",
            "unshare",
            "libvirtd",
            "virsh",
            "qemu-img",
            "qemu-storage-daemon",
            "apt-get",
            "dpkg",
            "gzip",
            "ping",
        ])
        .package("busybox-static", "/bin/busybox")
        .ready()
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

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A qemu-storage-daemon at site B; dropping it ends it (SIGTERM, SIGKILL after 20 s).
struct Qsd {
    pid: u32,
    /// The driver's monitor and the test's own (a monitor serves one client at a time).
    drv: PathBuf,
    chk: PathBuf,
    image: PathBuf,
}

impl Qsd {
    /// Serves a fresh raw image of the guest disk's size as node `vda`, with two QMP
    /// monitors. `--daemonize` returns once the sockets listen.
    fn start(site: &Site, dir: &Path, tag: &str) -> Qsd {
        let image = dir.join(format!("{tag}.img"));
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(&image)
            .arg(format!("{DISK_MIB}M")));
        let (drv, chk) = (
            dir.join(format!("{tag}-drv.qmp")),
            dir.join(format!("{tag}-chk.qmp")),
        );
        let pidfile = dir.join(format!("{tag}.pid"));
        let mut cmd = site.command("qemu-storage-daemon");
        cmd.arg("--blockdev")
            .arg(format!("file,node-name=file0,filename={}", image.display()))
            .args(["--blockdev", "raw,node-name=vda,file=file0"]);
        for (id, path) in [("drv", &drv), ("chk", &chk)] {
            cmd.arg("--chardev")
                .arg(format!(
                    "socket,path={},server=on,wait=off,id={id}",
                    path.display()
                ))
                .args(["--monitor", &format!("chardev={id}")]);
        }
        cmd.args(["--daemonize", "--pidfile"]).arg(&pidfile);
        run(&mut cmd);
        let pid = std::fs::read_to_string(&pidfile)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        Qsd {
            pid,
            drv,
            chk,
            image,
        }
    }

    async fn checker(&self) -> QmpClient {
        QmpClient::connect(&Endpoint::Unix(self.chk.display().to_string()))
            .await
            .expect("destination check monitor")
    }

    fn stop(&mut self) {
        if self.pid == 0 {
            return;
        }
        let pid = std::mem::take(&mut self.pid);
        let alive = || Path::new(&format!("/proc/{pid}")).exists();
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

impl Drop for Qsd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Site A with its libvirtd and the guest running, site B for the destination daemon.
/// Field order is drop order: the daemon, then the libvirtd (and its domain), then the
/// namespaces.
struct Lab {
    qsd: Option<Qsd>,
    lv: Libvirtd,
    site_a: Site,
    site_b: Site,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.qsd.take();
        self.lv.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn up(test: &str) -> Lab {
        let qemu = ensure_qemu().expect("private QEMU");
        let image = ensure_guest().expect("guest image");
        let accel = Accel::detect(&qemu, &image);
        eprintln!("{test}: guest runs with {}", accel.name());
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("migroute-mqm-{test}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab dir");
        let site_a = Site::create(&format!("mqm{test}a{pid}"), "10.10.0.1/24").expect("site a");
        let site_b = Site::create(&format!("mqm{test}b{pid}"), "10.10.1.1/24").expect("site b");
        link_sites(
            &site_a,
            &site_b,
            &format!("{A_WAN}/24"),
            &format!("{B_WAN}/24"),
        )
        .expect("wan link");
        // 200 Mbit/s towards B: the bulk copy of the 64 MiB disk takes about 3 s, long
        // enough for the guest to write during it.
        run(site_a.command("tc").args([
            "qdisc", "add", "dev", "wan0", "root", "tbf", "rate", "200mbit", "burst", "32kbit",
            "latency", "50ms",
        ]));
        let lv = Libvirtd::start(&site_a.netns, &dir.join("lv")).expect("libvirtd");
        let lab = Lab {
            qsd: None,
            lv,
            site_a,
            site_b,
            dir,
        };
        lab.fill_source_image();
        lab.define_and_start(GuestSpec {
            name: GUEST.into(),
            emulator: qemu,
            image,
            disk: DISK.into(),
            bridge: lab.site_a.bridge.clone(),
            memory_mib: 128,
            accel,
            console_log: "/var/log/libvirt/mqmguest-console.log".into(),
        });
        lab
    }

    /// The guest's qcow2, holding [`pattern`].
    fn fill_source_image(&self) {
        let raw = self.dir.join("pattern.raw");
        std::fs::write(&raw, pattern()).expect("pattern");
        run(Command::new("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(self.source_image()));
        let _ = std::fs::remove_file(raw);
    }

    /// Defines the guest with the second QMP monitor, starts it and waits until it
    /// answers ping and the monitor's socket is there.
    fn define_and_start(&self, spec: GuestSpec) {
        let xml = self.dir.join("guest.xml");
        let domain = with_qmp_monitor(&domain_xml(&spec), Path::new(QMP));
        std::fs::write(&xml, domain).expect("write xml");
        self.virsh(&["define", &xml.to_string_lossy()]);
        self.virsh(&["start", GUEST]);
        let booted = Instant::now();
        wait_for("the guest to answer ping", Duration::from_secs(180), || {
            self.site_a
                .command("ping")
                .args(["-c", "1", "-W", "1", GUEST_IP])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(self.qmp_socket().exists(), "no second monitor socket");
        eprintln!(
            "guest answers after {:.1} s",
            booted.elapsed().as_secs_f64()
        );
    }

    fn virsh(&self, args: &[&str]) -> String {
        self.lv.virsh(args).expect("virsh")
    }

    /// The guest's qcow2, as the host sees it.
    fn source_image(&self) -> PathBuf {
        self.lv.host_path(Path::new(DISK)).expect("disk path")
    }

    fn qmp_socket(&self) -> PathBuf {
        self.lv.host_path(Path::new(QMP)).expect("qmp path")
    }

    /// A QMP command through libvirt's own monitor (the second one is the driver's).
    fn qmp(&self, command: &str, args: Value) -> Value {
        let mut cmd = json!({ "execute": command });
        if !args.is_null() {
            cmd["arguments"] = args;
        }
        let out = self.virsh(&["qemu-monitor-command", GUEST, &cmd.to_string()]);
        let v: Value = serde_json::from_str(&out).expect("monitor reply");
        v["return"].clone()
    }

    /// The block node libvirt gave the guest's disk (with -blockdev its format node,
    /// e.g. `libvirt-1-format`): the mirror's `device`.
    fn disk_node(&self) -> String {
        let blocks = self.qmp("query-block", Value::Null);
        blocks
            .as_array()
            .expect("query-block")
            .iter()
            .find(|b| {
                b["qdev"]
                    .as_str()
                    .is_some_and(|q| q.contains("virtio-disk0"))
            })
            .and_then(|b| b["inserted"]["node-name"].as_str())
            .expect("the guest disk's node")
            .to_string()
    }

    fn state(&self) -> String {
        self.virsh(&["domstate", GUEST]).trim().to_owned()
    }

    /// The guest disk's write requests so far and the time they took in all, ns
    /// (`virsh domblkstat`: `wr_req`, `wr_total_times`).
    fn writes(&self) -> (u64, u64) {
        let out = self.virsh(&["domblkstat", GUEST, "vda"]);
        let field = |name: &str| {
            out.lines()
                .find_map(|l| {
                    let mut w = l.split_whitespace();
                    (w.nth(1) == Some(name)).then(|| w.next()?.parse().ok())?
                })
                .unwrap_or_else(|| panic!("no {name} in {out}"))
        };
        (field("wr_req"), field("wr_total_times"))
    }

    fn plan(&self, device: &str, qsd: &Qsd) -> QemuMirrorPlan {
        let mut plan = QemuMirrorPlan::new(
            device,
            format!("nbd://{B_WAN}:10809/vda"),
            format!("unix:{}", self.qmp_socket().display()),
            format!("unix:{}", qsd.drv.display()),
        );
        plan.destination_node = Some("vda".into());
        plan.switch_method = SwitchMethod::Auto;
        plan
    }

    /// The mirror's leftovers at the source: its jobs and whether its NBD client node
    /// is still there.
    fn source_leftovers(&self, target_node: &str) -> (Value, bool) {
        let jobs = self.qmp("query-block-jobs", Value::Null);
        let nodes = self.qmp("query-named-block-nodes", json!({"flat": true}));
        let node = nodes
            .as_array()
            .expect("nodes")
            .iter()
            .any(|n| n["node-name"] == target_node);
        (jobs, node)
    }
}

/// The disk's initial contents: zeros where the guest writes its records, a pattern in
/// every sector after them, so the mirror's bulk copy moves the whole disk and a
/// misplaced block shows.
fn pattern() -> Vec<u8> {
    let mut data = vec![0u8; (DISK_MIB << 20) as usize];
    for (i, sector) in data.chunks_mut(512).enumerate().skip(RECORDS) {
        sector.fill((i as u8).wrapping_mul(31) ^ (i >> 11) as u8 | 1);
    }
    data
}

/// Bounds a driver call, so that a hang fails the test (and its guards clean up).
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(180), f)
        .await
        .unwrap_or_else(|_| panic!("{what} within 180 s"))
}

type Events = mpsc::UnboundedReceiver<StorageEvent>;

fn sink() -> (impl Fn(StorageEvent) + Send + Sync + 'static, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    (move |e| drop(tx.send(e)), rx)
}

/// Waits for `want`, returning every event seen up to and including it.
async fn until(rx: &mut Events, seen: &mut Vec<StorageEvent>, want: StorageEvent) {
    let deadline = Duration::from_secs(180);
    loop {
        match tokio::time::timeout(deadline, rx.recv()).await {
            Ok(Some(e)) => {
                let done = e == want;
                if let StorageEvent::Failed { error } = &e {
                    panic!("storage failed: {error} (events so far: {seen:?})");
                }
                seen.push(e);
                if done {
                    return;
                }
            }
            Ok(None) => panic!("event channel closed before {want:?}"),
            Err(_) => panic!("no {want:?} within {deadline:?} (events: {seen:?})"),
        }
    }
}

/// The raw contents of `image` (read with `-U`: QEMU holds it open; the callers pause
/// the guest first, and QEMU flushes its caches when it stops a guest).
fn raw_contents(image: &Path, format: &str, dir: &Path) -> Vec<u8> {
    let raw = dir.join("contents.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-U", "-f", format, "-O", "raw"])
        .arg(image)
        .arg(&raw));
    let bytes = std::fs::read(&raw).expect("read raw");
    let _ = std::fs::remove_file(&raw);
    bytes
}

fn sha256(bytes: &[u8], dir: &Path) -> String {
    let f = dir.join("hash.raw");
    std::fs::write(&f, bytes).expect("write");
    let out = run(Command::new("sha256sum").arg(&f));
    let _ = std::fs::remove_file(&f);
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Checks the guest writer's records (sector i holds `migroute-seq N` with
/// N ≡ i mod 2048, or nothing yet) and returns the highest sequence number.
fn records(disk: &[u8]) -> u64 {
    let mut top = 0;
    for (i, sector) in disk.chunks(512).take(RECORDS).enumerate() {
        if sector.iter().all(|&b| b == 0) {
            continue;
        }
        let text = String::from_utf8_lossy(&sector[..30]);
        let n: u64 = text
            .strip_prefix("migroute-seq ")
            .and_then(|t| t.trim_end_matches(['\n', '\0']).parse().ok())
            .unwrap_or_else(|| panic!("sector {i} holds no record: {text:?}"));
        assert_eq!(n as usize % RECORDS, i, "record {n} in sector {i}");
        top = top.max(n);
    }
    top
}

/// Guest writes between two samples of [`Lab::writes`] and their mean latency.
struct Writes(u64, Duration);

impl Writes {
    fn between(from: (u64, u64), to: (u64, u64)) -> Writes {
        let n = to.0.saturating_sub(from.0);
        let ns = to.1.saturating_sub(from.1);
        Writes(n, Duration::from_nanos(ns.checked_div(n).unwrap_or(0)))
    }
}

impl std::fmt::Display for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} writes (mean {:?})", self.0, self.1)
    }
}

/// Lets the guest run for `d` and asserts it wrote to its disk meanwhile.
fn guest_keeps_writing(lab: &Lab, d: Duration, when: &str) -> Writes {
    let before = lab.writes();
    std::thread::sleep(d);
    let w = Writes::between(before, lab.writes());
    assert!(w.0 > 0, "{when}: no guest write in {d:?}");
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_of_a_libvirt_guest_restarts_the_job_and_copies_the_disk() {
    let _serial = SERIAL.lock().await;
    if !can_run() {
        return;
    }
    let t_all = Instant::now();
    let mut lab = tokio::task::block_in_place(|| Lab::up("f"));
    let qsd = Qsd::start(&lab.site_b, &lab.dir, "dst");
    let device = tokio::task::block_in_place(|| lab.disk_node());
    let driver = QemuMirrorStorage::new(&lab.plan(&device, &qsd)).expect("driver");
    let target_node = driver.target_node().to_string();
    lab.qsd = Some(qsd);
    let (events, mut rx) = sink();
    let mut seen = Vec::new();

    let w0 = tokio::task::block_in_place(|| lab.writes());
    let t = Instant::now();
    within("start_async", driver.start_async(events))
        .await
        .expect("start_async");
    until(&mut rx, &mut seen, StorageEvent::Ready).await;
    let ready_after = t.elapsed();
    let wrote_bulk = Writes::between(w0, tokio::task::block_in_place(|| lab.writes()));
    let wrote_bg = tokio::task::block_in_place(|| {
        guest_keeps_writing(&lab, Duration::from_secs(2), "background")
    });

    // QEMU 7.2: the job is restarted, with the guest paused around it.
    let method = within("probe", driver.switch_method())
        .await
        .expect("switch method");
    let t_pause = Instant::now();
    tokio::task::block_in_place(|| lab.virsh(&["suspend", GUEST]));
    let switched = within("switch_sync", driver.switch_sync()).await;
    tokio::task::block_in_place(|| lab.virsh(&["resume", GUEST]));
    let paused = t_pause.elapsed();
    switched.expect("switch_sync");
    let t = Instant::now();
    within("wait_in_sync", driver.wait_in_sync())
        .await
        .expect("wait_in_sync");
    until(&mut rx, &mut seen, StorageEvent::InSync).await;
    let in_sync_after = t.elapsed();
    let wrote_sync = tokio::task::block_in_place(|| {
        guest_keeps_writing(&lab, Duration::from_secs(2), "write-blocking")
    });

    // The VM's pause at the source: the cutover, then both disks are quiescent.
    tokio::task::block_in_place(|| lab.virsh(&["suspend", GUEST]));
    let t = Instant::now();
    within("cutover", driver.cutover()).await.expect("cutover");
    let cutover_took = t.elapsed();
    let (jobs, node) = tokio::task::block_in_place(|| lab.source_leftovers(&target_node));
    assert_eq!(jobs, json!([]), "job left at the source");
    assert!(!node, "NBD client node left at the source");
    // Still a guard of its own: dropped (ended) on a failure below.
    let mut qsd = lab.qsd.take().expect("destination");
    let exports = qsd
        .checker()
        .await
        .execute("query-block-exports", Value::Null)
        .await
        .expect("query-block-exports");
    assert_eq!(exports, json!([]), "export left at the destination");
    drop(driver);
    // Whatever the cancelled jobs' ends reported (nothing, they were the driver's own).
    while let Ok(e) = rx.try_recv() {
        seen.push(e);
    }
    tokio::task::block_in_place(|| {
        qsd.stop();
        let src = raw_contents(&lab.source_image(), "qcow2", &lab.dir);
        let dst = std::fs::read(&qsd.image).expect("destination image");
        let (src_sum, dst_sum) = (sha256(&src, &lab.dir), sha256(&dst, &lab.dir));
        let top = records(&src);
        eprintln!(
            "libvirt QEMU 7.2, node {device}: switch method {method:?}; READY after {:.2} s; \
             guest paused {paused:?} for the switch; in sync {in_sync_after:?} after it; \
             cutover {cutover_took:?}; guest writes: {wrote_bulk} during the bulk copy, \
             in 2 s {wrote_bg} in background mode and {wrote_sync} write-blocking; last \
             guest record {top}; sha256 source {src_sum}, destination {dst_sum}",
            ready_after.as_secs_f64()
        );
        assert_eq!(seen, [StorageEvent::Ready, StorageEvent::InSync]);
        assert_eq!(
            method,
            SwitchMethod::RestartJob,
            "QEMU 7.2 has no block-job-change"
        );
        assert!(top > 0, "no guest record on the disk");
        assert!(
            wrote_bulk.0 > 0,
            "the guest wrote nothing during the bulk copy"
        );
        assert!(src[RECORDS * 512..] == pattern()[RECORDS * 512..]);
        assert_eq!(src_sum, dst_sum, "destination differs from the source");
        assert!(src == dst);
    });
    drop(lab);
    eprintln!("forward test took {:.1} s", t_all.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_after_ready_leaves_the_libvirt_guest_and_its_disk_alone() {
    let _serial = SERIAL.lock().await;
    if !can_run() {
        return;
    }
    let t_all = Instant::now();
    let mut lab = tokio::task::block_in_place(|| Lab::up("a"));
    let qsd = Qsd::start(&lab.site_b, &lab.dir, "dst");
    let device = tokio::task::block_in_place(|| lab.disk_node());
    let driver = QemuMirrorStorage::new(&lab.plan(&device, &qsd)).expect("driver");
    let target_node = driver.target_node().to_string();
    lab.qsd = Some(qsd);
    let (events, mut rx) = sink();
    let mut seen = Vec::new();
    within("start_async", driver.start_async(events))
        .await
        .expect("start_async");
    until(&mut rx, &mut seen, StorageEvent::Ready).await;
    within("abort", driver.abort()).await.expect("abort");
    within("abort again", driver.abort())
        .await
        .expect("abort again");
    let exports = lab
        .qsd
        .as_ref()
        .expect("destination")
        .checker()
        .await
        .execute("query-block-exports", Value::Null)
        .await
        .expect("query-block-exports");
    assert_eq!(exports, json!([]), "export left at the destination");
    drop(driver);
    assert!(rx.try_recv().is_err(), "events after abort: {seen:?}");
    tokio::task::block_in_place(|| {
        let (jobs, node) = lab.source_leftovers(&target_node);
        assert_eq!(jobs, json!([]), "job left at the source");
        assert!(!node, "NBD client node left at the source");
        assert_eq!(lab.state(), "running");
        let wrote = guest_keeps_writing(&lab, Duration::from_secs(3), "after abort");
        // Paused, so QEMU has flushed the qcow2 and the check reads a quiescent image.
        lab.virsh(&["suspend", GUEST]);
        let disk = raw_contents(&lab.source_image(), "qcow2", &lab.dir);
        let last = records(&disk);
        assert!(
            disk[RECORDS * 512..] == pattern()[RECORDS * 512..],
            "the source disk changed outside the guest's records"
        );
        let check = run(Command::new("qemu-img")
            .args(["check", "-U", "-f", "qcow2"])
            .arg(lab.source_image()));
        lab.virsh(&["resume", GUEST]);
        eprintln!(
            "abort after READY: guest {} and wrote {wrote} in 3 s after it; last \
             record {last}; qemu-img check: {}",
            lab.state(),
            check.trim()
        );
        assert_eq!(lab.state(), "running");
    });
    drop(lab);
    eprintln!("abort test took {:.1} s", t_all.elapsed().as_secs_f64());
}
