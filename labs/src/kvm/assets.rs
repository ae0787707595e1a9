//! The cached assets: the private QEMU prefix and the guest's kernel and initramfs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{LabError, Result};

/// Where the built assets are kept: `$MIGROUTE_KVM_CACHE`, else `/var/cache/migroute`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MIGROUTE_KVM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/migroute"))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kvm").join(name)
}

/// Installs QEMU 7.2 into `cache_dir()/qemu` if needed (`labs/kvm/fetch-qemu.sh`) and
/// returns its wrapper, `…/bin/qemu-system-x86_64`.
pub fn ensure_qemu() -> Result<PathBuf> {
    let prefix = cache_dir().join("qemu");
    cmd::run(
        "fetch the private QEMU 7.2",
        Command::new("bash")
            .arg(script("fetch-qemu.sh"))
            .arg(&prefix),
    )?;
    Ok(prefix.join("bin/qemu-system-x86_64"))
}

/// The guest's boot files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// Debian's kernel.
    pub kernel: PathBuf,
    /// The busybox initramfs.
    pub initrd: PathBuf,
}

/// Builds the guest into `cache_dir()/guest` if needed (`labs/kvm/build-guest.sh`).
pub fn ensure_guest() -> Result<GuestImage> {
    let dir = cache_dir().join("guest");
    cmd::run(
        "build the lab guest",
        Command::new("bash").arg(script("build-guest.sh")).arg(&dir),
    )?;
    Ok(GuestImage {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initramfs.gz"),
    })
}

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation (libvirt domain type `kvm`).
    Kvm,
    /// QEMU's emulator (domain type `qemu`): slower, runs anywhere.
    Tcg,
}

impl Accel {
    /// `$MIGROUTE_KVM_ACCEL` (`kvm` or `tcg`) if set; else KVM when the guest actually
    /// boots under it (a probe boot, its verdict cached beside the guest), TCG
    /// otherwise. A usable `/dev/kvm` is not enough: under some nested hypervisors the
    /// guest kernel hangs right after decompression with KVM.
    pub fn detect(qemu: &Path, guest: &GuestImage) -> Accel {
        match std::env::var("MIGROUTE_KVM_ACCEL").as_deref() {
            Ok("kvm") => return Accel::Kvm,
            Ok("tcg") => return Accel::Tcg,
            _ => {}
        }
        if std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_err()
        {
            return Accel::Tcg;
        }
        let verdict = guest.kernel.with_file_name("kvm-verdict");
        match std::fs::read_to_string(&verdict).as_deref().map(str::trim) {
            Ok("kvm") => return Accel::Kvm,
            Ok("tcg") => return Accel::Tcg,
            _ => {}
        }
        let accel = if probe_kvm(qemu, guest) {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        let _ = std::fs::write(&verdict, accel.name());
        accel
    }

    /// QEMU's / our name for it.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Boots the guest under KVM for up to 30 s and watches its console for the kernel.
fn probe_kvm(qemu: &Path, guest: &GuestImage) -> bool {
    let Ok(dir) = tempfile_dir() else {
        return false;
    };
    let console = dir.join("console");
    let child = Command::new(qemu)
        .args([
            "-accel",
            "kvm",
            "-m",
            "128",
            "-display",
            "none",
            "-nodefaults",
        ])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initrd)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        let _ = std::fs::remove_dir_all(&dir);
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ok = false;
    while Instant::now() < deadline {
        if std::fs::read_to_string(&console).is_ok_and(|s| s.contains("Run /init")) {
            ok = true;
            break;
        }
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("migroute-kvm-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| LabError::Command {
        context: "kvm probe".into(),
        command: format!("mkdir {}", dir.display()),
        detail: e.to_string(),
    })?;
    Ok(dir)
}
