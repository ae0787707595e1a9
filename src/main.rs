//! `migroute`: the command-line entry point.
//!
//! Thin by design: it parses the command line, sets up logging and hands off to the
//! crates. Protocol logic lives in `migroute-bgp`, `migroute-tunnel`,
//! `migroute-orchestration` and `migroute-labs`.

mod agent;
mod api;
mod cli;
mod config;
mod libvirt_hook;
mod orchestrator;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(cli.log_format);
    match cli::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("migroute: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
