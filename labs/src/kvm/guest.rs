//! The guest's libvirt domain definition.

use std::path::{Path, PathBuf};

use super::{Accel, GuestImage};

/// What the domain XML needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    /// Domain name.
    pub name: String,
    /// The emulator (the private QEMU's wrapper).
    pub emulator: PathBuf,
    /// Kernel and initramfs.
    pub image: GuestImage,
    /// The qcow2 disk, as a path inside the libvirtd's mount namespace.
    pub disk: PathBuf,
    /// The bridge the NIC's tap joins (in the site's namespace).
    pub bridge: String,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// How QEMU runs it.
    pub accel: Accel,
    /// Where the serial console is written (inside the libvirtd's mount namespace).
    pub console_log: PathBuf,
}

/// `xml` with migroute's metadata naming the host routes that move with the guest:
/// what `migroute libvirt-hook` reads to take part in a migration libvirt drives.
pub fn with_migroute_metadata(xml: &str, prefixes: &[&str]) -> String {
    let prefixes: String = prefixes
        .iter()
        .map(|p| format!("\n      <migroute:prefix>{p}</migroute:prefix>"))
        .collect();
    let meta = format!(
        "</name>\n  <metadata>\n    <migroute:vm xmlns:migroute=\"https://migroute.dev/xmlns/libvirt/1\">{prefixes}\n    </migroute:vm>\n  </metadata>"
    );
    xml.replacen("</name>", &meta, 1)
}

/// libvirt's namespace for passing QEMU arguments it does not model itself.
const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// `xml` with a second QMP monitor on the UNIX socket `socket` (a path inside the
/// libvirtd's mount namespace): libvirt owns the domain's own monitor, and a storage
/// driver that speaks QMP itself (`qemu-mirror`) needs one of its own. Passed as
/// `<qemu:commandline>` (`-qmp unix:PATH,server=on,wait=off`), which libvirt accepts
/// and marks the domain as tainted (custom-argv).
pub fn with_qmp_monitor(xml: &str, socket: &Path) -> String {
    let ns = format!("<domain xmlns:qemu='{QEMU_NS}'");
    let args = format!(
        "  <qemu:commandline>\n    <qemu:arg value='-qmp'/>\n    \
         <qemu:arg value='unix:{},server=on,wait=off'/>\n  </qemu:commandline>\n</domain>",
        socket.display()
    );
    xml.replacen("<domain", &ns, 1)
        .replacen("</domain>", &args, 1)
}

/// The domain XML: direct kernel boot, one virtio disk, one virtio NIC on the site
/// bridge, serial console to a file, the `qemu64` CPU model (migratable between any
/// two hosts; host-passthrough is not).
pub fn domain_xml(g: &GuestSpec) -> String {
    let kind = match g.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    format!(
        "<domain type='{kind}'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <source bridge='{bridge}'/>
      <mac address='52:54:00:0a:0a:05'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
",
        name = g.name,
        mem = g.memory_mib,
        kernel = g.image.kernel.display(),
        initrd = g.image.initrd.display(),
        emulator = g.emulator.display(),
        disk = g.disk.display(),
        bridge = g.bridge,
        console = g.console_log.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_names_what_it_was_given() {
        let g = GuestSpec {
            name: "g1".into(),
            emulator: "/q/bin/qemu".into(),
            image: GuestImage {
                kernel: "/k".into(),
                initrd: "/i".into(),
            },
            disk: "/var/lib/libvirt/images/g1.qcow2".into(),
            bridge: "br0".into(),
            memory_mib: 128,
            accel: Accel::Tcg,
            console_log: "/var/log/libvirt/g1.log".into(),
        };
        let x = domain_xml(&g);
        assert!(x.starts_with("<domain type='qemu'>"));
        for part in [
            "<name>g1</name>",
            "/q/bin/qemu",
            "g1.qcow2",
            "bridge='br0'",
            "'MiB'>128<",
        ] {
            assert!(x.contains(part), "{part} missing from {x}");
        }
        let kvm = domain_xml(&GuestSpec {
            accel: Accel::Kvm,
            ..g
        });
        assert!(kvm.starts_with("<domain type='kvm'>"));
    }

    #[test]
    fn a_second_qmp_monitor_is_a_qemu_commandline_block() {
        let x = with_qmp_monitor(
            "<domain type='qemu'>\n  <name>g</name>\n</domain>\n",
            Path::new("/run/libvirt/g.qmp"),
        );
        assert!(
            x.starts_with(
                "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' type='qemu'>"
            ),
            "{x}"
        );
        let block = "  <qemu:commandline>\n    <qemu:arg value='-qmp'/>\n    \
                     <qemu:arg value='unix:/run/libvirt/g.qmp,server=on,wait=off'/>\n  \
                     </qemu:commandline>\n</domain>\n";
        assert!(x.ends_with(block), "{x}");
        assert_eq!(x.matches("qemu:commandline>").count(), 2);
    }
}
