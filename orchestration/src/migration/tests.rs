//! Scripted tests: (time, event) → expected commands, rendered as short strings so a
//! script reads like the table in the module doc; plus a fake world that answers every
//! command, used to crash the orchestrator after every journaled command.

use super::*;
use crate::drivers::{HypervisorEvent, MigrationProgress, StorageEvent};
use crate::pe::{Phase as PePhase, Role, TunnelKind};
use crate::Time;
use std::collections::VecDeque;

// ---- fixtures ----

pub(crate) fn plan(storage: bool, style: QuiesceStyle) -> MigrationPlan {
    let hypervisor = match style {
        QuiesceStyle::Hook => HypervisorPlan::Lab {
            topology: "labs/wan-migration/wan-migration.clab.yml".into(),
            node: "vm".into(),
            to: "dc-b".into(),
            pause_ms: 300,
        },
        QuiesceStyle::Observe => HypervisorPlan::Libvirt {
            source_uri: "qemu+ssh://host-a/system".into(),
            destination_uri: "qemu+ssh://host-b/system".into(),
            domain: None,
            max_downtime_ms: Some(300),
            peer_uri: None,
            migrate_uri: None,
            listen_address: None,
            bandwidth_mib_s: None,
            copy_storage: CopyStorage::None,
            tls: false,
        },
    };
    let storage = if storage {
        StoragePlan::QemuMirror(QemuMirrorPlan::new(
            "vda",
            "nbd://host-b:10809/vda",
            "unix:/run/qemu/vm1.qmp",
            "tcp:host-b:4444",
        ))
    } else {
        StoragePlan::None
    };
    MigrationPlan {
        id: crate::pe::MigrationId::new("vm1-move").unwrap(),
        vm: VmPlan {
            name: "vm1".into(),
            prefixes: vec!["10.0.0.1/32".parse().unwrap()],
            mac: None,
        },
        source: AgentPlan {
            agent_url: "http://pe-a:8080".into(),
            tunnel_endpoint: "192.0.2.1".parse().unwrap(),
            ca_file: None,
        },
        destination: AgentPlan {
            agent_url: "http://pe-b:8080".into(),
            tunnel_endpoint: "192.0.2.2".parse().unwrap(),
            ca_file: None,
        },
        tunnel: TunnelKind::Vxlan { vni: 4242 },
        hypervisor,
        storage,
        policy: MigrationPolicy::default(),
        timeouts: Timeouts {
            prepare_ms: 1_000,
            storage_async_ms: 60_000,
            storage_sync_ms: 10_000,
            migrate_ms: 30_000,
            switchover_ms: 200,
            resume_ms: 2_000,
            announce_ms: 1_000,
            converge_ms: 20_000,
            teardown_ms: 1_000,
            rollback_step_ms: 5_000,
        },
    }
}

/// Renders `c`, naming the command a `Done`/`Failed` record answers (looked up in
/// `log`), so scripts don't depend on seq numbers.
fn render_in(log: &[Command], c: &Command) -> String {
    let name = |seq: &u64| {
        log.get(*seq as usize)
            .map(|c| render_in(log, c))
            .unwrap_or_else(|| format!("#{seq}"))
    };
    match &c.action {
        Action::Persist(Record::Done { seq, .. }) => format!("done {}", name(seq)),
        Action::Persist(Record::Failed { seq, .. }) => format!("failed {}", name(seq)),
        _ => render(c),
    }
}

fn render(c: &Command) -> String {
    let who = |r: &Role| match r {
        Role::Source => "src",
        Role::Destination => "dst",
    };
    match &c.action {
        Action::Persist(Record::Created { .. }) => "created".into(),
        Action::Persist(Record::Phase { phase, .. }) => format!("phase {phase}"),
        Action::Persist(Record::Done { seq, .. }) => format!("done #{seq}"),
        Action::Persist(Record::Failed { seq, .. }) => format!("failed #{seq}"),
        Action::Persist(Record::Observed { what, .. }) => match what {
            Observation::Agent { which, phase } => format!("saw {} {phase}", who(which)),
            other => format!("saw {other:?}").to_lowercase(),
        },
        Action::Persist(Record::Fault { cause, .. }) => format!("fault: {cause}"),
        Action::Persist(Record::Restarted { .. }) => "restarted".into(),
        Action::PrepareAgent { which } => format!("prepare {}", who(which)),
        Action::AbortAgent { which } => format!("abort {}", who(which)),
        Action::Notify(Notice::Completed) => "notify completed".into(),
        Action::Notify(Notice::Stalled { .. }) => "notify stalled".into(),
        Action::Notify(Notice::RolledBack { .. }) => "notify rolled-back".into(),
        other => format!("{other:?}"),
    }
}

fn rendered(cmds: &[Command]) -> Vec<String> {
    cmds.iter().map(render).collect()
}

fn rendered_in(log: &[Command], cmds: &[Command]) -> Vec<String> {
    cmds.iter().map(|c| render_in(log, c)).collect()
}

/// A machine plus a clock, with helpers that answer commands by their rendering.
struct Script {
    m: Migration,
    now: Time,
}

impl Script {
    fn new(storage: bool, style: QuiesceStyle) -> Self {
        Self::with_plan(plan(storage, style))
    }

    fn with_plan(p: MigrationPlan) -> Self {
        let (m, cmds) = Migration::new(p, Time::ZERO).unwrap();
        assert_eq!(rendered(&cmds), ["created"]);
        Script { m, now: Time::ZERO }
    }

    fn at(&mut self, ms: u64) -> &mut Self {
        self.now = Time::from_millis(ms);
        self
    }

    fn ev(&mut self, e: Event) -> Vec<String> {
        let out = self.m.handle(e, self.now).unwrap();
        self.check_replay();
        rendered_in(self.m.log(), &out)
    }

    fn seq_of(&self, name: &str) -> u64 {
        let pending = self.m.status().pending;
        pending
            .iter()
            .rev()
            .find(|(seq, _)| render(&self.m.log()[*seq as usize]) == name)
            .unwrap_or_else(|| panic!("{name} not pending in {pending:?}"))
            .0
    }

