//! Carrying out one command: the kernel through [`Dataplane`], routes through
//! [`RouteAnnouncer`], notices to peers and logs.
//!
//! The orchestration crate's `executor::execute` is synchronous; inside tokio the
//! runtime mirrors its loop step by step (see `runtime.rs`) and calls [`perform`] for
//! each non-`Persist` command, which is why this is async.
//!
//! # Delivery routes (destination)
//!
//! With `pe.vm_interface` set, `EnsureDelivery` also installs the VM's host routes
//! on-link on that data-center-facing interface, in migroute's table (proto 245),
//! whose rule sits before `main`. The destination then never depends on what BGP put
//! in its FIB: right after an A→B move, pe-a's `main` holds pe-b's /32 of the VM, and
//! on the way back (B→A) pe-a would otherwise send what leaves the tunnel back to pe-b
//! (a loop until pe-b's withdraw arrives).
//!
//! The route outlives teardown: the VM lives here and this PE keeps announcing it, and
//! nothing else guarantees a route to the VM's /32 out of the right interface (the
//! subnet may be the other site's). It goes when the prefix is withdrawn (`Withdraw`,
//! the next move away releasing it), or at `DisableDelivery` when nothing is announced
//! (an abort: the VM stays at the source). When this PE becomes the source of the next
//! move, its override replaces the delivery route (same table and prefix), so the
//! delivery route is only ever deleted by prefix *and* device. Recovery keeps it
//! through [`delivery_prefixes`], or its reconcile would remove it as an orphan.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnetwork::{IpNetwork, Ipv4Network};
use migroute_orchestration::pe::{
    Action, Command, DesiredState, Notice, Role, TunnelKind, TunnelSpec,
};
use migroute_tunnel as tunnel;
use migroute_tunnel::{Inside, NetlinkHandle, Netns, Override, Prefix};
use thiserror::Error;

use super::announcer::{AnnounceError, RouteAnnouncer};
use super::metrics::Metrics;
use super::sysctl;
use crate::config::PeConfig;

