//! Live migration of a real guest between two libvirtds in network namespaces, through
//! the libvirt driver (feature `libvirt`).
//!
//! Lab: sites A and B are namespaces, each with a libvirtd of its own and a bridge for
//! the guest's tap, joined by a veth (192.168.77.1 ↔ .2) that carries libvirt's
//! peer-to-peer connection, the memory stream and the NBD disk copy. The guest (Debian
//! kernel + busybox initramfs, 10.10.0.5/24, writing to its disk all the time) starts
//! at A; the driver moves it to B with its disk. With `synchronous_writes` (libvirt's
//! `VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES`) it also checks, from libvirtd's monitor
//! log, that libvirt mirrored the disk write-blocking, and that the disk left behind
//! is the one the guest runs on minus only its later writes.
//!
//! Needs root, libvirt-daemon(-driver-qemu), libvirt-clients, qemu-utils,
//! busybox-static and apt-get (the private QEMU and the guest kernel are fetched once
//! and cached under /var/cache/migroute).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use migroute_labs::kvm::{
    domain_xml, ensure_guest, ensure_qemu, link_sites, Accel, GuestSpec, Libvirtd, Site,
};
use migroute_labs::preflight::Preflight;
use migroute_orchestration::drivers::libvirt::{LibvirtConfig, LibvirtHypervisor};
use migroute_orchestration::drivers::{
    Hypervisor, HypervisorError, HypervisorEvent, ResumeImmediately,
};
use migroute_orchestration::migration::CopyStorage;

const GUEST: &str = "mgguest";
const GUEST_IP: &str = "10.10.0.5";
const A_WAN: &str = "192.168.77.1";
const B_WAN: &str = "192.168.77.2";
const DISK: &str = "/var/lib/libvirt/images/mgguest.qcow2";

/// One lab at a time: each runs two libvirtds and an emulated guest on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn can_run() -> bool {
    Preflight::new("libvirt migration test")
        .root()
        .tools(&[
            "ip", "unshare", "libvirtd", "virsh", "qemu-img", "apt-get", "dpkg", "gzip", "ping",
        ])
        .package("busybox-static", "/bin/busybox")
        .ready()
}

/// The two sites with their libvirtds and the guest running at A. Field order is drop
/// order: the libvirtds (and their domains) go before the namespaces.
struct Lab {
    lv_a: Libvirtd,
    lv_b: Libvirtd,
    site_a: Site,
    site_b: Site,
    _dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.lv_a.stop();
        self.lv_b.stop();
        let _ = std::fs::remove_dir_all(&self._dir);
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

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Lab {
    fn up(test: &str) -> Lab {
        let qemu = ensure_qemu().expect("private QEMU");
        let image = ensure_guest().expect("guest image");
        let accel = Accel::detect(&qemu, &image);
        eprintln!("{test}: guest runs with {}", accel.name());
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("migroute-lv-{test}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        let site_a = Site::create(&format!("mglv{test}a{pid}"), "10.10.0.1/24").expect("site a");
        let site_b = Site::create(&format!("mglv{test}b{pid}"), "10.10.0.2/24").expect("site b");
        link_sites(
            &site_a,
            &site_b,
            &format!("{A_WAN}/24"),
            &format!("{B_WAN}/24"),
        )
        .expect("wan link");
        let lv_a = Libvirtd::start(&site_a.netns, &dir.join("a")).expect("libvirtd a");
        let lv_b = Libvirtd::start(&site_b.netns, &dir.join("b")).expect("libvirtd b");
        let lab = Lab {
            lv_a,
            lv_b,
            site_a,
            site_b,
            _dir: dir.clone(),
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
            console_log: "/var/log/libvirt/mgguest-console.log".into(),
        };
        let xml = dir.join("guest.xml");
        std::fs::write(&xml, domain_xml(&spec)).expect("write xml");
        lab.lv_a
            .virsh(&["define", &xml.to_string_lossy()])
            .expect("define");
        lab.lv_a.virsh(&["start", GUEST]).expect("start");
        let booted = Instant::now();
        wait_for(
            "the guest to answer ping at A",
            Duration::from_secs(180),
            || ping(&lab.site_a),
        );
        eprintln!(
            "{test}: guest answers at A after {:.1} s",
            booted.elapsed().as_secs_f64()
        );
        lab
    }

    fn config(&self, bandwidth_mib_s: Option<u64>) -> LibvirtConfig {
        LibvirtConfig {
            source_uri: self.lv_a.uri(),
            destination_uri: self.lv_b.uri(),
            peer_uri: Some(Libvirtd::tcp_uri(B_WAN)),
            domain: GUEST.into(),
            max_downtime_ms: Some(300),
            migrate_uri: Some(format!("tcp://{B_WAN}")),
            listen_address: Some(B_WAN.into()),
            bandwidth_mib_s,
            copy_storage: CopyStorage::All,
            synchronous_writes: false,
            tls: false,
            poll_interval: Duration::from_millis(200),
        }
    }

    /// The way back, B → A, otherwise as [`Lab::config`].
    fn config_back(&self, bandwidth_mib_s: Option<u64>) -> LibvirtConfig {
        LibvirtConfig {
            source_uri: self.lv_b.uri(),
            destination_uri: self.lv_a.uri(),
            peer_uri: Some(Libvirtd::tcp_uri(A_WAN)),
            migrate_uri: Some(format!("tcp://{A_WAN}")),
            listen_address: Some(A_WAN.into()),
            ..self.config(bandwidth_mib_s)
        }
    }

    /// `virsh domstate` at a site, "absent" when it has no such domain.
    fn state(lv: &Libvirtd) -> String {
        lv.virsh(&["domstate", GUEST])
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "absent".into())
    }
}

/// Bounds a driver call, so that a hung migration fails the test (and its guards clean
/// the lab up) instead of hanging it.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(240), f)
        .await
        .expect("driver call within 240 s")
}

