//! The runtime with in-memory drivers: the order of side effects across drivers (the
//! override before the resume), answers fed back, rollback on a failed step, retries
//! of transient agent errors, and the journal written as the machine went.

use super::*;
use migroute_orchestration::drivers::{AgentStatus, EventSink, StorageError, StorageEvent};
use migroute_orchestration::migration::MigrationPlan;
use migroute_orchestration::pe::{MigrationSpec, Phase as PePhase};
use std::sync::Mutex;

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

struct FakeAgent {
    role: &'static str,
    log: Log,
    /// Fail `prepare` with this status (400: refused; 0: unreachable) this many times.
    prepare_failures: Mutex<u32>,
    prepare_status: u16,
    /// What `status` reports.
    phase: PePhase,
}

impl FakeAgent {
    fn new(role: &'static str, log: &Log, phase: PePhase) -> Self {
        FakeAgent {
            role,
            log: log.clone(),
            prepare_failures: Mutex::new(0),
            prepare_status: 400,
            phase,
        }
    }

    fn err(&self, op: AgentOp) -> AgentError {
        let url = format!("fake://{}", self.role);
        if self.prepare_status == 0 {
            AgentError::Unreachable {
                url,
                op,
                reason: "connection refused".into(),
            }
        } else {
            AgentError::Rejected {
                url,
                op,
                status: self.prepare_status,
                message: "no".into(),
            }
        }
    }

    fn call(&self, op: &str) -> std::future::Ready<Result<(), AgentError>> {
        push(&self.log, format!("{} {op}", self.role));
        std::future::ready(Ok(()))
    }
}

use migroute_orchestration::drivers::AgentOp;

impl PeAgent for FakeAgent {
    fn prepare(
        &self,
        _id: &MigrationId,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<(), AgentError>> + Send {
        let mut left = self.prepare_failures.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            push(&self.log, format!("{} prepare failed", self.role));
            return std::future::ready(Err(self.err(AgentOp::Prepare)));
        }
        assert_eq!(format!("{}", spec.role), self.role);
        self.call("prepare")
    }
    fn switchover(&self, _: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send {
        self.call("switchover")
    }
    fn announce(&self, _: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send {
        self.call("announce")
    }
    fn complete(&self, _: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send {
        self.call("complete")
    }
    fn abort(&self, _: &MigrationId) -> impl Future<Output = Result<(), AgentError>> + Send {
        self.call("abort")
    }
    fn status(
        &self,
        id: &MigrationId,
    ) -> impl Future<Output = Result<AgentStatus, AgentError>> + Send {
        std::future::ready(Ok(AgentStatus {
            id: id.clone(),
            phase: self.phase,
            next_deadline: None,
        }))
    }
}

/// A hook-style hypervisor: suspends, waits at the gate, resumes (or not).
struct FakeHv {
    log: Log,
}

impl Hypervisor for FakeHv {
    fn migrate<S, G>(
        &self,
        events: S,
        mut gate: G,
    ) -> impl Future<Output = Result<(), HypervisorError>> + Send
    where
        S: EventSink<HypervisorEvent>,
        G: QuiesceGate,
    {
        let log = self.log.clone();
        async move {
            push(&log, "vm suspended");
            events.emit(HypervisorEvent::Suspended);
            match gate.quiesced().await {
                GateDecision::Resume => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    push(&log, "vm resumed");
                    events.emit(HypervisorEvent::Resumed);
                    events.emit(HypervisorEvent::Completed);
                    Ok(())
                }
                GateDecision::Cancel => {
                    push(&log, "vm cancelled");
                    Err(HypervisorError::Cancelled { vm: "vm".into() })
                }
            }
        }
    }

    fn cancel(&self) -> impl Future<Output = Result<(), HypervisorError>> + Send {
        push(&self.log, "vm cancel");
        std::future::ready(Ok(()))
    }
}

/// Storage that must never be called (the plans here have none).
struct NoStorage;

impl Storage for NoStorage {
    async fn start_async<S: EventSink<StorageEvent>>(&self, _: S) -> Result<(), StorageError> {
        panic!("storage used with kind = none")
    }
    async fn switch_sync(&self) -> Result<(), StorageError> {
        panic!("storage used")
    }
    async fn wait_in_sync(&self) -> Result<(), StorageError> {
        panic!("storage used")
    }
    async fn cutover(&self) -> Result<(), StorageError> {
        panic!("storage used")
    }
    async fn abort(&self) -> Result<(), StorageError> {
        panic!("storage used")
    }
}

fn plan() -> MigrationPlan {
    let text = r#"
id = "rt-test"
tunnel = { kind = "vxlan", vni = 42 }
[vm]
name = "vm"
prefixes = ["10.10.0.5/32"]
[source]
agent_url = "http://127.0.0.1:1"
tunnel_endpoint = "10.0.23.2"
[destination]
agent_url = "http://127.0.0.1:2"
tunnel_endpoint = "10.0.23.3"
[hypervisor]
kind = "lab"
topology = "x.clab.yml"
node = "vm"
to = "dc-b"
[timeouts]
prepare_ms = 3000
migrate_ms = 3000
switchover_ms = 3000
resume_ms = 3000
announce_ms = 3000
converge_ms = 3000
teardown_ms = 3000
rollback_step_ms = 3000
"#;
    crate::orchestrator::plan_file::parse_plan(text, std::path::Path::new("t.toml")).unwrap()
}

struct Run {
    report: Report,
    log: Vec<String>,
    updates: Vec<Update>,
    journal: Arc<Journal>,
    _dir: tempfile::TempDir,
}

async fn run_with(src: FakeAgent, dst: FakeAgent, log: Log) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(dir.path().join("j.redb")).unwrap());
    let (mut m, mut first) = Migration::new(plan(), now()).unwrap();
    first.extend(m.handle(Event::Start, now()).unwrap());
    let updates = Arc::new(Mutex::new(Vec::new()));
    let seen = updates.clone();
    let observer: Observer = Arc::new(move |u: &Update| seen.lock().unwrap().push(u.clone()));
    let drivers = Drivers {
        hypervisor: Arc::new(FakeHv { log: log.clone() }),
        storage: Arc::new(NoStorage),
        source: Arc::new(src),
        destination: Arc::new(dst),
    };
    let opts = Options {
        agent_poll: Duration::from_millis(20),
        retry_backoff: Duration::from_millis(10),
        ..Options::default()
    };
    let (_op_tx, op_rx) = mpsc::channel(1);
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        drive(m, first, journal.clone(), drivers, opts, observer, op_rx),
    )
    .await
    .expect("migration did not end")
    .unwrap();
    let log = log.lock().unwrap().clone();
    let updates = updates.lock().unwrap().clone();
    Run {
        report,
        log,
        updates,
        journal,
        _dir: dir,
    }
}

