//! The DRBD storage driver at the command level: the CI kernel has no DRBD module, so
//! these tests run the real driver against a fake `drbdadm` placed first on `PATH` in
//! a temp dir. The fake records each command line (with the host it ran for) and
//! prints scripted DRBD 9 status text; a fake `ssh` in the same dir stands for the
//! per-host prefix (`["<dir>/ssh", "host-b"]`: it runs the rest as that host, or fails
//! with ssh's exit status 255 for host `unreachable`).
//!
//! Asserted: the exact command sequence of start_async → switch_sync → wait_in_sync
//! → cutover and of abort (after start, after cutover), the events (`Ready` from the
//! watcher once the resync is done, `InSync`, `Failed` after the peer stays gone),
//! and how failures map to `StorageError`s. What DRBD does with these commands is
//! not exercised here.

use migroute_orchestration::drivers::drbd::Host;
use migroute_orchestration::drivers::{DrbdStorage, Storage, StorageError, StorageEvent};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const FAKE_DRBDADM: &str = r#"#!/bin/sh
# Fake drbdadm (DRBD 9 syntax): records "<host>: <args>" in <dir>/<resource>.log and,
# for `status`, prints the next block of <dir>/<resource>.<host>.status (blocks
# separated by "--" lines; the last one repeats).
dir=$(dirname "$0")
host=${FAKE_DRBD_HOST:-local}
for res in "$@"; do :; done
printf '%s: %s\n' "$host" "$*" >> "$dir/$res.log"
if [ -f "$dir/$res.$host.$1.fail" ]; then cat "$dir/$res.$host.$1.fail" >&2; exit 11; fi
if [ "$1" = status ]; then
    f="$dir/$res.$host.status"
    [ -f "$f" ] || { echo "'$res' not defined in your config (for this host)." >&2; exit 10; }
    n=$(cat "$f.n" 2>/dev/null || echo 0)
    blocks=$(( $(grep -c '^--$' "$f") + 1 ))
    [ "$n" -lt "$blocks" ] || n=$((blocks - 1))
    awk -v n="$n" '/^--$/ { b++; next } b == n { print }' "$f"
    echo $((n + 1)) > "$f.n"
fi
exit 0
"#;

const FAKE_SSH: &str = r#"#!/bin/sh
host=$1; shift
if [ "$host" = unreachable ]; then
    echo "ssh: connect to host unreachable port 22: No route to host" >&2
    exit 255
fi
FAKE_DRBD_HOST=$host exec "$@"
"#;

const SYNCING: &str = "\
RES role:Primary
  disk:UpToDate
  host-b role:Secondary
    replication:SyncSource peer-disk:Inconsistent done:45.10
";
const IN_SYNC: &str = "\
RES role:Primary
  disk:UpToDate
  host-b role:Secondary
    replication:Established peer-disk:UpToDate
";
const CUT_OVER: &str = "\
RES role:Secondary
  disk:UpToDate
  host-b role:Primary
    replication:Established peer-disk:UpToDate
";
const GONE: &str = "\
RES role:Primary
  disk:UpToDate
  host-b connection:Connecting
";

/// Tests change `PATH`: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The fake's temp dir, first on `PATH` until dropped.
struct Fake {
    dir: tempfile::TempDir,
    old_path: std::ffi::OsString,
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        std::env::set_var("PATH", &self.old_path);
    }
}

