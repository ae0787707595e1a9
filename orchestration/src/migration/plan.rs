//! [`MigrationPlan`]: everything the orchestrator needs to move one VM, as an operator
//! writes it (TOML: `migroute migrate --plan vm1.toml`) or a webhook posts it (JSON).
//!
//! The shape is TOML-friendly on purpose: top-level `id`, then one table per party
//! (`[vm]`, `[source]`, `[destination]`, `[tunnel]`, `[hypervisor]`, `[storage]`,
//! `[policy]`, `[timeouts]`), enums tagged by a `kind` key, times as integer
//! milliseconds, no nulls (optional fields are simply left out).

use crate::pe::TunnelKind;
use crate::pe::{
    MacAddr, MigrationId, MigrationSpec, PeerPe, Role, RoutePolicy, SpecError, Timers,
};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use thiserror::Error;

/// One planned migration. Validate with [`MigrationPlan::validate`] before creating a
/// [`crate::migration::Migration`]; the machine refuses an invalid plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationPlan {
    /// The migration's id: also the id both agents know it by (`/v1/migrations/{id}`).
    pub id: MigrationId,
    /// What moves.
    pub vm: VmPlan,
    /// The PE the VM leaves (PE-A).
    pub source: AgentPlan,
    /// The PE the VM goes to (PE-B).
    pub destination: AgentPlan,
    /// Tunnel between the two PEs.
    pub tunnel: TunnelKind,
    /// Who moves the VM's memory and CPU.
    pub hypervisor: HypervisorPlan,
    /// Who moves its disks; `kind = "none"` when it has none (paper §3.1, first case).
    #[serde(default)]
    pub storage: StoragePlan,
    /// Route preference, convergence timers and restart behaviour.
    #[serde(default)]
    pub policy: MigrationPolicy,
    /// Per-phase deadlines.
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// The VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPlan {
    /// The VM's name (libvirt domain name unless the hypervisor section says otherwise).
    pub name: String,
    /// Its host routes, which the agents move.
    pub prefixes: Vec<IpNetwork>,
    /// Its MAC address: a destination agent listening for the VM (`pe.detect_vm`)
    /// recognises QEMU's post-migration RARP by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

/// One PE's agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPlan {
    /// Base URL of the agent's REST API, e.g. `http://pe-a:8080`.
    pub agent_url: String,
    /// The PE's tunnel endpoint: the other PE's tunnel goes there.
    pub tunnel_endpoint: IpAddr,
    /// PEM CA certificate(s) to trust for an `https://` agent URL (a private CA);
    /// relative to the plan's directory. Absent: the built-in roots only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The hypervisor, tagged by `kind`. The kind also decides how the switchover is tied to
/// the VM's resume ([`QuiesceStyle`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum HypervisorPlan {
    /// The netns lab: the "VM" is a namespace whose link moves from site A to site B.
    /// It pauses the VM, waits for our switchover, moves the link, resumes.
    Lab {
        /// The lab topology file (`*.clab.yml`).
        topology: String,
        /// The VM node's name in the topology.
        node: String,
        /// The node (data center) its link moves to.
        to: String,
        /// Simulated stop-and-copy pause.
        #[serde(default = "default_lab_pause_ms")]
        pause_ms: u64,
    },
    /// libvirt live migration with pre-copy. libvirt only *reports* the suspend, so the
    /// switchover races the resume inside the stop-and-copy window.
    Libvirt {
        /// Connection URI of the source host, e.g. `qemu+ssh://host-a/system`.
        source_uri: String,
        /// Connection URI of the destination host.
        destination_uri: String,
        /// Domain name, when it differs from `vm.name`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
        /// Downtime libvirt may use for stop-and-copy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_downtime_ms: Option<u64>,
        /// The destination as the *source's* libvirtd reaches it for the peer-to-peer
        /// migration (e.g. `qemu+tcp://10.0.0.2/system`), when it differs from how the
        /// orchestrator reaches it (`destination_uri`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer_uri: Option<String>,
        /// Where the migration data stream goes (libvirt's migrate URI, e.g.
        /// `tcp://10.0.0.2`): picks the network the memory and disks cross.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        migrate_uri: Option<String>,
        /// Address the destination listens on for the incoming data (and NBD) stream.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listen_address: Option<String>,
        /// Bandwidth cap of the migration stream, MiB/s (libvirt's default: unlimited).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bandwidth_mib_s: Option<u64>,
        /// Whether libvirt copies the disks along (NON_SHARED_DISK / _INC): the
        /// "libvirt-copy" storage path, when the sites share no storage.
        #[serde(default, skip_serializing_if = "CopyStorage::is_none")]
        copy_storage: CopyStorage,
        /// Encrypt the migration stream with libvirt's TLS (needs certificates).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tls: bool,
    },
}

