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
    /// The lab hypervisor's pause window, wall clock.
    pause_window: Option<PauseWindow>,
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
    let out = FinalReport {
        update: "report",
        override_before_resume: report.marks.override_before_resume,
        pause_window: hypervisor.pause_window(),
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
            "  pause window (lab, epoch ms): {} → {} ({} ms)",
            w.start_ms,
            w.end_ms,
            w.ms()
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
