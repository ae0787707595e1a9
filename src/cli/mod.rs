//! Command-line surface. One module per command family; each owns its clap types and
//! a `run` function returning the process exit code.

pub mod agent;
pub mod bgp;
pub mod bgp_speak;
pub mod lab;
pub mod libvirt_hook;
#[cfg(feature = "libvirt")]
pub mod libvirt_watch;
pub mod migrate;
pub mod orchestrator;
pub mod probe;
pub mod tunnel;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "migroute",
    version,
    about = "Moves the network along with a live-migrating VM"
)]
pub struct Cli {
    /// Log format on stderr (`RUST_LOG` sets the filter).
    #[arg(long, value_enum, global = true, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The per-PE agent: BGP speaker, tunnel manager and REST API.
    Agent(agent::AgentArgs),
    /// BGP tools: decode and encode messages.
    #[command(subcommand)]
    Bgp(bgp::BgpCommand),
    /// Labs: bring containerlab topologies up in network namespaces.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// libvirt's qemu hook: prepares both agents before an incoming migration.
    LibvirtHook(libvirt_hook::LibvirtHookArgs),
    /// Beside libvirtd on a hypervisor host: switches both PEs over the instant a guest
    /// pauses for its final copy (the one moment libvirt runs no hook at).
    #[cfg(feature = "libvirt")]
    LibvirtWatch(libvirt_watch::LibvirtWatchArgs),
    /// One planned migration from a plan file: agents, hypervisor, storage, in order.
    Migrate(migrate::MigrateArgs),
    /// The orchestrator as a service: plans posted over REST, SSE progress.
    Orchestrator(orchestrator::OrchestratorArgs),
    /// Traffic probe: open-loop UDP stream and a TCP liveness connection.
    #[command(subcommand)]
    Probe(probe::ProbeCommand),
    /// Tunnels and forwarding overrides owned by migroute.
    #[command(subcommand)]
    Tunnel(tunnel::TunnelCommand),
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Commands that print a listing and end: piped into `head`, they should stop quietly
/// when the reader goes away, as `ip` or `ls` do, instead of panicking on EPIPE. Long-
/// running commands (agent, orchestrator, speaker, labs) keep Rust's default of ignoring
/// SIGPIPE, so a closed socket is an error they handle, never a silent death.
fn prints_and_exits(command: &Command) -> bool {
    matches!(
        command,
        Command::Tunnel(_) | Command::Bgp(bgp::BgpCommand::Decode(_) | bgp::BgpCommand::Encode(_))
    )
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    if prints_and_exits(&command) {
        // SAFETY: called before any thread is spawned; SIG_DFL installs no handler code.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    match command {
        Command::Agent(args) => agent::run(args),
        Command::Bgp(cmd) => bgp::run(cmd),
        Command::Lab(cmd) => lab::run(cmd),
        Command::LibvirtHook(args) => libvirt_hook::run(args),
        #[cfg(feature = "libvirt")]
        Command::LibvirtWatch(args) => libvirt_watch::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Orchestrator(args) => orchestrator::run(args),
        Command::Probe(cmd) => probe::run(cmd),
        Command::Tunnel(cmd) => tunnel::run(cmd),
    }
}
