//! The libvirt-hook variant of the KVM scenario (`--scenario virsh-migrate-kvm`): the
//! guest moves by a plain `virsh migrate --live`, as an operator (or OpenStack) would
//! move it, and no orchestrator runs. What moves the network is what ships in
//! `packaging/`: `/etc/libvirt/hooks/qemu` exec'ing `migroute libvirt-hook`, and agents
//! with `detect_vm = true`.
//!
//! - [`install_hook`] writes a site's hook config and script into its libvirtd's
//!   private `/etc/libvirt` before that libvirtd starts (libvirt looks for hook scripts
//!   once, at daemon start). The hook runs in the hypervisor host's namespace (dc-a,
//!   dc-b) and enters its PE's to reach the agents, as a real host would reach its PE
//!   over the data center's network.
//! - [`QemuEvents`] follows each libvirtd's QEMU monitor events (`virsh
//!   qemu-monitor-event --loop`): the source's `STOP` and the destination's `RESUME`,
//!   stamped by QEMU itself, are the pause window the probe's loss is split by.
//! - [`virsh_migrate`] runs the migration and reads libvirt's completed job statistics
//!   (`virsh domjobinfo --completed --rawstats`) for the report.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use migroute_labs::kvm::Libvirtd;
use migroute_labs::scenario::{HypervisorRecord, MoveRecord, Phase, ScenarioError, Window};
use serde_json::Value;

use super::lab_mover::unix_ns;

fn fail(why: String) -> ScenarioError {
    ScenarioError::Precondition(why)
}

/// One site's side of the hook: its agent and the other site's.
#[derive(Debug, Clone)]
pub struct HookSite {
    /// `a` or `b`: names the config, state and log files.
    pub name: &'static str,
    /// The namespace of this site's PE, which the hook enters.
    pub pe_netns: String,
    /// This site's agent (the hook's `[local]`) and tunnel endpoint.
    pub local_url: String,
    pub local_endpoint: String,
    /// The other site's (`[peer]`).
    pub peer_url: String,
    pub peer_endpoint: String,
}

/// What every hook shares: the binary it runs, the agents' token, where its files go.
#[derive(Debug, Clone)]
pub struct HookSetup {
    pub exe: PathBuf,
    pub token_file: PathBuf,
    pub dir: PathBuf,
    /// Host routes of the guest (the domain metadata the hook reads).
    pub prefixes: Vec<String>,
    /// The agents' `[policy]` and `[timers]` (the lab converges in well under a second).
    pub community: String,
    pub a: HookSite,
    pub b: HookSite,
}

impl HookSetup {
    /// Where a site's hook writes what it logs (its stderr).
    pub fn log(&self, site: &HookSite) -> PathBuf {
        self.dir.join(format!("hook-{}.log", site.name))
    }

    /// Where a site's `libvirt-watch` writes what it logs.
    pub fn watch_log(&self, site: &HookSite) -> PathBuf {
        self.dir.join(format!("watch-{}.log", site.name))
    }

    /// A site's hook configuration (the watch reads the same file).
    pub fn config(&self, site: &HookSite) -> PathBuf {
        self.dir.join(format!("hook-{}.toml", site.name))
    }
}

/// Writes `site`'s hook config and `/etc/libvirt/hooks/qemu` under the libvirtd
/// instance directory `instance` (whose `etc` is that libvirtd's `/etc/libvirt`).
pub fn install_hook(
    setup: &HookSetup,
    site: &HookSite,
    instance: &Path,
) -> Result<(), ScenarioError> {
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| ScenarioError::Write {
            path: path.to_owned(),
            source,
        })
    };
    let config = setup.config(site);
    write(
        &config,
        &format!(
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
[policy]
preference = "host-route"
communities = ["{community}"]
[timers]
quiet_ms = 300
min_hold_ms = 500
converge_timeout_ms = 30000
"#,
            token = setup.token_file.display(),
            state = setup
                .dir
                .join(format!("hook-state-{}", site.name))
                .display(),
            local_url = site.local_url,
            local_ep = site.local_endpoint,
            peer_url = site.peer_url,
            peer_ep = site.peer_endpoint,
            community = setup.community,
        ),
    )?;
    let hooks = instance.join("etc/hooks");
    std::fs::create_dir_all(&hooks).map_err(|source| ScenarioError::Write {
        path: hooks.clone(),
        source,
    })?;
    let script = hooks.join("qemu");
    write(
        &script,
        &format!(
            "#!/bin/sh\n# packaging/libvirt-hook-qemu, entering the PE's namespace where the \
             agents' APIs are reachable.\nexec nsenter --net=/run/netns/{netns} {exe} \
             libvirt-hook --config {config} \"$@\" 2>>{log}\n",
            netns = site.pe_netns,
            exe = setup.exe.display(),
            config = config.display(),
            log = setup.log(site).display(),
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        ScenarioError::Write {
            path: script.clone(),
            source,
        }
    })
}