    fn done(&mut self, name: &str) -> Vec<String> {
        let seq = self.seq_of(name);
        self.ev(Event::Done { seq })
    }

    fn fail(&mut self, name: &str) -> Vec<String> {
        let seq = self.seq_of(name);
        self.ev(Event::Failed {
            seq,
            error: format!("{name} broke"),
        })
    }

    fn hv(&mut self, e: HypervisorEvent) -> Vec<String> {
        self.ev(Event::Hypervisor(e))
    }

    fn timeout(&mut self) -> Vec<String> {
        let out = self.m.handle_timeout(self.now);
        self.check_replay();
        rendered_in(self.m.log(), &out)
    }

    /// The restored machine equals the live one after every step.
    fn check_replay(&self) {
        let restored = Migration::restore(self.m.log()).unwrap();
        assert_eq!(restored.status(), self.m.status());
        assert_eq!(restored.log(), self.m.log());
    }
}

fn v(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// Drives a script through the happy path up to (not including) the VM's suspend.
fn to_migrating(s: &mut Script, storage: bool) {
    assert_eq!(
        s.ev(Event::Start),
        v(&["phase preparing", "prepare src", "prepare dst"])
    );
    assert_eq!(s.at(10).done("prepare src"), v(&["done prepare src"]));
    if storage {
        assert_eq!(
            s.at(20).done("prepare dst"),
            v(&[
                "done prepare dst",
                "phase storage-async",
                "StorageStartAsync"
            ])
        );
        assert_eq!(
            s.at(30).done("StorageStartAsync"),
            v(&["done StorageStartAsync"])
        );
        assert_eq!(
            s.at(1_000).ev(Event::Storage(StorageEvent::Ready)),
            v(&["saw storageready", "phase presync", "StorageSwitchSync"])
        );
        assert_eq!(
            s.at(1_010).done("StorageSwitchSync"),
            v(&["done StorageSwitchSync", "StorageWaitInSync"])
        );
        assert_eq!(
            s.at(1_500).done("StorageWaitInSync"),
            v(&[
                "done StorageWaitInSync",
                "phase migrating",
                "SwitchoverDestination"
            ])
        );
    } else {
        assert_eq!(
            s.at(20).done("prepare dst"),
            v(&[
                "done prepare dst",
                "phase migrating",
                "SwitchoverDestination"
            ])
        );
    }
    let t = s.now.as_millis();
    let out = s.at(t + 5).done("SwitchoverDestination");
    assert_eq!(out[1..], v(&["StartMigration"]));
    assert!(s
        .hv(HypervisorEvent::Progress(MigrationProgress {
            total_bytes: 100,
            processed_bytes: 40,
            remaining_bytes: 60,
            iteration: 1,
            dirty_rate_pages: None,
        }))
        .is_empty());
    assert_eq!(s.m.progress().unwrap().processed_bytes, 40);
}

/// From `Announcing` entered: announce, converge, tear down.
fn finish(s: &mut Script, at: u64) {
    let out = s.at(at).done("AnnounceDestination");
    assert_eq!(out[1..], v(&["AnnounceSource"]));
    let out = s.at(at + 5).done("AnnounceSource");
    assert_eq!(out[1..], v(&["phase converging"]));
    assert!(s.m.polls_agents());
    let out = s.at(at + 3_000).ev(Event::Agent {
        which: Role::Destination,
        phase: PePhase::Converging,
    });
    assert_eq!(out, v(&["saw dst converging"]));
    let out = s.at(at + 4_000).ev(Event::Agent {
        which: Role::Source,
        phase: PePhase::TornDown,
    });
    assert_eq!(
        out,
        v(&["saw src torn-down", "phase tearing-down", "CompleteAgents"])
    );
    let out = s.at(at + 4_010).done("CompleteAgents");
    assert_eq!(out[1..], v(&["phase completed", "notify completed"]));
    assert_eq!(s.m.phase(), Phase::Completed);
    assert_eq!(s.m.poll_timeout(), None);
}

// ---- happy paths ----

#[test]
fn happy_path_hook_style_without_storage() {
    let mut s = Script::new(false, QuiesceStyle::Hook);
    to_migrating(&mut s, false);
    assert_eq!(
        s.at(5_000).hv(HypervisorEvent::Suspended),
        v(&["saw suspended", "phase switching-over", "SwitchoverSource"])
    );
    // The hook waits: nothing resumes before the override is acknowledged.
    assert_eq!(
        s.at(5_040).done("SwitchoverSource"),
        v(&["done SwitchoverSource", "AckQuiesce", "phase resuming"])
    );
    assert_eq!(
        s.at(5_300).hv(HypervisorEvent::Resumed),
        v(&["saw resumed", "phase announcing", "AnnounceDestination"])
    );
    assert_eq!(s.at(5_310).done("AckQuiesce"), v(&["done AckQuiesce"]));
    assert_eq!(
        s.at(5_400).hv(HypervisorEvent::Completed),
        v(&["saw completed"])
    );
    // The job's own Done after the Completed report changes nothing more.
    assert_eq!(
        s.at(5_401).done("StartMigration"),
        v(&["done StartMigration"])
    );
    finish(&mut s, 5_500);
    let r = s.m.report();
    assert_eq!(r.marks.override_before_resume, Some(true));
    assert_eq!(r.pause_ms, Some(300));
    assert_eq!(r.switchover_ms, Some(40));
    let phases: Vec<Phase> = r.phases.iter().map(|p| p.phase).collect();
    assert_eq!(
        phases,
        [
            Phase::Planned,
            Phase::Preparing,
            Phase::Migrating,
            Phase::SwitchingOver,
            Phase::Resuming,
            Phase::Announcing,
            Phase::Converging,
            Phase::TearingDown,
            Phase::Completed
        ]
    );
    let sw = r.phases[3];
    assert_eq!((sw.start.as_millis(), sw.duration_ms()), (5_000, Some(40)));
    assert_eq!(r.phases[8].end, None);
    assert!(r.errors.is_empty());
}

#[test]
fn happy_path_observe_style_with_storage() {
    let mut s = Script::new(true, QuiesceStyle::Observe);
    to_migrating(&mut s, true);
    assert_eq!(
        s.at(9_000).hv(HypervisorEvent::Suspended),
        v(&[
            "saw suspended",
            "phase switching-over",
            "SwitchoverSource",
            "StorageCutover"
        ])
    );
    assert_eq!(
        s.at(9_030).done("SwitchoverSource"),
        v(&["done SwitchoverSource"])
    );
    // No AckQuiesce with libvirt: it resumes on its own.
    let out = s.at(9_050).done("StorageCutover");
    assert_eq!(out, v(&["done StorageCutover", "phase resuming"]));
    let out = s.at(9_200).hv(HypervisorEvent::Resumed);
    assert_eq!(
        out,
        v(&["saw resumed", "phase announcing", "AnnounceDestination"])
    );
    assert_eq!(
        s.at(9_300).done("StartMigration"),
        v(&["done StartMigration"])
    );
    finish(&mut s, 9_400);
    let r = s.m.report();
    assert_eq!(r.marks.override_before_resume, Some(true));
    assert_eq!(r.marks.completed_at, Some(Time::from_millis(9_300)));
    assert!(!s.m.log().iter().any(|c| c.action == Action::AckQuiesce));
}

#[test]
fn observe_style_records_a_lost_race_and_still_announces_after_the_ack() {
    let mut s = Script::new(false, QuiesceStyle::Observe);
    to_migrating(&mut s, false);
    s.at(5_000).hv(HypervisorEvent::Suspended);
    // libvirt resumed before the override was acknowledged.
    assert_eq!(
        s.at(5_100).hv(HypervisorEvent::Resumed),
        v(&["saw resumed"])
    );
    assert_eq!(s.m.phase(), Phase::SwitchingOver);
    assert_eq!(
        s.at(5_150).done("SwitchoverSource"),
        v(&[
            "done SwitchoverSource",
            "phase announcing",
            "AnnounceDestination"
        ])
    );
    assert_eq!(s.m.report().marks.override_before_resume, Some(false));
    // Abort is no longer possible: the VM lives at the destination.
    assert!(matches!(
        s.m.handle(Event::Abort, s.now),
        Err(MigrationError::PastPointOfNoReturn { .. })
    ));
}

#[test]
fn observe_style_override_missing_after_resume_goes_forward_on_timeout() {
    let mut s = Script::new(false, QuiesceStyle::Observe);
    to_migrating(&mut s, false);
    s.at(5_000).hv(HypervisorEvent::Suspended);
    s.at(5_100).hv(HypervisorEvent::Resumed);
    assert_eq!(s.m.poll_timeout(), Some(Time::from_millis(5_200)));
    assert!(s.at(5_199).timeout().is_empty());
    assert_eq!(
        s.at(5_200).timeout(),
        v(&[
            "fault: timeout in phase switching-over",
            "phase announcing",
            "AnnounceDestination"
        ])
    );
}

#[test]
fn switchover_failure_after_resume_goes_forward() {
    let mut s = Script::new(false, QuiesceStyle::Observe);
    to_migrating(&mut s, false);
    s.at(5_000).hv(HypervisorEvent::Suspended);
    s.at(5_100).hv(HypervisorEvent::Completed);
    assert_eq!(
        s.at(5_150).fail("SwitchoverSource"),
        v(&[
            "failed SwitchoverSource",
            "phase announcing",
            "AnnounceDestination"
        ])
    );
}

// ---- failures and timeouts roll back in reverse ----

#[test]
fn prepare_failure_aborts_both_agents() {
    let mut s = Script::new(true, QuiesceStyle::Hook);
    s.ev(Event::Start);
    assert_eq!(
        s.at(5).fail("prepare dst"),
        v(&[
            "failed prepare dst",
            "phase rolling-back",
            "abort src",
            "abort dst"
        ])
    );
    // The source's prepare answers late: recorded, changes nothing else.
    assert_eq!(s.at(6).done("prepare src"), v(&["done prepare src"]));
    assert_eq!(s.at(7).done("abort dst"), v(&["done abort dst"]));
    assert_eq!(
        s.at(8).done("abort src"),
        v(&["done abort src", "phase rolled-back", "notify rolled-back"])
    );
    assert_eq!(s.m.report().errors[0].error, "prepare dst broke");
    assert_eq!(
        s.m.log().last().unwrap().action,
        Action::Notify(Notice::RolledBack {
            reason: "prepare dst broke".into()
        })
    );
}

#[test]
fn storage_failure_aborts_storage_then_agents() {
    let mut s = Script::new(true, QuiesceStyle::Observe);
    s.ev(Event::Start);
    s.done("prepare src");
    s.done("prepare dst");
    s.done("StorageStartAsync");
    assert_eq!(
        s.at(50).ev(Event::Storage(StorageEvent::Failed {
            error: "mirror: ENOSPC".into()
        })),
        v(&[
            "fault: storage: mirror: ENOSPC",
            "phase rolling-back",
            "StorageAbort",
            "abort src",
            "abort dst"
        ])
    );
}

#[test]
fn hypervisor_failure_skips_cancel() {
    let mut s = Script::new(false, QuiesceStyle::Observe);
    to_migrating(&mut s, false);
    let out = s.at(4_000).hv(HypervisorEvent::Failed {
        error: "connection reset".into(),
    });
    assert_eq!(
        out,
        v(&[
            "saw migrationfailed",
            "fault: hypervisor: connection reset",
            "phase rolling-back",
            "abort src",
            "abort dst"
        ])
    );
    // Repeated failure report: nothing.
    assert!(s
        .hv(HypervisorEvent::Failed {
            error: "connection reset".into()
        })
        .is_empty());
}

#[test]
fn switchover_failure_in_hook_cancels_then_aborts() {
    let mut s = Script::new(true, QuiesceStyle::Hook);
    to_migrating(&mut s, true);
    s.at(9_000).hv(HypervisorEvent::Suspended);
    assert_eq!(
        s.at(9_010).fail("SwitchoverSource"),
        v(&[
            "failed SwitchoverSource",
            "phase rolling-back",
            "CancelMigration"
        ])
    );
    // The pause-window cutover answers meanwhile: recorded only.
    assert_eq!(
        s.at(9_011).done("StorageCutover"),
        v(&["done StorageCutover"])
    );
    assert_eq!(
        s.at(9_100).done("CancelMigration"),
        v(&[
            "done CancelMigration",
            "StorageAbort",
            "abort src",
            "abort dst"
        ])
    );
    s.done("StorageAbort");
    s.done("abort dst");
    assert_eq!(
        s.done("abort src")[1..],
        v(&["phase rolled-back", "notify rolled-back"])
    );
    assert!(!s.m.log().iter().any(|c| c.action == Action::AckQuiesce));
}

#[test]
fn failed_undo_is_recorded_and_rollback_goes_on() {
    let mut s = Script::new(false, QuiesceStyle::Hook);
    to_migrating(&mut s, false);
    s.at(9_000).ev(Event::Abort);
    assert_eq!(
        s.at(9_010).fail("CancelMigration"),
        v(&["failed CancelMigration", "abort src", "abort dst"])
    );
    s.fail("abort src");
    assert_eq!(
        s.done("abort dst")[1..],
        v(&["phase rolled-back", "notify rolled-back"])
    );
    assert_eq!(s.m.report().errors.len(), 3);
}

#[test]
fn rollback_step_timeout_gives_up_the_step() {
    let mut s = Script::new(false, QuiesceStyle::Observe);
    to_migrating(&mut s, false);
    s.at(9_000).ev(Event::Abort);
    assert_eq!(s.m.poll_timeout(), Some(Time::from_millis(14_000)));
    assert_eq!(
        s.at(14_000).timeout(),
        v(&[
            "fault: timeout in phase rolling-back",
            "abort src",
            "abort dst"
        ])
    );
    assert_eq!(s.m.poll_timeout(), Some(Time::from_millis(19_000)));
    assert_eq!(
        s.at(19_000).timeout(),
        v(&[
            "fault: timeout in phase rolling-back",
            "phase rolled-back",
            "notify rolled-back"
        ])
    );
}

#[test]
fn cancel_losing_the_race_turns_the_rollback_forward() {
    let mut s = Script::new(false, QuiesceStyle::Observe);
    to_migrating(&mut s, false);
    s.at(5_000).hv(HypervisorEvent::Suspended);
    // The override takes too long: rollback begins with the cancel …
    assert_eq!(
        s.at(5_200).timeout(),
        v(&[
            "fault: timeout in phase switching-over",
            "phase rolling-back",
            "CancelMigration"
        ])
    );
    // … but libvirt had already resumed the VM at the destination.
    assert_eq!(
        s.at(5_210).hv(HypervisorEvent::Resumed),
        v(&["saw resumed", "phase switching-over"])
    );
    assert_eq!(
        s.at(5_220).done("SwitchoverSource"),
        v(&[
            "done SwitchoverSource",
            "phase announcing",
            "AnnounceDestination"
        ])
    );
    assert!(!s
        .m
        .log()
        .iter()
        .any(|c| matches!(c.action, Action::AbortAgent { .. })));
}

#[test]
fn resume_after_agents_were_aborted_stalls() {
    let mut s = Script::new(false, QuiesceStyle::Observe);
    to_migrating(&mut s, false);
    s.ev(Event::Abort);
    s.done("CancelMigration");
    assert_eq!(
        s.hv(HypervisorEvent::Resumed),
        v(&[
            "saw resumed",
            "fault: vm resumed at the destination while the network was rolled back",
            "phase stalled",
            "notify stalled"
        ])
    );
}

/// Every phase's deadline: before the point of no return it rolls back with exactly the
/// undos of what was touched; after it, it stalls.
#[test]
fn timeouts_in_every_phase() {
    struct Case {
        storage: bool,
        setup: fn(&mut Script),
        phase: Phase,
        after: &'static [&'static str],
    }
    let cases = [
        Case {
            storage: false,
            setup: |s| {
                s.ev(Event::Start);
            },
            phase: Phase::Preparing,
            after: &["phase rolling-back", "abort src", "abort dst"],
        },
        Case {
            storage: true,
            setup: |s| {
                s.ev(Event::Start);
                s.done("prepare src");
                s.done("prepare dst");
            },
            phase: Phase::StorageAsync,
            after: &[
                "phase rolling-back",
                "StorageAbort",
                "abort src",
                "abort dst",
            ],
        },
        Case {
            storage: true,
            setup: |s| {
                s.ev(Event::Start);
                s.done("prepare src");
                s.done("prepare dst");
                s.done("StorageStartAsync");
                s.ev(Event::Storage(StorageEvent::Ready));
            },
            phase: Phase::Presync,
            after: &[
                "phase rolling-back",
                "StorageAbort",
                "abort src",
                "abort dst",
            ],
        },
        Case {
            storage: false,
            setup: |s| to_migrating(s, false),
            phase: Phase::Migrating,
            after: &["phase rolling-back", "CancelMigration"],
        },
        Case {
            storage: false,
            setup: |s| {
                to_migrating(s, false);
                s.hv(HypervisorEvent::Suspended);
            },
            phase: Phase::SwitchingOver,
            after: &["phase rolling-back", "CancelMigration"],
        },
        Case {
            storage: false,
            setup: |s| {
                to_migrating(s, false);
                s.hv(HypervisorEvent::Suspended);
                s.done("SwitchoverSource");
            },
            phase: Phase::Resuming,
            after: &["phase rolling-back", "CancelMigration"],
        },
        Case {
            storage: false,
            setup: |s| {
                to_migrating(s, false);
                s.hv(HypervisorEvent::Suspended);
                s.done("SwitchoverSource");
                s.hv(HypervisorEvent::Resumed);
            },
            phase: Phase::Announcing,
            after: &["phase stalled", "notify stalled"],
        },
        Case {
            storage: false,
            setup: |s| {
                to_migrating(s, false);
                s.hv(HypervisorEvent::Suspended);
                s.done("SwitchoverSource");
                s.hv(HypervisorEvent::Resumed);
                s.done("AnnounceDestination");
                s.done("AnnounceSource");
            },
            phase: Phase::Converging,
            after: &["phase stalled", "notify stalled"],
        },
    ];
    for c in cases {
        let mut s = Script::new(c.storage, QuiesceStyle::Hook);
        (c.setup)(&mut s);
        assert_eq!(s.m.phase(), c.phase);
        let deadline = s.m.poll_timeout().unwrap();
        s.now = Time::from_millis(deadline.as_millis() - 1);
        assert!(s.timeout().is_empty(), "{:?} fired early", c.phase);
        s.now = deadline;
        let out = s.timeout();
        assert_eq!(out[0], format!("fault: timeout in phase {}", c.phase));
        assert_eq!(out[1..], v(c.after), "{:?}", c.phase);
    }
}

