//! The qemu-mirror storage driver against real processes: two qemu-storage-daemons in
//! two network namespaces joined by a veth limited to 200 Mbit/s (tbf), the source
//! mirroring its disk into an NBD export of the destination.
//!
//! The "guest" is this test writing 1 MiB requests to the source disk through an NBD
//! export of the source daemon (a unix socket): that export sits above the mirror's
//! filter node, like a VM's virtio disk, so its write latency is what a guest would
//! see. Asserted: (a) in background mode a write costs far less than sending 1 MiB
//! over the link (42 ms); (b) after `switch_sync` it costs at least about that; (c)
//! after `cutover` both images are byte-identical; (d) `abort` after each step leaves
//! the source untouched and no export at the destination. Both switch methods run.
//!
//! Needs root, `ip`, `tc` (tbf), `qemu-storage-daemon` and `qemu-img`.

use migroute_labs::preflight::Preflight;
use migroute_orchestration::drivers::qmp::{Endpoint, QmpClient};
use migroute_orchestration::drivers::{QemuMirrorStorage, Storage, StorageError, StorageEvent};
use migroute_orchestration::migration::{QemuMirrorPlan, SwitchMethod};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

const MIB: u64 = 1 << 20;
/// 1 MiB at 200 Mbit/s.
const LINK_TIME_1M: Duration = Duration::from_millis(42);

