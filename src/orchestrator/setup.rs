//! Drivers from a plan: the part of `migroute migrate` and `migroute orchestrator` that
//! turns `[hypervisor]`, `[storage]`, `[source]` and `[destination]` into driver
//! instances, refusing kinds this build does not carry.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use migroute_labs::{Lab, Topology};
use migroute_orchestration::drivers::drbd::Host;
#[cfg(feature = "libvirt")]
use migroute_orchestration::drivers::libvirt::{LibvirtConfig, LibvirtHypervisor};
use migroute_orchestration::drivers::{DrbdStorage, NoneStorage, QemuMirrorStorage};
use migroute_orchestration::migration::{HypervisorPlan, MigrationPlan, StoragePlan};
use thiserror::Error;

use super::agent_client::{ClientError, HttpAgent};
use super::lab_hypervisor::{LabHypervisor, LabHypervisorError};
use super::plan_drivers::{PlanHypervisor, PlanStorage};
use super::runtime::Drivers;

/// How the drivers reach the world, beyond the plan.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// Bearer token for both agents.
    pub agent_token: Option<String>,
    /// Deadline of each agent call.
    pub agent_timeout: Duration,
    /// Lab hypervisor: simulated pre-copy.
    pub lab_precopy: Duration,
}

/// Why a plan's drivers cannot be built; `field` names the plan field.
#[derive(Debug, Error)]
pub enum SetupError {
    /// A kind this build has no driver for.
    #[error("plan field {field}: {reason}")]
    Unsupported {
        /// Dotted field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The lab cannot be used.
    #[error("plan field hypervisor.topology: {0}")]
    Lab(String),
    /// An agent URL is unusable.
    #[error("plan field {field}: {source}")]
    Agent {
        /// Dotted field.
        field: &'static str,
        /// Why.
        #[source]
        source: ClientError,
    },
}

/// The drivers of this build: the hypervisor and storage the plan names, HTTP agents.
pub type PlanDrivers = Drivers<PlanHypervisor, PlanStorage, HttpAgent>;

/// Builds the drivers of `plan`; relative paths in it are relative to `base_dir`.
pub fn drivers(
    plan: &MigrationPlan,
    base_dir: &Path,
    settings: &DriverSettings,
) -> Result<PlanDrivers, SetupError> {
    let agent = |field, at: &migroute_orchestration::migration::AgentPlan| {
        HttpAgent::new(
            &at.agent_url,
            settings.agent_token.clone(),
            settings.agent_timeout,
        )
        .and_then(|client| match &at.ca_file {
            Some(ca) => client.with_ca_file(&base_dir.join(ca)),
            None => Ok(client),
        })
        .map(Arc::new)
        .map_err(|source| SetupError::Agent { field, source })
    };
    let source = agent("source.agent_url", &plan.source)?;
    let destination = agent("destination.agent_url", &plan.destination)?;
    let hypervisor = match &plan.hypervisor {
        HypervisorPlan::Lab {
            topology,
            node,
            to,
            pause_ms,
        } => {
            let path = base_dir.join(topology);
            let topo = Topology::load(&path)
                .map_err(|e| SetupError::Lab(format!("{}: {e}", path.display())))?;
            let lab = Lab::new(topo);
            if !lab.is_up() {
                return Err(SetupError::Lab(format!(
                    "lab {} is not up (migroute lab up {})",
                    lab.name(),
                    path.display()
                )));
            }
            PlanHypervisor::Lab(Box::new(
                LabHypervisor::new(
                    lab,
                    node,
                    to,
                    Duration::from_millis(*pause_ms),
                    settings.lab_precopy,
                )
                .map_err(|e: LabHypervisorError| SetupError::Lab(e.to_string()))?,
            ))
        }
        #[cfg(feature = "libvirt")]
        HypervisorPlan::Libvirt { .. } => {
            let config = LibvirtConfig::from_plan(plan).expect("the plan's hypervisor is libvirt");
            PlanHypervisor::Libvirt(LibvirtHypervisor::new(config))
        }
        #[cfg(not(feature = "libvirt"))]
        HypervisorPlan::Libvirt { .. } => {
            return Err(SetupError::Unsupported {
                field: "hypervisor.kind",
                reason: "\"libvirt\" needs a migroute built with `--features libvirt`".into(),
            })
        }
    };
    let storage = match &plan.storage {
        StoragePlan::None | StoragePlan::LibvirtCopy { .. } => PlanStorage::None(NoneStorage),
        StoragePlan::QemuMirror(p) => {
            let driver = QemuMirrorStorage::new(p).map_err(|e| SetupError::Unsupported {
                field: "storage",
                reason: e.to_string(),
            })?;
            PlanStorage::QemuMirror(Box::new(driver))
        }
        StoragePlan::Drbd { .. } => {
            let driver = DrbdStorage::from_plan(&plan.storage).expect("the plan's storage is drbd");
            if let Some((host, program)) = driver.missing_program() {
                return Err(SetupError::Unsupported {
                    field: match host {
                        Host::Source => "storage.source_command",
                        Host::Destination => "storage.destination_command",
                    },
                    reason: format!("{program:?} cannot be run here (not on PATH)"),
                });
            }
            PlanStorage::Drbd(Box::new(driver))
        }
    };
    Ok(Drivers {
        hypervisor: Arc::new(hypervisor),
        storage: Arc::new(storage),
        source,
        destination,
    })
}