/// Which disks libvirt copies during a [`HypervisorPlan::Libvirt`] migration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyStorage {
    /// Shared storage, or another driver moves the disks.
    #[default]
    None,
    /// Copy every disk whole (VIR_MIGRATE_NON_SHARED_DISK).
    All,
    /// Copy only the top image of each disk, its backing chain being at the
    /// destination already (VIR_MIGRATE_NON_SHARED_INC).
    Inc,
}

impl CopyStorage {
    /// Whether no disk is copied.
    pub fn is_none(&self) -> bool {
        matches!(self, CopyStorage::None)
    }
}

fn default_lab_pause_ms() -> u64 {
    100
}

/// How a hypervisor lets us order the source's switchover before the VM's resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuiesceStyle {
    /// The hypervisor reports `Suspended` and waits for our
    /// [`AckQuiesce`](crate::migration::Action::AckQuiesce) before resuming at the
    /// destination: the override is guaranteed to be in place first.
    Hook,
    /// The hypervisor only reports `Suspended` and resumes on its own: the switchover is
    /// issued at once and the report says whether it won the race.
    Observe,
}

impl HypervisorPlan {
    /// The quiesce style this kind of hypervisor offers.
    pub fn quiesce_style(&self) -> QuiesceStyle {
        match self {
            HypervisorPlan::Lab { .. } => QuiesceStyle::Hook,
            HypervisorPlan::Libvirt { .. } => QuiesceStyle::Observe,
        }
    }
}

/// Storage replication, tagged by `kind`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum StoragePlan {
    /// Nothing to replicate: the storage phases are skipped.
    #[default]
    None,
    /// A QEMU block mirror (`blockdev-mirror`) from the source QEMU to an NBD export
    /// of the destination QEMU (or qemu-storage-daemon), driven over QMP.
    QemuMirror(QemuMirrorPlan),
    /// libvirt copies the disks itself during the migration (`virsh migrate
    /// --copy-storage-all`): the libvirt hypervisor driver reads this section, and the
    /// storage driver is [`NoneStorage`](crate::drivers::NoneStorage) (every step done
    /// at once; the copy's progress is part of the hypervisor's migration).
    LibvirtCopy {
        /// Whether guest writes are mirrored synchronously during the copy
        /// (libvirt's `VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES`), so the copy converges
        /// under a write-heavy guest.
        #[serde(default)]
        synchronous_writes: bool,
    },
    /// A DRBD 9 resource replicated between the source host and the destination host,
    /// commanded with `drbdadm` (driver: [`DrbdStorage`](crate::drivers::DrbdStorage)).
    /// Example, with the orchestrator on the source host:
    ///
    /// ```toml
    /// [storage]
    /// kind = "drbd"
    /// resource = "vm1-disk"
    /// destination_command = ["ssh", "root@host-b"]
    /// ```
    Drbd {
        /// The resource name (as in `drbdadm status <resource>`).
        resource: String,
        /// What `drbdadm` runs under to reach the source host, e.g. `["ssh",
        /// "root@host-a"]`; left out, `drbdadm` runs where the orchestrator runs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        source_command: Vec<String>,
        /// The same for the destination host.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        destination_command: Vec<String>,
    },
}

impl StoragePlan {
    /// Whether the machine runs the storage phases.
    pub fn is_none(&self) -> bool {
        matches!(self, StoragePlan::None)
    }
}

