//! `migroute bgp …` (being built; see the issue tracker).

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BgpCommand {}

pub fn run(cmd: BgpCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