#[test]
fn stalled_announce_can_be_retried_and_completed() {
    let mut s = Script::new(false, QuiesceStyle::Hook);
    to_migrating(&mut s, false);
    s.hv(HypervisorEvent::Suspended);
    s.done("SwitchoverSource");
    s.hv(HypervisorEvent::Resumed);
    assert_eq!(
        s.at(6_000).fail("AnnounceDestination"),
        v(&[
            "failed AnnounceDestination",
            "phase stalled",
            "notify stalled"
        ])
    );
    // Complete needs the destination's route first: it would black-hole the VM.
    assert!(matches!(
        s.m.handle(Event::Complete, s.now),
        Err(MigrationError::InvalidEvent { .. })
    ));
    assert_eq!(
        s.at(7_000).ev(Event::Retry),
        v(&["phase announcing", "AnnounceDestination"])
    );
    s.done("AnnounceDestination");
    s.done("AnnounceSource");
    // Not converging: the operator completes by hand.
    assert_eq!(
        s.ev(Event::Complete),
        v(&["phase tearing-down", "CompleteAgents"])
    );
    assert!(matches!(
        s.m.handle(Event::Retry, s.now),
        Err(MigrationError::InvalidEvent { .. })
    ));
}

#[test]
fn agent_giving_up_stalls_or_rolls_back() {
    let mut s = Script::new(false, QuiesceStyle::Hook);
    s.ev(Event::Start);
    assert_eq!(
        s.ev(Event::Agent {
            which: Role::Destination,
            phase: PePhase::Aborted
        }),
        v(&[
            "saw dst aborted",
            "fault: destination agent reports aborted",
            "phase rolling-back",
            "abort src",
            "abort dst"
        ])
    );
}