type Events = Arc<Mutex<Vec<HypervisorEvent>>>;

fn sink() -> (Events, impl Fn(HypervisorEvent) + Send + Sync + 'static) {
    let events: Events = Arc::default();
    let e = events.clone();
    (events, move |ev| e.lock().unwrap().push(ev))
}

fn has_progress(events: &Events) -> bool {
    events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, HypervisorEvent::Progress(_)))
}

/// Asserts `Progress…, Suspended, Resumed, Completed` (at least `min_progress` of the
/// first).
fn assert_order(events: &[HypervisorEvent], min_progress: usize) {
    let n = events
        .iter()
        .take_while(|e| matches!(e, HypervisorEvent::Progress(_)))
        .count();
    assert!(n >= min_progress, "too few Progress events: {events:?}");
    assert_eq!(
        events[n..],
        [
            HypervisorEvent::Suspended,
            HypervisorEvent::Resumed,
            HypervisorEvent::Completed
        ],
        "events: {events:?}"
    );
}

fn report(test: &str, hv: &LibvirtHypervisor, took: Duration) {
    let s = hv.completed_stats();
    eprintln!(
        "{test}: migrate returned after {:.1} s; libvirt job: elapsed {:?} ms, downtime {:?} ms, \
         data processed {:?} B (memory {:?} B, disk {:?} B)",
        took.as_secs_f64(),
        s.as_ref().and_then(|s| s.time_elapsed_ms),
        s.as_ref().and_then(|s| s.downtime_ms),
        s.as_ref().and_then(|s| s.data_processed),
        s.as_ref().and_then(|s| s.memory_processed),
        s.as_ref().and_then(|s| s.disk_processed),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_with_disk_moves_the_guest_to_b() {
    let _serial = SERIAL.lock().await;
    if !can_run() {
        return;
    }
    let lab = tokio::task::block_in_place(|| Lab::up("m"));
    let hv = LibvirtHypervisor::new(lab.config(Some(50)));
    let (events, emit) = sink();
    let t0 = Instant::now();
    within(hv.migrate(emit, ResumeImmediately))
        .await
        .expect("migration succeeds");
    let took = t0.elapsed();
    report("migrate", &hv, took);
    assert_order(&events.lock().unwrap(), 1);
    assert!(hv
        .completed_stats()
        .is_some_and(|s| s.downtime_ms.is_some()));
    tokio::task::block_in_place(|| {
        assert_eq!(Lab::state(&lab.lv_b), "running");
        assert_ne!(Lab::state(&lab.lv_a), "running");
        wait_for(
            "the guest to answer ping at B",
            Duration::from_secs(60),
            || ping(&lab.site_b),
        );
        wait_for("the guest's TCP echo at B", Duration::from_secs(60), || {
            tcp_echo(&lab.site_b)
        });
        // The guest's numbered disk writes are not checked here: reading B's live
        // qcow2 from outside (`qemu-img convert -U`) saw no new block within 60 s in one
        // of six runs on a loaded machine, a cause not yet found. The data-integrity
        // check belongs to the KVM scenario (checksums with the guest stopped).
    });
    // Idempotent: asked again, it reports the VM at the destination.
    let (again, emit) = sink();
    hv.migrate(emit, ResumeImmediately)
        .await
        .expect("repeat succeeds");
    assert_eq!(
        *again.lock().unwrap(),
        [HypervisorEvent::Resumed, HypervisorEvent::Completed]
    );
    assert!(matches!(
        hv.cancel().await,
        Err(HypervisorError::AlreadyCompleted { .. })
    ));
    drop(lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_precopy_leaves_the_guest_at_a() {
    let _serial = SERIAL.lock().await;
    if !can_run() {
        return;
    }
    let lab = tokio::task::block_in_place(|| Lab::up("c"));
    // 1 MiB/s: pre-copy of 128 MiB and the disk lasts minutes, so the cancel lands in it.
    let hv = LibvirtHypervisor::new(lab.config(Some(1)));
    let (events, emit) = sink();
    let task = tokio::spawn({
        let hv = hv.clone();
        async move { hv.migrate(emit, ResumeImmediately).await }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !has_progress(&events) {
        assert!(Instant::now() < deadline, "no Progress: {events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    hv.cancel().await.expect("cancel");
    let r = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("migrate ends after cancel")
        .expect("task");
    assert!(
        matches!(r, Err(HypervisorError::Cancelled { .. })),
        "migrate: {r:?}"
    );
    let evs = events.lock().unwrap().clone();
    assert!(
        evs.iter()
            .all(|e| matches!(e, HypervisorEvent::Progress(_))),
        "only pre-copy progress: {evs:?}"
    );
    tokio::task::block_in_place(|| {
        assert_eq!(Lab::state(&lab.lv_a), "running");
        assert_ne!(Lab::state(&lab.lv_b), "running");
        wait_for(
            "the guest to answer ping at A",
            Duration::from_secs(60),
            || ping(&lab.site_a),
        );
    });
    // Nothing left to cancel: Ok.
    hv.cancel().await.expect("second cancel");
    drop(lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_driver_attaches_to_a_migration_left_running() {
    let _serial = SERIAL.lock().await;
    if !can_run() {
        return;
    }
    let lab = tokio::task::block_in_place(|| Lab::up("r"));
    let first = LibvirtHypervisor::new(lab.config(Some(2)));
    let (events, emit) = sink();
    let task = tokio::spawn({
        let hv = first.clone();
        async move { hv.migrate(emit, ResumeImmediately).await }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !has_progress(&events) {
        assert!(Instant::now() < deadline, "no Progress: {events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The orchestrator "crashes": its call and driver go away; libvirtd carries on.
    task.abort();
    let _ = task.await;
    drop(first);
    // A restarted orchestrator, whose plan allows more bandwidth, attaches.
    let second = LibvirtHypervisor::new(lab.config(Some(200)));
    let (events, emit) = sink();
    let t0 = Instant::now();
    within(second.migrate(emit, ResumeImmediately))
        .await
        .expect("attached migration completes");
    report("attach", &second, t0.elapsed());
    assert_order(&events.lock().unwrap(), 0);
    tokio::task::block_in_place(|| {
        assert_eq!(Lab::state(&lab.lv_b), "running");
        assert_ne!(Lab::state(&lab.lv_a), "running");
        wait_for(
            "the guest to answer ping at B",
            Duration::from_secs(60),
            || ping(&lab.site_b),
        );
    });
    drop(lab);
}

/// The guest writer's records: 512-byte `migroute-seq N` blocks in the first 2048
/// sectors (sector N mod 2048), see labs/kvm/build-guest.sh.
const RECORDS: usize = 2048;

/// `(wr_req, wr_total_times ns)` of the guest's disk at the libvirtd at `uri`, `None`
/// once the domain is not running there.
fn write_stats(uri: &str) -> Option<(u64, u64)> {
    let out = Command::new("virsh")
        .args(["-q", "-c", uri, "domblkstat", GUEST, "vda"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.nth(1) == Some(name)).then(|| w.next()?.parse().ok())?
        })
    };
    Some((field("wr_req")?, field("wr_total_times")?))
}

/// Mean guest write latency between two samples of [`write_stats`], and the writes.
fn mean_write(from: (u64, u64), to: (u64, u64)) -> (Duration, u64) {
    let n = to.0.saturating_sub(from.0);
    let ns = to.1.saturating_sub(from.1);
    (Duration::from_nanos(ns.checked_div(n).unwrap_or(0)), n)
}

/// Samples [`write_stats`] at the source every 200 ms until stopped; keeps the last
/// sample taken while the guest still ran there (the end of the migration).
struct WriteSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<(u64, u64)>>>,
}

impl WriteSampler {
    fn start(uri: String) -> WriteSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last = None;
            while !flag.load(Ordering::Relaxed) {
                last = write_stats(&uri).or(last);
                std::thread::sleep(Duration::from_millis(200));
            }
            last
        });
        WriteSampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Option<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).flatten()
    }
}

impl Drop for WriteSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The raw contents of the guest's qcow2 at `lv` (`-U`: the running side's QEMU holds
/// it; the caller has paused that guest, and QEMU flushes when it stops a guest).
fn disk_contents(lv: &Libvirtd, dir: &Path) -> Vec<u8> {
    let raw = dir.join("contents.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-U", "-f", "qcow2", "-O", "raw"])
        .arg(lv.host_path(Path::new(DISK)).expect("disk path"))
        .arg(&raw));
    let bytes = std::fs::read(&raw).expect("read raw");
    let _ = std::fs::remove_file(&raw);
    bytes
}

/// The record in a sector of the guest writer's area (0 for an empty sector).
fn record(sector: &[u8]) -> u64 {
    if sector.iter().all(|&b| b == 0) {
        return 0;
    }
    let text = String::from_utf8_lossy(&sector[..30]);
    text.strip_prefix("migroute-seq ")
        .and_then(|t| t.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("no record: {text:?}"))
}

/// Checks that the disk the guest runs on (`now`) is the one it left (`left`) plus only
/// later writes: outside the writer's records byte-identical, and every record sector
/// either identical or holding a newer record (written after the resume, or still in
/// the guest's page cache at the switch). Returns how many records are newer and the
/// last record on `left`.
fn assert_extends(left: &[u8], now: &[u8]) -> (usize, u64) {
    assert_eq!(left.len(), now.len(), "disk sizes differ");
    let split = RECORDS * 512;
    assert!(
        left[split..] == now[split..],
        "the disks differ outside the guest's records"
    );
    let mut newer = 0;
    let mut last = 0;
    for (i, (a, b)) in left[..split]
        .chunks(512)
        .zip(now[..split].chunks(512))
        .enumerate()
    {
        let (ra, rb) = (record(a), record(b));
        last = last.max(ra);
        if a != b {
            assert!(rb > ra, "sector {i}: record {ra} became {rb}");
            newer += 1;
        }
    }
    (newer, last)
}

/// Turns on libvirtd's debug log of its QEMU monitor traffic (through its admin
/// socket), so the commands it sent can be checked afterwards.
fn log_monitor_traffic(lv: &Libvirtd) {
    let admin = lv
        .host_path(Path::new("/run/libvirt/libvirt-admin-sock"))
        .expect("admin socket");
    let uri = format!("libvirtd:///system?socket={}", admin.display());
    for args in [
        ["daemon-log-filters", "1:qemu.qemu_monitor"],
        ["daemon-log-outputs", "1:file:/var/log/libvirt/libvirtd.log"],
    ] {
        run(Command::new("virt-admin").args(["-c", &uri]).args(args));
    }
}

/// The `blockdev-mirror` commands libvirtd sent QEMU, from its log.
fn mirror_commands(lv: &Libvirtd) -> Vec<String> {
    let log = lv
        .host_path(Path::new("/var/log/libvirt/libvirtd.log"))
        .expect("log path");
    let mut commands: Vec<String> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"execute\":\"blockdev-mirror\""))
        .map(|l| {
            let start = l.find("{\"execute\"").unwrap_or(0);
            l[start..].to_owned()
        })
        .collect();
    // libvirtd logs each command twice (sent message and its JSON).
    commands.sort();
    commands.dedup();
    commands
}

/// One move with its checks: the guest's mean write latency before and during it, the
/// mirror commands libvirt sent, and the disk left behind against the one it runs on.
struct Move {
    idle: (Duration, u64),
    during: (Duration, u64),
    took: Duration,
    mirrors: Vec<String>,
    newer: usize,
    last_record: u64,
}

async fn move_and_check(
    lab: &Lab,
    config: LibvirtConfig,
    (from, to): (&Libvirtd, &Libvirtd),
    test: &str,
) -> Result<Move, HypervisorError> {
    tokio::task::block_in_place(|| log_monitor_traffic(from));
    let t0 = write_stats(&from.uri()).expect("guest runs at the source");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t1 = write_stats(&from.uri()).expect("guest runs at the source");
    let sampler = WriteSampler::start(from.uri());
    let hv = LibvirtHypervisor::new(config);
    let (events, emit) = sink();
    let t = Instant::now();
    let result = within(hv.migrate(emit, ResumeImmediately)).await;
    let took = t.elapsed();
    let last = tokio::task::block_in_place(|| sampler.finish());
    result?;
    report(test, &hv, took);
    assert_order(&events.lock().unwrap(), 1);
    Ok(tokio::task::block_in_place(|| {
        assert_eq!(Lab::state(to), "running");
        assert_ne!(Lab::state(from), "running");
        // The guest keeps writing at the destination: pause it, so its disk is
        // quiescent; the source's QEMU is gone, its disk closed.
        to.virsh(&["suspend", GUEST]).expect("suspend");
        let now = disk_contents(to, &lab._dir);
        let left = disk_contents(from, &lab._dir);
        to.virsh(&["resume", GUEST]).expect("resume");
        let (newer, last_record) = assert_extends(&left, &now);
        Move {
            idle: mean_write(t0, t1),
            during: mean_write(t1, last.expect("write stats during the move")),
            took,
            mirrors: mirror_commands(from),
            newer,
            last_record,
        }
    }))
}

/// `synchronous_writes = true` against Debian 12's libvirt 9.0 and QEMU 7.2: libvirt
/// accepts the flag and mirrors the disk write-blocking, the move completes, and the
/// disk left behind is the one the guest runs on minus only its later writes. The way
/// back without the flag is the comparison (latencies printed, not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_writes_are_accepted_and_the_disk_arrives_whole() {
    let _serial = SERIAL.lock().await;
    if !can_run() {
        return;
    }
    let lab = tokio::task::block_in_place(|| Lab::up("s"));
    let mut sync = lab.config(Some(50));
    sync.synchronous_writes = true;
    let there = match move_and_check(&lab, sync, (&lab.lv_a, &lab.lv_b), "sync A→B").await {
        Ok(m) => m,
        Err(e) => panic!("libvirt refused or failed the synchronous-writes migration: {e}"),
    };
    let back = move_and_check(
        &lab,
        lab.config_back(Some(50)),
        (&lab.lv_b, &lab.lv_a),
        "background B→A",
    )
    .await
    .expect("migration back succeeds");
    for (name, m) in [("synchronous", &there), ("background", &back)] {
        eprintln!(
            "{name} writes: move {:.1} s; guest writes idle {:?} mean over {}, during the \
             move {:?} mean over {}; {} records newer at the destination (last left behind \
             {}); libvirt's mirror commands: {:?}",
            m.took.as_secs_f64(),
            m.idle.0,
            m.idle.1,
            m.during.0,
            m.during.1,
            m.newer,
            m.last_record,
            m.mirrors
        );
    }
    assert!(there.last_record > 0 && back.last_record > there.last_record);
    assert!(
        !there.mirrors.is_empty(),
        "no blockdev-mirror in libvirtd's log"
    );
    assert!(
        there
            .mirrors
            .iter()
            .all(|m| m.contains("\"copy-mode\":\"write-blocking\"")),
        "libvirt did not mirror write-blocking: {:?}",
        there.mirrors
    );
    assert!(
        back.mirrors.iter().all(|m| !m.contains("write-blocking")),
        "{:?}",
        back.mirrors
    );
    drop(lab);
}