fn pos(log: &[String], what: &str) -> usize {
    log.iter()
        .position(|l| l == what)
        .unwrap_or_else(|| panic!("{what:?} not in {log:?}"))
}

#[tokio::test]
async fn completes_with_the_override_before_the_resume() {
    let log: Log = Arc::default();
    let src = FakeAgent::new("source", &log, PePhase::TornDown);
    let dst = FakeAgent::new("destination", &log, PePhase::Converging);
    let r = run_with(src, dst, log).await;
    assert_eq!(r.report.phase, Phase::Completed, "{:?}", r.report);
    assert_eq!(r.report.marks.override_before_resume, Some(true));
    let l = &r.log;
    // Destination delivers before the VM leaves; the source's override is in place
    // while the VM is suspended, before it resumes; announce only after the resume.
    assert!(
        pos(l, "destination switchover") < pos(l, "vm suspended"),
        "{l:?}"
    );
    assert!(
        pos(l, "vm suspended") < pos(l, "source switchover"),
        "{l:?}"
    );
    assert!(pos(l, "source switchover") < pos(l, "vm resumed"), "{l:?}");
    assert!(
        pos(l, "vm resumed") < pos(l, "destination announce"),
        "{l:?}"
    );
    assert!(
        pos(l, "destination announce") < pos(l, "source complete"),
        "{l:?}"
    );
    assert!(!l.iter().any(|x| x.contains("abort")), "{l:?}");
    // The observer saw every phase, ending with completed and its notice.
    let phases: Vec<Phase> = r
        .updates
        .iter()
        .filter_map(|u| match u {
            Update::Phase { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect();
    assert_eq!(phases.first(), Some(&Phase::Preparing));
    assert_eq!(phases.last(), Some(&Phase::Completed));
    assert!(phases.contains(&Phase::SwitchingOver) && phases.contains(&Phase::Converging));
    assert!(r.updates.iter().any(|u| matches!(
        u,
        Update::Notice {
            notice: Notice::Completed,
            ..
        }
    )));
    // Everything was journaled: the restored machine is the finished one.
    let restored = r.journal.load_migration_machines().unwrap();
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].phase(), Phase::Completed);
    assert_eq!(restored[0].report(), r.report);
    assert!(recover(&r.journal, now()).unwrap().is_empty());
}

#[tokio::test]
async fn refused_prepare_rolls_back_both_agents_without_touching_the_vm() {
    let log: Log = Arc::default();
    let src = FakeAgent::new("source", &log, PePhase::Prepared);
    let dst = FakeAgent::new("destination", &log, PePhase::Prepared);
    *dst.prepare_failures.lock().unwrap() = 100;
    let r = run_with(src, dst, log).await;
    assert_eq!(r.report.phase, Phase::RolledBack, "{:?}", r.report);
    let l = &r.log;
    // A 400 is not retried.
    assert_eq!(
        l.iter()
            .filter(|x| *x == "destination prepare failed")
            .count(),
        1
    );
    assert!(l.contains(&"source abort".to_string()), "{l:?}");
    assert!(l.contains(&"destination abort".to_string()), "{l:?}");
    assert!(!l.iter().any(|x| x.starts_with("vm")), "{l:?}");
    assert!(
        r.report.errors.iter().any(|e| e.error.contains("HTTP 400")),
        "{:?}",
        r.report
    );
    assert!(r
        .updates
        .iter()
        .any(|u| matches!(u, Update::Failed { error, .. } if error.contains("prepare"))));
}

#[tokio::test]
async fn transient_agent_errors_are_retried() {
    let log: Log = Arc::default();
    let mut src = FakeAgent::new("source", &log, PePhase::TornDown);
    src.prepare_status = 0;
    *src.prepare_failures.lock().unwrap() = 2;
    let dst = FakeAgent::new("destination", &log, PePhase::TornDown);
    let r = run_with(src, dst, log).await;
    assert_eq!(r.report.phase, Phase::Completed, "{:?}", r.report);
    assert_eq!(
        r.log
            .iter()
            .filter(|x| *x == "source prepare failed")
            .count(),
        2
    );
    assert!(r.report.errors.is_empty(), "{:?}", r.report.errors);
}

#[tokio::test]
async fn gate_dropped_without_decision_cancels() {
    let (tx, mut gate) = Gate::new();
    drop(tx);
    assert_eq!(gate.quiesced().await, GateDecision::Cancel);
    // Asked again, still the safe answer.
    assert_eq!(gate.quiesced().await, GateDecision::Cancel);
    let (tx, mut gate) = Gate::new();
    tx.send(GateDecision::Resume).unwrap();
    assert_eq!(gate.quiesced().await, GateDecision::Resume);
}

/// Journals `cmds`, then answers `Done` to every command that wants an answer, in
/// order, journaling what follows, until a command matching `stop` has been journaled
/// (it stays unanswered, as if the process died right after journaling it).
fn journal_until(
    journal: &Journal,
    m: &mut Migration,
    mut cmds: Vec<Command>,
    stop: impl Fn(&Action) -> bool,
) {
    while !cmds.is_empty() {
        let mut next = Vec::new();
        for c in &cmds {
            journal.append_migration(c).unwrap();
        }
        for c in cmds {
            if stop(&c.action) {
                return;
            }
            if c.action.expects_answer() {
                next.extend(m.handle(Event::Done { seq: c.seq }, now()).unwrap());
            }
        }
        cmds = next;
    }
    panic!("never issued the stop action");
}

async fn drive_recovered(journal: Arc<Journal>, log: &Log) -> Report {
    let mut found = recover(&journal, now()).unwrap();
    assert_eq!(found.len(), 1);
    let (m, first) = found.remove(0);
    let drivers = Drivers {
        hypervisor: Arc::new(FakeHv { log: log.clone() }),
        storage: Arc::new(NoStorage),
        source: Arc::new(FakeAgent::new("source", log, PePhase::TornDown)),
        destination: Arc::new(FakeAgent::new("destination", log, PePhase::TornDown)),
    };
    let opts = Options {
        agent_poll: Duration::from_millis(20),
        ..Options::default()
    };
    let observer: Observer = Arc::new(|_: &Update| {});
    let (_tx, rx) = mpsc::channel(1);
    tokio::time::timeout(
        Duration::from_secs(20),
        drive(m, first, journal, drivers, opts, observer, rx),
    )
    .await
    .expect("recovered migration did not end")
    .unwrap()
}

#[tokio::test]
async fn restart_before_the_vm_moved_resumes_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(dir.path().join("j.redb")).unwrap());
    let (mut m, mut first) = Migration::new(plan(), now()).unwrap();
    first.extend(m.handle(Event::Start, now()).unwrap());
    // Died right after journaling the first prepare.
    journal_until(&journal, &mut m, first, |a| {
        matches!(a, Action::PrepareAgent { .. })
    });
    let log: Log = Arc::default();
    let report = drive_recovered(journal.clone(), &log).await;
    assert_eq!(report.phase, Phase::Completed, "{report:?}");
    let l = log.lock().unwrap().clone();
    assert!(
        l.contains(&"source prepare".into()) && l.contains(&"destination prepare".into()),
        "{l:?}"
    );
    assert!(!l.iter().any(|x| x.contains("abort")), "{l:?}");
}

#[tokio::test]
async fn restart_while_the_hook_hypervisor_migrates_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(dir.path().join("j.redb")).unwrap());
    let (mut m, mut first) = Migration::new(plan(), now()).unwrap();
    first.extend(m.handle(Event::Start, now()).unwrap());
    // Died with the lab VM migrating: its quiesce hook died with the process.
    journal_until(&journal, &mut m, first, |a| {
        matches!(a, Action::StartMigration)
    });
    let log: Log = Arc::default();
    let report = drive_recovered(journal.clone(), &log).await;
    assert_eq!(report.phase, Phase::RolledBack, "{report:?}");
    let l = log.lock().unwrap().clone();
    // Cancel first (the VM back at its source), then both agents aborted; the VM was
    // never asked to migrate again.
    assert!(pos(&l, "vm cancel") < pos(&l, "source abort"), "{l:?}");
    assert!(pos(&l, "vm cancel") < pos(&l, "destination abort"), "{l:?}");
    assert!(!l.contains(&"vm suspended".into()), "{l:?}");
    // The journal now holds the finished rollback: nothing left to recover.
    assert!(recover(&journal, now()).unwrap().is_empty());
}