/// A kernel action failed; the text is recorded in the migration.
#[derive(Debug, Error)]
pub enum DataplaneError {
    /// The tunnel crate failed (names the object and errno).
    #[error(transparent)]
    Netlink(#[from] tunnel::Error),
    /// A sysctl could not be written.
    #[error("sysctl {key} in netns {netns}: {source}")]
    Sysctl {
        /// Namespace.
        netns: Netns,
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Anything the fake data plane of tests wants to fail with.
    #[cfg(test)]
    #[error("{0}")]
    Other(String),
}

/// What the kernel reconcile did at start.
#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    /// Tunnels created or recreated.
    pub created: Vec<String>,
    /// Tunnels deleted (orphans).
    pub deleted: Vec<String>,
    /// Tunnels found right and kept.
    pub adopted: Vec<String>,
    /// Overrides (re)installed.
    pub overrides: usize,
}

/// The kernel side of a PE, as the runtime needs it. The real one is
/// [`KernelDataplane`]; tests use a fake. Every undo must succeed when there is nothing
/// to undo.
pub trait Dataplane: Send + 'static {
    /// Creates (or adopts) the tunnel for this side of the move.
    fn create_tunnel(
        &mut self,
        tunnel: &TunnelSpec,
        role: Role,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;
    /// Deletes the tunnel; absent is fine.
    fn delete_tunnel(
        &mut self,
        tunnel: &TunnelSpec,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;
    /// Source: host routes into the tunnel.
    fn install_override(
        &mut self,
        prefixes: &[IpNetwork],
        tunnel: &TunnelSpec,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;
    /// Source: removes them; absent is fine.
    fn remove_override(
        &mut self,
        prefixes: &[IpNetwork],
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;
    /// Destination: forward what arrives through the tunnel.
    fn ensure_delivery(
        &mut self,
        tunnel: &TunnelSpec,
        role: Role,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;
    /// Destination: stop forwarding from the tunnel; absent tunnel is fine.
    fn disable_delivery(
        &mut self,
        tunnel: &TunnelSpec,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;
    /// Destination: the VM's host routes to the data-center interface (see
    /// [`Naming::delivery_routes`]); nothing without one configured.
    fn install_delivery_routes(
        &mut self,
        prefixes: &[IpNetwork],
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send {
        let _ = prefixes;
        async { Ok(()) }
    }
    /// Removes delivery routes (only those leaving through the data-center
    /// interface: an override for the same prefix stays); absent is fine.
    fn remove_delivery_routes(
        &mut self,
        prefixes: &[IpNetwork],
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send {
        let _ = prefixes;
        async { Ok(()) }
    }
    /// Packets through the tunnel so far (rx + tx).
    fn tunnel_packets(
        &mut self,
        tunnel: &TunnelSpec,
    ) -> impl Future<Output = Result<u64, DataplaneError>> + Send;
    /// Makes the kernel hold exactly `desired` (with each tunnel's role).
    fn reconcile(
        &mut self,
        desired: &DesiredState,
        roles: &[(TunnelSpec, Role)],
    ) -> impl Future<Output = Result<ReconcileReport, DataplaneError>> + Send;
}

/// Kernel object names and addresses, derived from the request alone so that a restart
/// (or the peer PE) finds the same ones without any extra state.
#[derive(Debug, Clone)]
pub struct Naming {
    /// Local underlay address.
    pub source: IpAddr,
    /// Pinned underlay device.
    pub underlay: Option<String>,
    /// Pool of inside /31s.
    pub pool: Ipv4Network,
    /// Data-center-facing interface: where delivery routes lead (see
    /// [`Naming::delivery_routes`]).
    pub vm_interface: Option<String>,
}

impl Naming {
    /// From the PE section of the config.
    pub fn from_config(pe: &PeConfig) -> Self {
        Naming {
            source: pe.tunnel_source,
            underlay: pe.tunnel_underlay.clone(),
            pool: pe.tunnel_inside_pool,
            vm_interface: pe.vm_interface.clone(),
        }
    }

    /// `mr-v<8 hex>` (VXLAN) or `mr-g<8 hex>` (GRE): a hash of kind, VNI/key and
    /// remote, since two live migrations may share a VNI toward different peers and a
    /// link name has 15 bytes.
    pub fn link_name(tunnel: &TunnelSpec) -> String {
        let (tag, id) = match tunnel.kind {
            TunnelKind::Vxlan { vni } => ('v', vni),
            TunnelKind::Gre { key } => ('g', key),
        };
        let mut h = Fnv::new();
        h.write(&[tag as u8]);
        h.write(&id.to_be_bytes());
        match tunnel.remote {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        format!("mr-{tag}{:08x}", h.finish() as u32)
    }

    /// This side's inside address: the /31 is picked from the pool by VNI/key (both
    /// PEs compute the same one), the source takes the even address.
    pub fn inside(&self, tunnel: &TunnelSpec, role: Role) -> Inside {
        let id = match tunnel.kind {
            TunnelKind::Vxlan { vni } => vni,
            TunnelKind::Gre { key } => key,
        };
        let pairs = 1u32 << (31 - self.pool.prefix());
        let base = u32::from(self.pool.network());
        let even = base + (id % pairs) * 2;
        let addr = match role {
            Role::Source => even,
            Role::Destination => even + 1,
        };
        Inside::new(IpAddr::V4(Ipv4Addr::from(addr)), 31).expect("a /31")
    }

    /// The tunnel crate's spec for this side.
    pub fn kernel_tunnel(&self, tunnel: &TunnelSpec, role: Role) -> tunnel::TunnelSpec {
        let name = Self::link_name(tunnel);
        let spec = match tunnel.kind {
            TunnelKind::Vxlan { vni } => {
                let mut v = tunnel::VxlanSpec::new(vni, self.source, tunnel.remote);
                v.underlay = self.underlay.clone();
                tunnel::TunnelSpec::vxlan(&name, v)
            }
            TunnelKind::Gre { key } => {
                let mut g = tunnel::GreSpec::new(self.source, tunnel.remote);
                g.key = Some(key);
                g.underlay = self.underlay.clone();
                tunnel::TunnelSpec::gre(&name, g)
            }
        };
        spec.with_inside(self.inside(tunnel, role))
    }

    /// The source's overrides: IPv4 host routes via the destination's inside address
    /// (its MAC is a static neighbour, so the first packet is not held for ARP). IPv6
    /// host routes into a VXLAN tunnel go via the destination's inside link-local
    /// ([`tunnel::tunnel::inside_link_local`]), a static neighbour with the same MAC:
    /// on-link, the kernel would solicit the VM's own address on the tunnel, which
    /// nobody there answers. Over GRE (no link layer) IPv6 host routes are on-link.
    pub fn overrides(&self, prefixes: &[IpNetwork], tunnel: &TunnelSpec) -> Vec<Override> {
        let name = Self::link_name(tunnel);
        let gateway = self.inside(tunnel, Role::Destination).address;
        let gateway_v6 = match tunnel.kind {
            TunnelKind::Vxlan { .. } => {
                Some(IpAddr::V6(tunnel::tunnel::inside_link_local(gateway)))
            }
            TunnelKind::Gre { .. } => None,
        };
        prefixes
            .iter()
            .map(|p| {
                let o = Override::new(to_prefix(*p), &name);
                match (p.is_ipv4(), gateway_v6) {
                    (true, _) => o.with_gateway(gateway),
                    (false, Some(g)) => o.with_gateway(g),
                    (false, None) => o,
                }
            })
            .collect()
    }
}

impl Naming {
    /// The destination's delivery routes: the VM's host routes on-link on the
    /// data-center-facing interface, in migroute's table (empty without
    /// `vm_interface`).
    ///
    /// Why: migroute's rule sits before `main`, so these win over whatever BGP put
    /// there. Right after A→B, pe-a's FIB still holds the /32 pe-b announced; on the
    /// way back (B→A) pe-a would send what comes out of the tunnel back to pe-b, a loop
    /// until pe-b's withdraw arrives.
    ///
    /// Lifetime: installed with `EnsureDelivery`, kept past teardown while this PE
    /// still announces the prefix (the VM lives here and the data-center side must not
    /// depend on BGP either), removed when the prefix is withdrawn or delivery is
    /// disabled without an announcement (abort). When this PE becomes the source of
    /// the next move its override replaces the delivery route (same table, same
    /// prefix), which is why removal names the device.
    pub fn delivery_routes(&self, prefixes: &[IpNetwork]) -> Vec<Override> {
        match &self.vm_interface {
            Some(dev) => prefixes
                .iter()
                .map(|p| Override::new(to_prefix(*p), dev))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// The delivery prefixes the journal asks for: every prefix a destination delivers or
/// still announces, except those an override of this PE claims (the override wins:
/// this PE is then the source of a newer move).
pub fn delivery_prefixes(desired: &DesiredState) -> Vec<IpNetwork> {
    let overridden: Vec<IpNetwork> = desired.overrides.iter().map(|o| o.prefix).collect();
    let mut out: Vec<IpNetwork> = Vec::new();
    let candidates = desired
        .deliveries
        .iter()
        .map(|d| d.prefix)
        .chain(desired.routes.iter().map(|r| r.prefix));
    for p in candidates {
        if !overridden.contains(&p) && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Our prefix type to the tunnel crate's.
pub fn to_prefix(p: IpNetwork) -> Prefix {
    Prefix::new(p.ip(), p.prefix()).expect("IpNetwork lengths are valid")
}

/// FNV-1a, 64 bit: stable across builds and Rust versions, unlike `DefaultHasher`.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

/// The real data plane: one netlink handle in the agent's namespace.
#[derive(Debug)]
pub struct KernelDataplane {
    handle: NetlinkHandle,
    naming: Naming,
    metrics: Arc<Metrics>,
}

impl KernelDataplane {
    /// Opens the netlink handle in `netns`.
    pub async fn open(
        netns: Netns,
        naming: Naming,
        metrics: Arc<Metrics>,
    ) -> Result<Self, DataplaneError> {
        let handle = NetlinkHandle::open(netns).await?;
        Ok(KernelDataplane {
            handle,
            naming,
            metrics,
        })
    }

    fn netns(&self) -> &Netns {
        self.handle.netns()
    }

    async fn set(&self, key: String, value: &'static str) -> Result<(), DataplaneError> {
        sysctl::write(self.netns(), key.clone(), value)
            .await
            .map_err(|source| DataplaneError::Sysctl {
                netns: self.netns().clone(),
                key,
                source,
            })
    }

    /// Quiets IPv6 housekeeping on a fresh tunnel: router solicitations would count as
    /// tunnel traffic and delay the "tunnel quiet" test for seconds. Best effort.
    async fn quiet_link(&self, name: &str) {
        for (k, v) in [("router_solicitations", "0"), ("dad_transmits", "0")] {
            let _ = sysctl::write(self.netns(), format!("net/ipv6/conf/{name}/{k}"), v).await;
        }
    }
}

impl Dataplane for KernelDataplane {
    async fn create_tunnel(&mut self, t: &TunnelSpec, role: Role) -> Result<(), DataplaneError> {
        let spec = self.naming.kernel_tunnel(t, role);
        tunnel::tunnel::create(&self.handle, &spec).await?;
        self.quiet_link(&spec.name).await;
        Ok(())
    }

    async fn delete_tunnel(&mut self, t: &TunnelSpec) -> Result<(), DataplaneError> {
        match tunnel::tunnel::delete(&self.handle, &Naming::link_name(t)).await {
            Ok(()) | Err(tunnel::Error::LinkNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn install_override(
        &mut self,
        prefixes: &[IpNetwork],
        t: &TunnelSpec,
    ) -> Result<(), DataplaneError> {
        let overrides = self.naming.overrides(prefixes, t);
        let start = Instant::now();
        tunnel::override_route::replace_batch(&self.handle, &overrides).await?;
        self.metrics.observe_override_install(start.elapsed());
        Ok(())
    }

    async fn remove_override(&mut self, prefixes: &[IpNetwork]) -> Result<(), DataplaneError> {
        let ps: Vec<Prefix> = prefixes.iter().map(|p| to_prefix(*p)).collect();
        tunnel::override_route::remove_batch(&self.handle, &ps).await?;
        Ok(())
    }

    async fn ensure_delivery(&mut self, t: &TunnelSpec, role: Role) -> Result<(), DataplaneError> {
        // The tunnel normally exists since prepare; creating is idempotent and repairs
        // a link someone deleted by hand.
        let spec = self.naming.kernel_tunnel(t, role);
        tunnel::tunnel::create(&self.handle, &spec).await?;
        let dev = spec.name;
        // Forward what arrives on the tunnel; loose reverse-path check, because the
        // client's packets arrive on the tunnel while the route back to the client
        // leaves by the core (strict rp_filter would drop them).
        self.set(format!("net/ipv4/conf/{dev}/forwarding"), "1")
            .await?;
        self.set(format!("net/ipv4/conf/{dev}/rp_filter"), "2")
            .await?;
        let _ = sysctl::write(self.netns(), format!("net/ipv6/conf/{dev}/forwarding"), "1").await;
        Ok(())
    }

    async fn disable_delivery(&mut self, t: &TunnelSpec) -> Result<(), DataplaneError> {
        let dev = Naming::link_name(t);
        match sysctl::write(self.netns(), format!("net/ipv4/conf/{dev}/forwarding"), "0").await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(DataplaneError::Sysctl {
                    netns: self.netns().clone(),
                    key: format!("net/ipv4/conf/{dev}/forwarding"),
                    source,
                })
            }
        }
        let _ = sysctl::write(self.netns(), format!("net/ipv6/conf/{dev}/forwarding"), "0").await;
        Ok(())
    }

    async fn install_delivery_routes(
        &mut self,
        prefixes: &[IpNetwork],
    ) -> Result<(), DataplaneError> {
        let routes = self.naming.delivery_routes(prefixes);
        if !routes.is_empty() {
            tunnel::override_route::replace_batch(&self.handle, &routes).await?;
        }
        Ok(())
    }

    async fn remove_delivery_routes(
        &mut self,
        prefixes: &[IpNetwork],
    ) -> Result<(), DataplaneError> {
        if let Some(dev) = &self.naming.vm_interface {
            let ps: Vec<Prefix> = prefixes.iter().map(|p| to_prefix(*p)).collect();
            tunnel::override_route::remove_via(&self.handle, &ps, dev).await?;
        }
        Ok(())
    }

    async fn tunnel_packets(&mut self, t: &TunnelSpec) -> Result<u64, DataplaneError> {
        let c = tunnel::counters::read(&self.handle, &Naming::link_name(t)).await?;
        Ok(c.rx_packets.saturating_add(c.tx_packets))
    }

    async fn reconcile(
        &mut self,
        desired: &DesiredState,
        roles: &[(TunnelSpec, Role)],
    ) -> Result<ReconcileReport, DataplaneError> {
        let role_of = |t: &TunnelSpec| {
            roles
                .iter()
                .find(|(s, _)| s == t)
                .map(|(_, r)| *r)
                .unwrap_or(Role::Source)
        };
        let mut want = tunnel::Desired::default();
        for t in &desired.tunnels {
            want.tunnels
                .push(self.naming.kernel_tunnel(&t.tunnel, role_of(&t.tunnel)));
        }
        for o in &desired.overrides {
            want.overrides
                .extend(self.naming.overrides(&[o.prefix], &o.tunnel));
        }
        // Delivery routes are part of the target too, or the reconcile would remove
        // them as orphans (they carry migroute's table and protocol).
        want.overrides
            .extend(self.naming.delivery_routes(&delivery_prefixes(desired)));
        let plan = tunnel::reconcile::reconcile(&self.handle, &want).await?;
        for t in &plan.create_tunnels {
            self.quiet_link(&t.name).await;
        }
        let mut seen = Vec::new();
        for d in &desired.deliveries {
            if !seen.contains(&d.tunnel) {
                seen.push(d.tunnel);
                self.ensure_delivery(&d.tunnel, role_of(&d.tunnel)).await?;
            }
        }
        Ok(ReconcileReport {
            created: plan.create_tunnels.iter().map(|t| t.name.clone()).collect(),
            deleted: plan.delete_tunnels.clone(),
            adopted: plan.adopted_tunnels.clone(),
            overrides: plan.replace_overrides.len(),
        })
    }
}

/// Calls a peer agent's API (the destination heard the VM first and tells the source
/// to switch over).
#[derive(Debug, Clone)]
pub struct PeerNotifier {
    client: reqwest::Client,
    token: Arc<str>,
}

impl PeerNotifier {
    /// A client with a short timeout: a peer that does not answer must not hold up
    /// this PE's migrations.
    pub fn new(token: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("reqwest client without TLS builds");
        PeerNotifier {
            client,
            token: token.into(),
        }
    }

    /// With a caller-built client (timeout, a private CA for `https://` peers).
    pub fn with_client(token: String, client: reqwest::Client) -> Self {
        PeerNotifier {
            client,
            token: token.into(),
        }
    }

    /// The destination heard the VM: `POST {api_url}/v1/migrations/{id}/switchover`,
    /// then `…/announce`, on the source, in the background.
    ///
    /// Why both: the VM running here is what an orchestrator's announce webhook would
    /// report, and without one (a plain `virsh migrate` with the libvirt hook) nobody
    /// else tells the source, which would sit in `switched-over` until it stalls,
    /// tunnel and override in place. With an orchestrator its later announce is
    /// accepted and changes nothing. A refused switchover is not followed by announce.
    pub fn vm_arrived(&self, api_url: &str, id: &str) {
        let base = format!("{}/v1/migrations/{id}", api_url.trim_end_matches('/'));
        let (client, token) = (self.client.clone(), self.token.clone());
        tokio::spawn(async move {
            for step in ["switchover", "announce"] {
                let url = format!("{base}/{step}");
                match client.post(&url).bearer_auth(&*token).send().await {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(%url, "peer told: the VM is here");
                    }
                    Ok(r) => {
                        tracing::warn!(%url, status = %r.status(), "peer refused");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%url, error = %e, "peer not reached");
                        return;
                    }
                }
            }
        });
    }
}

/// Everything [`perform`] needs besides the data plane.
pub struct Effects<'a, D: Dataplane> {
    /// Kernel.
    pub dataplane: &'a mut D,
    /// BGP.
    pub announcer: &'a dyn RouteAnnouncer,
    /// Peer API calls.
    pub notifier: &'a PeerNotifier,
}

/// Why one command failed, as the machine records it.
#[derive(Debug, Error)]
pub enum PerformError {
    /// Kernel.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// BGP.
    #[error(transparent)]
    Announce(#[from] AnnounceError),
}

/// Carries out one non-`Persist` command. `tunnel` and `role` are the migration's
/// (some actions, e.g. `DisableDelivery`, name only prefixes).
pub async fn perform<D: Dataplane>(
    fx: &mut Effects<'_, D>,
    cmd: &Command,
    tunnel: &TunnelSpec,
    role: Role,
) -> Result<(), PerformError> {
    match &cmd.action {
        Action::Persist(_) => {}
        Action::CreateTunnel { tunnel } => fx.dataplane.create_tunnel(tunnel, role).await?,
        Action::DeleteTunnel { tunnel } => fx.dataplane.delete_tunnel(tunnel).await?,
        Action::InstallOverride { prefixes, tunnel } => {
            fx.dataplane.install_override(prefixes, tunnel).await?
        }
        Action::RemoveOverride { prefixes } => fx.dataplane.remove_override(prefixes).await?,
        Action::EnsureDelivery { tunnel, prefixes } => {
            fx.dataplane.ensure_delivery(tunnel, role).await?;
            fx.dataplane.install_delivery_routes(prefixes).await?;
        }
        Action::DisableDelivery { prefixes } => {
            fx.dataplane.disable_delivery(tunnel).await?;
            // Teardown: the VM lives here and this PE still announces it, so its
            // delivery route stays (until the withdraw). Abort: nothing announced, the
            // VM stays at the source, the route goes.
            let announced: Vec<IpNetwork> = fx
                .announcer
                .routes()
                .into_iter()
                .map(|r| r.prefix)
                .collect();
            let gone: Vec<IpNetwork> = prefixes
                .iter()
                .filter(|p| !announced.contains(p))
                .copied()
                .collect();
            if !gone.is_empty() {
                fx.dataplane.remove_delivery_routes(&gone).await?;
            }
        }
        Action::Announce { routes } => fx.announcer.announce(routes).await?,
        Action::Withdraw { prefixes } => {
            fx.announcer.withdraw(prefixes).await?;
            // No longer this PE's VM: its delivery route goes (an override for the same
            // prefix, if this PE is now the source, is left alone).
            fx.dataplane.remove_delivery_routes(prefixes).await?;
        }
        Action::Notify(notice) => match notice {
            Notice::SwitchOverPeer { api_url } => {
                fx.notifier.vm_arrived(api_url, cmd.migration.as_str())
            }
            Notice::Stalled => {
                tracing::warn!(migration = %cmd.migration, "not converged in time: stalled, nothing torn down")
            }
            Notice::TornDown => tracing::info!(migration = %cmd.migration, "torn down"),
            Notice::Aborted { reason: None } => {
                tracing::info!(migration = %cmd.migration, "aborted by request")
            }
            Notice::Aborted { reason: Some(r) } => {
                tracing::warn!(migration = %cmd.migration, reason = %r, "aborted after a failure")
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vx(vni: u32, remote: &str) -> TunnelSpec {
        TunnelSpec {
            kind: TunnelKind::Vxlan { vni },
            remote: remote.parse().unwrap(),
        }
    }

    fn naming() -> Naming {
        Naming {
            source: "10.0.23.2".parse().unwrap(),
            underlay: None,
            pool: "169.254.0.0/16".parse().unwrap(),
            vm_interface: None,
        }
    }

    #[test]
    fn link_names_fit_and_differ_by_remote_and_kind() {
        let a = Naming::link_name(&vx(100, "10.0.23.3"));
        let b = Naming::link_name(&vx(100, "10.0.23.4"));
        let g = Naming::link_name(&TunnelSpec {
            kind: TunnelKind::Gre { key: 100 },
            remote: "10.0.23.3".parse().unwrap(),
        });
        assert_ne!(a, b);
        assert!(g.starts_with("mr-g"));
        for n in [&a, &b, &g] {
            assert!(n.len() <= 15 && n.starts_with("mr-"), "{n}");
            assert!(migroute_tunnel::ids::check_link_name(n).is_ok(), "{n}");
        }
        assert_eq!(a, Naming::link_name(&vx(100, "10.0.23.3")), "stable");
    }

    #[test]
    fn both_sides_pick_the_same_31_and_opposite_ends() {
        let n = naming();
        // The destination's tunnel points back at the source: a different remote, the
        // same VNI, the same /31.
        let src = n.inside(&vx(4242, "10.0.23.3"), Role::Source);
        let dst = n.inside(&vx(4242, "10.0.23.2"), Role::Destination);
        assert_eq!(src.peer(), dst.address);
        assert_eq!(dst.peer(), src.address);
        assert!(n.pool.contains(match src.address {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!(),
        }));
        let o = n.overrides(
            &[
                "10.10.0.5/32".parse().unwrap(),
                "2001:db8:10::5/128".parse().unwrap(),
            ],
            &vx(4242, "10.0.23.3"),
        );
        assert_eq!(o[0].gateway, Some(dst.address));
        // IPv6 via the destination's link-local, a static neighbour of the tunnel.
        let ll = migroute_tunnel::tunnel::inside_link_local(dst.address);
        assert_eq!(o[1].gateway, Some(IpAddr::V6(ll)));
        assert!(ll.is_unicast_link_local());
        assert_eq!(o[0].via, Naming::link_name(&vx(4242, "10.0.23.3")));
        // Over GRE there is no neighbour to resolve: on-link.
        let gre = TunnelSpec {
            kind: TunnelKind::Gre { key: 4242 },
            remote: "10.0.23.3".parse().unwrap(),
        };
        let o = n.overrides(&["2001:db8:10::5/128".parse().unwrap()], &gre);
        assert_eq!(o[0].gateway, None);
    }

    #[test]
    fn delivery_routes_are_on_link_on_the_vm_interface_and_need_one() {
        let p: Vec<IpNetwork> = vec![
            "10.10.0.5/32".parse().unwrap(),
            "2001:db8:10::5/128".parse().unwrap(),
        ];
        assert!(naming().delivery_routes(&p).is_empty(), "none configured");
        let n = Naming {
            vm_interface: Some("eth3".into()),
            ..naming()
        };
        let r = n.delivery_routes(&p);
        assert_eq!(r.len(), 2);
        for o in &r {
            assert_eq!(o.via, "eth3");
            assert_eq!(o.gateway, None);
        }
        assert_eq!(r[0].prefix, to_prefix(p[0]));
    }

    #[test]
    fn delivery_prefixes_cover_delivering_and_announcing_but_yield_to_overrides() {
        use migroute_orchestration::pe::{DesiredPath, DesiredRoute, MigrationId};
        let t = vx(7, "10.0.23.2");
        let id = MigrationId::new("m1").unwrap();
        let path = |p: &str| DesiredPath {
            migration: id.clone(),
            prefix: p.parse().unwrap(),
            tunnel: t,
        };
        let attrs = migroute_orchestration::pe::RouteAttrs::default();
        let route = |p: &str| DesiredRoute {
            migration: id.clone(),
            prefix: p.parse().unwrap(),
            attrs: attrs.clone(),
        };
        let d = DesiredState {
            deliveries: vec![path("10.10.0.5/32")],
            // Announced by a torn-down move (the VM lives here), and one this PE now
            // overrides as the source of a newer move.
            routes: vec![
                route("10.10.0.5/32"),
                route("10.10.0.6/32"),
                route("10.10.0.7/32"),
            ],
            overrides: vec![path("10.10.0.7/32")],
            ..DesiredState::default()
        };
        let got: Vec<String> = delivery_prefixes(&d)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(got, ["10.10.0.5/32", "10.10.0.6/32"]);
    }

    /// Answers `POST /v1/migrations/{id}/{step}` with `status` for `refuse`d steps
    /// (200 otherwise), recording `step` and the bearer token of each call.
    async fn peer_api(refuse: &'static str) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use axum::extract::{Path, State};
        use axum::http::{HeaderMap, StatusCode};
        type Calls = Arc<std::sync::Mutex<Vec<String>>>;
        async fn step(
            State((calls, refuse)): State<(Calls, &'static str)>,
            Path((id, step)): Path<(String, String)>,
            headers: HeaderMap,
        ) -> StatusCode {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            calls.lock().unwrap().push(format!("{id} {step} {auth}"));
            if step == refuse {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            }
        }
        let calls: Calls = Arc::default();
        let app = axum::Router::new()
            .route("/v1/migrations/{id}/{step}", axum::routing::post(step))
            .with_state((calls.clone(), refuse));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    async fn calls_after(calls: &std::sync::Mutex<Vec<String>>, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls.lock().unwrap().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Anything that would follow has had its chance too.
        tokio::time::sleep(Duration::from_millis(200)).await;
        calls.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn vm_arrived_switches_the_source_over_then_announces_it() {
        let (url, calls) = peer_api("none").await;
        PeerNotifier::new("tok".into()).vm_arrived(&format!("{url}/"), "m1");
        assert_eq!(
            calls_after(&calls, 2).await,
            ["m1 switchover Bearer tok", "m1 announce Bearer tok"]
        );
    }

    #[tokio::test]
    async fn a_refused_switchover_is_not_followed_by_announce() {
        let (url, calls) = peer_api("switchover").await;
        PeerNotifier::new("tok".into()).vm_arrived(&url, "m1");
        assert_eq!(calls_after(&calls, 1).await, ["m1 switchover Bearer tok"]);
    }
}
