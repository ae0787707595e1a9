//! `migroute lab …` (being built; see the issue tracker).

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum LabCommand {}

pub fn run(cmd: LabCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