/// `migroute libvirt-watch` beside one site's libvirtd, in its PE's namespace like the
/// hook (packaging/migroute-libvirt-watch.service on a real host). Killed on drop.
pub struct WatchProcess {
    child: Child,
}

impl WatchProcess {
    /// How long the watch may take to connect to its libvirtd.
    const READY: Duration = Duration::from_secs(20);

    /// Starts it and waits until it watches.
    pub fn start(
        setup: &HookSetup,
        site: &HookSite,
        lv: &Libvirtd,
    ) -> Result<WatchProcess, ScenarioError> {
        let log_path = setup.watch_log(site);
        let log = std::fs::File::create(&log_path).map_err(|source| ScenarioError::Write {
            path: log_path.clone(),
            source,
        })?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", site.pe_netns))
            .arg(&setup.exe)
            .args(["libvirt-watch", "--uri", &lv.uri(), "--config"])
            .arg(setup.config(site))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| fail(format!("migroute libvirt-watch: {e}")))?;
        let mut watch = WatchProcess { child };
        let deadline = Instant::now() + Self::READY;
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("watching libvirt domains") {
                return Ok(watch);
            }
            if let Ok(Some(status)) = watch.child.try_wait() {
                return Err(fail(format!(
                    "libvirt-watch at dc-{} exited ({status}):\n{text}",
                    site.name
                )));
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "libvirt-watch at dc-{} not watching after {:?}:\n{text}",
                    site.name,
                    Self::READY
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        // SIGTERM first: the watch logs its stop; then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One QEMU monitor event as `virsh qemu-monitor-event` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuEvent {
    pub name: String,
    pub domain: String,
    /// QEMU's own timestamp (its host clock: Unix time, the probe's clock).
    pub at_unix_ns: u64,
}

/// Parses `event STOP at 1795342674.244123 for domain 'vm': <null>`.
pub fn parse_event_line(line: &str) -> Option<QemuEvent> {
    let rest = line.trim().strip_prefix("event ")?;
    let (name, rest) = rest.split_once(" at ")?;
    let (stamp, rest) = rest.split_once(" for domain '")?;
    let (domain, _) = rest.split_once("':")?;
    let (secs, micros) = stamp.split_once('.')?;
    let (secs, micros) = (secs.parse::<u64>().ok()?, micros.parse::<u64>().ok()?);
    if micros >= 1_000_000 {
        return None;
    }
    Some(QemuEvent {
        name: name.to_owned(),
        domain: domain.to_owned(),
        at_unix_ns: secs * 1_000_000_000 + micros * 1_000,
    })
}

/// A libvirtd's QEMU monitor events, followed for the whole scenario by `virsh
/// qemu-monitor-event --loop` (every domain, including those that arrive by
/// migration later). Line-buffered through `stdbuf`: virsh's stdout is a pipe.
pub struct QemuEvents {
    child: Child,
    events: Arc<Mutex<Vec<QemuEvent>>>,
}

impl QemuEvents {
    pub fn follow(lv: &Libvirtd) -> Result<QemuEvents, ScenarioError> {
        let mut child = Command::new("stdbuf")
            .args(["-oL", "virsh", "-q", "-c", &lv.uri()])
            .args(["qemu-monitor-event", "--loop"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("virsh qemu-monitor-event: {e}")))?;
        let out = child.stdout.take().expect("piped");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(e) = parse_event_line(&line) {
                    sink.lock().expect("event list").push(e);
                }
            }
        });
        Ok(QemuEvents { child, events })
    }

    /// The first `name` event of `domain` stamped after `after_ns`.
    pub fn first_after(&self, name: &str, domain: &str, after_ns: u64) -> Option<u64> {
        self.events
            .lock()
            .expect("event list")
            .iter()
            .filter(|e| e.name == name && e.domain == domain && e.at_unix_ns > after_ns)
            .map(|e| e.at_unix_ns)
            .min()
    }

    /// Waits up to `within` for [`first_after`](Self::first_after).
    pub fn wait_for(
        &self,
        name: &str,
        domain: &str,
        after_ns: u64,
        within: Duration,
    ) -> Option<u64> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = self.first_after(name, domain, after_ns) {
                return Some(t);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for QemuEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A finished `virsh migrate`.
#[derive(Debug, Clone)]
pub struct VirshMigration {
    pub started_unix_ns: u64,
    /// libvirt's completed job statistics at the destination (`--rawstats` names),
    /// with `disk_processed` the disk the source's running job copied (its
    /// `disk_total`; absent if no poll, every 200 ms, caught the disk copy).
    pub stats: HashMap<String, f64>,
}

/// `virsh migrate --live --p2p --copy-storage-all --persistent --undefinesource` of
/// `domain` from `src` to the libvirtd listening on `dst_addr`, the memory and disk
/// streams on that address too; libvirt's downtime budget set first with `virsh
/// migrate-setmaxdowntime`, as an operator would.
pub fn virsh_migrate(
    src: &Libvirtd,
    dst: &Libvirtd,
    domain: &str,
    dst_addr: &str,
    max_downtime: Duration,
    timeout: Duration,
) -> Result<VirshMigration, ScenarioError> {
    src.virsh(&[
        "migrate-setmaxdowntime",
        domain,
        &max_downtime.as_millis().to_string(),
    ])?;
    let started_unix_ns = unix_ns();
    let mut child = Command::new("virsh")
        .args(["-q", "-c", &src.uri(), "migrate", "--live", "--p2p"])
        .args(["--copy-storage-all", "--persistent", "--undefinesource"])
        .args(["--migrateuri", &format!("tcp://{dst_addr}")])
        .args(["--listen-address", dst_addr, domain])
        .arg(Libvirtd::tcp_uri(dst_addr))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("virsh migrate: {e}")))?;
    let deadline = Instant::now() + timeout;
    // The destination's completed statistics count memory only (the disk went by NBD,
    // which the source drives): the source's running job is polled for the disk. With
    // `--copy-storage-all` libvirt mirrors the whole disk before it copies memory, so
    // a successful migration moved `disk_total` (a poll may miss the end of the copy).
    let mut disk_bytes: Option<f64> = None;
    let mut polled = Instant::now();
    let status = loop {
        if polled.elapsed() >= Duration::from_millis(200) {
            polled = Instant::now();
            if let Ok(out) = src.virsh(&["domjobinfo", "--rawstats", domain]) {
                let job = parse_rawstats(&out);
                for key in ["disk_processed", "disk_total"] {
                    if let Some(d) = job.get(key) {
                        disk_bytes = Some(disk_bytes.unwrap_or(0.0).max(*d));
                    }
                }
            }
        }
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = src.virsh(&["domjobabort", domain]);
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "virsh migrate of {domain} did not end within {timeout:?} (aborted)"
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(fail(format!("waiting for virsh migrate: {e}"))),
        }
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        return Err(fail(format!(
            "virsh migrate of {domain} failed ({status}): {}",
            err.trim()
        )));
    }
    let mut stats = dst
        .virsh(&["domjobinfo", "--completed", "--rawstats", domain])
        .map(|out| parse_rawstats(&out))
        .unwrap_or_default();
    match disk_bytes.filter(|d| *d > 0.0) {
        Some(d) => stats.insert("disk_processed".into(), d),
        None => stats.remove("disk_processed"),
    };
    Ok(VirshMigration {
        started_unix_ns,
        stats,
    })
}

