//! [`MigrouteMover`]: the migroute mode of the lab's planned-migration scenario — the
//! product itself, driven as an operator would: a `migroute agent` on pe-a and on pe-b,
//! and one `migroute migrate --plan …` per move.
//!
//! Where things run, and why:
//! - each agent runs *inside* its PE's namespace (`ip netns exec`): its BGP sockets
//!   open in the process's namespace, and its session to the reflector pe-in must leave
//!   from the PE. It peers from the PE's link address towards pe-in (pe-a 10.0.12.2,
//!   pe-b 10.0.13.3), because the PE's own FRR already holds the loopback session; the
//!   next hop it announces is the PE's loopback, which OSPF carries to pe-in;
//! - each agent's API listens on its PE's loopback, so `migrate`, run inside pe-b's
//!   namespace, reaches both over the lab's core;
//! - pe-in learns the two agents as route-reflector clients at prepare time (vtysh),
//!   and forgets them in [`Mover::finish`], after the agents stopped: the naive mode
//!   then starts from FRR's routes alone;
//! - with `--ipv6` the VM's /128 moves with its /32 (the probe runs over IPv6): each
//!   agent has a second session to pe-in, over IPv6 from its link address (pe-a
//!   2001:db8:12::2, pe-b 2001:db8:13::3), which carries IPv6 unicast with that address
//!   as next hop; the session over IPv4 carries the /32 as before. The source's IPv6
//!   override goes into the VXLAN tunnel via the destination's inside link-local (a
//!   static neighbour), and the destination's delivery route covers the /128 too.
//!
//! After every move the mover checks what the scenario promises: the migration
//! completed, nothing of migroute's (`mr-*` links, proto-245 routes) is left in either
//! PE, and pe-in forwards the VM's address towards the PE of the site the VM is at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use migroute_labs::scenario::fib_watch::{Change, FibWatch, Prefix};
use migroute_labs::scenario::{
    Direction, DiskReport, HypervisorRecord, Mode, MoveRecord, Mover, Phase, ScenarioError, Site,
    Window,
};
use migroute_labs::Lab;
use serde_json::Value;

/// The community migroute's plans tag host routes with (besides NO_EXPORT).
const COMMUNITY: &str = "65000:100";
/// pe-a's and pe-b's interface towards their data center (the VM's side): the
/// agents' `vm_interface`, where a destination's delivery route leads.
const VM_INTERFACE: &str = "eth3";
/// The API port of both agents (each on its own PE's loopback, so no clash).
const API_PORT: u16 = 8179;
/// One `migrate` may take: prepare + pre-copy + pause + announce + convergence hold +
/// teardown, with margin for a loaded machine.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);
/// The same for a real guest, whose memory and disk cross the migration link first
/// (an emulated guest on a loaded 2-core machine is slow to copy).
const KVM_MIGRATE_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the kernel may take to show what a finished migration promised.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// One PE of the scenario as migroute sees it.
#[derive(Debug, Clone)]
struct Pe {
    /// Lab node (`pe-a`).
    node: String,
    /// Loopback: BGP next hop and API address.
    loopback: &'static str,
    /// Address towards pe-in: the agent's BGP source (and router id).
    uplink: &'static str,
    /// pe-in's address on that link: the agent's BGP peer.
    ingress_side: &'static str,
    /// pe-in's interface on that link.
    ingress_dev: &'static str,
    /// The IPv6 address towards pe-in: source and next hop of the IPv6 session.
    uplink6: &'static str,
    /// pe-in's IPv6 address on that link: the agent's IPv6 BGP peer.
    ingress_side6: &'static str,
    /// Tunnel endpoint on the pe-a/pe-b link.
    tunnel: &'static str,
}

impl Pe {
    fn url(&self) -> String {
        format!("http://{}:{API_PORT}", self.loopback)
    }
}

/// A running agent, stopped (SIGTERM, then SIGKILL) when dropped.
struct AgentProcess {
    name: String,
    log: PathBuf,
    child: Child,
}

