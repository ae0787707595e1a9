//! `migroute agent --config agent.toml`: the per-PE agent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::agent;
use crate::config::AgentConfig;

/// Arguments of `migroute agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's configuration (see labs/agent/*.toml).
    #[arg(long, short, required_unless_present = "openapi")]
    pub config: Option<PathBuf>,
    /// Print the API's OpenAPI 3 document and exit.
    #[arg(long)]
    pub openapi: bool,
    /// Check the configuration and exit.
    #[arg(long)]
    pub check: bool,
}

/// Runs the agent until SIGTERM or ctrl-c.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    if args.openapi {
        println!("{}", crate::api::openapi().to_pretty_json()?);
        return Ok(ExitCode::SUCCESS);
    }
    let path = args.config.expect("clap requires --config");
    let cfg = AgentConfig::load(&path)?;
    if args.check {
        cfg.token()?;
        println!("{}: ok", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(agent::run(cfg))?;
    Ok(ExitCode::SUCCESS)
}