// ---- operator abort at each phase ----

#[test]
fn operator_abort_in_every_phase() {
    // (setup, expected answer to Abort)
    type Setup = fn(&mut Script);
    let before: [(Setup, &[&str]); 5] = [
        (
            |_| {},
            &[
                "fault: aborted by operator",
                "phase rolling-back",
                "phase rolled-back",
                "notify rolled-back",
            ],
        ),
        (
            |s| {
                s.ev(Event::Start);
            },
            &[
                "fault: aborted by operator",
                "phase rolling-back",
                "abort src",
                "abort dst",
            ],
        ),
        (
            |s| {
                s.ev(Event::Start);
                s.done("prepare src");
                s.done("prepare dst");
            },
            &[
                "fault: aborted by operator",
                "phase rolling-back",
                "StorageAbort",
                "abort src",
                "abort dst",
            ],
        ),
        (
            |s| to_migrating(s, true),
            &[
                "fault: aborted by operator",
                "phase rolling-back",
                "CancelMigration",
            ],
        ),
        (
            |s| {
                to_migrating(s, true);
                s.hv(HypervisorEvent::Suspended);
            },
            &[
                "fault: aborted by operator",
                "phase rolling-back",
                "CancelMigration",
            ],
        ),
    ];
    for (setup, want) in before {
        let mut s = Script::new(true, QuiesceStyle::Hook);
        setup(&mut s);
        assert_eq!(s.ev(Event::Abort), v(want));
        // Abort again: nothing.
        assert!(s.ev(Event::Abort).is_empty());
    }
    let mut s = Script::new(false, QuiesceStyle::Hook);
    to_migrating(&mut s, false);
    s.hv(HypervisorEvent::Suspended);
    s.done("SwitchoverSource");
    s.hv(HypervisorEvent::Resumed);
    s.hv(HypervisorEvent::Completed);
    for _ in 0..2 {
        let before = s.m.status();
        assert_eq!(
            s.m.handle(Event::Abort, s.now),
            Err(MigrationError::PastPointOfNoReturn {
                id: s.m.id().clone(),
                phase: s.m.phase()
            })
        );
        assert_eq!(s.m.status(), before);
        if s.m.phase() == Phase::Announcing {
            finish(&mut s, 6_000);
        }
    }
}