impl AgentProcess {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The migroute [`Mover`].
pub struct MigrouteMover {
    site: Site,
    /// The `migroute` binary (this process's, so agent and orchestrator match it).
    exe: PathBuf,
    pe_a: Pe,
    pe_b: Pe,
    /// Scratch directory (configs, token, journals, plans, logs): inside the lab's
    /// state directory, so `lab down` removes it.
    dir: PathBuf,
    agents: Vec<AgentProcess>,
    /// Moves so far: the plan id and VNI of each run are fresh.
    moves: u32,
    precopy_ms: u64,
    /// `--ipv6`: move the VM's /128 too, over IPv6 sessions, and measure its FIB.
    ipv6: bool,
    /// The VM is a real guest moved by libvirt (`wan-migration-kvm`).
    kvm: bool,
    /// The guest moves by a plain `virsh migrate`, through migroute's libvirt hook and
    /// the agents' `detect_vm`; no orchestrator runs (`virsh-migrate-kvm`).
    hook: bool,
    /// The guest and its libvirtds, from `prepare` to `finish`.
    #[cfg(feature = "libvirt")]
    guest: Option<super::kvm_guest::KvmGuest>,
    /// The pause asked for by the last move (libvirt's downtime budget).
    last_pause: Duration,
    /// The guest's disk, checked in `finish`.
    disk: Option<DiskReport>,
}

impl MigrouteMover {
    /// The mover for `wan-migration`'s addresses; with `ipv6` the VM's IPv6 host route
    /// moves along and is the one measured.
    pub fn new(site: Site, ipv6: bool) -> Self {
        MigrouteMover {
            pe_a: Pe {
                node: site.pe_a.clone(),
                loopback: "10.255.0.2",
                uplink: "10.0.12.2",
                ingress_side: "10.0.12.1",
                ingress_dev: "eth2",
                uplink6: "2001:db8:12::2",
                ingress_side6: "2001:db8:12::1",
                tunnel: "10.0.23.2",
            },
            pe_b: Pe {
                node: site.pe_b.clone(),
                loopback: "10.255.0.3",
                uplink: "10.0.13.3",
                ingress_side: "10.0.13.1",
                ingress_dev: "eth3",
                uplink6: "2001:db8:13::3",
                ingress_side6: "2001:db8:13::1",
                tunnel: "10.0.23.3",
            },
            site,
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("migroute")),
            dir: PathBuf::new(),
            agents: Vec::new(),
            moves: 0,
            // Short: the scenario measures the switchover, not a simulated pre-copy.
            precopy_ms: 100,
            ipv6,
            kvm: false,
            hook: false,
            #[cfg(feature = "libvirt")]
            guest: None,
            last_pause: Duration::from_millis(100),
            disk: None,
        }
    }

    /// The mover of the KVM scenario (`wan-migration-kvm`): a real guest that libvirt
    /// moves with its disk while the orchestrator moves the network (IPv4).
    #[cfg(feature = "libvirt")]
    pub fn new_kvm(site: Site) -> Self {
        let mut m = MigrouteMover::new(site, false);
        m.kvm = true;
        m
    }

    /// The mover of `virsh-migrate-kvm`: the same guest, moved by `virsh migrate`
    /// alone; migroute's libvirt hook in both libvirtds and the agents' `detect_vm`
    /// move the network.
    #[cfg(feature = "libvirt")]
    pub fn new_kvm_hook(site: Site) -> Self {
        let mut m = MigrouteMover::new_kvm(site);
        m.hook = true;
        m
    }

    fn migrate_timeout(&self) -> Duration {
        if self.kvm {
            KVM_MIGRATE_TIMEOUT
        } else {
            MIGRATE_TIMEOUT
        }
    }

    /// The plan's `[hypervisor]` and `[storage]`: the lab's link move, or libvirt with
    /// the guest's disk.
    fn hypervisor_sections(&self, lab: &Lab, direction: Direction, pause: Duration) -> String {
        #[cfg(feature = "libvirt")]
        if let Some(g) = &self.guest {
            return g.plan_sections(direction, pause);
        }
        let (_, to) = self.site.bridges(direction);
        let topology =
            std::fs::canonicalize(&lab.topology.path).unwrap_or_else(|_| lab.topology.path.clone());
        format!(
            r#"[hypervisor]
kind = "lab"
topology = "{topology}"
node = "{vm}"
to = "{to}"
pause_ms = {pause_ms}
[storage]
kind = "none"
"#,
            topology = topology.display(),
            vm = self.site.vm,
            pause_ms = pause.as_millis(),
        )
    }

    /// The VM's host routes this mover moves: the /32, and the /128 with `ipv6`.
    fn prefixes(&self) -> Vec<Prefix> {
        let mut p = vec![Prefix::host(self.site.vm_v4)];
        if self.ipv6 {
            p.push(Prefix::host(self.site.vm_v6));
        }
        p
    }

    /// The host route the probe's family measures.
    fn measured(&self) -> Prefix {
        Prefix::host(self.site.vm_addr(self.ipv6))
    }

    fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// The agent config for `pe`: in its own namespace, a private journal, BGP to
    /// pe-in from the uplink (and with `ipv6` a second session over IPv6, whose local
    /// address is the IPv6 next hop), short convergence timers (the lab converges in
    /// well under a second; the hold only has to outlast the probe's counters).
    fn agent_config(&self, lab: &Lab, pe: &Pe) -> Result<String, ScenarioError> {
        let mut text = format!(
            r#"netns = "{netns}"
journal = "{journal}"
[pe]
router_id = "{uplink}"
loopback = "{loopback}"
tunnel_source = "{tunnel}"
tunnel_inside_pool = "169.254.0.0/16"
vm_interface = "{VM_INTERFACE}"
detect_vm = {detect_vm}
[api]
listen = "{loopback}:{API_PORT}"
token_file = "{token}"
[policy]
preference = "host-route"
communities = ["{COMMUNITY}"]
[convergence]
quiet_ms = 300
min_hold_ms = 500
converge_timeout_ms = 30000
counter_poll_ms = 50
[bgp]
asn = {asn}
[[bgp.peers]]
address = "{peer}"
remote_as = {asn}
local_address = "{uplink}"
"#,
            netns = lab.netns(&pe.node)?,
            // Per PE: the BGP speaker keeps its state next to the journal.
            journal = self.dir.join(&pe.node).join("journal.redb").display(),
            uplink = pe.uplink,
            loopback = pe.loopback,
            tunnel = pe.tunnel,
            token = self.token_file().display(),
            asn = self.site.asn,
            peer = pe.ingress_side,
            detect_vm = self.hook,
        );
        if self.ipv6 {
            text.push_str(&format!(
                r#"[[bgp.peers]]
address = "{peer}"
remote_as = {asn}
local_address = "{uplink6}"
"#,
                peer = pe.ingress_side6,
                asn = self.site.asn,
                uplink6 = pe.uplink6,
            ));
        }
        Ok(text)
    }