impl Fake {
    fn new() -> Fake {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("drbdadm", FAKE_DRBDADM), ("ssh", FAKE_SSH)] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let old_path = std::env::var_os("PATH").unwrap_or_default();
        let mut path = std::ffi::OsString::from(dir.path());
        path.push(":");
        path.push(&old_path);
        std::env::set_var("PATH", path);
        Fake {
            dir,
            old_path,
            _serial: serial,
        }
    }

    fn ssh(&self, host: &str) -> Vec<String> {
        vec![
            self.dir.path().join("ssh").display().to_string(),
            host.to_string(),
        ]
    }

    /// Scripts what `drbdadm status` prints at `host`, call after call.
    fn status(&self, res: &str, host: &str, blocks: &[&str]) {
        let text: Vec<String> = blocks.iter().map(|b| b.replace("RES", res)).collect();
        let f = self.dir.path().join(format!("{res}.{host}.status"));
        std::fs::write(&f, text.join("--\n")).unwrap();
        let _ = std::fs::remove_file(f.with_extension("status.n"));
    }

    fn fail(&self, res: &str, host: &str, command: &str, stderr: &str) {
        let f = self.dir.path().join(format!("{res}.{host}.{command}.fail"));
        std::fs::write(f, stderr).unwrap();
    }

    /// The command lines run so far for `res`, and forget them.
    fn take_log(&self, res: &str) -> Vec<String> {
        let p: PathBuf = self.dir.path().join(format!("{res}.log"));
        let log = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        log.lines().map(str::to_string).collect()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn collector() -> (
    impl Fn(StorageEvent) + Send + Sync + 'static,
    Arc<Mutex<Vec<StorageEvent>>>,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    (move |ev| e.lock().unwrap().push(ev), events)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);
const POLL: Duration = Duration::from_millis(20);

#[test]
fn migration_runs_the_exact_commands_on_each_host() {
    let fake = Fake::new();
    // The source is local (no prefix), the destination behind an ssh prefix.
    let drbd = DrbdStorage::new("vm1-disk", vec![], fake.ssh("host-b"))
        // A watcher that never polls: the log holds only the calls' own commands.
        .with_timing(POLL, HOUR, HOUR);
    assert_eq!(drbd.missing_program(), None);
    fake.status(
        "vm1-disk",
        "local",
        &[SYNCING, SYNCING, SYNCING, SYNCING, IN_SYNC, IN_SYNC],
    );
    let (sink, events) = collector();
    runtime().block_on(async {
        drbd.start_async(sink).await.unwrap();
        assert_eq!(
            fake.take_log("vm1-disk"),
            [
                "local: status vm1-disk",
                "local: net-options --protocol=A vm1-disk",
                "host-b: net-options --protocol=A vm1-disk",
            ]
        );
        assert_eq!(
            drbd.progress().await.unwrap().done_percent,
            Some(45.10),
            "progress from the source's status"
        );
        fake.take_log("vm1-disk");
        drbd.switch_sync().await.unwrap();
        assert_eq!(
            fake.take_log("vm1-disk"),
            [
                "local: status vm1-disk",
                "local: net-options --protocol=C vm1-disk",
                "host-b: net-options --protocol=C vm1-disk",
            ]
        );
        // Still resyncing at the first read, in sync at the second.
        let t = Instant::now();
        drbd.wait_in_sync().await.unwrap();
        assert!(t.elapsed() >= POLL, "waited one poll");
        assert_eq!(
            fake.take_log("vm1-disk"),
            ["local: status vm1-disk", "local: status vm1-disk"]
        );
        assert_eq!(*events.lock().unwrap(), [StorageEvent::InSync]);
        drbd.cutover().await.unwrap();
        assert_eq!(
            fake.take_log("vm1-disk"),
            [
                "local: status vm1-disk",
                "local: secondary vm1-disk",
                "host-b: primary vm1-disk",
            ]
        );
        // Rolled back before the VM resumed at the destination: everything back.
        fake.status("vm1-disk", "local", &[CUT_OVER]);
        drbd.abort().await.unwrap();
        assert_eq!(
            fake.take_log("vm1-disk"),
            [
                "local: status vm1-disk",
                "host-b: secondary vm1-disk",
                "local: primary vm1-disk",
                "local: net-options --protocol=A vm1-disk",
                "host-b: net-options --protocol=A vm1-disk",
            ]
        );
    });
}

#[test]
fn abort_after_start_only_restores_protocol_a_and_start_promotes_if_needed() {
    let fake = Fake::new();
    // Both hosts behind ssh (the orchestrator runs on neither).
    let drbd = DrbdStorage::new("r1", fake.ssh("host-a"), fake.ssh("host-b"))
        .with_timing(POLL, HOUR, HOUR);
    // Neither Primary yet (the VM's disk opened elsewhere, or a fresh resource).
    let both_secondary = IN_SYNC.replacen("role:Primary", "role:Secondary", 1);
    fake.status("r1", "host-a", &[&both_secondary, IN_SYNC]);
    let (sink, events) = collector();
    runtime().block_on(async {
        drbd.start_async(sink).await.unwrap();
        assert_eq!(
            fake.take_log("r1"),
            [
                "host-a: status r1",
                "host-a: primary r1",
                "host-a: net-options --protocol=A r1",
                "host-b: net-options --protocol=A r1",
            ]
        );
        // Already in sync at start: Ready at once, not from the watcher.
        assert_eq!(*events.lock().unwrap(), [StorageEvent::Ready]);
        drbd.abort().await.unwrap();
        assert_eq!(
            fake.take_log("r1"),
            [
                "host-a: status r1",
                "host-a: net-options --protocol=A r1",
                "host-b: net-options --protocol=A r1",
            ]
        );
        // Idempotent: a second abort runs the same harmless steps.
        drbd.abort().await.unwrap();
        assert_eq!(fake.take_log("r1").len(), 3);
    });
}

#[test]
fn watcher_reports_ready_then_failed_when_the_peer_stays_gone() {
    let fake = Fake::new();
    let drbd = DrbdStorage::new("r2", vec![], fake.ssh("host-b")).with_timing(
        POLL,
        POLL,
        Duration::from_millis(200),
    );
    fake.status("r2", "local", &[SYNCING, SYNCING, SYNCING, IN_SYNC]);
    let (sink, events) = collector();
    runtime().block_on(async {
        let t = Instant::now();
        drbd.start_async(sink).await.unwrap();
        while events.lock().unwrap().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(10), "no Ready");
            tokio::time::sleep(POLL).await;
        }
        assert_eq!(*events.lock().unwrap(), [StorageEvent::Ready]);
        let ready_after = t.elapsed();
        fake.status("r2", "local", &[GONE]);
        let gone = Instant::now();
        while events.lock().unwrap().len() < 2 {
            assert!(gone.elapsed() < Duration::from_secs(10), "no Failed");
            tokio::time::sleep(POLL).await;
        }
        let failed_after = gone.elapsed();
        let ev = events.lock().unwrap().clone();
        assert!(
            matches!(&ev[1], StorageEvent::Failed { error } if error.contains("host-b connection:Connecting")),
            "{ev:?}"
        );
        assert!(
            failed_after >= Duration::from_millis(200),
            "not before the grace period: {failed_after:?}"
        );
        eprintln!("Ready after {ready_after:?} (3 polls), Failed {failed_after:?} after the peer went");
        // The cutover or abort stops the watcher: no more status reads after it.
        fake.status("r2", "local", &[IN_SYNC]);
        drbd.abort().await.unwrap();
        fake.take_log("r2");
        tokio::time::sleep(POLL * 5).await;
        assert_eq!(fake.take_log("r2"), Vec::<String>::new());
        assert_eq!(events.lock().unwrap().len(), 2, "one Failed only");
    });
}