// ---- idempotency ----

#[test]
fn duplicate_events_change_nothing() {
    let mut s = Script::new(true, QuiesceStyle::Observe);
    to_migrating(&mut s, true);
    let seq =
        s.m.log()
            .iter()
            .position(|c| {
                c.action
                    == Action::PrepareAgent {
                        which: Role::Source,
                    }
            })
            .unwrap() as u64;
    let before = s.m.status();
    for e in [
        Event::Start,
        Event::Done { seq },
        Event::Failed {
            seq,
            error: "late".into(),
        },
        Event::Done { seq: 0 },
        Event::Storage(StorageEvent::Ready),
        Event::Storage(StorageEvent::InSync),
    ] {
        assert!(s.ev(e.clone()).is_empty(), "{e:?}");
    }
    assert_eq!(s.m.status(), before);
    let seen = Event::Agent {
        which: Role::Source,
        phase: PePhase::SwitchedOver,
    };
    assert_eq!(s.ev(seen.clone()), v(&["saw src switched-over"]));
    assert!(s.ev(seen).is_empty());
    s.hv(HypervisorEvent::Suspended);
    let before = s.m.status();
    assert!(s.hv(HypervisorEvent::Suspended).is_empty());
    assert_eq!(s.m.status(), before);
    assert_eq!(
        s.m.handle(Event::Done { seq: 999 }, s.now),
        Err(MigrationError::UnknownCommand {
            id: s.m.id().clone(),
            seq: 999
        })
    );
}