/// `virsh domjobinfo --rawstats`: `name: value` lines; the numeric ones.
pub fn parse_rawstats(out: &str) -> HashMap<String, f64> {
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().parse::<f64>().ok()?))
        })
        .collect()
}

/// The phases an agent's migration went through: (phase, epoch ms), from its status'
/// `transitions`.
pub fn transitions(status: &Value) -> Vec<(String, u64)> {
    status["transitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t["phase"].as_str()?.to_owned(), t["at_ms"].as_u64()?)))
        .collect()
}

/// The path both agents take by themselves when the hook prepared them and the
/// destination heard the guest: nothing stalled, nothing aborted.
pub const HOOK_PATH: [&str; 5] = [
    "prepared",
    "switched-over",
    "announced",
    "converging",
    "torn-down",
];

/// The [`MoveRecord`] of a `virsh migrate` the hook and the agents followed:
/// - `preparing`: `virsh migrate` started → both agents prepared (by the hook);
/// - `migrating`: → QEMU's STOP at the source (libvirt copies disk, then memory);
/// - `pause`: STOP → RESUME at the destination, reaching back to libvirt's own
///   downtime before the resume when that is longer ([`Window::with_downtime`]);
/// - `switching-over`: the first agent switched over → the source's override surely
///   in place. With `libvirt-watch` both switch over in the pause, the source first;
///   with the hook alone, the destination when it hears the guest. The source's
///   `switched-over` is stamped when the call arrives, before its journal commit and
///   netlink; its `announced` comes from the destination's call sent after it heard
///   the guest and after any switchover call returned, so it is the first stamp
///   known to follow the override into the kernel;
/// - `announcing`: the destination announced → it started converging;
/// - `converging`: the source converging → torn down.
///
/// `announce_to_ingress_fib_ms` counts from the destination's `announced` (epoch ms).
pub fn hook_record(
    mv: &VirshMigration,
    pause: Window,
    src: &[(String, u64)],
    dst: &[(String, u64)],
    t_fib: Option<u64>,
) -> MoveRecord {
    let at = |t: &[(String, u64)], phase: &str| {
        t.iter()
            .find(|(p, _)| p == phase)
            .map(|(_, ms)| ms * 1_000_000)
    };
    let stat = |k: &str| mv.stats.get(k).copied();
    let pause = pause.with_downtime(stat("downtime"));
    let mut phases = vec![Phase {
        name: "pause".into(),
        window: pause,
    }];
    let mut push = |name: &str, start: Option<u64>, end: Option<u64>| {
        if let (Some(start_unix_ns), Some(end_unix_ns)) = (start, end) {
            phases.push(Phase {
                name: name.into(),
                window: Window {
                    start_unix_ns,
                    end_unix_ns,
                },
            });
        }
    };
    let prepared = at(src, "prepared").max(at(dst, "prepared"));
    push("preparing", Some(mv.started_unix_ns), prepared);
    push("migrating", prepared, Some(pause.start_unix_ns));
    let first_switched = [at(src, "switched-over"), at(dst, "switched-over")]
        .into_iter()
        .flatten()
        .min();
    push("switching-over", first_switched, at(src, "announced"));
    push("announcing", at(dst, "announced"), at(dst, "converging"));
    push("converging", at(src, "converging"), at(src, "torn-down"));
    phases.sort_by_key(|p| p.window.start_unix_ns);
    let announced = at(dst, "announced");
    let announce_to_ingress_fib_ms = match (announced, t_fib) {
        (Some(a), Some(f)) if f >= a => Some(migroute_labs::scenario::ns_to_ms(f - a)),
        _ => None,
    };
    MoveRecord {
        pause,
        phases,
        announce_to_ingress_fib_ms,
        hypervisor: Some(HypervisorRecord {
            downtime_ms: stat("downtime"),
            migration_ms: stat("time_elapsed"),
            memory_bytes: stat("memory_processed").map(|b| b as u64),
            disk_bytes: stat("disk_processed").map(|b| b as u64),
            guest_acked_before: None,
            guest_acked_after: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_event_lines_give_qemus_own_timestamp() {
        let e = parse_event_line("event STOP at 1795342674.244123 for domain 'vm': <null>")
            .expect("parsed");
        assert_eq!(e.name, "STOP");
        assert_eq!(e.domain, "vm");
        assert_eq!(e.at_unix_ns, 1_795_342_674_244_123_000);
        let e = parse_event_line(
            "event RESUME at 1795342674.000007 for domain 'a b': {\"reason\":\"x\"}",
        )
        .expect("parsed");
        assert_eq!((e.name.as_str(), e.domain.as_str()), ("RESUME", "a b"));
        assert_eq!(e.at_unix_ns, 1_795_342_674_000_007_000);
        assert_eq!(parse_event_line("event STOP for domain 'vm': <null>"), None);
        assert_eq!(
            parse_event_line("event STOP at 17.1234567 for domain 'vm': <null>"),
            None
        );
        assert_eq!(parse_event_line("events to follow"), None);
    }

    #[test]
    fn the_record_orders_the_hooks_phases_around_qemus_pause() {
        let ms = 1_000_000u64;
        let mv = VirshMigration {
            started_unix_ns: 1000 * ms,
            stats: parse_rawstats("downtime: 31\ntime_elapsed: 1900\nmemory_processed: 100\n"),
        };
        let pause = Window {
            start_unix_ns: 2500 * ms,
            end_unix_ns: 2531 * ms,
        };
        let t = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(p, at)| (p.to_string(), *at)).collect()
        };
        let src = t(&[
            ("prepared", 1040),
            ("switched-over", 2529),
            ("announced", 2530),
            ("converging", 2600),
            ("torn-down", 3400),
        ]);
        let dst = t(&[
            ("prepared", 1035),
            ("switched-over", 2526),
            ("announced", 2526),
            ("converging", 2590),
            ("torn-down", 3390),
        ]);
        let r = hook_record(&mv, pause, &src, &dst, Some(2600 * ms + 500_000));
        let names: Vec<&str> = r.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "preparing",
                "migrating",
                "pause",
                "switching-over",
                "announcing",
                "converging"
            ]
        );
        let window = |name: &str| {
            let p = r.phases.iter().find(|p| p.name == name).unwrap();
            (p.window.start_unix_ns / ms, p.window.end_unix_ns / ms)
        };
        assert_eq!(window("preparing"), (1000, 1040));
        assert_eq!(window("migrating"), (1040, 2500));
        // The destination heard the guest before QEMU's RESUME was stamped; the
        // source's override was in by its `announced`, 4 ms later.
        assert_eq!(window("switching-over"), (2526, 2530));
        assert_eq!(window("converging"), (2600, 3400));
        assert_eq!(r.announce_to_ingress_fib_ms, Some(74.5));
        let h = r.hypervisor.unwrap();
        assert_eq!((h.downtime_ms, h.migration_ms), (Some(31.0), Some(1900.0)));
        assert_eq!((h.memory_bytes, h.disk_bytes), (Some(100), None));
        // Without a FIB event there is no announce figure.
        let r = hook_record(&mv, pause, &src, &dst, None);
        assert_eq!(r.announce_to_ingress_fib_ms, None);

        // With libvirt-watch the source switches over in the pause, before the
        // destination hears the guest: the phase starts there.
        let src = t(&[
            ("prepared", 1040),
            ("switched-over", 2510),
            ("announced", 2536),
        ]);
        let dst = t(&[
            ("prepared", 1035),
            ("switched-over", 2511),
            ("announced", 2533),
        ]);
        let r = hook_record(&mv, pause, &src, &dst, None);
        let p = r
            .phases
            .iter()
            .find(|p| p.name == "switching-over")
            .unwrap();
        assert_eq!(
            (p.window.start_unix_ns / ms, p.window.end_unix_ns / ms),
            (2510, 2536)
        );
    }

    #[test]
    fn rawstats_keep_the_numbers() {
        let s = parse_rawstats(
            "Job type: 3\n\noperation: 5\ntime_elapsed: 697\ndowntime: 30\n\
             memory_processed: 78692963\ndisk_processed: 67239936\nsuccess: yes\n",
        );
        assert_eq!(s["time_elapsed"], 697.0);
        assert_eq!(s["downtime"], 30.0);
        assert_eq!(s["disk_processed"], 67_239_936.0);
        assert!(!s.contains_key("success"));
    }
}
