//! Journal tests: crash anywhere, reopen, rebuild; damaged records are typed errors.

use super::store::{COMMANDS, FORMAT, META};
use super::*;
use crate::executor::{execute, CommandLog, Effector};
use crate::pe::{
    Action, Command, DesiredState, Event, MigrationId, MigrationSpec, PeMigration, PeerPe, Phase,
    Registry, ReplayError, Role, RoutePolicy, Timers, TunnelKind,
};
use crate::Time;
use std::collections::BTreeMap;
use std::path::Path;

fn id(s: &str) -> MigrationId {
    MigrationId::new(s).unwrap()
}

fn spec(role: Role, prefix: &str, vni: u32) -> MigrationSpec {
    MigrationSpec {
        prefixes: vec![prefix.parse().unwrap()],
        role,
        peer: PeerPe {
            tunnel_endpoint: "192.0.2.9".parse().unwrap(),
            api_url: "http://peer:8080".into(),
        },
        tunnel: TunnelKind::Vxlan { vni },
        policy: RoutePolicy::default(),
        timers: Timers {
            quiet_ms: 1_000,
            min_hold_ms: 3_000,
            converge_timeout_ms: 30_000,
        },
        vm_mac: None,
    }
}

/// Performs everything, optionally failing actions whose kind matches.
#[derive(Default)]
struct Fake {
    done: Vec<Command>,
    fail: Option<fn(&Action) -> bool>,
}

impl Effector for Fake {
    type Error = String;

    fn perform(&mut self, cmd: &Command) -> Result<(), String> {
        if self.fail.is_some_and(|f| f(&cmd.action)) {
            return Err("netlink: operation not supported".into());
        }
        self.done.push(cmd.clone());
        Ok(())
    }
}

/// A journal that "crashes" (refuses every append) after `budget` appends.
struct Crashing<'a> {
    journal: &'a mut Journal,
    budget: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("simulated crash")]
struct Crash;