#[test]
fn failures_name_the_host_and_refuse_out_of_order_calls() {
    let fake = Fake::new();
    let drbd = DrbdStorage::new("r3", vec![], fake.ssh("host-b")).with_timing(POLL, HOUR, HOUR);
    runtime().block_on(async {
        // Cutover before the destination is up to date.
        fake.status("r3", "local", &[SYNCING]);
        assert!(matches!(
            drbd.cutover().await,
            Err(StorageError::OutOfOrder { op: "cutover", needs: "wait-in-sync", .. })
        ));
        assert_eq!(fake.take_log("r3"), ["local: status r3"], "nothing changed");
        // The destination refuses to become Primary: drbdadm's message comes back.
        fake.status("r3", "local", &[IN_SYNC, CUT_OVER]);
        fake.fail(
            "r3",
            "host-b",
            "primary",
            "r3: State change failed: (-2) Need access to UpToDate data\n",
        );
        let Err(StorageError::Operation { op, reason, .. }) = drbd.cutover().await else {
            panic!("a refused promotion is an error")
        };
        assert_eq!(op, "cutover");
        assert!(reason.contains("Destination host") && reason.contains("Need access to UpToDate data"), "{reason}");
        // Retried after the fix: only the promotion is left to do.
        std::fs::remove_file(fake.path().join("r3.host-b.primary.fail")).unwrap();
        fake.take_log("r3");
        drbd.cutover().await.unwrap();
        assert_eq!(fake.take_log("r3"), ["local: status r3", "host-b: primary r3"]);
        // A resource drbdadm does not know.
        let unknown = DrbdStorage::new("nope", vec![], fake.ssh("host-b"));
        assert!(matches!(
            unknown.switch_sync().await,
            Err(StorageError::Operation { op: "switch-sync", ref reason, .. }) if reason.contains("not defined")
        ));
        // A host ssh cannot reach: a connection error, not an operation failure.
        let far = DrbdStorage::new("r3", fake.ssh("unreachable"), fake.ssh("host-b"));
        assert!(matches!(
            far.switch_sync().await,
            Err(StorageError::Connect { ref reason, .. }) if reason.contains("No route to host")
        ));
    });
    // A prefix whose program is not there is caught before any migration starts.
    let missing = DrbdStorage::new("r3", vec![], vec!["/nonexistent/ssh".into(), "b".into()]);
    assert_eq!(
        missing.missing_program(),
        Some((Host::Destination, "/nonexistent/ssh".to_string()))
    );
}