#[test]
fn in_sync_before_switching_to_sync_does_not_count() {
    let mut s = Script::new(true, QuiesceStyle::Hook);
    s.ev(Event::Start);
    s.done("prepare src");
    s.done("prepare dst");
    assert!(s.ev(Event::Storage(StorageEvent::InSync)).is_empty());
    s.done("StorageStartAsync");
    s.ev(Event::Storage(StorageEvent::Ready));
    assert_eq!(s.done("StorageSwitchSync")[1..], v(&["StorageWaitInSync"]));
    assert_eq!(
        s.ev(Event::Storage(StorageEvent::InSync)),
        v(&[
            "saw storageinsync",
            "phase migrating",
            "SwitchoverDestination"
        ])
    );
}

// ---- plan ----

#[test]
fn plan_validation_names_the_field() {
    let ok = plan(true, QuiesceStyle::Observe);
    assert_eq!(ok.validate(), Ok(()));
    let field = |p: MigrationPlan| match p.validate() {
        Err(PlanError::Invalid { field, .. }) => field,
        Err(PlanError::Spec { field, .. }) => field.to_string(),
        Ok(()) => "ok".into(),
    };
    let mut p = ok.clone();
    p.vm.name = " ".into();
    assert_eq!(field(p), "vm.name");
    let mut p = ok.clone();
    p.source.agent_url = "pe-a:8080".into();
    assert_eq!(field(p), "source.agent_url");
    let mut p = ok.clone();
    p.destination.agent_url = "http://pe-a:8080/".into();
    assert_eq!(field(p), "destination.agent_url");
    let mut p = ok.clone();
    p.destination.tunnel_endpoint = "2001:db8::2".parse().unwrap();
    assert_eq!(field(p), "destination.tunnel_endpoint");
    let mut p = ok.clone();
    p.timeouts.switchover_ms = 0;
    assert_eq!(field(p), "timeouts.switchover_ms");
    let mut p = ok.clone();
    p.storage = StoragePlan::Drbd {
        resource: String::new(),
        source_command: vec![],
        destination_command: vec![],
    };
    assert_eq!(field(p), "storage.resource");
    let mut p = ok.clone();
    p.vm.prefixes = vec!["10.0.0.0/24".parse().unwrap()];
    assert_eq!(field(p), "vm.prefixes");
    let mut p = ok.clone();
    p.tunnel = TunnelKind::Vxlan { vni: 0 };
    assert_eq!(field(p), "tunnel.vni");
    let mut p = ok;
    if let HypervisorPlan::Libvirt {
        destination_uri, ..
    } = &mut p.hypervisor
    {
        *destination_uri = "qemu+ssh://host-a/system".into();
    }
    assert_eq!(field(p.clone()), "hypervisor.destination_uri");
    assert!(matches!(
        Migration::new(p, Time::ZERO),
        Err(MigrationError::Plan(_))
    ));
}

#[test]
fn plan_json_shape_and_agent_specs() {
    let body = r#"{
        "id": "vm1-move",
        "vm": {"name": "vm1", "prefixes": ["10.0.0.1/32"]},
        "source": {"agent_url": "http://pe-a:8080", "tunnel_endpoint": "192.0.2.1"},
        "destination": {"agent_url": "http://pe-b:8080", "tunnel_endpoint": "192.0.2.2"},
        "tunnel": {"kind": "vxlan", "vni": 7},
        "hypervisor": {"kind": "lab", "topology": "t.clab.yml", "node": "vm", "to": "dc-b"},
        "policy": {"on_restart": "rollback"},
        "timeouts": {"switchover_ms": 500}
    }"#;
    let p: MigrationPlan = serde_json::from_str(body).unwrap();
    p.validate().unwrap();
    assert_eq!(p.storage, StoragePlan::None);
    assert_eq!(p.policy.on_restart, OnRestart::Rollback);
    assert_eq!(p.timeouts.switchover_ms, 500);
    assert_eq!(p.timeouts.prepare_ms, Timeouts::default().prepare_ms);
    assert_eq!(p.hypervisor.quiesce_style(), QuiesceStyle::Hook);
    assert!(matches!(
        p.hypervisor,
        HypervisorPlan::Lab { pause_ms: 100, .. }
    ));
    let src = p.agent_spec(Role::Source);
    let dst = p.agent_spec(Role::Destination);
    assert_eq!(src.peer.api_url, "http://pe-b:8080");
    assert_eq!(dst.peer.tunnel_endpoint.to_string(), "192.0.2.1");
    assert_eq!((src.role, dst.role), (Role::Source, Role::Destination));
    assert_eq!(dst.vm_mac, None, "no vm.mac in the plan");
    assert!(serde_json::from_str::<MigrationPlan>(&body.replace("\"to\"", "\"too\"")).is_err());
    // Round trip.
    let again: MigrationPlan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(again, p);
}

#[test]
fn the_vm_mac_reaches_both_agents_specs() {
    let mut p = plan(false, QuiesceStyle::Hook);
    p.vm.mac = Some("52:54:00:12:34:56".parse().unwrap());
    p.validate().unwrap();
    for role in [Role::Source, Role::Destination] {
        assert_eq!(p.agent_spec(role).vm_mac, p.vm.mac);
    }
    let text = serde_json::to_string(&p).unwrap();
    assert!(text.contains("\"mac\":\"52:54:00:12:34:56\""), "{text}");
    let bad = text.replace("52:54:00:12:34:56", "52:54:00:12:34");
    assert!(serde_json::from_str::<MigrationPlan>(&bad).is_err());
}

// ---- crash anywhere: a fake world answers every command ----