impl CommandLog for Crashing<'_> {
    type Error = Crash;

    fn append(&mut self, cmd: &Command) -> Result<(), Crash> {
        if self.budget == 0 {
            return Err(Crash);
        }
        self.budget -= 1;
        self.journal.append(cmd).map_err(|_| Crash)
    }

    fn rewind(
        &mut self,
        id: &MigrationId,
        failed_seq: u64,
        answer: &[Command],
    ) -> Result<(), Crash> {
        if self.budget == 0 {
            return Err(Crash);
        }
        self.budget -= 1;
        self.journal
            .rewind(id, failed_seq, answer)
            .map_err(|_| Crash)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(&'static str, MigrationSpec),
    Ev(&'static str, Event),
    VmSeen(&'static str),
    Timeout,
}

/// Three migrations interleaved: a source that converges by itself, a destination
/// that hears the VM and is completed, and a source that is aborted.
fn script() -> Vec<(u64, Op)> {
    use Op::*;
    vec![
        (0, Put("src", spec(Role::Source, "10.0.0.1/32", 11))),
        (0, Put("dst", spec(Role::Destination, "10.0.0.2/32", 12))),
        (0, Put("abo", spec(Role::Source, "10.0.0.3/32", 13))),
        (10, Ev("src", Event::Switchover)),
        (15, Ev("abo", Event::Switchover)),
        (20, VmSeen("10.0.0.2")),
        (25, Ev("src", Event::Announce)),
        (30, Ev("abo", Event::Abort)),
        (1_000, Ev("src", Event::TunnelCounters { packets: 5 })),
        (3_025, Timeout),
        (4_100, Ev("src", Event::TunnelCounters { packets: 5 })),
        (4_200, Ev("dst", Event::Complete)),
    ]
}

fn apply(r: &mut Registry, op: &Op, now: Time) -> Vec<Command> {
    match op {
        Op::Put(name, s) => r.prepare(id(name), s.clone(), now).unwrap().commands,
        Op::Ev(name, e) => r.handle(&id(name), e.clone(), now).unwrap(),
        Op::VmSeen(ip) => r.vm_seen(ip.parse().unwrap(), now).unwrap(),
        Op::Timeout => r.handle_timeout(now),
    }
}

/// The uninterrupted run: every command in execution order, and the final registry.
fn reference() -> (Vec<Command>, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path().join("j.redb")).unwrap();
    let mut r = Registry::new();
    let mut all = Vec::new();
    for (t, op) in script() {
        let now = Time::from_millis(t);
        let cmds = apply(&mut r, &op, now);
        let out = execute(&mut r, &mut j, &mut Fake::default(), cmds, now).unwrap();
        all.extend(out.journaled);
    }
    (all, r)
}

fn reopen(path: &Path, now: Time) -> (Journal, Registry) {
    let j = Journal::open(path).unwrap();
    let r = j.load_registry(now).unwrap();
    (j, r)
}

/// What a machine has in place equals the target of its phase.
fn assert_effects_match_target(m: &PeMigration, ctx: &str) {
    let d = DesiredState::from_migrations([m]);
    let e = m.effects();
    assert_eq!(e.tunnel, !d.tunnels.is_empty(), "{ctx}: tunnel");
    assert_eq!(
        e.override_installed,
        !d.overrides.is_empty(),
        "{ctx}: override"
    );
    assert_eq!(e.delivery, !d.deliveries.is_empty(), "{ctx}: delivery");
    let routes: Vec<_> = d.routes.iter().map(|r| r.prefix).collect();
    assert_eq!(
        e.announced.iter().copied().collect::<Vec<_>>(),
        routes,
        "{ctx}: routes"
    );
}

#[test]
fn append_load_round_trip_and_seq_protection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let (all, _) = reference();
    {
        let j = Journal::open(&path).unwrap();
        for c in &all {
            j.append(c).unwrap();
        }
        // The same command again is fine (retry); another one under its key is not.
        j.append(&all[0]).unwrap();
        let other = Command {
            action: all[1].action.clone(),
            ..all[0].clone()
        };
        assert!(matches!(
            j.append(&other),
            Err(JournalError::SeqTaken { seq: 0, .. })
        ));
    }
    let j = Journal::open(&path).unwrap();
    let mut loaded = j.load().unwrap();
    let mut want = all.clone();
    want.sort_by(|a, b| (&a.migration, a.seq).cmp(&(&b.migration, b.seq)));
    loaded.sort_by(|a, b| (&a.migration, a.seq).cmp(&(&b.migration, b.seq)));
    assert_eq!(loaded, want);

    assert_eq!(j.forget(&id("abo")).unwrap(), 9);
    assert!(j.load().unwrap().iter().all(|c| c.migration != id("abo")));
}

#[test]
fn crash_between_any_two_steps_rebuilds_the_same_machines() {
    let script = script();
    for k in 1..=script.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let mut live = Registry::new();
        let now = Time::from_millis(script[k - 1].0);
        {
            let mut j = Journal::open(&path).unwrap();
            for (t, op) in &script[..k] {
                let now = Time::from_millis(*t);
                let cmds = apply(&mut live, op, now);
                execute(&mut live, &mut j, &mut Fake::default(), cmds, now).unwrap();
            }
        } // crash: the journal is dropped with the process
        let (_j, mut restored) = reopen(&path, now);
        assert_eq!(restored.desired_state(), live.desired_state(), "after {k}");
        for m in live.iter() {
            let r = restored.get(m.id()).expect("rebuilt");
            assert_eq!(r.phase(), m.phase(), "after {k}: {}", m.id());
            assert_eq!(r.transitions(), m.transitions());
            assert_eq!(r.effects(), m.effects());
            assert_eq!(r.errors(), m.errors());
            assert_eq!(r.log(), m.log());
            assert_effects_match_target(r, &format!("after {k}: {}", m.id()));
        }
        assert_eq!(restored.iter().count(), live.iter().count());
        // Nothing was interrupted, so there is nothing to finish.
        assert!(restored.resume(now).is_empty(), "after {k}");
    }
}

