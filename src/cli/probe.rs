//! `migroute probe …` (being built; see the issue tracker).

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ProbeCommand {}

pub fn run(cmd: ProbeCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
