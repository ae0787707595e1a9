//! The real guest of the KVM scenario (`labs/wan-migration-kvm.clab.yml`): a libvirtd
//! in dc-a's and in dc-b's namespace, a small guest (Debian kernel, busybox initramfs,
//! `migroute-guest` inside: UDP and TCP echo for the probe, sequence-numbered disk
//! records) started at site A with its tap in dc-a's bridge, and a qcow2 disk at each
//! site that libvirt copies on every move (`[storage] kind = "libvirt-copy"`).
//!
//! The migration network is the lab's dc-a–dc-b link (192.168.77.1 ↔ .2): libvirt's
//! peer-to-peer connection, the memory stream and the disk mirror (NBD) cross it, not
//! the routed WAN the probe measures. The orchestrator reaches each libvirtd on its
//! UNIX socket.
//!
//! At the end ([`KvmGuest::disk_report`]) the guest's writer stops, one more move takes
//! the idle guest across, the guest powers off, and both disks are read from outside:
//! every acknowledged record must be on the final disk, and the disk left behind must
//! be byte-identical to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use migroute_labs::guest_agent::{self, GuestStatus};
use migroute_labs::kvm::{
    domain_xml, ensure_guest, ensure_qemu, guest_agent_binary, with_agent, with_migroute_metadata,
    Accel, GuestSpec, Libvirtd,
};
use migroute_labs::scenario::{Direction, DiskReport, ScenarioError, Site, Window};
use migroute_labs::Lab;

use super::kvm_hook::{
    install_hook, virsh_migrate, HookSetup, QemuEvents, VirshMigration, WatchProcess,
};

/// The guest's disk inside each libvirtd's mount namespace.
const DISK: &str = "/var/lib/libvirt/images/vm.qcow2";
/// Its size: the guest's record ring spans all of it.
const DISK_SIZE: &str = "64M";
/// The serial console, inside each libvirtd's mount namespace.
const CONSOLE: &str = "/var/log/libvirt/vm-console.log";
/// dc-a's and dc-b's addresses on the migration link.
const A_MIGRATION: &str = "192.168.77.1";
const B_MIGRATION: &str = "192.168.77.2";
/// `migroute-guest`'s control port.
const CONTROL_PORT: u16 = 7353;
/// A TCG guest boots in 10–30 s on the 2-core machine; allow for a loaded one.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn fail(why: String) -> ScenarioError {
    ScenarioError::Precondition(why)
}

/// The two libvirtds and the guest.
pub struct KvmGuest {
    /// `migroute libvirt-watch` beside each libvirtd (with the hook), stopped before
    /// the libvirtds it watches.
    watches: Vec<WatchProcess>,
    site: Site,
    lv_a: Libvirtd,
    lv_b: Libvirtd,
    /// Where the guest runs now.
    at_b: bool,
    dir: PathBuf,
    /// With the libvirt hook installed (`virsh-migrate-kvm`): its setup, and each
    /// libvirtd's QEMU monitor events (the pause window of a `virsh migrate`).
    hook: Option<(HookSetup, QemuEvents, QemuEvents)>,
}