#[test]
fn crash_after_any_number_of_appends_replays_or_compensates() {
    let (all, final_registry) = reference();
    let script = script();
    for budget in 0..all.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let mut crashed_at = Time::ZERO;
        {
            let mut j = Journal::open(&path).unwrap();
            let mut live = Registry::new();
            let mut log = Crashing {
                journal: &mut j,
                budget,
            };
            for (t, op) in &script {
                crashed_at = Time::from_millis(*t);
                let cmds = apply(&mut live, op, crashed_at);
                if execute(&mut live, &mut log, &mut Fake::default(), cmds, crashed_at).is_err() {
                    break;
                }
            }
        }
        let (mut j, mut restored) = reopen(&path, crashed_at);
        // The journal holds exactly the first `budget` commands, per migration in order.
        let mut want: BTreeMap<MigrationId, Vec<Command>> = BTreeMap::new();
        for c in &all[..budget] {
            want.entry(c.migration.clone()).or_default().push(c.clone());
        }
        assert_eq!(restored.iter().count(), want.len(), "budget {budget}");
        for (mid, cmds) in &want {
            assert_eq!(
                restored.get(mid).unwrap().log(),
                &cmds[..],
                "budget {budget}"
            );
        }
        // The desired state is the target of each journaled phase: what a reconcile
        // would bring the kernel and BGP to right now.
        let desired = restored.desired_state();
        assert_eq!(
            desired,
            DesiredState::from_journal(j.load().unwrap()).unwrap()
        );
        // Resume finishes each interrupted phase; afterwards what the machines hold is
        // exactly that target, and resuming again does nothing.
        let cmds = restored.resume(crashed_at);
        execute(
            &mut restored,
            &mut j,
            &mut Fake::default(),
            cmds,
            crashed_at,
        )
        .unwrap();
        assert_eq!(restored.desired_state(), desired, "budget {budget}");
        for m in restored.iter() {
            assert_effects_match_target(m, &format!("budget {budget}: {}", m.id()));
            // Never a phase the uninterrupted run did not go through.
            let reference = final_registry.get(m.id()).unwrap();
            assert!(
                reference.transitions().iter().any(|t| t.phase == m.phase()),
                "budget {budget}: {} in {}",
                m.id(),
                m.phase()
            );
        }
        assert!(restored.resume(crashed_at).is_empty(), "budget {budget}");
        // An interrupted abort is finished, never left half undone.
        if let Some(abo) = restored.get(&id("abo")) {
            if abo.transitions().iter().any(|t| t.phase == Phase::Aborting) {
                assert_eq!(abo.phase(), Phase::Aborted, "budget {budget}");
                assert!(abo.is_clean());
            }
        }
    }
}

#[test]
fn failed_action_is_journaled_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let now = Time::from_millis(7);
    let mut fake = Fake {
        fail: Some(|a| matches!(a, Action::InstallOverride { .. })),
        ..Fake::default()
    };
    {
        let mut j = Journal::open(&path).unwrap();
        let mut r = Registry::new();
        let p = r
            .prepare(id("m"), spec(Role::Source, "10.0.0.1/32", 5), now)
            .unwrap();
        execute(&mut r, &mut j, &mut fake, p.commands, now).unwrap();
        let cmds = r.handle(&id("m"), Event::Switchover, now).unwrap();
        let out = execute(&mut r, &mut j, &mut fake, cmds, now).unwrap();
        assert_eq!(out.failed.len(), 1);
        assert_eq!(r.get(&id("m")).unwrap().phase(), Phase::Aborted);
    }
    // What the effector saw: create, then (after the failed install) the undo.
    let kinds: Vec<&str> = fake
        .done
        .iter()
        .map(|c| match c.action {
            Action::CreateTunnel { .. } => "create-tunnel",
            Action::RemoveOverride { .. } => "remove-override",
            Action::DeleteTunnel { .. } => "delete-tunnel",
            Action::Notify(_) => "notify",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "create-tunnel",
            "remove-override",
            "delete-tunnel",
            "notify"
        ]
    );
    let (_j, r) = reopen(&path, now);
    let m = r.get(&id("m")).unwrap();
    assert_eq!(m.phase(), Phase::Aborted);
    assert_eq!(m.errors().len(), 1);
    assert_eq!(m.errors()[0].error, "netlink: operation not supported");
    assert!(r.desired_state().is_empty());
}

