//! `migroute libvirt-hook OBJECT OPERATION SUB-OPERATION [EXTRA]`: called by libvirt's
//! qemu hook script (`packaging/libvirt-hook-qemu`) with the domain XML on stdin. See
//! [`crate::libvirt_hook`] for what it does.
//!
//! libvirt treats a non-zero exit of the `migrate` hook as "refuse the migration" and
//! uses anything the hook prints on stdout as a replacement domain XML, so this command
//! never writes to stdout and fails only when it means to refuse.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::libvirt_hook::config::{HookConfig, DEFAULT_PATH};
use crate::libvirt_hook::run::{Hook, Outcome};
use crate::libvirt_hook::{Domain, HookEvent};

/// Arguments of `migroute libvirt-hook`.
#[derive(Debug, Args)]
pub struct LibvirtHookArgs {
    /// The hook's configuration.
    #[arg(long, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// The domain's name (libvirt's first argument).
    pub object: String,
    /// `migrate`, `prepare`, `start`, `started`, `stopped`, `release`, …
    pub operation: String,
    /// `begin` or `end`.
    pub sub_operation: String,
    /// libvirt's extra argument (`-`).
    pub extra: Option<String>,
}

pub fn run(args: LibvirtHookArgs) -> anyhow::Result<ExitCode> {
    let event = HookEvent::classify(&args.operation, &args.sub_operation);
    let mut xml = String::new();
    std::io::stdin()
        .read_to_string(&mut xml)
        .context("reading the domain XML from stdin")?;
    if event == HookEvent::Ignored {
        return Ok(ExitCode::SUCCESS);
    }
    let config = HookConfig::load(&args.config)?;
    let fail_closed = config.fail_closed;
    let domain = Domain::parse(&xml).with_context(|| format!("domain {}", args.object))?;
    let hook = Hook::new(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(hook.handle(event, &domain))?;
    let name = &domain.name;
    match &outcome {
        Outcome::Nothing => {}
        Outcome::Prepared { id } => tracing::info!(domain = %name, %id, "agents prepared"),
        Outcome::Aborted { id } => {
            tracing::info!(domain = %name, %id, "released before switchover: aborted")
        }
        Outcome::LeftToConverge { id, phase } => {
            tracing::info!(domain = %name, %id, ?phase, "released: left to converge")
        }
        Outcome::PrepareFailed { id, error } => {
            tracing::error!(domain = %name, %id, %error, fail_closed, "prepare failed");
            if fail_closed {
                eprintln!("migroute: refusing the migration of {name}: {error}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