impl KvmGuest {
    /// Starts both libvirtds (with `hook`, each with migroute's libvirt hook
    /// installed), creates the disks, defines and starts the guest at site A (with
    /// `hook`, carrying migroute's metadata), and waits until its agent answers from
    /// the client (through the routed lab).
    pub fn start(
        lab: &Lab,
        site: &Site,
        dir: &Path,
        hook: Option<HookSetup>,
    ) -> Result<KvmGuest, ScenarioError> {
        let qemu = ensure_qemu()?;
        let base = ensure_guest()?;
        let agent = guest_agent_binary()?;
        let image = with_agent(&base, &agent, dir)?;
        let accel = Accel::detect(&qemu, &base);
        let (inst_a, inst_b) = (dir.join("libvirt-a"), dir.join("libvirt-b"));
        if let Some(h) = &hook {
            install_hook(h, &h.a, &inst_a)?;
            install_hook(h, &h.b, &inst_b)?;
        }
        let lv_a = Libvirtd::start(&lab.netns(&site.dc_a)?, &inst_a)?;
        let lv_b = Libvirtd::start(&lab.netns(&site.dc_b)?, &inst_b)?;
        let watches = match &hook {
            Some(h) => vec![
                WatchProcess::start(h, &h.a, &lv_a)?,
                WatchProcess::start(h, &h.b, &lv_b)?,
            ],
            None => Vec::new(),
        };
        let hook = match hook {
            Some(h) => Some((h, QemuEvents::follow(&lv_a)?, QemuEvents::follow(&lv_b)?)),
            None => None,
        };
        let guest = KvmGuest {
            site: site.clone(),
            lv_a,
            lv_b,
            at_b: false,
            dir: dir.to_owned(),
            hook,
            watches,
        };
        for lv in [&guest.lv_a, &guest.lv_b] {
            let disk = guest.host_disk(lv)?;
            run(
                "create the guest's disk",
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2"])
                    .arg(&disk)
                    .arg(DISK_SIZE),
            )?;
        }
        let spec = GuestSpec {
            name: site.vm.clone(),
            emulator: qemu,
            image,
            disk: DISK.into(),
            bridge: "br0".into(),
            memory_mib: 128,
            accel,
            console_log: CONSOLE.into(),
        };
        let mut text = domain_xml(&spec);
        if let Some((h, _, _)) = &guest.hook {
            let prefixes: Vec<&str> = h.prefixes.iter().map(String::as_str).collect();
            text = with_migroute_metadata(&text, &prefixes);
        }
        let xml = dir.join("guest.xml");
        std::fs::write(&xml, text).map_err(|source| ScenarioError::Write {
            path: xml.clone(),
            source,
        })?;
        guest.lv_a.virsh(&["define", &xml.to_string_lossy()])?;
        guest.lv_a.virsh(&["start", &site.vm])?;
        let booted = Instant::now();
        loop {
            match guest.status(lab) {
                Ok(s) if s.writing => break,
                _ if booted.elapsed() > BOOT_TIMEOUT => {
                    return Err(fail(format!(
                    "the guest's agent does not answer after {BOOT_TIMEOUT:?} ({}); console:\n{}",
                    accel.name(),
                    guest.console()
                )))
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        eprintln!(
            "kvm: guest up at site A after {:.1} s ({})",
            booted.elapsed().as_secs_f64(),
            accel.name()
        );
        Ok(guest)
    }

    fn host_disk(&self, lv: &Libvirtd) -> Result<PathBuf, ScenarioError> {
        lv.host_path(Path::new(DISK))
            .ok_or_else(|| fail(format!("{DISK} is outside the libvirtd's directories")))
    }

    /// The guest's serial console at the site it runs at (the tail), for errors.
    pub fn console(&self) -> String {
        let lv = if self.at_b { &self.lv_b } else { &self.lv_a };
        let text = lv
            .host_path(Path::new(CONSOLE))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The `[hypervisor]` and `[storage]` sections of a move's plan: libvirt from the
    /// site the guest is at to the other, over the migration link, copying the disk,
    /// with `max_downtime` as libvirt's stop-and-copy budget.
    pub fn plan_sections(&self, direction: Direction, max_downtime: Duration) -> String {
        let (src, dst, dst_addr) = match direction {
            Direction::AToB => (&self.lv_a, &self.lv_b, B_MIGRATION),
            Direction::BToA => (&self.lv_b, &self.lv_a, A_MIGRATION),
        };
        format!(
            r#"[hypervisor]
kind = "libvirt"
source_uri = "{src}"
destination_uri = "{dst}"
peer_uri = "{peer}"
migrate_uri = "tcp://{dst_addr}"
listen_address = "{dst_addr}"
max_downtime_ms = {downtime}
[storage]
kind = "libvirt-copy"
"#,
            src = src.uri(),
            dst = dst.uri(),
            peer = Libvirtd::tcp_uri(dst_addr),
            downtime = max_downtime.as_millis(),
        )
    }

    /// One move by a plain `virsh migrate` (the hook variant): returns it with its
    /// pause window, QEMU's `STOP` at the source to its `RESUME` at the destination.
    pub fn virsh_move(
        &self,
        direction: Direction,
        max_downtime: Duration,
        timeout: Duration,
    ) -> Result<(VirshMigration, Window), ScenarioError> {
        let Some((_, events_a, events_b)) = &self.hook else {
            return Err(fail(
                "virsh_move: the guest was started without the hook".into(),
            ));
        };
        let (src, dst, dst_addr, src_events, dst_events) = match direction {
            Direction::AToB => (&self.lv_a, &self.lv_b, B_MIGRATION, events_a, events_b),
            Direction::BToA => (&self.lv_b, &self.lv_a, A_MIGRATION, events_b, events_a),
        };
        let vm = &self.site.vm;
        let mv = virsh_migrate(src, dst, vm, dst_addr, max_downtime, timeout)?;
        let within = Duration::from_secs(5);
        let stop = src_events
            .wait_for("STOP", vm, mv.started_unix_ns, within)
            .ok_or_else(|| {
                fail(format!(
                    "no QEMU STOP of {vm} at the source after virsh migrate"
                ))
            })?;
        let resume = dst_events
            .wait_for("RESUME", vm, stop, within)
            .ok_or_else(|| {
                fail(format!(
                    "no QEMU RESUME of {vm} at the destination after virsh migrate"
                ))
            })?;
        Ok((
            mv,
            Window {
                start_unix_ns: stop,
                end_unix_ns: resume,
            },
        ))
    }

    /// What the hooks logged (their stderr), for a failure message.
    pub fn hook_logs(&self) -> String {
        let Some((h, _, _)) = &self.hook else {
            return String::new();
        };
        [&h.a, &h.b]
            .iter()
            .map(|s| {
                format!(
                    "hook at dc-{}:\n{}\nlibvirt-watch at dc-{}:\n{}",
                    s.name,
                    std::fs::read_to_string(h.log(s)).unwrap_or_default().trim(),
                    s.name,
                    std::fs::read_to_string(h.watch_log(s))
                        .unwrap_or_default()
                        .trim()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Records that a move in `direction` completed.
    pub fn moved(&mut self, direction: Direction) {
        self.at_b = direction == Direction::AToB;
    }

    /// Where the guest runs now.
    pub fn at_b(&self) -> bool {
        self.at_b
    }

    /// Asks the guest's agent, from the client node (the path the probe takes).
    pub fn control(&self, lab: &Lab, cmd: &str) -> Result<GuestStatus, ScenarioError> {
        let addr = SocketAddr::new(self.site.vm_v4, CONTROL_PORT);
        let cmd = cmd.to_owned();
        migroute_labs::netns::run_in(&lab.netns(&self.site.client)?, move || {
            guest_agent::control(addr, &cmd, Duration::from_secs(3))
        })?
        .map_err(|e| fail(format!("the guest's agent at {addr}: {e}")))
    }

    /// The guest's `status`.
    pub fn status(&self, lab: &Lab) -> Result<GuestStatus, ScenarioError> {
        self.control(lab, "status")
    }

    /// Stops the guest's writer: returns its final status (the last record).
    pub fn stop_writes(&self, lab: &Lab) -> Result<GuestStatus, ScenarioError> {
        self.control(lab, "stop-writes")
    }

    /// Powers the guest off and checks both disks (see the module documentation). The
    /// guest must have stopped writing and moved once since.
    pub fn disk_report(
        &mut self,
        lab: &Lab,
        last: &GuestStatus,
    ) -> Result<DiskReport, ScenarioError> {
        let acked = last
            .acked
            .ok_or_else(|| fail("the guest never acknowledged a disk record".into()))?;
        let _ = self.control(lab, "poweroff");
        let (here, left) = if self.at_b {
            (&self.lv_b, &self.lv_a)
        } else {
            (&self.lv_a, &self.lv_b)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = here.virsh(&["domstate", &self.site.vm]).unwrap_or_default();
            if !state.contains("running") && !state.contains("paused") {
                break;
            }
            if Instant::now() > deadline {
                // Not powered off by itself: stop it (QEMU flushes the qcow2 on exit).
                here.virsh(&["destroy", &self.site.vm])?;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let raw = |lv: &Libvirtd, name: &str| -> Result<PathBuf, ScenarioError> {
            let out = self.dir.join(name);
            run(
                "read the guest's disk",
                Command::new("qemu-img")
                    .args(["convert", "-O", "raw"])
                    .arg(self.host_disk(lv)?)
                    .arg(&out),
            )?;
            Ok(out)
        };
        let final_raw = raw(here, "final.raw")?;
        let left_raw = raw(left, "left-behind.raw")?;
        let final_sha = sha256(&final_raw)?;
        let left_sha = sha256(&left_raw)?;
        let check = guest_agent::check_records(&final_raw, acked, last.block_size, last.blocks)
            .map_err(|e| fail(format!("reading {}: {e}", final_raw.display())))?;
        let disk_bytes = std::fs::metadata(&final_raw).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&final_raw);
        let _ = std::fs::remove_file(&left_raw);
        Ok(DiskReport {
            acked,
            records_checked: check.checked,
            missing: check.missing,
            missing_count: check.missing_count,
            identical: final_sha == left_sha,
            left_behind_sha256: left_sha,
            final_sha256: final_sha,
            disk_bytes,
        })
    }

    /// Stops both libvirtds (destroying the guest if it still runs).
    pub fn stop(&mut self) {
        // The watches first: they would only log the libvirtds going away.
        self.watches.clear();
        self.lv_a.stop();
        self.lv_b.stop();
    }
}

impl Drop for KvmGuest {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(what: &str, cmd: &mut Command) -> Result<String, ScenarioError> {
    let out = cmd
        .output()
        .map_err(|e| fail(format!("{what}: {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{what}: {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sha256(path: &Path) -> Result<String, ScenarioError> {
    let out = run(
        "checksum the guest's disk",
        Command::new("sha256sum").arg(path),
    )?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
}