/// `[storage] kind = "qemu-mirror"`: which disk, where it goes, and how to reach both
/// QEMUs. Example:
///
/// ```toml
/// [storage]
/// kind = "qemu-mirror"
/// device = "vda"
/// target = "nbd://192.0.2.2:10809/vda"
/// source_qmp = "unix:/run/qemu/vm1.qmp"
/// destination_qmp = "tcp:host-b:4444"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuMirrorPlan {
    /// The guest disk's block node (node-name or drive id) at the source, e.g. `vda`.
    pub device: String,
    /// The NBD export the source writes to: `nbd://host:port/export` or
    /// `nbd+unix:///export?socket=/path`. The driver creates that export at the
    /// destination.
    pub target: String,
    /// The source QEMU's QMP monitor: `unix:/path` (or a bare path) or `tcp:host:port`.
    pub source_qmp: String,
    /// The destination QEMU's (or qemu-storage-daemon's) QMP monitor.
    pub destination_qmp: String,
    /// The block node exported at the destination; defaults to `device`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_node: Option<String>,
    /// Where the destination's NBD server listens (`host:port` or `unix:/path`), when
    /// it differs from the target's address (e.g. `0.0.0.0:10809` behind NAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd_listen: Option<String>,
    /// How to switch to synchronous replication.
    #[serde(default)]
    pub switch_method: SwitchMethod,
    /// Block job (and export) id; defaults to `migroute-<device>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

impl QemuMirrorPlan {
    /// A plan with the required fields and every default.
    pub fn new(
        device: impl Into<String>,
        target: impl Into<String>,
        source_qmp: impl Into<String>,
        destination_qmp: impl Into<String>,
    ) -> Self {
        QemuMirrorPlan {
            device: device.into(),
            target: target.into(),
            source_qmp: source_qmp.into(),
            destination_qmp: destination_qmp.into(),
            destination_node: None,
            nbd_listen: None,
            switch_method: SwitchMethod::default(),
            job_id: None,
        }
    }

    /// The block job's id (also the destination export's id).
    pub fn job_id(&self) -> String {
        self.job_id
            .clone()
            .unwrap_or_else(|| format!("migroute-{}", self.device))
    }

    /// The node exported at the destination.
    pub fn destination_node(&self) -> &str {
        self.destination_node.as_deref().unwrap_or(&self.device)
    }

    fn validate(&self) -> Result<(), PlanError> {
        non_empty("storage.device", &self.device)?;
        non_empty("storage.target", &self.target)?;
        crate::drivers::qemu_mirror::NbdTarget::parse(&self.target)
            .map_err(|reason| invalid("storage.target", reason))?;
        for (field, v) in [
            ("storage.source_qmp", &self.source_qmp),
            ("storage.destination_qmp", &self.destination_qmp),
        ] {
            if crate::drivers::qmp::Endpoint::parse(v).is_none() {
                return Err(invalid(
                    field,
                    format!("{v:?} is not unix:/path, /path or tcp:host:port"),
                ));
            }
        }
        if self.source_qmp == self.destination_qmp {
            return Err(invalid(
                "storage.destination_qmp",
                "is the source's monitor: the mirror would copy onto itself",
            ));
        }
        if let Some(n) = &self.destination_node {
            non_empty("storage.destination_node", n)?;
        }
        if let Some(l) = &self.nbd_listen {
            crate::drivers::qemu_mirror::NbdTarget::parse_listen(l)
                .map_err(|reason| invalid("storage.nbd_listen", reason))?;
        }
        let id = self.job_id();
        let well_formed = id.len() < 32 - "-target".len()
            && id.starts_with(|c: char| c.is_ascii_alphabetic())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !well_formed {
            let field = if self.job_id.is_some() {
                "storage.job_id"
            } else {
                "storage.device"
            };
            return Err(invalid(
                field,
                format!("job id {id:?}: QEMU needs a letter first, then letters, digits, '-', '_', '.', under 25 characters"),
            ));
        }
        Ok(())
    }
}

/// How [`QemuMirrorPlan`] switches the mirror from background copying to
/// write-blocking (synchronous) mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchMethod {
    /// `change-job` when the source QEMU has `block-job-change` (QEMU ≥ 8.2, probed
    /// with `query-qmp-schema`), else `restart-job`.
    #[default]
    Auto,
    /// `block-job-change` to `copy-mode: write-blocking` on the running job.
    ChangeJob,
    /// The QEMU 7.2 way: cancel the READY background job (which leaves the target
    /// consistent) and start a write-blocking mirror with `sync: none`. Writes between
    /// the two are not mirrored: the caller must pause the guest around the switch.
    RestartJob,
}

