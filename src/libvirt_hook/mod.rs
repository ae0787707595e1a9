//! `migroute libvirt-hook`: for users who keep their own migration software (a plain
//! `virsh migrate --live`, OpenStack). libvirt runs `/etc/libvirt/hooks/qemu` at fixed
//! points of a domain's life; this turns the two that matter into agent webhooks:
//!
//! - `DOMAIN migrate begin -` runs **at the destination** before an incoming migration
//!   (domain XML on stdin, a failure refuses the migration): both agents are prepared,
//!   so the tunnel exists before a single page is copied.
//! - `DOMAIN release end -` runs wherever the domain's QEMU went away: at the
//!   destination after a failed incoming migration, at the source after a successful
//!   one. A migration that never got past `prepared` is aborted on both agents; one
//!   that switched over is left to converge and tear itself down.
//!
//! libvirt has no hook at the instant the guest pauses or resumes. With the hook
//! alone, switchover and announce come from the destination agent hearing the guest's
//! RARP announcement (`detect_vm` in the agent's config), after the resume; with
//! `migroute libvirt-watch` running beside libvirtd (module `watch`), both PEs switch over
//! while the guest is paused, and the RARP only announces.
//!
//! Which domains take part, and with which host routes, is in the domain's own XML ([`domain::NAMESPACE`] metadata), so that the prefixes travel
//! with the VM from host to host.

pub mod config;
pub mod domain;
pub mod event;
pub mod run;
#[cfg(feature = "libvirt")]
pub mod watch;

pub use domain::Domain;
pub use event::HookEvent;
