//! `migroute lab …`: bring containerlab topologies up in network namespaces, without
//! Docker. The work is done by `migroute-labs`; this file only maps the command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use migroute_labs::scenario::{svg, RunRecord, Scenario, ScenarioKind, ScenarioOptions, Site};
use migroute_labs::{Lab, MoveOptions};

use crate::orchestrator::lab_mover::MigrouteMover;

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
    /// Run a migration scenario on a lab it brings up (and tears down): N measured VM
    /// moves per mode, alternating A→B and B→A, with the probe running around each.
    Run {
        /// The containerlab topology file (`labs/wan-migration.clab.yml`).
        file: PathBuf,
        /// `planned-migration`: migroute moves then naive moves; `naive`: the baseline;
        /// `planned-migration-kvm` (on `wan-migration-kvm.clab.yml`, a build with
        /// `--features libvirt`): a real guest moved by libvirt with its disk;
        /// `virsh-migrate-kvm`: the same guest moved by a plain `virsh migrate`, the
        /// network following through migroute's libvirt hook (no orchestrator).
        #[arg(long, value_enum)]
        scenario: ScenarioArg,
        /// Measured moves per mode.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Where to write the JSON report.
        #[arg(long)]
        report: PathBuf,
        /// Also draw one run of each mode on a time line.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Probe over IPv6 (and announce the VM's IPv6 host route too).
        #[arg(long)]
        ipv6: bool,
        /// The VM's stop-and-copy pause during each move.
        #[arg(long, default_value_t = 100)]
        pause_ms: u64,
        /// Leave the lab up after a successful run (it is torn down on error or ctrl-c).
        #[arg(long)]
        keep_up: bool,
    },
    /// Print a scenario report's summary table again, and optionally redraw its time
    /// line, without running anything (e.g. for a report from another machine).
    Report {
        /// A `report.json` written by `lab run`.
        report: PathBuf,
        /// Draw one run of each mode on a time line into this file.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

/// The scenarios of `lab run`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScenarioArg {
    PlannedMigration,
    Naive,
    PlannedMigrationKvm,
    VirshMigrateKvm,
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
        LabCommand::Report { report, svg } => {
            let text = std::fs::read_to_string(&report)
                .with_context(|| format!("reading {}", report.display()))?;
            let parsed: migroute_labs::scenario::Report = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a scenario report", report.display()))?;
            let _ = write!(std::io::stdout(), "{}", parsed.table());
            if let Some(path) = svg {
                svg::write(&parsed, &path)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Run {
            file,
            scenario,
            runs,
            report,
            svg,
            ipv6,
            pause_ms,
            keep_up,
        } => {
            let kind = match scenario {
                ScenarioArg::PlannedMigration => ScenarioKind::PlannedMigration,
                ScenarioArg::Naive => ScenarioKind::Naive,
                ScenarioArg::PlannedMigrationKvm => ScenarioKind::PlannedMigrationKvm,
                ScenarioArg::VirshMigrateKvm => ScenarioKind::VirshMigrateKvm,
            };
            let mut opts = ScenarioOptions::new(kind, runs);
            opts.ipv6 = ipv6;
            opts.pause = Duration::from_millis(pause_ms);
            opts.keep_up = keep_up;
            if matches!(kind, ScenarioKind::PlannedMigration) {
                // A migroute move (prepare, pre-copy, pause, announce, convergence hold,
                // teardown) lasts ~2 s: the probe must outlast it in every run.
                opts.probe_duration = Duration::from_secs(6);
            }
            if kind.kvm() {
                // libvirt copies the disk and memory before the pause: seconds, longer
                // on an emulated guest. Over IPv4 only (the guest has no IPv6).
                anyhow::ensure!(!ipv6, "--ipv6: the KVM lab's guest has IPv4 only");
                opts.probe_duration = Duration::from_secs(30);
                opts.settle = Duration::from_secs(1);
            }
            run_scenario(load(&file)?, opts, &report, svg.as_deref())
        }
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

fn print_run(r: &RunRecord) {
    println!(
        "run {:>2} {:<8} {}: pause {:.0} ms, lost {} in pause + {} outside, longest gap {:.0} ms, announce->ingress FIB {}, TCP {}",
        r.index,
        r.mode,
        r.direction,
        r.pause_ms,
        r.lost_in_pause,
        r.lost_outside_pause,
        r.longest_gap_ms,
        r.announce_to_ingress_fib_ms
            .map_or("-".to_string(), |v| format!("{v:.0} ms")),
        if r.tcp_survived { "survived" } else { "broke" },
    );
    if let Some(h) = &r.hypervisor {
        let phase = |n: &str| {
            r.phases
                .iter()
                .find(|p| p.name == n)
                .map_or("-".to_string(), |p| format!("{:.0} ms", p.duration_ms))
        };
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let mib =
            |v: Option<u64>| v.map_or("-".to_string(), |b| format!("{:.1}", b as f64 / 1048576.0));
        println!(
            "       libvirt: downtime {} ms, job {} ms, memory {} MiB, disk {} MiB; disk copy {}, memory copy {}; guest records {} → {}",
            opt(h.downtime_ms),
            opt(h.migration_ms),
            mib(h.memory_bytes),
            mib(h.disk_bytes),
            phase("disk-copy"),
            phase("memory-copy"),
            h.guest_acked_before.map_or("-".to_string(), |v| v.to_string()),
            h.guest_acked_after.map_or("-".to_string(), |v| v.to_string()),
        );
    }
}

/// Runs the scenario on a worker thread while this one waits for ctrl-c/SIGTERM: on a
/// signal the lab is torn down at once (the worker's probes and `ip` calls then fail
/// harmlessly) and the process exits 130.
fn run_scenario(
    lab: Lab,
    opts: ScenarioOptions,
    report_path: &std::path::Path,
    svg_path: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let (kvm, kind) = (opts.kind.kvm(), opts.kind);
    #[cfg(feature = "libvirt")]
    let hook = matches!(kind, ScenarioKind::VirshMigrateKvm);
    let site = if kvm {
        Site::wan_migration_kvm()
    } else {
        Site::wan_migration()
    };
    let scenario = Scenario::new(lab.clone(), site, opts);
    #[cfg(feature = "libvirt")]
    let scenario = scenario.with_migroute(Box::new(move |site, opts| {
        Box::new(if hook {
            MigrouteMover::new_kvm_hook(site.clone())
        } else if kvm {
            MigrouteMover::new_kvm(site.clone())
        } else {
            MigrouteMover::new(site.clone(), opts.ipv6)
        })
    }));
    #[cfg(not(feature = "libvirt"))]
    let scenario = if kvm {
        anyhow::bail!(
            "--scenario {} needs a migroute built with `--features libvirt`",
            kind.name()
        )
    } else {
        scenario.with_migroute(Box::new(|site, opts| {
            Box::new(MigrouteMover::new(site.clone(), opts.ipv6))
        }))
    };
    // Refuses an unavailable mode before anything is brought up.
    let mut movers = scenario.movers()?;
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let worker_cancel = cancel.clone();
    std::thread::spawn(move || {
        let r = scenario.run(&mut movers, &worker_cancel, &mut print_run);
        let _ = tx.send(r);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = rx => Ok::<_, anyhow::Error>(Some(r.context("scenario thread died")?)),
            _ = tokio::signal::ctrl_c() => Ok(None),
            _ = term.recv() => Ok(None),
        }
    })?;
    let report = match outcome {
        Some(r) => r.with_context(|| format!("scenario on lab {}", lab.name()))?,
        None => {
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!("migroute: interrupted; tearing lab {} down", lab.name());
            lab.down()?;
            // `up` may have been mid-way: anything it created after that first `down`.
            if lab.is_up() {
                lab.down()?;
            }
            return Ok(ExitCode::from(130));
        }
    };
    report.write(report_path)?;
    if let Some(p) = svg_path {
        svg::write(&report, p)?;
    }
    print!("{}", report.table());
    if let Some(d) = &report.disk {
        println!(
            "guest disk: {} of {} acknowledged records found (first missing: {:?}); left behind {} final {} ({})",
            d.records_checked.saturating_sub(d.missing_count),
            d.records_checked,
            d.missing,
            &d.left_behind_sha256[..d.left_behind_sha256.len().min(16)],
            &d.final_sha256[..d.final_sha256.len().min(16)],
            if d.identical { "identical" } else { "DIFFERENT" }
        );
    }
    println!(
        "report: {}{}",
        report_path.display(),
        svg_path.map_or(String::new(), |p| format!(", timeline: {}", p.display()))
    );
    Ok(ExitCode::SUCCESS)
}