/// What to do with a migration found unfinished when the orchestrator restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnRestart {
    /// Go on from the journal: every driver action is idempotent, so outstanding ones
    /// are simply issued again. A hook-style hypervisor mid-migration is still rolled
    /// back: its quiesce hook lived in the process that died.
    #[default]
    Resume,
    /// Roll back whatever had not reached the point of no return (the VM running at the
    /// destination); past it, go forward.
    Rollback,
}

/// Policy of the whole migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationPolicy {
    /// How the destination makes its route win (passed to the destination agent).
    #[serde(default)]
    pub route: RoutePolicy,
    /// The agents' convergence timers (passed to both agents).
    #[serde(default)]
    pub convergence: Timers,
    /// Restart behaviour.
    #[serde(default)]
    pub on_restart: OnRestart,
}

/// Deadlines, one per phase, in milliseconds from entering the phase. Missing one is a
/// failure of that phase: rollback before the point of no return, stall after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Both agents prepared (tunnels up).
    pub prepare_ms: u64,
    /// Storage replication started and the bulk copy done (mirror READY).
    pub storage_async_ms: u64,
    /// Switched to synchronous replication and in sync.
    pub storage_sync_ms: u64,
    /// Destination switched over, then pre-copy until the VM is suspended.
    pub migrate_ms: u64,
    /// From the suspend to the source's override acknowledged (and storage cut over):
    /// the pause budget.
    pub switchover_ms: u64,
    /// From the quiesce acknowledged to the VM resumed at the destination.
    pub resume_ms: u64,
    /// Both agents told to announce.
    pub announce_ms: u64,
    /// From announce to converged (source torn down, destination route held).
    pub converge_ms: u64,
    /// Both agents completed.
    pub teardown_ms: u64,
    /// Each rollback step (cancel; then the aborts). A step that misses it is recorded
    /// as failed and the rollback goes on.
    pub rollback_step_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            prepare_ms: 15_000,
            storage_async_ms: 3_600_000,
            storage_sync_ms: 600_000,
            migrate_ms: 1_800_000,
            switchover_ms: 2_000,
            resume_ms: 30_000,
            announce_ms: 15_000,
            converge_ms: 300_000,
            teardown_ms: 30_000,
            rollback_step_ms: 30_000,
        }
    }
}

/// A plan that cannot run. `field` is the dotted TOML path of the culprit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// A field's value is unusable.
    #[error("plan field {field}: {reason}")]
    Invalid {
        /// Dotted path, e.g. `source.agent_url`.
        field: String,
        /// Why.
        reason: String,
    },
    /// The spec derived for an agent fails the agent's own validation.
    #[error("plan field {field}: the {role} agent would refuse it: {source}")]
    Spec {
        /// Dotted path of the culprit.
        field: &'static str,
        /// Which agent.
        role: Role,
        /// The agent's reason.
        #[source]
        source: SpecError,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PlanError {
    PlanError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), PlanError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

/// `[storage] kind = "drbd"`: a resource name `drbdadm` accepts (and that passes
/// through ssh's remote shell unquoted), and two command prefixes that reach two
/// different hosts.
fn drbd_valid(
    resource: &str,
    source_command: &[String],
    destination_command: &[String],
) -> Result<(), PlanError> {
    non_empty("storage.resource", resource)?;
    let well_formed = !resource.starts_with('-')
        && resource
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if !well_formed {
        return Err(invalid(
            "storage.resource",
            format!(
                "{resource:?}: letters, digits, '-', '_', '.', '+' only, not starting with '-'"
            ),
        ));
    }
    for (field, command) in [
        ("storage.source_command", source_command),
        ("storage.destination_command", destination_command),
    ] {
        if command.iter().any(|a| a.trim().is_empty()) {
            return Err(invalid(field, "has an empty argument"));
        }
    }
    if source_command == destination_command {
        return Err(invalid(
            "storage.destination_command",
            "reaches the same host as source_command: the destination's drbdadm must run on the destination host (set one or both, e.g. [\"ssh\", \"root@host-b\"])",
        ));
    }
    Ok(())
}

fn http_url(field: &str, value: &str) -> Result<(), PlanError> {
    non_empty(field, value)?;
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| invalid(field, format!("{value:?} is not an http(s) URL")))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid(field, format!("{value:?} has no host")));
    }
    Ok(())
}

