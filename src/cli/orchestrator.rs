//! `migroute orchestrator --config F`: the orchestrator as a REST service (see
//! `crate::orchestrator::service`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use migroute_orchestration::journal::Journal;

use crate::orchestrator::agent_client::{self, DEFAULT_TIMEOUT};
use crate::orchestrator::lab_hypervisor::DEFAULT_PRECOPY;
use crate::orchestrator::service::{self, ServiceConfig, ServiceState};
use crate::orchestrator::setup::DriverSettings;

/// Arguments of `migroute orchestrator`.
#[derive(Debug, Args)]
pub struct OrchestratorArgs {
    /// The service's configuration (TOML: journal, [api], [agents], [lab]).
    #[arg(long, short, required_unless_present = "openapi")]
    pub config: Option<PathBuf>,
    /// Print the API's OpenAPI 3 document and exit.
    #[arg(long)]
    pub openapi: bool,
}

/// Runs the service until SIGTERM or ctrl-c.
pub fn run(args: OrchestratorArgs) -> anyhow::Result<ExitCode> {
    use utoipa::OpenApi;
    if args.openapi {
        println!("{}", service::ApiDoc::openapi().to_pretty_json()?);
        return Ok(ExitCode::SUCCESS);
    }
    let path = args.config.expect("clap requires --config");
    let cfg = ServiceConfig::load(&path)?;
    let token = agent_client::read_token(&cfg.api.token_file)?;
    if token.len() < 16 {
        bail!("api.token_file: token shorter than 16 characters");
    }
    let agent_token = cfg
        .agents
        .token_file
        .as_deref()
        .map(agent_client::read_token)
        .transpose()?;
    let settings = DriverSettings {
        agent_token,
        agent_timeout: cfg
            .agents
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_TIMEOUT),
        lab_precopy: cfg
            .lab
            .precopy_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_PRECOPY),
    };
    if let Some(dir) = cfg.journal.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("journal {}", dir.display()))?;
    }
    let journal = Arc::new(Journal::open(&cfg.journal)?);
    let tls = cfg.api.tls()?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let state = ServiceState::new(token, journal, settings, base);
        let resumed = state.recover()?;
        let listener = tokio::net::TcpListener::bind(cfg.api.listen)
            .await
            .with_context(|| format!("api.listen {}", cfg.api.listen))?;
        tracing::info!(addr = %cfg.api.listen, resumed, tls = tls.is_some(), "orchestrator API listening");
        match tls {
            Some(config) => {
                let listener = crate::api::tls::TlsListener::new(listener, config);
                service::serve_on(listener, state, shutdown()).await?
            }
            None => service::serve(listener, state, shutdown()).await?,
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