/// Answers every command like well-behaved drivers and agents would, except that the
/// first command equal to `fail_on` fails.
struct World {
    events: VecDeque<Event>,
    fail_on: Option<Action>,
    style: QuiesceStyle,
    vm_at_destination: bool,
    override_acked: bool,
    migration_running: bool,
    answered: usize,
}

impl World {
    fn new(m: &Migration) -> Self {
        World {
            events: VecDeque::new(),
            fail_on: None,
            style: m.quiesce_style(),
            vm_at_destination: m.past_point_of_no_return(),
            override_acked: m.status().flags.src_switched,
            migration_running: false,
            answered: 0,
        }
    }

    fn resume_vm(&mut self, start_seq: Option<u64>) {
        self.vm_at_destination = true;
        self.events
            .push_back(Event::Hypervisor(HypervisorEvent::Resumed));
        self.events
            .push_back(Event::Hypervisor(HypervisorEvent::Completed));
        if let Some(seq) = start_seq {
            self.events.push_back(Event::Done { seq });
        }
    }

    fn carry_out(&mut self, m: &Migration, cmds: &[Command]) {
        for c in cmds {
            let seq = c.seq;
            if self.fail_on.as_ref() == Some(&c.action) {
                self.fail_on = None;
                self.events.push_back(Event::Failed {
                    seq,
                    error: "injected".into(),
                });
                continue;
            }
            match &c.action {
                Action::Persist(_) | Action::Notify(_) => continue,
                Action::StorageStartAsync => {
                    self.events.push_back(Event::Storage(StorageEvent::Ready));
                }
                Action::StartMigration => {
                    self.migration_running = true;
                    if self.vm_at_destination {
                        self.resume_vm(Some(seq));
                        continue;
                    }
                    self.events
                        .push_back(Event::Hypervisor(HypervisorEvent::Suspended));
                    if self.style == QuiesceStyle::Observe && self.override_acked {
                        self.resume_vm(Some(seq));
                    }
                    continue;
                }
                Action::SwitchoverSource => {
                    self.override_acked = true;
                    self.events.push_back(Event::Done { seq });
                    if self.style == QuiesceStyle::Observe && self.migration_running {
                        let start = m
                            .status()
                            .pending
                            .iter()
                            .find(|(_, a)| *a == Action::StartMigration)
                            .map(|(s, _)| *s);
                        self.resume_vm(start);
                    }
                    continue;
                }
                Action::AckQuiesce => {
                    // The ordering rule: the hook never releases before the override.
                    assert!(self.override_acked, "AckQuiesce before the override");
                    let start = m
                        .status()
                        .pending
                        .iter()
                        .find(|(_, a)| *a == Action::StartMigration)
                        .map(|(s, _)| *s);
                    self.events.push_back(Event::Done { seq });
                    self.resume_vm(start);
                    continue;
                }
                Action::CancelMigration => self.migration_running = false,
                _ => {}
            }
            self.events.push_back(Event::Done { seq });
        }
    }

    /// Runs until the machine is final (or stalls); checks replay after every step.
    fn run(&mut self, m: &mut Migration, first: Vec<Command>, mut now: u64) {
        self.carry_out(m, &first);
        for _ in 0..500 {
            now += 10;
            let t = Time::from_millis(now);
            let out = match self.events.pop_front() {
                Some(e) => m.handle(e, t).unwrap(),
                None if m.polls_agents() => {
                    self.events.push_back(Event::Agent {
                        which: Role::Destination,
                        phase: PePhase::TornDown,
                    });
                    self.events.push_back(Event::Agent {
                        which: Role::Source,
                        phase: PePhase::TornDown,
                    });
                    continue;
                }
                None => return,
            };
            self.answered += 1;
            assert_eq!(Migration::restore(m.log()).unwrap().status(), m.status());
            self.carry_out(m, &out);
        }
        panic!("no end in sight: {:?}", m.status());
    }
}

fn full_run(storage: bool, style: QuiesceStyle, policy: OnRestart) -> Vec<Command> {
    let mut p = plan(storage, style);
    p.policy.on_restart = policy;
    let (mut m, _) = Migration::new(p, Time::ZERO).unwrap();
    let first = m.handle(Event::Start, Time::ZERO).unwrap();
    let mut w = World::new(&m);
    w.run(&mut m, first, 0);
    assert_eq!(m.phase(), Phase::Completed);
    m.log().to_vec()
}

#[test]
fn crash_after_every_command_resumes_or_rolls_back() {
    for (storage, style, policy) in [
        (false, QuiesceStyle::Hook, OnRestart::Resume),
        (true, QuiesceStyle::Observe, OnRestart::Resume),
        (true, QuiesceStyle::Observe, OnRestart::Rollback),
        (false, QuiesceStyle::Observe, OnRestart::Resume),
    ] {
        let log = full_run(storage, style, policy);
        for k in 1..=log.len() {
            let prefix = &log[..k];
            let mut m = Migration::restore(prefix).unwrap();
            let was = m.status();
            let past = m.past_point_of_no_return();
            let started = prefix.iter().any(|c| c.action == Action::StartMigration);
            let mut out = m.resume(Time::from_millis(100_000));
            assert_eq!(rendered(&out[..1]), ["restarted"]);
            if was.phase == Phase::Planned {
                out.extend(m.handle(Event::Start, Time::from_millis(100_000)).unwrap());
            }
            let mut w = World::new(&m);
            w.run(&mut m, out, 100_000);
            let rolls_back = !past
                && was.phase != Phase::Completed
                && (was.phase == Phase::RollingBack
                    || (was.phase.is_forward()
                        && (policy == OnRestart::Rollback
                            || (style == QuiesceStyle::Hook && started))));
            let want = if rolls_back {
                Phase::RolledBack
            } else {
                Phase::Completed
            };
            assert_eq!(
                m.phase(),
                want,
                "{style:?} storage={storage} crash after {k}: {was:?}"
            );
            if rolls_back {
                // Everything touched was undone after the restart or before it.
                let s = m.status();
                for r in [0, 1] {
                    assert_eq!(
                        s.flags.abort_resolved[r], s.touched.agents[r],
                        "agent {r} at {k}"
                    );
                }
                assert_eq!(s.flags.storage_abort_resolved, s.touched.storage);
            }
        }
    }
}

