//! `migroute lab …`: bring containerlab topologies up in network namespaces, without
//! Docker. The work is done by `migroute-labs`; this file only maps the command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use migroute_labs::{Lab, MoveOptions};

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create the namespaces, veths and daemons of a topology, then wait for BGP.
    Up {
        /// The containerlab topology file (`*.clab.yml`).
        file: PathBuf,
        /// Return as soon as the daemons run, without waiting for BGP sessions.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for every BGP session to be Established, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the lab's daemons and delete its namespaces (also after a failed `up`).
    Down {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Show nodes, links, daemons and BGP session states.
    Status {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a node: `migroute lab exec FILE NODE -- CMD …`.
    Exec {
        file: PathBuf,
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Move the link end INTERFACE from node FROM to node TO (a VM's port move).
    Move {
        file: PathBuf,
        from: String,
        interface: String,
        to: String,
        /// Hold the port down this many milliseconds first (a VM's stop-and-copy pause).
        #[arg(long)]
        pause_ms: Option<u64>,
        #[arg(long)]
        json: bool,
    },
}

fn load(file: &PathBuf) -> anyhow::Result<Lab> {
    Lab::load(file).with_context(|| format!("lab {}", file.display()))
}

fn print<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(value)?
    );
    Ok(())
}

pub fn run(cmd: LabCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LabCommand::Up {
            file,
            no_wait,
            timeout,
            json,
        } => {
            let start = Instant::now();
            let lab = load(&file)?;
            let report = lab.up()?;
            if !no_wait {
                lab.wait_all_established(Duration::from_secs(timeout))?;
            }
            let converged_ms = start.elapsed().as_millis() as u64;
            if json {
                print(
                    &serde_json::json!({ "up": report, "converged_ms": (!no_wait).then_some(converged_ms) }),
                )?;
            } else {
                println!(
                    "lab {}: {} nodes, {} links, daemons {} up in {} ms{}",
                    report.lab,
                    report.nodes,
                    report.links,
                    report.daemons_started.join(" "),
                    report.elapsed_ms,
                    if no_wait {
                        String::new()
                    } else {
                        format!("; all BGP sessions Established after {converged_ms} ms")
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down { file, json } => {
            let lab =
                Lab::load_for_teardown(&file).with_context(|| format!("lab {}", file.display()))?;
            let report = lab.down()?;
            if json {
                print(&report)?;
            } else {
                println!(
                    "lab {}: stopped {} daemons, deleted {} namespaces in {} ms",
                    report.lab,
                    report.daemons_stopped.len(),
                    report.namespaces_deleted.len(),
                    report.elapsed_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { file, json } => {
            let lab = load(&file)?;
            let status = lab.status()?;
            if json {
                print(&status)?;
            } else {
                // A closed pipe (`| head`) is not an error of status.
                let _ = write!(std::io::stdout(), "{status}");
            }
            Ok(if status.up {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        LabCommand::Exec {
            file,
            node,
            command,
        } => {
            let lab = load(&file)?;
            let status = lab.exec(&node, &command)?;
            Ok(ExitCode::from(
                status.code().unwrap_or(128).clamp(0, 255) as u8
            ))
        }
        LabCommand::Move {
            file,
            from,
            interface,
            to,
            pause_ms,
            json,
        } => {
            let lab = load(&file)?;
            let opts = MoveOptions {
                pause: pause_ms.map(Duration::from_millis),
            };
            let report = lab.move_link_end_with(&from, &interface, &to, opts)?;
            if json {
                print(&report)?;
            } else {
                println!(
                    "moved {} from {} to {} in {} us (mac {}, master {})",
                    report.interface,
                    report.from,
                    report.to,
                    report.elapsed_us,
                    report.mac,
                    report.master.as_deref().unwrap_or("-")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
