//! The orchestrator: drives one whole migration (`migroute migrate`) or many
//! (`migroute orchestrator`) through the sans-IO machine in
//! `migroute_orchestration::migration`, with the drivers that reach the world.
//!
//! - [`runtime`]: the owner task that journals and carries out the machine's commands.
//! - [`agent_client`]: the PE agents' REST API as a [`PeAgent`] driver.
//! - [`lab_hypervisor`]: the netns lab's "VM" as a hook-style [`Hypervisor`].
//! - [`lab_mover`]: the lab scenario's migroute mode (agents + `migrate` per move).
//! - `kvm_guest`, `kvm_hook` (feature `libvirt`): the KVM scenario's real guest, and
//!   its variant moved by `virsh migrate` through migroute's libvirt hook.
//!
//! [`PeAgent`]: migroute_orchestration::drivers::PeAgent
//! [`Hypervisor`]: migroute_orchestration::drivers::Hypervisor

pub mod agent_client;
#[cfg(feature = "libvirt")]
pub mod kvm_guest;
#[cfg(feature = "libvirt")]
pub mod kvm_hook;
pub mod lab_hypervisor;
pub mod lab_mover;
pub mod plan_drivers;
pub mod plan_file;
pub mod runtime;
pub mod service;
pub mod setup;
