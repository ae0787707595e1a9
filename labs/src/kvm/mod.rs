//! A KVM/QEMU lab for the libvirt driver: two "sites", each a network namespace with
//! its own libvirtd (private mount namespace, own host UUID, TCP without auth) and a
//! bridge for the guest's NIC, joined by a veth; a private QEMU 7.2 prefix; a tiny
//! guest built from Debian packages (kernel + busybox initramfs).
//!
//! The heavy assets are built by the scripts in `labs/kvm/` and cached under
//! [`cache_dir`] (default `/var/cache/migroute`, or `$MIGROUTE_KVM_CACHE`), so repeated
//! runs reuse them.

mod assets;
mod guest;
mod guest_initrd;
mod libvirtd;
mod site;

pub use assets::{cache_dir, ensure_guest, ensure_qemu, Accel, GuestImage};
pub use guest::{domain_xml, with_migroute_metadata, with_qmp_monitor, GuestSpec};
pub use guest_initrd::{guest_agent_binary, with_agent};
pub use libvirtd::Libvirtd;
pub use site::{link_sites, Site};
