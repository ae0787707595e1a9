//! `migroute migrate --plan plan.toml`: one planned migration, start to finish, from
//! this process (the one-shot orchestrator). Progress is a bar per phase, or with
//! `--json` one JSON line per update and a final report line, for machines.
//!
//! Exit code 0 when the migration completed; 1 when it rolled back or stalled.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use migroute_orchestration::journal::Journal;
use migroute_orchestration::migration::{Event, Migration, MigrationPlan, Phase, Report};
use serde::Serialize;

use crate::orchestrator::agent_client;
use crate::orchestrator::lab_hypervisor::{self, PauseWindow};
use crate::orchestrator::plan_drivers::LibvirtReport;
use crate::orchestrator::plan_file;
use crate::orchestrator::runtime::{self, Observer, Options, Update};
use crate::orchestrator::setup::{self, DriverSettings};

/// Arguments of `migroute migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The migration plan (TOML; see labs/plans/).
    #[arg(long)]
    pub plan: PathBuf,
    /// The orchestrator's journal. A migration found there unfinished under the plan's
    /// id is resumed instead of started.
    #[arg(long, default_value = "/var/lib/migroute/orchestrator/journal.redb")]
    pub journal: PathBuf,
    /// One JSON line per update on stdout, then the report, instead of progress bars.
    #[arg(long)]
    pub json: bool,
    /// Bearer token for both agents' APIs (one line).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Deadline of each agent call, in milliseconds.
    #[arg(long, default_value_t = agent_client::DEFAULT_TIMEOUT.as_millis() as u64)]
    pub agent_timeout_ms: u64,
    /// Lab hypervisor: simulated pre-copy before the VM is suspended, in milliseconds.
    #[arg(long, default_value_t = lab_hypervisor::DEFAULT_PRECOPY.as_millis() as u64)]
    pub lab_precopy_ms: u64,
    /// Check the plan and exit.
    #[arg(long)]
    pub check: bool,
}

/// What `migrate` prints at the end (and `--json`'s last line).
#[derive(Debug, Serialize)]
struct FinalReport {
    update: &'static str,
    #[serde(flatten)]
    report: Report,
    /// Whether the source's override was acknowledged before the VM resumed.
    override_before_resume: Option<bool>,
    /// The pause window, wall clock: the lab hypervisor's own, or libvirt's suspend
    /// and resume events as the orchestrator received them.
    pause_window: Option<PauseWindow>,
    /// libvirt's job statistics and phase starts (libvirt hypervisor only).
    #[serde(skip_serializing_if = "Option::is_none")]
    libvirt: Option<LibvirtReport>,
}

