//! `migroute tunnel …` (being built; see the issue tracker).

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TunnelCommand {}

pub fn run(cmd: TunnelCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