impl MigrationPlan {
    /// Checks everything the machine and the agents will rely on, naming the first bad
    /// field. Also runs the agents' own spec validation, so a plan that passes here is
    /// not refused with a 400 halfway through.
    pub fn validate(&self) -> Result<(), PlanError> {
        non_empty("vm.name", &self.vm.name)?;
        http_url("source.agent_url", &self.source.agent_url)?;
        http_url("destination.agent_url", &self.destination.agent_url)?;
        if self.source.agent_url.trim_end_matches('/')
            == self.destination.agent_url.trim_end_matches('/')
        {
            return Err(invalid(
                "destination.agent_url",
                "is the source's agent: a migration needs two PEs",
            ));
        }
        if self.source.tunnel_endpoint == self.destination.tunnel_endpoint {
            return Err(invalid(
                "destination.tunnel_endpoint",
                "equals the source's: the tunnel would loop",
            ));
        }
        if self.source.tunnel_endpoint.is_ipv4() != self.destination.tunnel_endpoint.is_ipv4() {
            return Err(invalid(
                "destination.tunnel_endpoint",
                "address family differs from the source's",
            ));
        }
        match &self.hypervisor {
            HypervisorPlan::Lab {
                topology, node, to, ..
            } => {
                non_empty("hypervisor.topology", topology)?;
                non_empty("hypervisor.node", node)?;
                non_empty("hypervisor.to", to)?;
            }
            HypervisorPlan::Libvirt {
                source_uri,
                destination_uri,
                domain,
                max_downtime_ms,
                peer_uri,
                migrate_uri,
                listen_address,
                bandwidth_mib_s,
                ..
            } => {
                non_empty("hypervisor.source_uri", source_uri)?;
                non_empty("hypervisor.destination_uri", destination_uri)?;
                if source_uri == destination_uri {
                    return Err(invalid(
                        "hypervisor.destination_uri",
                        "equals source_uri: nowhere to migrate to",
                    ));
                }
                if let Some(d) = domain {
                    non_empty("hypervisor.domain", d)?;
                }
                if *max_downtime_ms == Some(0) {
                    return Err(invalid("hypervisor.max_downtime_ms", "must be above 0"));
                }
                if *bandwidth_mib_s == Some(0) {
                    return Err(invalid("hypervisor.bandwidth_mib_s", "must be above 0"));
                }
                for (field, v) in [
                    ("hypervisor.peer_uri", peer_uri),
                    ("hypervisor.migrate_uri", migrate_uri),
                    ("hypervisor.listen_address", listen_address),
                ] {
                    if let Some(v) = v {
                        non_empty(field, v)?;
                    }
                }
            }
        }
        match &self.storage {
            StoragePlan::None => {}
            StoragePlan::QemuMirror(p) => p.validate()?,
            StoragePlan::LibvirtCopy { .. } => {
                if !matches!(self.hypervisor, HypervisorPlan::Libvirt { .. }) {
                    return Err(invalid(
                        "storage.kind",
                        "libvirt-copy needs hypervisor kind libvirt, which does the copy",
                    ));
                }
            }
            StoragePlan::Drbd {
                resource,
                source_command,
                destination_command,
            } => drbd_valid(resource, source_command, destination_command)?,
        }
        let t = &self.timeouts;
        for (field, v) in [
            ("timeouts.prepare_ms", t.prepare_ms),
            ("timeouts.storage_async_ms", t.storage_async_ms),
            ("timeouts.storage_sync_ms", t.storage_sync_ms),
            ("timeouts.migrate_ms", t.migrate_ms),
            ("timeouts.switchover_ms", t.switchover_ms),
            ("timeouts.resume_ms", t.resume_ms),
            ("timeouts.announce_ms", t.announce_ms),
            ("timeouts.converge_ms", t.converge_ms),
            ("timeouts.teardown_ms", t.teardown_ms),
            ("timeouts.rollback_step_ms", t.rollback_step_ms),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be above 0"));
            }
        }
        for role in [Role::Source, Role::Destination] {
            self.agent_spec(role)
                .normalized()
                .map_err(|source| PlanError::Spec {
                    field: spec_field(&source),
                    role,
                    source,
                })?;
        }
        Ok(())
    }

    /// The body of `PUT /v1/migrations/{id}` for one agent: its role, the *other* PE as
    /// peer, and the shared tunnel, policy and timers.
    pub fn agent_spec(&self, role: Role) -> MigrationSpec {
        let peer = match role {
            Role::Source => &self.destination,
            Role::Destination => &self.source,
        };
        MigrationSpec {
            prefixes: self.vm.prefixes.clone(),
            role,
            peer: PeerPe {
                tunnel_endpoint: peer.tunnel_endpoint,
                api_url: peer.agent_url.clone(),
            },
            tunnel: self.tunnel,
            policy: self.policy.route.clone(),
            timers: self.policy.convergence,
            vm_mac: self.vm.mac,
        }
    }

    /// The agent playing `role`.
    pub fn agent(&self, role: Role) -> &AgentPlan {
        match role {
            Role::Source => &self.source,
            Role::Destination => &self.destination,
        }
    }

    /// The deadline of a phase, if it has one.
    pub(crate) fn timeout_of(&self, phase: super::Phase) -> Option<u64> {
        use super::Phase::*;
        let t = &self.timeouts;
        Some(match phase {
            Preparing => t.prepare_ms,
            StorageAsync => t.storage_async_ms,
            Presync => t.storage_sync_ms,
            Migrating => t.migrate_ms,
            SwitchingOver => t.switchover_ms,
            Resuming => t.resume_ms,
            Announcing => t.announce_ms,
            Converging => t.converge_ms,
            TearingDown => t.teardown_ms,
            RollingBack => t.rollback_step_ms,
            Planned | Stalled | Completed | RolledBack => return None,
        })
    }
}