/// Runs one migration to its end.
pub fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let plan = plan_file::load_plan(&args.plan)?;
    if args.check {
        println!("{}: ok", args.plan.display());
        return Ok(ExitCode::SUCCESS);
    }
    let token = args
        .token_file
        .as_deref()
        .map(agent_client::read_token)
        .transpose()?;
    let settings = DriverSettings {
        agent_token: token,
        agent_timeout: Duration::from_millis(args.agent_timeout_ms),
        lab_precopy: Duration::from_millis(args.lab_precopy_ms),
    };
    let base_dir = args.plan.parent().unwrap_or(Path::new("."));
    let drivers = setup::drivers(&plan, base_dir, &settings)?;
    let hypervisor = drivers.hypervisor.clone();
    if let Some(dir) = args.journal.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("journal directory {}", dir.display()))?;
    }
    let journal = Arc::new(Journal::open(&args.journal)?);
    let (machine, first) = start_or_resume(&journal, plan)?;

    let display = Display::new(args.json);
    let observer: Observer = {
        let display = display.clone();
        Arc::new(move |u: &Update| display.update(u))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // No operator channel in the one-shot: ctrl-c is the operator's abort.
    let report = rt.block_on(async {
        let (op_tx, op_rx) = tokio::sync::mpsc::channel(1);
        let abort = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = op_tx.send((Event::Abort, tx)).await;
                if let Ok(Err(e)) = rx.await {
                    eprintln!("migroute: cannot abort: {e}");
                }
                std::future::pending::<()>().await;
            }
        });
        let r = runtime::drive(
            machine,
            first,
            journal,
            drivers,
            Options::default(),
            observer,
            op_rx,
        )
        .await;
        abort.abort();
        r
    })?;
    display.finish();
    let libvirt = hypervisor.libvirt_report();
    let out = FinalReport {
        update: "report",
        override_before_resume: report.marks.override_before_resume,
        pause_window: hypervisor
            .pause_window()
            .or_else(|| qemu_window(libvirt.as_ref()))
            .or_else(|| marks_window(&report, libvirt_downtime(libvirt.as_ref()))),
        libvirt,
        report,
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_report(&out);
    }
    Ok(if out.report.phase == Phase::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// libvirt's pause window from QEMU's own timestamps of the guest's stop at the source
/// and resume at the destination (relayed monitor events), widened to whole ms.
fn qemu_window(l: Option<&LibvirtReport>) -> Option<PauseWindow> {
    let t = &l?.timeline;
    let (s, r) = (
        t["guest_stopped_us"].as_u64()?,
        t["guest_resumed_us"].as_u64()?,
    );
    (r >= s).then(|| PauseWindow {
        start_ms: s / 1000,
        end_ms: r.div_ceil(1000),
    })
}

/// The pause window of an observe-style hypervisor without QEMU's timestamps, from the
/// orchestrator's marks: it ends at the resume event. It starts at the suspend event, or earlier when
/// the hypervisor's own downtime figure says so: QEMU announces the stop on its
/// monitor only once the stop-and-copy releases its main loop, so the suspend event
/// arrives tens of ms after the guest stopped (21–59 ms under TCG in the KVM lab),
/// while the resume event at the destination is prompt.
fn marks_window(report: &Report, downtime_ms: Option<u64>) -> Option<PauseWindow> {
    Some(pause_of(
        report.marks.suspended_at?.as_millis(),
        report.marks.resumed_at?.as_millis(),
        downtime_ms,
    ))
}

/// See [`marks_window`]: suspend and resume events (epoch ms) and the downtime.
fn pause_of(suspended_ms: u64, resumed_ms: u64, downtime_ms: Option<u64>) -> PauseWindow {
    PauseWindow {
        start_ms: downtime_ms.map_or(suspended_ms, |d| {
            suspended_ms.min(resumed_ms.saturating_sub(d))
        }),
        end_ms: resumed_ms,
    }
}

/// libvirt's downtime of the completed job, ms.
fn libvirt_downtime(l: Option<&LibvirtReport>) -> Option<u64> {
    l?.job.as_ref()?["downtime_ms"].as_u64()
}

/// A new migration, or the journaled one under the same id if it has not finished
/// (the previous `migrate` died): the machine decides per its restart policy.
fn start_or_resume(
    journal: &Journal,
    plan: MigrationPlan,
) -> anyhow::Result<(Migration, Vec<migroute_orchestration::migration::Command>)> {
    let now = runtime::now();
    if let Some(mut m) = journal
        .load_migration_machines()?
        .into_iter()
        .find(|m| m.id() == &plan.id)
    {
        if m.phase().is_final() {
            bail!(
                "id: migration {} already ended ({}) in journal {}: use a new id",
                plan.id,
                m.phase(),
                journal.path().display()
            );
        }
        if m.plan() != &plan {
            bail!(
                "id: migration {} is unfinished in journal {} with a different plan",
                plan.id,
                journal.path().display()
            );
        }
        eprintln!(
            "migroute: resuming migration {} from {}",
            plan.id,
            m.phase()
        );
        let cmds = m.resume(now);
        return Ok((m, cmds));
    }
    let (mut m, mut cmds) = Migration::new(plan, now)?;
    cmds.extend(m.handle(Event::Start, now)?);
    Ok((m, cmds))
}

/// Progress: a spinner per phase (finished with its duration when the next phase
/// begins), or JSON lines.
#[derive(Clone)]
struct Display {
    json: bool,
    bars: Arc<Mutex<Bars>>,
}

struct Bars {
    multi: MultiProgress,
    current: Option<(ProgressBar, Phase, u64)>,
}

impl Display {
    fn new(json: bool) -> Self {
        Display {
            json,
            bars: Arc::new(Mutex::new(Bars {
                multi: MultiProgress::new(),
                current: None,
            })),
        }
    }

    fn update(&self, u: &Update) {
        if self.json {
            if let Ok(line) = serde_json::to_string(u) {
                println!("{line}");
            }
            return;
        }
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match u {
            Update::Phase { phase, at, .. } => {
                if let Some((bar, old, since)) = bars.current.take() {
                    let ms = at.as_millis().saturating_sub(since);
                    bar.finish_with_message(format!("{old} ({ms} ms)"));
                }
                let bar = bars.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(phase.to_string());
                bar.enable_steady_tick(Duration::from_millis(100));
                if phase.is_final() {
                    bar.finish_with_message(phase.to_string());
                } else {
                    bars.current = Some((bar, *phase, at.as_millis()));
                }
            }
            Update::Failed { seq, error, .. } => {
                let _ = bars.multi.println(format!("  failed (#{seq}): {error}"));
            }
            Update::Notice { notice, .. } => {
                let _ = bars.multi.println(format!("  notice: {notice:?}"));
            }
        }
    }

    fn finish(&self) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((bar, phase, _)) = bars.current.take() {
            bar.finish_with_message(phase.to_string());
        }
    }
}