#[test]
fn journal_failure_stops_before_acting() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path().join("j.redb")).unwrap();
    let mut r = Registry::new();
    let p = r
        .prepare(id("m"), spec(Role::Source, "10.0.0.1/32", 5), Time::ZERO)
        .unwrap();
    let mut fake = Fake::default();
    let mut log = Crashing {
        journal: &mut j,
        budget: 1, // the Created record only
    };
    assert!(execute(&mut r, &mut log, &mut fake, p.commands, Time::ZERO).is_err());
    assert!(
        fake.done.is_empty(),
        "create-tunnel ran without a journal entry"
    );
}

/// Writes a raw value under a key, bypassing [`Journal::append`].
fn write_raw(path: &Path, migration: &str, seq: u64, value: &[u8]) {
    let db = redb::Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(COMMANDS).unwrap();
        t.insert((migration, seq), value).unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn damaged_or_unknown_records_are_typed_errors() {
    let good = Command {
        migration: id("m"),
        seq: 0,
        action: Action::Persist(crate::pe::Record::Created {
            spec: spec(Role::Source, "10.0.0.1/32", 5),
            at: Time::ZERO,
        }),
    };
    let good_json = serde_json::to_string(&good).unwrap();
    let unknown = good_json.replace("\"persist\"", "\"teleport\"");
    assert_ne!(unknown, good_json);
    let cases: Vec<(&str, u64, Vec<u8>)> = vec![
        ("m", 0, b"\x00\xffnot json".to_vec()),
        ("m", 0, unknown.into_bytes()),
        ("m", 0, br#"{"migration":"m","seq":0}"#.to_vec()),
        // Content from another key.
        ("x", 3, good_json.clone().into_bytes()),
    ];
    for (migration, seq, value) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        drop(Journal::open(&path).unwrap());
        write_raw(&path, migration, seq, &value);
        let j = Journal::open(&path).unwrap();
        match j.load() {
            Err(JournalError::Corrupt {
                migration: m,
                seq: s,
                ..
            }) => assert_eq!((m.as_str(), s), (migration, seq)),
            other => panic!("{migration}/{seq}: {other:?}"),
        }
        assert!(matches!(
            j.load_registry(Time::ZERO),
            Err(JournalError::Corrupt { .. })
        ));
    }
}

#[test]
fn records_that_do_not_fold_are_replay_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let (all, _) = reference();
    {
        let j = Journal::open(&path).unwrap();
        // "src" without its creation record.
        for c in all.iter().filter(|c| c.migration == id("src") && c.seq > 0) {
            j.append(c).unwrap();
        }
    }
    let j = Journal::open(&path).unwrap();
    assert!(matches!(
        j.load_registry(Time::ZERO),
        Err(JournalError::Replay {
            source: ReplayError::MissingCreation { seq: 1, .. },
            ..
        })
    ));
}

#[test]
fn other_format_or_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    drop(Journal::open(&path).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("format", FORMAT + 1)
            .unwrap();
        tx.commit().unwrap();
    }
    assert!(matches!(
        Journal::open(&path),
        Err(JournalError::UnsupportedFormat { found, .. }) if found == FORMAT + 1
    ));

    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    assert!(matches!(
        Journal::open(&garbage),
        Err(JournalError::Open { .. })
    ));
}
