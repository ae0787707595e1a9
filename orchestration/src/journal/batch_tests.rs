//! `append_batch` and `rewind`: one write per batch, all or nothing, and a failure in the
//! middle of a journaled batch leaves the journal equal to what the machine remembers.

use super::*;
use crate::executor::{execute, Effector};
use crate::pe::{
    Action, Command, Event, MigrationId, MigrationSpec, PeerPe, Phase, Record, Registry, Role,
    RoutePolicy, Timers, TunnelKind,
};
use crate::Time;

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

/// Fails every action `fail` picks; records the rest.
struct Fake {
    done: Vec<Command>,
    fail: fn(&Action) -> bool,
}

impl Effector for Fake {
    type Error = String;

    fn perform(&mut self, cmd: &Command) -> Result<(), String> {
        if (self.fail)(&cmd.action) {
            return Err("netlink: no such device".into());
        }
        self.done.push(cmd.clone());
        Ok(())
    }
}

fn phase_cmd(m: &str, seq: u64, phase: Phase) -> Command {
    Command {
        migration: id(m),
        seq,
        action: Action::Persist(Record::Phase {
            phase,
            at: Time::from_millis(seq),
        }),
    }
}

#[test]
fn append_batch_writes_all_or_nothing_and_accepts_retries() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path().join("j.redb")).unwrap();
    let mut r = Registry::new();
    let cmds = r
        .prepare(id("m"), spec(Role::Source, "10.0.0.1/32", 5), Time::ZERO)
        .unwrap()
        .commands;
    assert!(cmds.len() >= 2, "prepare issues a record and an action");
    j.append_batch(&[]).unwrap();
    assert!(j.load().unwrap().is_empty());
    j.append_batch(&cmds).unwrap();
    assert_eq!(j.load().unwrap(), cmds);
    // The same batch again (a retry) is accepted and changes nothing.
    j.append_batch(&cmds).unwrap();
    assert_eq!(j.load().unwrap(), cmds);

    // A batch whose last command collides writes none of its earlier ones.
    let next = cmds.len() as u64;
    let colliding = vec![
        phase_cmd("m", next, Phase::SwitchedOver),
        phase_cmd("other", 0, Phase::Prepared),
        phase_cmd("m", 0, Phase::Aborted),
    ];
    assert!(matches!(
        j.append_batch(&colliding),
        Err(JournalError::SeqTaken { seq: 0, ref migration, .. }) if migration == "m"
    ));
    assert_eq!(j.load().unwrap(), cmds);

    // Two different commands under one key inside one batch: refused as well.
    let twice = vec![
        phase_cmd("m", next, Phase::SwitchedOver),
        phase_cmd("m", next, Phase::Announced),
    ];
    assert!(matches!(
        j.append_batch(&twice),
        Err(JournalError::SeqTaken { .. })
    ));
    assert_eq!(j.load().unwrap(), cmds);
}

#[test]
fn rewind_drops_only_that_migrations_tail_and_appends_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path().join("j.redb")).unwrap();
    let a: Vec<_> = (0..5).map(|s| phase_cmd("a", s, Phase::Prepared)).collect();
    let b: Vec<_> = (0..3).map(|s| phase_cmd("b", s, Phase::Prepared)).collect();
    let ab = phase_cmd("ab", 0, Phase::Prepared); // sorts right after "a"'s keys
    j.append_batch(&a).unwrap();
    j.append_batch(&b).unwrap();
    j.append(&ab).unwrap();
    let answer = vec![
        phase_cmd("a", 3, Phase::Aborting),
        phase_cmd("a", 4, Phase::Aborted),
    ];
    j.rewind(&id("a"), 2, &answer).unwrap();
    let mut want: Vec<_> = a[..3].to_vec();
    want.extend(answer.clone());
    want.push(ab.clone());
    want.extend(b.clone());
    assert_eq!(j.load().unwrap(), want);

    // A refused answer leaves the tail in place (one transaction).
    let clash = Command {
        action: Action::Persist(Record::Phase {
            phase: Phase::Aborted,
            at: Time::ZERO,
        }),
        ..b[1].clone()
    };
    let before = j.load().unwrap();
    assert!(j
        .rewind(&id("a"), 3, &[phase_cmd("a", 4, Phase::Aborting), clash])
        .is_err());
    assert_eq!(j.load().unwrap(), before);
}

/// For every kind of action failing wherever it first appears, the executor (whole
/// batch journaled up front) leaves a journal that rebuilds the live machines exactly,
/// and the effector never ran anything after the failure in that migration's batch.
#[test]
fn failure_inside_a_journaled_batch_leaves_journal_equal_to_machine() {
    let kinds: [fn(&Action) -> bool; 5] = [
        |a| matches!(a, Action::CreateTunnel { .. }),
        |a| matches!(a, Action::InstallOverride { .. }),
        |a| matches!(a, Action::EnsureDelivery { .. }),
        |a| matches!(a, Action::Announce { .. }),
        |a| matches!(a, Action::Notify(_)),
    ];
    for (k, fail) in kinds.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let mut j = Journal::open(&path).unwrap();
        let mut r = Registry::new();
        let mut fx = Fake {
            done: Vec::new(),
            fail,
        };
        let mut failures = 0;
        let now = Time::from_millis(5);
        for (m, role, prefix, vni) in [
            ("s", Role::Source, "10.0.0.1/32", 7),
            ("d", Role::Destination, "10.0.0.2/32", 8),
        ] {
            let step = r.prepare(id(m), spec(role, prefix, vni), now).unwrap();
            failures += execute(&mut r, &mut j, &mut fx, step.commands, now)
                .unwrap()
                .failed
                .len();
        }
        for (m, ev) in [
            ("s", Event::Switchover),
            ("d", Event::Switchover),
            ("s", Event::Announce),
            ("d", Event::Announce),
            ("s", Event::Abort),
            ("d", Event::Abort),
        ] {
            if let Ok(cmds) = r.handle(&id(m), ev, now) {
                failures += execute(&mut r, &mut j, &mut fx, cmds, now)
                    .unwrap()
                    .failed
                    .len();
            }
        }
        assert!(failures > 0, "kind {k}: the failing action never came up");
        let restored = j.load_registry(now).unwrap();
        for m in r.iter() {
            let back = restored.get(m.id()).expect("rebuilt");
            assert_eq!(back.log(), m.log(), "kind {k}: {}", m.id());
            assert_eq!(back.phase(), m.phase(), "kind {k}: {}", m.id());
            assert_eq!(back.errors(), m.errors(), "kind {k}: {}", m.id());
        }
        // Nothing the effector did is missing from the journal.
        let journaled = j.load().unwrap();
        assert!(fx.done.iter().all(|c| journaled.contains(c)), "kind {k}");
    }
}