#[test]
fn interrupted_rollback_finishes_after_restart() {
    let mut s = Script::new(true, QuiesceStyle::Observe);
    to_migrating(&mut s, true);
    s.ev(Event::Abort);
    s.done("CancelMigration");
    s.done("StorageAbort");
    // Crash here: both agents' aborts were journaled, not answered.
    let mut m = Migration::restore(s.m.log()).unwrap();
    assert_eq!(
        rendered(&m.resume(Time::from_millis(50_000))),
        v(&["restarted", "abort src", "abort dst"])
    );
    // Answers to commands issued before the crash are stale: ignored.
    let stale = s.seq_of("abort src");
    assert!(m
        .handle(Event::Done { seq: stale }, Time::from_millis(50_001))
        .unwrap()
        .is_empty());
    let seqs: Vec<u64> = m.status().pending.iter().map(|(s, _)| *s).collect();
    m.handle(Event::Done { seq: seqs[0] }, Time::from_millis(50_010))
        .unwrap();
    let out = m
        .handle(Event::Done { seq: seqs[1] }, Time::from_millis(50_020))
        .unwrap();
    assert_eq!(
        rendered(&out)[1..],
        v(&["phase rolled-back", "notify rolled-back"])
    );
}

#[test]
fn restart_in_converging_issues_nothing_and_keeps_polling() {
    let mut s = Script::new(false, QuiesceStyle::Observe);
    to_migrating(&mut s, false);
    s.hv(HypervisorEvent::Suspended);
    s.done("SwitchoverSource");
    s.hv(HypervisorEvent::Completed);
    s.done("AnnounceDestination");
    s.done("AnnounceSource");
    let mut m = Migration::restore(s.m.log()).unwrap();
    assert_eq!(
        rendered(&m.resume(Time::from_millis(60_000))),
        ["restarted"]
    );
    assert!(m.polls_agents());
    assert_eq!(m.poll_timeout(), Some(Time::from_millis(80_000)));
}

// ---- damaged journals ----

#[test]
fn replay_rejects_damaged_logs() {
    let log = full_run(false, QuiesceStyle::Hook, OnRestart::Resume);
    assert_eq!(Migration::restore(&[]).unwrap_err(), ReplayError::Empty);
    assert!(matches!(
        Migration::restore(&log[1..]),
        Err(ReplayError::MissingCreation { seq: 1, .. })
    ));
    let mut gap = log.clone();
    gap.remove(3);
    assert!(matches!(
        Migration::restore(&gap),
        Err(ReplayError::Gap {
            expected: 3,
            found: 4,
            ..
        })
    ));
    let mut dup = log[..3].to_vec();
    dup.push(Command {
        seq: 3,
        ..log[0].clone()
    });
    assert!(matches!(
        Migration::restore(&dup),
        Err(ReplayError::DuplicateCreation { seq: 3, .. })
    ));
    let mut bad = log.clone();
    if let Action::Persist(Record::Created { plan, .. }) = &mut bad[0].action {
        plan.vm.prefixes.clear();
    }
    assert!(matches!(
        Migration::restore(&bad),
        Err(ReplayError::InvalidPlan { .. })
    ));
}

#[test]
fn commands_round_trip_through_json() {
    let log = full_run(true, QuiesceStyle::Observe, OnRestart::Resume);
    let json: Vec<String> = log
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    let back: Vec<Command> = json
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert_eq!(back, log);
    assert!(json[1].contains(r#""action":"persist""#), "{}", json[1]);
}

/// Every forward action, failing: before the point of no return the rollback undoes
/// exactly what was touched, the cancel strictly before the other undos; after it,
/// nothing is undone and the migration stalls.
#[test]
fn every_forward_action_failing() {
    for style in [QuiesceStyle::Hook, QuiesceStyle::Observe] {
        let happy = full_run(true, style, OnRestart::Resume);
        let forward: Vec<Action> = happy
            .iter()
            .map(|c| c.action.clone())
            .filter(|a| a.is_forward() && a.expects_answer())
            .collect();
        assert!(forward.len() >= 12, "{forward:?}");
        for failing in forward {
            let (mut m, _) = Migration::new(plan(true, style), Time::ZERO).unwrap();
            let first = m.handle(Event::Start, Time::ZERO).unwrap();
            let mut w = World::new(&m);
            w.fail_on = Some(failing.clone());
            w.run(&mut m, first, 0);
            let s = m.status();
            let ctx = format!("{style:?}, {failing:?} failing");
            assert_eq!(s.errors[0].error, "injected", "{ctx}");
            if m.past_point_of_no_return() {
                // In the pause window, going forward to announce is the remedy; the
                // failure stays in the report.
                let pause_window =
                    matches!(failing, Action::SwitchoverSource | Action::StorageCutover);
                let want = if pause_window {
                    Phase::Completed
                } else {
                    Phase::Stalled
                };
                assert_eq!(m.phase(), want, "{ctx}");
                assert!(!s.touched.undo_started, "{ctx}");
                continue;
            }
            assert_eq!(m.phase(), Phase::RolledBack, "{ctx}");
            for r in [0, 1] {
                assert_eq!(s.flags.abort_resolved[r], s.touched.agents[r], "{ctx}");
            }
            assert_eq!(s.flags.storage_abort_resolved, s.touched.storage, "{ctx}");
            let pos = |f: &dyn Fn(&Action) -> bool| m.log().iter().position(|c| f(&c.action));
            let cancel = pos(&|a| *a == Action::CancelMigration);
            let first_undo =
                pos(&|a| matches!(a, Action::StorageAbort | Action::AbortAgent { .. }));
            assert_eq!(cancel.is_some(), s.touched.migration, "{ctx}");
            if let (Some(c), Some(u)) = (cancel, first_undo) {
                assert!(c < u, "{ctx}: cancel after an abort");
            }
        }
    }
}
