//! `migroute tunnel …`: operator commands over `migroute-tunnel`. Thin: parse, open a
//! handle in the chosen namespace, call the crate, print.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use migroute_tunnel::{
    ownership, reconcile, tunnel, GreSpec, Inside, NetlinkHandle, Netns, Override, Prefix,
    TunnelSpec, VxlanSpec,
};

#[derive(Debug, Subcommand)]
pub enum TunnelCommand {
    /// Create a tunnel (VXLAN or GRE), bring it up and address its inside.
    Add(AddArgs),
    /// Delete a tunnel (its overrides go with it).
    Del {
        name: String,
        #[command(flatten)]
        ns: NetnsArg,
    },
    /// Install or remove a forwarding override (host route into a tunnel).
    #[command(subcommand)]
    Override(OverrideCommand),
    /// List everything migroute owns in the namespace, with counters.
    List {
        #[command(flatten)]
        ns: NetnsArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove everything migroute owns in the namespace.
    Gc {
        #[command(flatten)]
        ns: NetnsArg,
    },
    /// Make the namespace match a desired-state JSON file ({"tunnels":[…],"overrides":[…]}).
    Reconcile {
        /// Desired state file.
        desired: PathBuf,
        #[command(flatten)]
        ns: NetnsArg,
        /// Print the plan without applying it.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct NetnsArg {
    /// Named network namespace (`ip netns`); default: the current one.
    #[arg(long)]
    netns: Option<String>,
}

impl NetnsArg {
    fn netns(&self) -> Netns {
        Netns::from_option(self.netns.as_deref())
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Vxlan,
    Gre,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    kind: Kind,
    /// Link name, starting with `mr-`.
    name: String,
    #[arg(long)]
    local: IpAddr,
    #[arg(long)]
    remote: IpAddr,
    /// VXLAN network identifier (VXLAN only).
    #[arg(long)]
    vni: Option<u32>,
    /// GRE key (GRE only).
    #[arg(long)]
    key: Option<u32>,
    /// Underlay device.
    #[arg(long)]
    dev: Option<String>,
    /// Inside address, a /31 or /127.
    #[arg(long)]
    address: Option<Inside>,
    /// VXLAN UDP port.
    #[arg(long, default_value_t = migroute_tunnel::vxlan::DEFAULT_DSTPORT)]
    dstport: u16,
    /// Link MTU (VXLAN; default 1450 on IPv4 underlay, 1430 on IPv6).
    #[arg(long)]
    mtu: Option<u32>,
    /// Outer TTL (GRE).
    #[arg(long, default_value_t = migroute_tunnel::gre::DEFAULT_TTL)]
    ttl: u8,
    #[command(flatten)]
    ns: NetnsArg,
}

#[derive(Debug, Subcommand)]
pub enum OverrideCommand {
    /// Install or replace `PREFIX` → tunnel.
    Add {
        prefix: Prefix,
        #[arg(long)]
        via: String,
        #[arg(long)]
        gateway: Option<IpAddr>,
        #[command(flatten)]
        ns: NetnsArg,
    },
    /// Remove the override for `PREFIX`.
    Del {
        prefix: Prefix,
        /// Accepted for symmetry with `add`; the prefix alone identifies the override.
        #[arg(long)]
        via: Option<String>,
        #[command(flatten)]
        ns: NetnsArg,
    },
}

pub fn run(cmd: TunnelCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cmd))
}

async fn open(ns: &NetnsArg) -> anyhow::Result<NetlinkHandle> {
    Ok(NetlinkHandle::open(ns.netns()).await?)
}

async fn run_async(cmd: TunnelCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TunnelCommand::Add(a) => {
            let spec = spec_of(&a)?;
            let h = open(&a.ns).await?;
            let ifindex = tunnel::create(&h, &spec).await?;
            println!("{} ifindex {ifindex}", spec.name);
        }
        TunnelCommand::Del { name, ns } => {
            let h = open(&ns).await?;
            tunnel::delete(&h, &name).await?;
        }
        TunnelCommand::Override(OverrideCommand::Add {
            prefix,
            via,
            gateway,
            ns,
        }) => {
            let h = open(&ns).await?;
            let mut o = Override::new(prefix, &via);
            o.gateway = gateway;
            migroute_tunnel::override_route::replace(&h, &o).await?;
        }
        TunnelCommand::Override(OverrideCommand::Del { prefix, ns, .. }) => {
            let h = open(&ns).await?;
            migroute_tunnel::override_route::remove(&h, prefix).await?;
        }
        TunnelCommand::List { ns, json } => {
            let h = open(&ns).await?;
            let owned = ownership::list(&h).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&owned)?);
            } else {
                print_owned(&owned);
            }
        }
        TunnelCommand::Gc { ns } => {
            let h = open(&ns).await?;
            let r = ownership::gc(&h).await?;
            println!(
                "removed {} rule(s), {} route(s), {} tunnel(s)",
                r.rules, r.routes, r.tunnels
            );
        }
        TunnelCommand::Reconcile {
            desired,
            ns,
            dry_run,
        } => {
            let text = std::fs::read_to_string(&desired)
                .with_context(|| format!("reading {}", desired.display()))?;
            let want: reconcile::Desired = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", desired.display()))?;
            let h = open(&ns).await?;
            let plan = if dry_run {
                reconcile::diff(&want, &ownership::list(&h).await?)
            } else {
                reconcile::reconcile(&h, &want).await?
            };
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn spec_of(a: &AddArgs) -> anyhow::Result<TunnelSpec> {
    let mut spec = match a.kind {
        Kind::Vxlan => {
            let vni = a.vni.context("--vni is required for a VXLAN tunnel")?;
            anyhow::ensure!(a.key.is_none(), "--key applies to GRE only");
            let mut v = VxlanSpec::new(vni, a.local, a.remote);
            v.dstport = a.dstport;
            v.underlay = a.dev.clone();
            v.mtu = a.mtu;
            TunnelSpec::vxlan(&a.name, v)
        }
        Kind::Gre => {
            anyhow::ensure!(a.vni.is_none(), "--vni applies to VXLAN only");
            let mut g = GreSpec::new(a.local, a.remote);
            g.key = a.key;
            g.ttl = a.ttl;
            g.underlay = a.dev.clone();
            TunnelSpec::gre(&a.name, g)
        }
    };
    spec.inside = a.address;
    Ok(spec)
}

fn print_owned(o: &migroute_tunnel::Owned) {
    if o.is_empty() {
        println!("nothing owned by migroute");
        return;
    }
    for t in &o.tunnels {
        let inside: Vec<String> = t
            .addresses
            .iter()
            .map(|i| format!("{}/{}", i.address, i.prefix_len))
            .collect();
        println!(
            "tunnel {} ifindex {} {} {} mtu {} inside [{}] rx {} pkts {} B tx {} pkts {} B",
            t.name,
            t.ifindex,
            serde_json::to_string(&t.identity).unwrap_or_default(),
            if t.up { "up" } else { "down" },
            t.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            inside.join(", "),
            t.counters.rx_packets,
            t.counters.rx_bytes,
            t.counters.tx_packets,
            t.counters.tx_bytes,
        );
    }
    for r in &o.routes {
        println!(
            "override {} table {} via {} gateway {}",
            r.prefix,
            r.table,
            r.via.as_deref().unwrap_or("-"),
            r.gateway
                .map(|g| g.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    for r in &o.rules {
        println!(
            "rule {} priority {} lookup {}",
            r.family.name(),
            r.priority,
            r.table
        );
    }
}