    fn start_agent(&self, lab: &Lab, pe: &Pe) -> Result<AgentProcess, ScenarioError> {
        let own = self.dir.join(&pe.node);
        std::fs::create_dir_all(&own).map_err(|source| ScenarioError::Write {
            path: own.clone(),
            source,
        })?;
        let config = self.dir.join(format!("{}.toml", pe.node));
        write(&config, &self.agent_config(lab, pe)?)?;
        let log = self.dir.join(format!("{}.log", pe.node));
        let err = std::fs::File::create(&log).map_err(|source| ScenarioError::Write {
            path: log.clone(),
            source,
        })?;
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.netns(&pe.node)?])
            .arg(&self.exe)
            .args(["agent", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| fail(format!("cannot start the agent of {}: {e}", pe.node)))?;
        let mut agent = AgentProcess {
            name: pe.node.clone(),
            log,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !agent.logs().contains("API listening") {
            if let Ok(Some(st)) = agent.child.try_wait() {
                return Err(fail(format!(
                    "the agent of {} exited with {st}: {}",
                    pe.node,
                    agent.logs()
                )));
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "the agent of {} is not listening after 20 s: {}",
                    pe.node,
                    agent.logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(agent)
    }

    /// Adds (or with `remove`, deletes) the agents as route-reflector clients of the
    /// ingress PE, with the lab's fast timers.
    ///
    /// pe-in reflects the agents' host routes to pe-a's and pe-b's FRR too: right after
    /// A→B pe-a's FIB holds pe-b's /32 of the VM. On the way back (B→A) pe-a is the
    /// destination, and the agent's delivery route (the VM's /32 out of `eth3`, in
    /// migroute's table, ahead of `main`) is what keeps pe-a from sending the traffic
    /// that leaves the tunnel back to pe-b; no filter is needed here.
    fn ingress_neighbours(&self, lab: &Lab, remove: bool) -> Result<(), ScenarioError> {
        let mut lines = vec!["configure terminal".to_string()];
        lines.push(format!("router bgp {}", self.site.asn));
        let mut families = vec![("ipv4", [self.pe_a.uplink, self.pe_b.uplink])];
        if self.ipv6 {
            families.push(("ipv6", [self.pe_a.uplink6, self.pe_b.uplink6]));
        }
        for (_, neighbours) in &families {
            for addr in neighbours {
                let n = format!("neighbor {addr}");
                if remove {
                    lines.push(format!("no {n} remote-as {}", self.site.asn));
                } else {
                    lines.push(format!("{n} remote-as {}", self.site.asn));
                    lines.push(format!("{n} timers 3 9"));
                    lines.push(format!("{n} timers connect 1"));
                }
            }
        }
        if !remove {
            // Each session carries its own family: the IPv6 one has an IPv6 next hop.
            for (af, neighbours) in &families {
                lines.push(format!("address-family {af} unicast"));
                for addr in neighbours {
                    lines.push(format!("neighbor {addr} activate"));
                    lines.push(format!("neighbor {addr} route-reflector-client"));
                }
                lines.push("exit-address-family".into());
            }
        }
        lines.push("exit".into());
        lines.push("end".into());
        let action = if remove {
            "remove the agents' sessions"
        } else {
            "add the agents' sessions"
        };
        vtysh(lab, &self.site.ingress, action, &lines).map(|_| ())
    }

    /// The plan of one move: a fresh id and VNI, the lab hypervisor with the
    /// scenario's pause, the short convergence hold of the agents' configs.
    fn plan(&self, lab: &Lab, direction: Direction, pause: Duration, id: &str) -> String {
        let (src, dst) = match direction {
            Direction::AToB => (&self.pe_a, &self.pe_b),
            Direction::BToA => (&self.pe_b, &self.pe_a),
        };
        let slow = if self.kvm { 4 } else { 1 };
        format!(
            r#"id = "{id}"
[vm]
name = "{vm}"
prefixes = [{prefixes}]
[source]
agent_url = "{src_url}"
tunnel_endpoint = "{src_tunnel}"
[destination]
agent_url = "{dst_url}"
tunnel_endpoint = "{dst_tunnel}"
[tunnel]
kind = "vxlan"
vni = {vni}
{sections}[policy.route]
preference = "host-route"
communities = ["{COMMUNITY}"]
[policy.convergence]
quiet_ms = 300
min_hold_ms = 500
converge_timeout_ms = 30000
[timeouts]
prepare_ms = 15000
migrate_ms = {migrate_ms}
switchover_ms = 2000
resume_ms = 10000
announce_ms = 15000
converge_ms = 30000
teardown_ms = 15000
rollback_step_ms = 15000
"#,
            vm = self.site.vm,
            prefixes = self
                .prefixes()
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", "),
            src_url = src.url(),
            src_tunnel = src.tunnel,
            dst_url = dst.url(),
            dst_tunnel = dst.tunnel,
            vni = 6000 + self.moves,
            sections = self.hypervisor_sections(lab, direction, pause),
            migrate_ms = 30000 * slow,
        )
    }

    /// Runs `migroute migrate --json` inside pe-b's namespace and returns its report
    /// line (the last one).
    fn migrate(&self, lab: &Lab, plan: &Path, id: &str) -> Result<Value, ScenarioError> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lab.netns(&self.pe_b.node)?])
            .arg(&self.exe)
            .args(["migrate", "--json", "--plan"])
            .arg(plan)
            .arg("--journal")
            .arg(self.dir.join("orchestrator.redb"))
            .arg("--token-file")
            .arg(self.token_file())
            .arg("--lab-precopy-ms")
            .arg(self.precopy_ms.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot start migrate: {e}")))?;
        // Read on threads so a full pipe cannot stall it; wait with a deadline.
        let mut so = child.stdout.take().expect("piped");
        let mut se = child.stderr.take().expect("piped");
        let out_t = std::thread::spawn(move || read_all(&mut so));
        let err_t = std::thread::spawn(move || read_all(&mut se));
        let timeout = self.migrate_timeout();
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(fail(format!("waiting for migrate: {e}"))),
            }
        };
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        let context = || {
            let agents: Vec<String> = self
                .agents
                .iter()
                .map(|a| format!("agent {}:\n{}", a.name, tail(&a.logs(), 30)))
                .collect();
            format!(
                "migrate stdout:\n{}\nstderr:\n{}\n{}",
                tail(&stdout, 30),
                tail(&stderr, 30),
                agents.join("\n")
            )
        };
        let Some(status) = status else {
            return Err(fail(format!(
                "migration {id} did not end within {timeout:?}\n{}",
                context()
            )));
        };
        let report: Value = stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| fail(format!("migration {id}: no report line\n{}", context())))?;
        if !status.success() || report["phase"] != "completed" {
            return Err(fail(format!(
                "migration {id} ended {} ({status})\n{}",
                report["phase"],
                context()
            )));
        }
        Ok(report)
    }

    /// migroute's kernel objects in a node: `mr-*` links and routes of either family in
    /// table 4245 or tagged proto 245, except,
    /// with `delivering`, the delivery routes out of the VM interface (the VM's site
    /// keeps them while its agent announces the VM).
    fn leftovers(lab: &Lab, node: &str, delivering: bool) -> Result<String, ScenarioError> {
        let out = lab.sh(
            node,
            "ip -o link show | grep -o 'mr-[^:@ ]*' || true; \
             for f in -4 -6; do ip $f route show table all \
               | grep -E '(table (4245|migroute)|proto (245|migroute))( |$)' || true; done",
        )?;
        let delivery = format!(" dev {VM_INTERFACE} ");
        let kept = |l: &str| delivering && l.contains(&delivery);
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !kept(l))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// migroute's `ip rule`s in a node, both families (priority 4245, `proto 245`).
    fn rules(lab: &Lab, node: &str) -> Result<String, ScenarioError> {
        let out = lab.sh(
            node,
            "ip -4 rule show priority 4245; ip -6 rule show priority 4245",
        )?;
        Ok(out.trim().to_string())
    }

    /// Removes migroute's rules from both PEs once the agents are gone: an agent keeps
    /// them while it runs (they cost nothing with an empty table), and the next mode
    /// must start from a kernel without migroute.
    fn remove_rules(&self, lab: &Lab) -> Result<(), ScenarioError> {
        for pe in [&self.pe_a, &self.pe_b] {
            lab.sh(
                &pe.node,
                "while ip -4 rule del priority 4245 2>/dev/null; do :; done; \
                 while ip -6 rule del priority 4245 2>/dev/null; do :; done; true",
            )?;
        }
        Ok(())
    }

    /// Removes migroute's routes from both PEs once the agents are gone: the last
    /// destination's delivery route outlives its agent and would steer the other
    /// modes' traffic to a data center the VM may have left.
    fn flush_routes(&self, lab: &Lab) -> Result<(), ScenarioError> {
        for pe in [&self.pe_a, &self.pe_b] {
            lab.sh(
                &pe.node,
                "ip route flush table all proto 245 2>/dev/null || true; \
                 ip -6 route flush table all proto 245 2>/dev/null || true",
            )?;
        }
        Ok(())
    }

    /// What a completed migration promises, checked in the kernel: nothing of
    /// migroute's left on either PE but the new site's delivery routes, and the ingress
    /// PE holding exactly one BGP path per moved host route (the new site's agent's)
    /// and forwarding the VM's addresses to the PE of the VM's new site.
    /// `None`: before the first move (VM at site A, no host route announced).
    fn check_converged(
        &self,
        lab: &Lab,
        direction: Option<Direction>,
    ) -> Result<(), ScenarioError> {
        let new_site = match direction {
            Some(Direction::AToB) => &self.pe_b,
            Some(Direction::BToA) | None => &self.pe_a,
        };
        let when = direction.map_or("before the first move".to_string(), |d| {
            format!("after migroute's {d} move")
        });
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut wrong = Vec::new();
            for pe in [&self.pe_a, &self.pe_b] {
                let delivering = direction.is_some() && pe.node == new_site.node;
                let left = Self::leftovers(lab, &pe.node, delivering)?;
                if !left.is_empty() {
                    wrong.push(format!(
                        "{} keeps migroute objects: {}",
                        pe.node,
                        left.replace('\n', "; ")
                    ));
                }
            }
            for prefix in self.prefixes() {
                let (af, next_hop) = if prefix.addr.is_ipv4() {
                    ("ipv4", new_site.uplink)
                } else {
                    ("ipv6", new_site.uplink6)
                };
                // Exactly one BGP path for the VM, from the destination's agent: the
                // source's earlier announcement (it was the destination of the
                // previous move) must have been withdrawn, not merely outranked.
                let show = vtysh(
                    lab,
                    &self.site.ingress,
                    "show the VM's BGP paths",
                    &[format!("show bgp {af} unicast {prefix} json")],
                )?;
                let peers = bgp_path_peers(&show);
                let expected: &[&str] = if direction.is_some() {
                    &[next_hop]
                } else {
                    &[]
                };
                if peers != expected {
                    wrong.push(format!(
                        "{} holds BGP paths for {prefix} from {peers:?}, expected {expected:?}",
                        self.site.ingress
                    ));
                }
                // Out of the link to the new site's PE. (Before the first move the
                // /24 or /64 of site A covers the VM, via pe-a's loopback, which
                // OSPF resolves over that link; OSPFv3's next hops are link-local.)
                let route = lab.sh(&self.site.ingress, &format!("ip route get {}", prefix.addr))?;
                let dev = format!(" dev {} ", new_site.ingress_dev);
                let via = format!("via {next_hop} ");
                if !route.contains(&dev) || (direction.is_some() && !route.contains(&via)) {
                    wrong.push(format!(
                        "{} routes the VM {}, not{}{}",
                        self.site.ingress,
                        route.trim(),
                        if direction.is_some() {
                            format!(" {via}")
                        } else {
                            String::new()
                        },
                        dev.trim_end()
                    ));
                }
            }
            if wrong.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ScenarioError::Precondition(format!(
                    "{when}: {}",
                    wrong.join("; ")
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Boots the KVM scenario's guest at site A.
    #[cfg(feature = "libvirt")]
    fn start_guest(&mut self, lab: &Lab) -> Result<(), ScenarioError> {
        self.guest = None;
        let dir = self.dir.join("kvm");
        std::fs::create_dir_all(&dir).map_err(|source| ScenarioError::Write {
            path: dir.clone(),
            source,
        })?;
        let hook = if self.hook {
            Some(self.hook_setup(lab, &dir)?)
        } else {
            None
        };
        self.guest = Some(super::kvm_guest::KvmGuest::start(
            lab, &self.site, &dir, hook,
        )?);
        Ok(())
    }

    /// The libvirt hook of both sites: dc-a's reaches pe-a's agent as `[local]`,
    /// dc-b's pe-b's.
    #[cfg(feature = "libvirt")]
    fn hook_setup(
        &self,
        lab: &Lab,
        dir: &Path,
    ) -> Result<super::kvm_hook::HookSetup, ScenarioError> {
        use super::kvm_hook::{HookSetup, HookSite};
        let site = |name, local: &Pe, peer: &Pe| -> Result<HookSite, ScenarioError> {
            Ok(HookSite {
                name,
                pe_netns: lab.netns(&local.node)?,
                local_url: local.url(),
                local_endpoint: local.tunnel.into(),
                peer_url: peer.url(),
                peer_endpoint: peer.tunnel.into(),
            })
        };
        Ok(HookSetup {
            exe: self.exe.clone(),
            token_file: self.token_file(),
            dir: dir.to_owned(),
            prefixes: self.prefixes().iter().map(|p| p.to_string()).collect(),
            community: COMMUNITY.into(),
            a: site("a", &self.pe_a, &self.pe_b)?,
            b: site("b", &self.pe_b, &self.pe_a)?,
        })
    }

    /// `GET path` of `pe`'s agent, from inside its namespace (its API listens on the
    /// PE's loopback).
    #[cfg(feature = "libvirt")]
    fn agent_get(&self, lab: &Lab, pe: &Pe, path: &str) -> Result<Value, ScenarioError> {
        let url = format!("{}{path}", pe.url());
        let token = std::fs::read_to_string(self.token_file())
            .map_err(|e| fail(format!("reading the agents' token: {e}")))?
            .trim()
            .to_owned();
        let get = url.clone();
        let got = migroute_labs::netns::run_in(&lab.netns(&pe.node)?, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let resp = reqwest::Client::new()
                    .get(&get)
                    .bearer_auth(token)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                let body: Value = resp.json().await.map_err(|e| e.to_string())?;
                if status.is_success() {
                    Ok(body)
                } else {
                    Err(format!("{status}: {body}"))
                }
            })
        })?;
        got.map_err(|e| fail(format!("GET {url}: {e}")))
    }

    /// The ids of the migrations `pe`'s agent holds.
    #[cfg(feature = "libvirt")]
    fn agent_migration_ids(&self, lab: &Lab, pe: &Pe) -> Result<Vec<String>, ScenarioError> {
        let list = self.agent_get(lab, pe, "/v1/migrations")?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// One move of `virsh-migrate-kvm`: `virsh migrate` alone. The destination's hook
    /// prepares both agents; the destination's agent hears the guest after it resumes
    /// and announces, and has the source switch over; both converge and tear down by
    /// themselves. The mover only watches: the migration the hook created, its phases
    /// on both agents, the ingress FIB.
    #[cfg(feature = "libvirt")]
    fn run_hook_move(
        &mut self,
        lab: &Lab,
        direction: Direction,
        pause: Duration,
    ) -> Result<MoveRecord, ScenarioError> {
        use super::kvm_hook::{hook_record, transitions, HOOK_PATH};
        let (src, dst) = match direction {
            Direction::AToB => (self.pe_a.clone(), self.pe_b.clone()),
            Direction::BToA => (self.pe_b.clone(), self.pe_a.clone()),
        };
        let before = self.agent_migration_ids(lab, &dst)?;
        let watch = FibWatch::open(lab, &self.site.ingress)?;
        let host = self.measured();
        let wait = self.migrate_timeout() + Duration::from_secs(5);
        let watcher = std::thread::spawn(move || watch.wait(host, Change::Added, wait));
        let acked_before = self.guest_acked(lab);
        let guest = self.guest.as_ref().expect("the hook variant has a guest");
        let context = |guest: &super::kvm_guest::KvmGuest| {
            let agents: Vec<String> = self
                .agents
                .iter()
                .map(|a| format!("agent {}:\n{}", a.name, tail(&a.logs(), 30)))
                .collect();
            format!("{}\n{}", guest.hook_logs(), agents.join("\n"))
        };
        let (mv, window) = guest
            .virsh_move(direction, pause, self.migrate_timeout())
            .map_err(|e| fail(format!("{e}\n{}", context(guest))))?;
        let new: Vec<String> = self
            .agent_migration_ids(lab, &dst)?
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        let [id] = new.as_slice() else {
            return Err(fail(format!(
                "{} holds {} new migrations after virsh migrate ({new:?}), expected the \
                 hook's one\n{}",
                dst.node,
                new.len(),
                context(guest)
            )));
        };
        // Both agents go the whole way by themselves.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (went_src, went_dst) = loop {
            let path = format!("/v1/migrations/{id}");
            let (s, d) = (
                transitions(&self.agent_get(lab, &src, &path)?),
                transitions(&self.agent_get(lab, &dst, &path)?),
            );
            let done = |t: &[(String, u64)]| t.last().is_some_and(|(p, _)| p == "torn-down");
            let ended = |t: &[(String, u64)]| {
                t.last()
                    .is_some_and(|(p, _)| p == "torn-down" || p == "aborted" || p == "failed")
            };
            if done(&s) && done(&d) {
                break (s, d);
            }
            if (ended(&s) && ended(&d)) || Instant::now() >= deadline {
                return Err(fail(format!(
                    "{id}: source {s:?}, destination {d:?}, not both torn down\n{}",
                    context(guest)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for (who, went) in [(&src, &went_src), (&dst, &went_dst)] {
            let phases: Vec<&str> = went.iter().map(|(p, _)| p.as_str()).collect();
            if phases != HOOK_PATH {
                return Err(fail(format!(
                    "{id} at {}: went {phases:?}, not {HOOK_PATH:?}\n{}",
                    who.node,
                    context(guest)
                )));
            }
        }
        let t_fib = watcher
            .join()
            .map_err(|_| fail("the FIB watch thread panicked".into()))?;
        self.check_converged(lab, Some(direction))?;
        let mut rec = hook_record(&mv, window, &went_src, &went_dst, t_fib.ok());
        self.guest_moved(direction);
        if let Some(h) = rec.hypervisor.as_mut() {
            h.guest_acked_before = acked_before;
            h.guest_acked_after = self.guest_acked(lab);
        }
        Ok(rec)
    }

    #[cfg(not(feature = "libvirt"))]
    fn start_guest(&mut self, _: &Lab) -> Result<(), ScenarioError> {
        Err(ScenarioError::ModeUnavailable {
            mode: Mode::Migroute,
            why: "a real guest needs a migroute built with `--features libvirt`".into(),
        })
    }

    /// The guest's last acknowledged disk record, if it answers.
    fn guest_acked(&self, lab: &Lab) -> Option<u64> {
        #[cfg(feature = "libvirt")]
        if let Some(g) = &self.guest {
            return g.status(lab).ok().and_then(|s| s.acked);
        }
        let _ = lab;
        None
    }

    fn guest_moved(&mut self, direction: Direction) {
        #[cfg(feature = "libvirt")]
        if let Some(g) = &mut self.guest {
            g.moved(direction);
        }
        let _ = direction;
    }

    /// The end of the KVM scenario: the guest stops writing, one more (unmeasured)
    /// move takes it across idle, and both disks are checked (see `kvm_guest`).
    #[cfg(feature = "libvirt")]
    fn check_guest_disk(&mut self, lab: &Lab) -> Result<(), ScenarioError> {
        let Some(guest) = &self.guest else {
            return Ok(());
        };
        let last = guest.stop_writes(lab)?;
        let back = if guest.at_b() {
            Direction::BToA
        } else {
            Direction::AToB
        };
        let pause = self.last_pause;
        self.run_move(lab, back, pause)?;
        let guest = self.guest.as_mut().expect("checked above");
        self.disk = Some(guest.disk_report(lab, &last)?);
        guest.stop();
        self.guest = None;
        Ok(())
    }

    #[cfg(not(feature = "libvirt"))]
    fn check_guest_disk(&mut self, _: &Lab) -> Result<(), ScenarioError> {
        Ok(())
    }

    fn stop_agents(&mut self) {
        for a in &mut self.agents {
            a.stop();
        }
        self.agents.clear();
    }
}

impl Mover for MigrouteMover {
    fn mode(&self) -> Mode {
        Mode::Migroute
    }

    fn prepare(&mut self, lab: &Lab) -> Result<(), ScenarioError> {
        let s = self.site.clone();
        if !self.kvm && s.vm_at_b(lab) {
            lab.move_link_end(&s.dc_b, &s.port, &s.dc_a)?;
        }
        self.stop_agents();
        self.flush_routes(lab)?;
        self.dir = lab.state_dir().join("migroute-scenario");
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).map_err(|source| ScenarioError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let token = format!("scenario-{}-{}\n", std::process::id(), unix_ns());
        write(&self.token_file(), &token)?;
        self.ingress_neighbours(lab, false)?;
        let (a, b) = (self.pe_a.clone(), self.pe_b.clone());
        self.agents.push(self.start_agent(lab, &a)?);
        self.agents.push(self.start_agent(lab, &b)?);
        // pe-in's sessions to the agents are among the lab's FRR sessions now.
        lab.wait_all_established(Duration::from_secs(30))?;
        self.check_converged(lab, None)?;
        if self.kvm {
            self.start_guest(lab)?;
        }
        Ok(())
    }

    fn run_move(
        &mut self,
        lab: &Lab,
        direction: Direction,
        pause: Duration,
    ) -> Result<MoveRecord, ScenarioError> {
        self.moves += 1;
        self.last_pause = pause;
        #[cfg(feature = "libvirt")]
        if self.hook {
            return self.run_hook_move(lab, direction, pause);
        }
        let id = format!("scenario-{}-{}", std::process::id(), self.moves);
        let plan_path = self.dir.join(format!("{id}.toml"));
        write(&plan_path, &self.plan(lab, direction, pause, &id))?;
        // The ingress PE's FIB is watched from before the migration starts, on a
        // thread: the event's arrival time is the measurement.
        let watch = FibWatch::open(lab, &self.site.ingress)?;
        let host = self.measured();
        let wait = self.migrate_timeout() + Duration::from_secs(5);
        let watcher = std::thread::spawn(move || watch.wait(host, Change::Added, wait));
        let acked_before = self.guest_acked(lab);
        let report = self.migrate(lab, &plan_path, &id);
        // The FIB changed during `migrate` (announcing precedes its end); a failed
        // migration may never change it, so only then is the watcher abandoned.
        let report = report?;
        let t_fib = watcher
            .join()
            .map_err(|_| fail("the FIB watch thread panicked".into()))?;
        self.check_converged(lab, Some(direction))?;
        let mut rec = record(&report, t_fib.ok())?;
        if self.kvm {
            self.guest_moved(direction);
            let h = rec.hypervisor.get_or_insert_with(HypervisorRecord::default);
            h.guest_acked_before = acked_before;
            h.guest_acked_after = self.guest_acked(lab);
        }
        Ok(rec)
    }

    fn disk_report(&self) -> Option<DiskReport> {
        self.disk.clone()
    }

    fn finish(&mut self, lab: &Lab) -> Result<(), ScenarioError> {
        if self.kvm {
            self.check_guest_disk(lab)?;
        }
        self.stop_agents();
        self.flush_routes(lab)?;
        self.remove_rules(lab)?;
        for pe in [&self.pe_a, &self.pe_b] {
            let left = Self::leftovers(lab, &pe.node, false)?;
            let rules = Self::rules(lab, &pe.node)?;
            if !left.is_empty() || !rules.is_empty() {
                return Err(fail(format!(
                    "{} keeps migroute objects after its agent stopped: {}",
                    pe.node,
                    [left, rules].join("\n").trim().replace('\n', "; ")
                )));
            }
        }
        self.ingress_neighbours(lab, true)?;
        // The agents' host routes leave pe-in with their sessions.
        let deadline = Instant::now() + Duration::from_secs(15);
        for host in self.prefixes() {
            while migroute_labs::scenario::naive::in_fib(lab, &self.site.ingress, host)? {
                if Instant::now() >= deadline {
                    return Err(ScenarioError::Precondition(format!(
                        "{} still routes {host} after migroute's agents stopped",
                        self.site.ingress
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for MigrouteMover {
    fn drop(&mut self) {
        self.stop_agents();
    }
}

/// The [`MoveRecord`] of a completed migration's report: the lab hypervisor's pause
/// window, the orchestrator's phases, and announce → ingress FIB.
fn record(report: &Value, t_fib: Option<u64>) -> Result<MoveRecord, ScenarioError> {
    let ms = |v: &Value| v.as_u64().map(|m| m * 1_000_000);
    let w = &report["pause_window"];
    let (Some(start), Some(end)) = (ms(&w["start_ms"]), ms(&w["end_ms"])) else {
        return Err(fail(format!("the report has no pause window: {report}")));
    };
    let libvirt = &report["libvirt"];
    let pause = Window {
        start_unix_ns: start,
        end_unix_ns: end,
    }
    .with_downtime(libvirt["job"]["downtime_ms"].as_f64());
    let start = pause.start_unix_ns;
    let mut phases = vec![Phase {
        name: "pause".into(),
        window: pause,
    }];
    let mut announce_at = None;
    for p in report["phases"].as_array().into_iter().flatten() {
        let (Some(name), Some(s), Some(e)) = (p["phase"].as_str(), ms(&p["start"]), ms(&p["end"]))
        else {
            continue;
        };
        if name == "planned" {
            // Created and started in the same instant: no duration to show.
            continue;
        }
        if name == "announcing" && announce_at.is_none() {
            announce_at = Some(s);
        }
        phases.push(Phase {
            name: name.to_string(),
            window: Window {
                start_unix_ns: s,
                end_unix_ns: e,
            },
        });
    }
    let hypervisor = (!libvirt.is_null()).then(|| {
        let job = &libvirt["job"];
        let t = &libvirt["timeline"];
        // libvirt copies the disks first, then memory: the storage phases.
        if let (Some(s), Some(m)) = (ms(&t["started_ms"]), ms(&t["memory_started_ms"])) {
            phases.push(Phase {
                name: "disk-copy".into(),
                window: Window {
                    start_unix_ns: s,
                    end_unix_ns: m,
                },
            });
            phases.push(Phase {
                name: "memory-copy".into(),
                window: Window {
                    start_unix_ns: m,
                    end_unix_ns: start.max(m),
                },
            });
        }
        HypervisorRecord {
            downtime_ms: job["downtime_ms"].as_f64(),
            migration_ms: job["time_elapsed_ms"].as_f64(),
            memory_bytes: job["memory_processed"].as_u64(),
            disk_bytes: job["disk_processed"].as_u64(),
            guest_acked_before: None,
            guest_acked_after: None,
        }
    });
    phases.sort_by_key(|p| p.window.start_unix_ns);
    // The announcing phase is entered (epoch ms) just before the destination is told
    // to announce: the FIB event after it is the announcement's arrival.
    let announce_to_ingress_fib_ms = match (announce_at, t_fib) {
        (Some(a), Some(f)) if f >= a => Some(migroute_labs::scenario::ns_to_ms(f - a)),
        _ => None,
    };
    Ok(MoveRecord {
        pause,
        phases,
        announce_to_ingress_fib_ms,
        hypervisor,
    })
}

/// Runs vtysh lines against `node`'s FRR; FRR's `% …` complaints are errors.
fn vtysh(lab: &Lab, node: &str, action: &str, lines: &[String]) -> Result<String, ScenarioError> {
    let frr = |detail: String| ScenarioError::Frr {
        node: node.to_string(),
        action: action.into(),
        detail,
    };
    let mut c = Command::new("vtysh");
    c.arg("--vty_socket")
        .arg(lab.state_dir().join("nodes").join(node));
    for l in lines {
        c.args(["-c", l]);
    }
    let out = c.output().map_err(|e| frr(e.to_string()))?;
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || said.contains("% ") {
        return Err(frr(said.trim().to_string()));
    }
    Ok(said)
}

/// The peers whose path to `prefix` the ingress PE holds, from `show bgp … json`.
fn bgp_path_peers(show: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(show).unwrap_or(Value::Null);
    v["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["peer"]["peerId"].as_str().map(str::to_string))
        .collect()
}

fn fail(why: String) -> ScenarioError {
    ScenarioError::Precondition(why)
}

fn write(path: &Path, text: &str) -> Result<(), ScenarioError> {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| ScenarioError::Write {
            path: path.to_path_buf(),
            source,
        })
}

fn read_all(r: &mut impl std::io::Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Now, Unix ns: the probe's clock.
pub(super) fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_takes_the_pause_window_phases_and_announce_to_fib() {
        let report = serde_json::json!({
            "phase": "completed",
            "pause_window": {"start_ms": 1000, "end_ms": 1105},
            "phases": [
                {"phase": "planned", "start": 900, "end": 900},
                {"phase": "switching-over", "start": 1000, "end": 1010},
                {"phase": "announcing", "start": 1110, "end": 1120},
                {"phase": "completed", "start": 2000, "end": null}
            ]
        });
        let r = record(&report, Some(1_150_500_000)).unwrap();
        assert_eq!(r.pause.start_unix_ns, 1_000_000_000);
        assert_eq!(r.pause.end_unix_ns, 1_105_000_000);
        let names: Vec<&str> = r.phases.iter().map(|p| p.name.as_str()).collect();
        // The final phase has no end and is left out.
        assert_eq!(names, ["pause", "switching-over", "announcing"]);
        assert_eq!(r.announce_to_ingress_fib_ms, Some(40.5));
        // No FIB event (or one before the announce): no figure rather than a wrong one.
        assert_eq!(
            record(&report, None).unwrap().announce_to_ingress_fib_ms,
            None
        );
        assert!(record(&serde_json::json!({"phases": []}), None).is_err());
    }

    #[test]
    fn bgp_path_peers_from_frr_json() {
        let show = r#"{"prefix":"10.10.0.5/32","paths":[
            {"peer":{"peerId":"10.0.13.3","routerId":"10.0.13.3"},"bestpath":{"overall":true}},
            {"peer":{"peerId":"10.0.12.2"}}]}"#;
        assert_eq!(bgp_path_peers(show), ["10.0.13.3", "10.0.12.2"]);
        // Not in the table: FRR prints `{}`.
        assert!(bgp_path_peers("{}").is_empty());
        assert!(bgp_path_peers("").is_empty());
    }
}