fn spec_field(e: &SpecError) -> &'static str {
    match e {
        SpecError::BadId(_) => "id",
        SpecError::NoPrefixes | SpecError::NotHostRoute(_) | SpecError::DuplicatePrefix(_) => {
            "vm.prefixes"
        }
        SpecError::BadVni(_) => "tunnel.vni",
        SpecError::NoPeerApi => "source.agent_url",
    }
}

#[cfg(test)]
mod storage_plan_tests {
    use super::*;

    fn storage(json: &str) -> Result<StoragePlan, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn qemu_mirror_shape_defaults_and_round_trip() {
        let s = storage(
            r#"{"kind": "qemu-mirror", "device": "vda", "target": "nbd://192.0.2.2:10809/vda",
                "source_qmp": "unix:/run/a.qmp", "destination_qmp": "tcp:host-b:4444"}"#,
        )
        .unwrap();
        let StoragePlan::QemuMirror(p) = &s else {
            panic!("{s:?}")
        };
        assert_eq!(p.switch_method, SwitchMethod::Auto);
        assert_eq!(p.job_id(), "migroute-vda");
        assert_eq!(p.destination_node(), "vda");
        assert_eq!(p.validate(), Ok(()));
        let again = storage(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        let forced = storage(
            r#"{"kind": "qemu-mirror", "device": "vda", "target": "nbd://b/vda",
                "source_qmp": "/run/a.qmp", "destination_qmp": "/run/b.qmp",
                "switch_method": "restart-job", "destination_node": "disk0"}"#,
        )
        .unwrap();
        assert!(matches!(forced, StoragePlan::QemuMirror(QemuMirrorPlan {
            switch_method: SwitchMethod::RestartJob, ref destination_node, ..
        }) if destination_node.as_deref() == Some("disk0")));
        assert!(storage(
            r#"{"kind": "qemu-mirror", "device": "vda", "target": "nbd://b/vda",
                "source_qmp": "/a", "destination_qmp": "/b", "sped": 1}"#
        )
        .is_err());
        assert!(storage(r#"{"kind": "qemu-mirror", "device": "vda"}"#).is_err());
    }

    #[test]
    fn qemu_mirror_validation_names_the_field() {
        let ok = QemuMirrorPlan::new("vda", "nbd://b:10809/vda", "/run/a.qmp", "tcp:b:4444");
        let field = |p: QemuMirrorPlan| match p.validate() {
            Err(PlanError::Invalid { field, .. }) => field,
            other => format!("{other:?}"),
        };
        let mut p = ok.clone();
        p.target = "nbd://b:10809".into();
        assert_eq!(field(p), "storage.target");
        let mut p = ok.clone();
        p.source_qmp = "a.qmp".into();
        assert_eq!(field(p), "storage.source_qmp");
        let mut p = ok.clone();
        p.destination_qmp = p.source_qmp.clone();
        assert_eq!(field(p), "storage.destination_qmp");
        let mut p = ok.clone();
        p.nbd_listen = Some("unix:".into());
        assert_eq!(field(p), "storage.nbd_listen");
        let mut p = ok.clone();
        p.job_id = Some("1job".into());
        assert_eq!(field(p), "storage.job_id");
        let mut p = ok;
        p.device = "a-disk-name-far-too-long-for-qemu".into();
        assert_eq!(field(p), "storage.device");
    }

    #[test]
    fn libvirt_copy_is_a_storage_kind() {
        let s = storage(r#"{"kind": "libvirt-copy"}"#).unwrap();
        assert_eq!(
            s,
            StoragePlan::LibvirtCopy {
                synchronous_writes: false
            }
        );
        assert!(!s.is_none());
        let s = storage(r#"{"kind": "libvirt-copy", "synchronous_writes": true}"#).unwrap();
        assert_eq!(storage(&serde_json::to_string(&s).unwrap()).unwrap(), s);
        assert!(storage(r#"{"kind": "libvirt-copy", "sync": true}"#).is_err());
    }

    #[test]
    fn libvirt_copy_needs_the_libvirt_hypervisor() {
        let mut plan: MigrationPlan = serde_json::from_str(
            r#"{"id": "vm1-move", "vm": {"name": "vm1", "prefixes": ["10.0.0.1/32"]},
                "source": {"agent_url": "http://pe-a:8080", "tunnel_endpoint": "192.0.2.1"},
                "destination": {"agent_url": "http://pe-b:8080", "tunnel_endpoint": "192.0.2.2"},
                "tunnel": {"kind": "vxlan", "vni": 7},
                "hypervisor": {"kind": "lab", "topology": "t.clab.yml", "node": "vm", "to": "dc-b"},
                "storage": {"kind": "libvirt-copy", "synchronous_writes": true}}"#,
        )
        .unwrap();
        assert!(matches!(plan.validate(),
            Err(PlanError::Invalid { ref field, .. }) if field == "storage.kind"));
        plan.hypervisor = serde_json::from_str(
            r#"{"kind": "libvirt", "source_uri": "qemu+ssh://a/system",
                "destination_uri": "qemu+ssh://b/system"}"#,
        )
        .unwrap();
        assert_eq!(plan.validate(), Ok(()));
    }
}

#[cfg(test)]
mod drbd_plan_tests {
    use super::*;

    fn drbd(json: &str) -> StoragePlan {
        serde_json::from_str(json).unwrap()
    }

    fn field(s: StoragePlan) -> String {
        let mut plan = super::super::tests::plan(false, QuiesceStyle::Observe);
        plan.storage = s;
        match plan.validate() {
            Err(PlanError::Invalid { field, .. }) => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn drbd_commands_default_to_local_and_round_trip() {
        // The shape before the command prefixes existed still reads.
        let old = drbd(r#"{"kind": "drbd", "resource": "r0"}"#);
        assert_eq!(
            old,
            StoragePlan::Drbd {
                resource: "r0".into(),
                source_command: vec![],
                destination_command: vec![],
            }
        );
        // Local defaults are left out when written back.
        assert_eq!(
            serde_json::to_value(&old).unwrap(),
            serde_json::json!({"kind": "drbd", "resource": "r0"})
        );
        let s = drbd(
            r#"{"kind": "drbd", "resource": "vm1-disk",
                "destination_command": ["ssh", "-o", "BatchMode=yes", "root@host-b"]}"#,
        );
        assert_eq!(drbd(&serde_json::to_string(&s).unwrap()), s);
        assert!(serde_json::from_str::<StoragePlan>(
            r#"{"kind": "drbd", "resource": "r0", "dest_command": ["ssh", "b"]}"#
        )
        .is_err());
    }

    #[test]
    fn drbd_validation_names_the_field() {
        let ok = drbd(r#"{"kind": "drbd", "resource": "r0", "destination_command": ["ssh", "b"]}"#);
        assert_eq!(field(ok), "Ok(())");
        let both = drbd(
            r#"{"kind": "drbd", "resource": "r0", "source_command": ["ssh", "a"],
                "destination_command": ["ssh", "b"]}"#,
        );
        assert_eq!(field(both), "Ok(())");
        // Both local: one host would be both ends.
        assert_eq!(
            field(drbd(r#"{"kind": "drbd", "resource": "r0"}"#)),
            "storage.destination_command"
        );
        assert_eq!(
            field(drbd(
                r#"{"kind": "drbd", "resource": "r0", "source_command": ["ssh", "a"],
                    "destination_command": ["ssh", "a"]}"#
            )),
            "storage.destination_command"
        );
        assert_eq!(
            field(drbd(
                r#"{"kind": "drbd", "resource": "r0", "source_command": ["ssh", ""],
                    "destination_command": ["ssh", "b"]}"#
            )),
            "storage.source_command"
        );
        for bad in ["r0; reboot", "-r0", "r 0", "$(id)"] {
            let s = StoragePlan::Drbd {
                resource: bad.into(),
                source_command: vec![],
                destination_command: vec!["ssh".into(), "b".into()],
            };
            assert_eq!(field(s), "storage.resource", "{bad:?}");
        }
    }
}

#[cfg(test)]
mod libvirt_plan_tests {
    use super::*;

    fn hypervisor(json: &str) -> Result<HypervisorPlan, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn libvirt_section_defaults_options_and_round_trip() {
        let h = hypervisor(
            r#"{"kind": "libvirt", "source_uri": "qemu+ssh://a/system",
                "destination_uri": "qemu+ssh://b/system"}"#,
        )
        .unwrap();
        let HypervisorPlan::Libvirt {
            peer_uri,
            migrate_uri,
            bandwidth_mib_s,
            copy_storage,
            tls,
            ..
        } = &h
        else {
            panic!("not libvirt: {h:?}");
        };
        assert_eq!((peer_uri, migrate_uri), (&None, &None));
        assert_eq!(
            (bandwidth_mib_s, copy_storage, tls),
            (&None, &CopyStorage::None, &false)
        );
        // Defaults are left out when written back.
        let v = serde_json::to_value(&h).unwrap();
        assert!(
            v.get("copy_storage").is_none() && v.get("tls").is_none(),
            "{v}"
        );

        let full = hypervisor(
            r#"{"kind": "libvirt", "source_uri": "qemu+ssh://a/system",
                "destination_uri": "qemu+ssh://b/system", "max_downtime_ms": 300,
                "peer_uri": "qemu+tcp://10.0.0.2/system", "migrate_uri": "tcp://10.0.0.2",
                "listen_address": "10.0.0.2", "bandwidth_mib_s": 50,
                "copy_storage": "inc", "tls": true}"#,
        )
        .unwrap();
        assert!(matches!(
            &full,
            HypervisorPlan::Libvirt {
                copy_storage: CopyStorage::Inc,
                tls: true,
                ..
            }
        ));
        let back: HypervisorPlan =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(back, full);
        assert!(hypervisor(
            r#"{"kind": "libvirt", "source_uri": "a", "destination_uri": "b",
                "copy_storage": "some"}"#
        )
        .is_err());
    }

    #[test]
    fn libvirt_options_are_validated() {
        let base = super::super::tests::plan(false, QuiesceStyle::Observe);
        let with = |f: &dyn Fn(&mut HypervisorPlan)| {
            let mut p = base.clone();
            f(&mut p.hypervisor);
            match p.validate() {
                Err(PlanError::Invalid { field, .. }) => field,
                other => panic!("expected a field error, got {other:?}"),
            }
        };
        assert_eq!(base.validate(), Ok(()));
        assert_eq!(
            with(&|h| {
                if let HypervisorPlan::Libvirt {
                    bandwidth_mib_s, ..
                } = h
                {
                    *bandwidth_mib_s = Some(0);
                }
            }),
            "hypervisor.bandwidth_mib_s"
        );
        assert_eq!(
            with(&|h| {
                if let HypervisorPlan::Libvirt { peer_uri, .. } = h {
                    *peer_uri = Some(" ".into());
                }
            }),
            "hypervisor.peer_uri"
        );
    }
}