fn can_run() -> bool {
    Preflight::new("qemu-mirror test")
        .root()
        .tools(&["ip", "tc", "qemu-storage-daemon", "qemu-img"])
        .ready()
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Two namespaces, a rate-limited veth, a scratch dir and the daemons started in it;
/// dropping it kills the daemons and removes everything, also when a test fails.
struct Lab {
    ns: [String; 2],
    dir: tempfile::TempDir,
    pids: Vec<u32>,
    src_addr: String,
    dst_addr: String,
    /// How to run qemu-storage-daemon (program and environment).
    qsd: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let ns = [format!("qm{pid}-{n}a"), format!("qm{pid}-{n}b")];
        let net = 100 + (pid as usize * 7 + n) % 150;
        let lab = Lab {
            ns: ns.clone(),
            dir: tempfile::tempdir().unwrap(),
            pids: Vec::new(),
            src_addr: format!("10.231.{net}.1"),
            dst_addr: format!("10.231.{net}.2"),
            qsd: vec!["qemu-storage-daemon".into()],
        };
        for ns in &ns {
            run(&["ip", "netns", "add", ns]);
        }
        let (va, vb) = (format!("qm{pid}-{n}a"), format!("qm{pid}-{n}b"));
        run(&[
            "ip", "link", "add", &va, "netns", &ns[0], "type", "veth", "peer", "name", &vb,
            "netns", &ns[1],
        ]);
        for (ns, dev, addr) in [(&ns[0], &va, &lab.src_addr), (&ns[1], &vb, &lab.dst_addr)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&[
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                "200mbit", "burst", "32kbit", "latency", "50ms",
            ]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// Starts a daemon serving `image` as node `vda`, with two QMP monitors (one for the
    /// driver, one for the test's checks: a monitor serves one client at a time) and,
    /// on the source, the guest's NBD export. `--daemonize` returns once the sockets
    /// listen; the pid file is written before that.
    fn daemon(&mut self, side: usize, image: &str) {
        let tag = ["src", "dst"][side];
        let mut args = vec!["netns".to_string(), "exec".into(), self.ns[side].clone()];
        args.extend(self.qsd.iter().cloned());
        args.extend([
            "--blockdev".into(),
            format!("file,node-name=file0,filename={}", self.p(image)),
            "--blockdev".into(),
            "raw,node-name=vda,file=file0".into(),
        ]);
        for m in ["drv", "chk"] {
            args.push("--chardev".into());
            args.push(format!(
                "socket,path={},server=on,wait=off,id={m}",
                self.p(&format!("{tag}-{m}.qmp"))
            ));
            args.push("--monitor".into());
            args.push(format!("chardev={m}"));
        }
        if side == 0 {
            args.push("--nbd-server".into());
            args.push(format!("addr.type=unix,addr.path={}", self.p("guest.nbd")));
            args.push("--export".into());
            args.push("nbd,id=guest,node-name=vda,name=guest,writable=on".into());
        }
        let pidfile = self.p(&format!("{tag}.pid"));
        args.extend(["--daemonize".into(), "--pidfile".into(), pidfile.clone()]);
        let out = Command::new("ip").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "qemu-storage-daemon: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        self.pids.push(pid);
    }

    fn stop_daemons(&mut self) {
        for pid in self.pids.drain(..) {
            stop(pid, "TERM");
        }
    }

    fn plan(&self, method: SwitchMethod) -> QemuMirrorPlan {
        let mut p = QemuMirrorPlan::new(
            "vda",
            format!("nbd://{}:10809/vda", self.dst_addr),
            format!("unix:{}", self.p("src-drv.qmp")),
            format!("unix:{}", self.p("dst-drv.qmp")),
        );
        p.switch_method = method;
        p
    }

    async fn checker(&self, side: usize) -> QmpClient {
        let tag = ["src", "dst"][side];
        QmpClient::connect(&Endpoint::Unix(self.p(&format!("{tag}-chk.qmp"))))
            .await
            .unwrap()
    }
}

/// Signals `pid` and waits until it is gone (SIGKILL after 20 s).
fn stop(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_daemons();
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A raw image of `size` with a different pattern in each MiB, so a misplaced block
/// shows.
fn make_image(path: &Path, size: u64, seed: u8) {
    let mut data = vec![0u8; size as usize];
    for (i, chunk) in data.chunks_mut(MIB as usize).enumerate() {
        let b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        for (j, x) in chunk.iter_mut().enumerate().step_by(512) {
            *x = b ^ (j >> 9) as u8;
        }
    }
    std::fs::write(path, data).unwrap();
}

fn identical(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// A minimal NBD client (fixed newstyle, NBD_OPT_EXPORT_NAME, simple replies): just
/// enough to time one write request the way a guest's disk would issue it.
struct Nbd {
    s: UnixStream,
    cookie: u64,
}

impl Nbd {
    async fn connect(path: &str, export: &str) -> Nbd {
        let mut s = UnixStream::connect(path).await.unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello[..8], b"NBDMAGIC");
        assert_eq!(&hello[8..16], b"IHAVEOPT");
        let server_flags = u16::from_be_bytes([hello[16], hello[17]]);
        assert!(server_flags & 1 != 0, "fixed newstyle");
        let no_zeroes = server_flags & 2 != 0;
        s.write_all(&(1u32 | if no_zeroes { 2 } else { 0 }).to_be_bytes())
            .await
            .unwrap();
        let mut opt = b"IHAVEOPT".to_vec();
        opt.extend(1u32.to_be_bytes()); // NBD_OPT_EXPORT_NAME
        opt.extend((export.len() as u32).to_be_bytes());
        opt.extend(export.as_bytes());
        s.write_all(&opt).await.unwrap();
        let mut info = vec![0u8; if no_zeroes { 10 } else { 134 }];
        s.read_exact(&mut info).await.unwrap();
        Nbd { s, cookie: 0 }
    }

    /// Writes `data` at `offset` and returns how long the server took to acknowledge.
    async fn write(&mut self, offset: u64, data: &[u8]) -> Duration {
        self.cookie += 1;
        let mut req = Vec::with_capacity(28 + data.len());
        req.extend(0x2560_9513u32.to_be_bytes());
        req.extend(0u16.to_be_bytes());
        req.extend(1u16.to_be_bytes()); // NBD_CMD_WRITE
        req.extend(self.cookie.to_be_bytes());
        req.extend(offset.to_be_bytes());
        req.extend((data.len() as u32).to_be_bytes());
        req.extend(data);
        let t = Instant::now();
        self.s.write_all(&req).await.unwrap();
        let mut reply = [0u8; 16];
        self.s.read_exact(&mut reply).await.unwrap();
        let took = t.elapsed();
        assert_eq!(&reply[..4], &0x6744_6698u32.to_be_bytes());
        assert_eq!(&reply[4..8], &[0, 0, 0, 0], "write error");
        assert_eq!(&reply[8..], &self.cookie.to_be_bytes());
        took
    }

    /// `n` 1 MiB writes at distinct offsets from `base`, a pause between them; the
    /// median latency.
    async fn median_write(&mut self, base: u64, n: u64, pattern: u8) -> (Duration, Vec<Duration>) {
        let mut all = Vec::new();
        for i in 0..n {
            let data = vec![pattern.wrapping_add(i as u8); MIB as usize];
            all.push(self.write(base + i * 2 * MIB, &data).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut sorted = all.clone();
        sorted.sort();
        (sorted[sorted.len() / 2], all)
    }
}

type Events = mpsc::UnboundedReceiver<StorageEvent>;

fn sink() -> (impl Fn(StorageEvent) + Send + Sync + 'static, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    (move |e| drop(tx.send(e)), rx)
}

async fn expect_event(rx: &mut Events, want: StorageEvent, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        match tokio::time::timeout(within.saturating_sub(t.elapsed()), rx.recv()).await {
            Ok(Some(e)) if e == want => return t.elapsed(),
            Ok(Some(StorageEvent::Failed { error })) => panic!("storage failed: {error}"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("event channel closed before {want:?}"),
            Err(_) => panic!("no {want:?} within {within:?}"),
        }
    }
}

async fn jobs_exports(lab: &Lab) -> (Value, Value, bool) {
    let (src, dst) = (lab.checker(0).await, lab.checker(1).await);
    let jobs = src.execute("query-block-jobs", Value::Null).await.unwrap();
    let nodes = src
        .execute("query-named-block-nodes", json!({"flat": true}))
        .await
        .unwrap();
    let target_node = nodes
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["node-name"] == "migroute-vda-target");
    let exports = dst
        .execute("query-block-exports", Value::Null)
        .await
        .unwrap();
    (jobs, exports, target_node)
}

/// The whole forward path with one switch method: latencies before and after the
/// switch, then byte-identical images after the cutover.
async fn forward(method: SwitchMethod, qsd: Option<Vec<String>>) {
    let size = 128 * MIB;
    let mut lab = Lab::new();
    if let Some(qsd) = qsd {
        lab.qsd = qsd;
    }
    make_image(&lab.path("src.img"), size, 7);
    run(&[
        "qemu-img",
        "create",
        "-q",
        "-f",
        "raw",
        &lab.p("dst.img"),
        &size.to_string(),
    ]);
    lab.daemon(0, "src.img");
    lab.daemon(1, "dst.img");
    let driver = QemuMirrorStorage::new(&lab.plan(method)).unwrap();
    let mut guest = Nbd::connect(&lab.p("guest.nbd"), "guest").await;
    let (events, _first) = sink();

    let t = Instant::now();
    driver.start_async(events).await.unwrap();
    // Idempotent: starting what runs attaches to it (and reports to the new sink, as
    // after an orchestrator restart).
    let (again, mut rx) = sink();
    driver.start_async(again).await.unwrap();
    let (bulk, _) = guest.median_write(0, 3, 0x11).await;
    expect_event(&mut rx, StorageEvent::Ready, Duration::from_secs(60)).await;
    let ready_after = t.elapsed();
    let progress = driver.progress().await.unwrap().unwrap();
    assert!(progress.ready && progress.offset >= size, "{progress:?}");
    let (asynchronous, async_all) = guest.median_write(8 * MIB, 5, 0x22).await;

    driver.switch_sync().await.unwrap();
    driver.switch_sync().await.unwrap();
    let (_, sync_all) = guest.median_write(32 * MIB, 5, 0x33).await;
    let synchronous = *sync_all.iter().min().unwrap();
    let t_sync = Instant::now();
    driver.wait_in_sync().await.unwrap();
    let in_sync_after = t_sync.elapsed();
    expect_event(&mut rx, StorageEvent::InSync, Duration::from_secs(5)).await;
    driver.wait_in_sync().await.unwrap();
    let p = driver.progress().await.unwrap().unwrap();
    assert_eq!(p.offset, p.len);
    let version = lab
        .checker(0)
        .await
        .execute("query-version", Value::Null)
        .await
        .unwrap();
    let (major, minor) = (
        version["qemu"]["major"].as_u64().unwrap(),
        version["qemu"]["minor"].as_u64().unwrap(),
    );
    let modern = (major, minor) >= (8, 2);
    if modern {
        assert_eq!(p.actively_synced, Some(true));
    } else {
        assert_eq!(
            p.actively_synced, None,
            "QEMU {major}.{minor} has no actively-synced"
        );
    }
    if method == SwitchMethod::Auto {
        let expect = if modern {
            SwitchMethod::ChangeJob
        } else {
            SwitchMethod::RestartJob
        };
        assert_eq!(driver.switch_method().await.unwrap(), expect);
    }

    // The guest is paused for the cutover: no writes from here.
    drop(guest);
    driver.cutover().await.unwrap();
    driver.cutover().await.unwrap();
    let (jobs, exports, target_node) = jobs_exports(&lab).await;
    assert_eq!(jobs, json!([]));
    assert_eq!(
        exports,
        json!([]),
        "destination export removed after cutover"
    );
    assert!(!target_node);
    // Abort after cutover is allowed (the VM has not resumed) and changes nothing.
    driver.abort().await.unwrap();
    drop(driver);
    lab.stop_daemons();
    assert!(
        identical(&lab.path("src.img"), &lab.path("dst.img")),
        "images differ after cutover"
    );
    eprintln!(
        "QEMU {major}.{minor}, {method:?}: READY after {ready_after:?} for {} MiB; 1 MiB guest write: during bulk copy {bulk:?} (median), background {asynchronous:?} (median of {async_all:?}), write-blocking {synchronous:?} (min of {sync_all:?}); in sync {in_sync_after:?} after switch",
        size / MIB
    );
    assert!(
        asynchronous < LINK_TIME_1M / 2,
        "background-mode write took {asynchronous:?}, not far below the link's {LINK_TIME_1M:?}"
    );
    assert!(
        synchronous > Duration::from_millis(20),
        "write-blocking write took only {synchronous:?}: not waiting for the destination?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_switch_with_block_job_change() {
    if !can_run() {
        return;
    }
    forward(SwitchMethod::ChangeJob, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_switch_by_restarting_the_job_as_on_qemu_7_2() {
    if !can_run() {
        return;
    }
    forward(SwitchMethod::RestartJob, None).await;
}

/// The real QEMU 7.2 (Debian 12's, from the private prefix the libvirt lab installs):
/// `auto` must find no `block-job-change` and restart the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_on_qemu_7_2_probes_and_restarts_the_job() {
    if !can_run() {
        return;
    }
    let wrapper = match migroute_labs::kvm::ensure_qemu() {
        Ok(w) => w,
        Err(e) => {
            let why = format!("qemu-mirror 7.2 test needs the private QEMU 7.2: {e}");
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let root = wrapper.parent().unwrap().parent().unwrap().join("root");
    let lib = |d: &str| root.join(d).to_str().unwrap().to_string();
    let qsd = vec![
        "env".to_string(),
        format!(
            "LD_LIBRARY_PATH={}:{}",
            lib("usr/lib/x86_64-linux-gnu"),
            lib("lib/x86_64-linux-gnu")
        ),
        lib("usr/bin/qemu-storage-daemon"),
    ];
    forward(SwitchMethod::Auto, Some(qsd)).await;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum AbortAfter {
    Start,
    Switch,
    InSync,
}

async fn abort_after(step: AbortAfter, method: SwitchMethod) {
    let size = 32 * MIB;
    let mut lab = Lab::new();
    make_image(&lab.path("src.img"), size, 3);
    let before = std::fs::read(lab.path("src.img")).unwrap();
    run(&[
        "qemu-img",
        "create",
        "-q",
        "-f",
        "raw",
        &lab.p("dst.img"),
        &size.to_string(),
    ]);
    lab.daemon(0, "src.img");
    lab.daemon(1, "dst.img");
    let driver = QemuMirrorStorage::new(&lab.plan(method)).unwrap();
    // Aborting what does not exist is Ok.
    driver.abort().await.unwrap();
    let (events, mut rx) = sink();
    driver.start_async(events).await.unwrap();
    if step != AbortAfter::Start {
        expect_event(&mut rx, StorageEvent::Ready, Duration::from_secs(60)).await;
        driver.switch_sync().await.unwrap();
        if step == AbortAfter::InSync {
            driver.wait_in_sync().await.unwrap();
        }
    }
    driver.abort().await.unwrap();
    driver.abort().await.unwrap();
    let (jobs, exports, target_node) = jobs_exports(&lab).await;
    assert_eq!(jobs, json!([]), "{step:?}: job left at the source");
    assert_eq!(
        exports,
        json!([]),
        "{step:?}: export left at the destination"
    );
    assert!(!target_node, "{step:?}: NBD client node left at the source");
    // Nothing listens on the NBD port any more.
    let probe = Command::new("ip")
        .args(["netns", "exec", &lab.ns[0], "qemu-img", "info"])
        .arg(format!("nbd://{}:10809/vda", lab.dst_addr))
        .output()
        .unwrap();
    assert!(
        !probe.status.success(),
        "{step:?}: destination still serves NBD"
    );
    drop(driver);
    lab.stop_daemons();
    assert!(
        std::fs::read(lab.path("src.img")).unwrap() == before,
        "{step:?}: source image changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_after_each_step_leaves_the_source_alone() {
    if !can_run() {
        return;
    }
    abort_after(AbortAfter::Start, SwitchMethod::Auto).await;
    abort_after(AbortAfter::Switch, SwitchMethod::Auto).await;
    abort_after(AbortAfter::InSync, SwitchMethod::Auto).await;
    abort_after(AbortAfter::Switch, SwitchMethod::RestartJob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_loss_is_reported_and_abort_still_frees_the_source() {
    if !can_run() {
        return;
    }
    let size = 64 * MIB;
    let mut lab = Lab::new();
    make_image(&lab.path("src.img"), size, 5);
    let before = std::fs::read(lab.path("src.img")).unwrap();
    run(&[
        "qemu-img",
        "create",
        "-q",
        "-f",
        "raw",
        &lab.p("dst.img"),
        &size.to_string(),
    ]);
    lab.daemon(0, "src.img");
    lab.daemon(1, "dst.img");
    let driver = QemuMirrorStorage::new(&lab.plan(SwitchMethod::Auto)).unwrap();
    let (events, mut rx) = sink();
    driver.start_async(events).await.unwrap();
    // The destination host dies in the middle of the bulk copy.
    let dst = lab.pids.pop().unwrap();
    stop(dst, "KILL");
    let failed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match rx.recv().await {
                Some(StorageEvent::Failed { error }) => return error,
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }
    })
    .await
    .expect("no Failed event after the destination died");
    assert!(failed.contains("migroute-vda"), "{failed}");
    // Abort frees the source, then reports the destination it cannot reach.
    match driver.abort().await {
        Err(StorageError::Connect { device, reason }) => {
            assert_eq!(device, "vda");
            assert!(reason.contains("destination"), "{reason}");
        }
        other => panic!("abort with the destination gone: {other:?}"),
    }
    let src = lab.checker(0).await;
    assert_eq!(
        src.execute("query-block-jobs", Value::Null).await.unwrap(),
        json!([])
    );
    drop(driver);
    lab.stop_daemons();
    assert!(std::fs::read(lab.path("src.img")).unwrap() == before);
}