fn print_report(r: &FinalReport) {
    let rep = &r.report;
    println!("migration {}: {}", rep.id, rep.phase);
    for p in &rep.phases {
        match p.duration_ms() {
            Some(ms) => println!("  {:<15} {ms:>7} ms", p.phase.to_string()),
            None => println!("  {:<15}", p.phase.to_string()),
        }
    }
    if let Some(ms) = rep.switchover_ms {
        println!("  suspend → override acknowledged: {ms} ms");
    }
    if let Some(ms) = rep.pause_ms {
        println!("  pause (suspend → resume, as seen by the orchestrator): {ms} ms");
    }
    if let Some(w) = r.pause_window {
        println!(
            "  pause window (epoch ms): {} → {} ({} ms)",
            w.start_ms,
            w.end_ms,
            w.ms()
        );
    }
    if let Some(job) = r.libvirt.as_ref().and_then(|l| l.job.as_ref()) {
        let field = |k: &str| job[k].as_u64().map_or("-".to_string(), |v| v.to_string());
        println!(
            "  libvirt: downtime {} ms, memory {} bytes, disks {} bytes, {} ms in all",
            field("downtime_ms"),
            field("memory_processed"),
            field("disk_processed"),
            field("time_elapsed_ms")
        );
    }
    match r.override_before_resume {
        Some(true) => println!("  override installed before the VM resumed: yes"),
        Some(false) => println!("  override installed before the VM resumed: NO"),
        None => println!("  override installed before the VM resumed: n/a (VM did not resume)"),
    }
    for e in &rep.errors {
        println!("  error at {}: {}", e.at, e.error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_ends_at_resume_and_starts_at_the_earlier_of_suspend_and_downtime() {
        // The suspend event came 85 ms after the stop libvirt's downtime implies.
        let w = pause_of(1_000, 1_113, Some(198));
        assert_eq!((w.start_ms, w.end_ms), (915, 1_113));
        // A downtime shorter than the events' window never shrinks it.
        let w = pause_of(1_000, 1_113, Some(50));
        assert_eq!((w.start_ms, w.end_ms), (1_000, 1_113));
        assert_eq!(pause_of(1_000, 1_113, None).start_ms, 1_000);
    }
}
