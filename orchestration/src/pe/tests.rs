//! Scripted tests: (time, input) → expected actions, for both roles.
//!
//! Timers in every script (see `spec::tests::spec`): quiet 1 s, hold 3 s, converge
//! timeout 30 s. Actions are rendered as short strings so a script reads like the
//! table in the module doc.

use super::spec::tests::spec;
use super::*;
use crate::Time;

const VM: &str = "10.0.0.1/32";

/// What a script feeds the machine.
#[derive(Debug, Clone)]
enum In {
    /// An event that must be accepted.
    E(Event),
    /// An event that must be refused, changing nothing.
    Refused(Event),
    /// `handle_timeout`.
    Timeout,
    /// `ActionFailed` for the latest command rendered as this string.
    Fail(&'static str),
    /// `resume`.
    Resume,
}
use In::*;

fn ev(e: Event) -> In {
    E(e)
}

fn counters(packets: u64) -> In {
    E(Event::TunnelCounters { packets })
}

fn render(c: &Command) -> String {
    fn list(p: &[ipnetwork::IpNetwork]) -> String {
        p.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
    match &c.action {
        Action::Persist(Record::Created { .. }) => "created".into(),
        Action::Persist(Record::Phase { phase, .. }) => format!("phase {phase}"),
        Action::Persist(Record::Error { seq, .. }) => format!("error #{seq}"),
        Action::CreateTunnel { .. } => "create-tunnel".into(),
        Action::DeleteTunnel { .. } => "delete-tunnel".into(),
        Action::InstallOverride { .. } => "install-override".into(),
        Action::RemoveOverride { .. } => "remove-override".into(),
        Action::EnsureDelivery { .. } => "ensure-delivery".into(),
        Action::DisableDelivery { .. } => "disable-delivery".into(),
        Action::Announce { routes } => format!(
            "announce {}",
            list(&routes.iter().map(|r| r.prefix).collect::<Vec<_>>())
        ),
        Action::Withdraw { prefixes } => format!("withdraw {}", list(prefixes)),
        Action::Notify(Notice::SwitchOverPeer { .. }) => "notify switch-over-peer".into(),
        Action::Notify(Notice::Stalled) => "notify stalled".into(),
        Action::Notify(Notice::TornDown) => "notify torn-down".into(),
        Action::Notify(Notice::Aborted { reason: None }) => "notify aborted".into(),
        Action::Notify(Notice::Aborted { reason: Some(r) }) => format!("notify aborted: {r}"),
    }
}

fn rendered(cmds: &[Command]) -> Vec<String> {
    cmds.iter().map(render).collect()
}

fn id(s: &str) -> MigrationId {
    MigrationId::new(s).unwrap()
}

fn new(role: Role) -> PeMigration {
    let (m, cmds) = PeMigration::prepare(id("m1"), spec(role, &[VM]), Time::ZERO).unwrap();
    assert_eq!(rendered(&cmds), ["created", "create-tunnel"]);
    m
}

/// Runs a script, checking each step's actions (and that seqs are contiguous).
fn run(m: &mut PeMigration, script: &[(u64, In, &[&str])]) {
    for (i, (t, input, want)) in script.iter().enumerate() {
        let now = Time::from_millis(*t);
        let before_log = m.log().len();
        let got = match input.clone() {
            E(e) => m
                .handle(e.clone(), now)
                .unwrap_or_else(|err| panic!("step {i} ({e:?}): {err}")),
            Refused(e) => {
                let before = m.status();
                assert!(
                    m.handle(e.clone(), now).is_err(),
                    "step {i}: {e:?} accepted in {}",
                    m.phase()
                );
                assert_eq!(m.status(), before, "step {i}: refusal changed state");
                Vec::new()
            }
            Timeout => m.handle_timeout(now),
            Fail(what) => {
                let seq = m
                    .log()
                    .iter()
                    .rev()
                    .find(|c| render(c) == what)
                    .unwrap_or_else(|| panic!("step {i}: no {what} in log"))
                    .seq;
                m.handle(
                    Event::ActionFailed {
                        seq,
                        error: format!("{what} failed"),
                    },
                    now,
                )
                .unwrap_or_else(|err| panic!("step {i}: {err}"))
            }
            Resume => m.resume(now),
        };
        assert_eq!(rendered(&got), *want, "step {i} at t={t}: {input:?}");
        if !matches!(input, Fail(_)) {
            for (k, c) in got.iter().enumerate() {
                assert_eq!(c.seq as usize, before_log + k, "step {i}: seq gap");
            }
        }
    }
}

const ABORT_SRC: &[&str] = &[
    "phase aborting",
    "remove-override",
    "delete-tunnel",
    "phase aborted",
    "notify aborted",
];
const ABORT_DST_ANNOUNCED: &[&str] = &[
    "phase aborting",
    "withdraw 10.0.0.1/32",
    "disable-delivery",
    "delete-tunnel",
    "phase aborted",
    "notify aborted",
];
const TEARDOWN_SRC: &[&str] = &[
    "phase torn-down",
    "remove-override",
    "delete-tunnel",
    "notify torn-down",
];
const TEARDOWN_DST: &[&str] = &[
    "phase torn-down",
    "disable-delivery",
    "delete-tunnel",
    "notify torn-down",
];

#[test]
fn source_happy_path_with_automatic_teardown() {
    let mut m = new(Role::Source);
    run(
        &mut m,
        &[
            (5, Refused(Event::Announce), &[]),
            (5, Refused(Event::Complete), &[]),
            (
                10,
                ev(Event::Switchover),
                &["phase switched-over", "install-override"],
            ),
            (20, ev(Event::Switchover), &[]),
            (30, ev(Event::Announce), &["phase announced"]),
            (40, ev(Event::Announce), &[]),
            (1_000, counters(100), &[]),
            (2_500, counters(160), &[]),
            // Hold ends at 30 + 3000; traffic still flowing.
            (3_030, Timeout, &["phase converging"]),
            (3_200, counters(160), &[]),
            // 1100 ms without change: quiet.
            (3_600, counters(160), TEARDOWN_SRC),
            (4_000, ev(Event::Abort), &[]),
            (4_000, ev(Event::Complete), &[]),
            (4_000, ev(Event::Switchover), &[]),
            (4_000, counters(170), &[]),
            (99_000, Timeout, &[]),
        ],
    );
    assert_eq!(m.phase(), Phase::TornDown);
    assert!(m.is_clean());
    assert_eq!(m.poll_timeout(), None);
    let phases: Vec<Phase> = m.transitions().iter().map(|t| t.phase).collect();
    use Phase::*;
    assert_eq!(
        phases,
        [Prepared, SwitchedOver, Announced, Converging, TornDown]
    );
    assert_eq!(m.transitions()[4].at, Time::from_millis(3_600));
    assert!(DesiredState::from_migrations([&m]).is_empty());
}

#[test]
fn deadlines_are_reported_by_poll_timeout() {
    let mut m = new(Role::Source);
    assert_eq!(m.poll_timeout(), None, "prepared waits forever");
    m.handle(Event::Switchover, Time::from_millis(10)).unwrap();
    assert_eq!(m.poll_timeout(), Some(Time::from_millis(30_010)));
    m.handle(Event::Announce, Time::from_millis(100)).unwrap();
    // Hold end before the (restarted) stall deadline.
    assert_eq!(m.poll_timeout(), Some(Time::from_millis(3_100)));
    assert!(m.handle_timeout(Time::from_millis(3_099)).is_empty());
    assert_eq!(
        rendered(&m.handle_timeout(Time::from_millis(3_100))),
        ["phase converging"]
    );
    assert_eq!(m.poll_timeout(), Some(Time::from_millis(30_100)));
}

#[test]
fn teardown_needs_a_counter_sample_showing_quiet() {
    // No counters at all: never quiet, so it stalls instead of tearing down blind.
    let mut m = new(Role::Source);
    run(
        &mut m,
        &[
            (
                0,
                ev(Event::Switchover),
                &["phase switched-over", "install-override"],
            ),
            (0, ev(Event::Announce), &["phase announced"]),
            (3_000, Timeout, &["phase converging"]),
            (29_999, Timeout, &[]),
            (30_000, Timeout, &["phase stalled", "notify stalled"]),
            // Late quiet samples do not tear a stalled migration down.
            (31_000, counters(5), &[]),
            (40_000, counters(5), &[]),
            (40_000, Timeout, &[]),
            (41_000, ev(Event::Complete), TEARDOWN_SRC),
        ],
    );
}

#[test]
fn quiet_before_hold_end_needs_a_fresh_sample() {
    let mut m = new(Role::Source);
    run(
        &mut m,
        &[
            (
                0,
                ev(Event::Switchover),
                &["phase switched-over", "install-override"],
            ),
            (0, ev(Event::Announce), &["phase announced"]),
            (100, counters(9), &[]),
            (2_000, counters(9), &[]),
            // Quiet since 100, but nothing is known about 2000..3000.
            (3_000, Timeout, &["phase converging"]),
            (3_000, counters(9), TEARDOWN_SRC),
        ],
    );
}

#[test]
fn counter_reset_counts_as_traffic() {
    let mut m = new(Role::Source);
    run(
        &mut m,
        &[
            (
                0,
                ev(Event::Switchover),
                &["phase switched-over", "install-override"],
            ),
            (0, ev(Event::Announce), &["phase announced"]),
            (3_000, Timeout, &["phase converging"]),
            (3_000, counters(500), &[]),
            (3_900, counters(3), &[]),
            (4_500, counters(3), &[]),
            (4_900, counters(3), TEARDOWN_SRC),
        ],
    );
}

#[test]
fn stalls_in_switched_over_when_announce_never_comes() {
    let mut m = new(Role::Source);
    run(
        &mut m,
        &[
            (
                0,
                ev(Event::Switchover),
                &["phase switched-over", "install-override"],
            ),
            (30_000, Timeout, &["phase stalled", "notify stalled"]),
            (30_001, Timeout, &[]),
            (30_002, ev(Event::Announce), &[]),
            (30_003, ev(Event::Abort), ABORT_SRC),
        ],
    );
    assert!(m.is_clean());
}

#[test]
fn vm_seen_after_a_quiesce_switchover_announces_and_still_tells_the_source() {
    // libvirt-watch switched both PEs over at the source's pause; the source waits for
    // the destination to hear the VM before it announces and watches its tunnel.
    let mut m = new(Role::Destination);
    run(
        &mut m,
        &[
            (
                0,
                ev(Event::Switchover),
                &["phase switched-over", "ensure-delivery"],
            ),
            (
                30,
                ev(Event::VmSeen),
                &[
                    "phase announced",
                    "announce 10.0.0.1/32",
                    "notify switch-over-peer",
                ],
            ),
            (40, ev(Event::VmSeen), &[]),
        ],
    );
}

#[test]
fn destination_vm_seen_announces_at_once_and_tells_the_source() {
    let mut m = new(Role::Destination);
    run(
        &mut m,
        &[
            (5, Refused(Event::Announce), &[]),
            (
                10,
                ev(Event::VmSeen),
                &[
                    "phase switched-over",
                    "ensure-delivery",
                    "phase announced",
                    "announce 10.0.0.1/32",
                    "notify switch-over-peer",
                ],
            ),
            (20, ev(Event::Switchover), &[]),
            (20, ev(Event::VmSeen), &[]),
            (20, ev(Event::Announce), &[]),
            // The session flaps: the hold restarts at 2000, ends at 5000.
            (1_000, ev(Event::BgpSession { up: false }), &[]),
            (2_000, ev(Event::BgpSession { up: true }), &[]),
            (2_500, counters(7), &[]),
            (4_000, counters(7), &[]),
            (4_000, Timeout, &[]),
            (5_000, Timeout, &["phase converging"]),
            (5_000, counters(7), TEARDOWN_DST),
            (6_000, ev(Event::Abort), &[]),
            (6_000, ev(Event::VmSeen), &[]),
        ],
    );
    // The VM lives here now: the route stays, nothing else.
    let d = DesiredState::from_migrations([&m]);
    assert!(d.tunnels.is_empty() && d.deliveries.is_empty());
    assert_eq!(d.routes.len(), 1);
    assert_eq!(d.routes[0].prefix.to_string(), VM);
    assert_eq!(d.routes[0].attrs.communities, vec![Community::NO_EXPORT]);
}

#[test]
fn destination_driven_by_api_and_completed_by_operator() {
    let mut m = new(Role::Destination);
    run(
        &mut m,
        &[
            (
                10,
                ev(Event::Switchover),
                &["phase switched-over", "ensure-delivery"],
            ),
            (10, Refused(Event::Complete), &[]),
            (
                20,
                ev(Event::Announce),
                &["phase announced", "announce 10.0.0.1/32"],
            ),
            (30, ev(Event::Complete), TEARDOWN_DST),
            (40, ev(Event::Complete), &[]),
        ],
    );
}

#[test]
fn bgp_down_at_destination_blocks_teardown_until_held() {
    let mut m = new(Role::Destination);
    run(
        &mut m,
        &[
            (
                0,
                ev(Event::Switchover),
                &["phase switched-over", "ensure-delivery"],
            ),
            (0, ev(Event::BgpSession { up: false }), &[]),
            (
                0,
                ev(Event::Announce),
                &["phase announced", "announce 10.0.0.1/32"],
            ),
            (100, counters(1), &[]),
            (9_000, counters(1), &[]),
            (9_000, Timeout, &[]),
            (10_000, ev(Event::BgpSession { up: true }), &[]),
            (13_000, Timeout, &["phase converging"]),
            (13_000, counters(1), TEARDOWN_DST),
        ],
    );
}

#[test]
fn vm_seen_is_refused_at_the_source_and_after_abort() {
    let mut m = new(Role::Source);
    assert!(matches!(
        m.handle(Event::VmSeen, Time::ZERO),
        Err(PeError::WrongRole { .. })
    ));
    let mut d = new(Role::Destination);
    run(
        &mut d,
        &[
            (
                0,
                ev(Event::Abort),
                &[
                    "phase aborting",
                    "delete-tunnel",
                    "phase aborted",
                    "notify aborted",
                ],
            ),
            (1, Refused(Event::VmSeen), &[]),
            (1, Refused(Event::Switchover), &[]),
            (1, Refused(Event::Announce), &[]),
            (1, Refused(Event::Complete), &[]),
            (1, ev(Event::Abort), &[]),
            (1, Resume, &[]),
        ],
    );
}

/// Scripts that bring a machine to each abortable phase.
fn to_phase(role: Role, phase: Phase) -> PeMigration {
    let mut m = new(role);
    let t = Time::from_millis;
    if phase == Phase::Prepared {
        return m;
    }
    m.handle(Event::Switchover, t(0)).unwrap();
    if phase == Phase::SwitchedOver {
        return m;
    }
    m.handle(Event::Announce, t(0)).unwrap();
    if phase == Phase::Announced {
        return m;
    }
    m.handle_timeout(t(3_000));
    if phase == Phase::Converging {
        return m;
    }
    m.handle_timeout(t(30_000));
    assert_eq!(m.phase(), Phase::Stalled);
    m
}

#[test]
fn abort_from_every_phase_undoes_in_reverse() {
    use Phase::*;
    let cases: &[(Role, Phase, &[&str])] = &[
        (
            Role::Source,
            Prepared,
            &[
                "phase aborting",
                "delete-tunnel",
                "phase aborted",
                "notify aborted",
            ],
        ),
        (Role::Source, SwitchedOver, ABORT_SRC),
        (Role::Source, Announced, ABORT_SRC),
        (Role::Source, Converging, ABORT_SRC),
        (Role::Source, Stalled, ABORT_SRC),
        (
            Role::Destination,
            Prepared,
            &[
                "phase aborting",
                "delete-tunnel",
                "phase aborted",
                "notify aborted",
            ],
        ),
        (
            Role::Destination,
            SwitchedOver,
            &[
                "phase aborting",
                "disable-delivery",
                "delete-tunnel",
                "phase aborted",
                "notify aborted",
            ],
        ),
        (Role::Destination, Announced, ABORT_DST_ANNOUNCED),
        (Role::Destination, Converging, ABORT_DST_ANNOUNCED),
        (Role::Destination, Stalled, ABORT_DST_ANNOUNCED),
    ];
    for (role, phase, want) in cases {
        let mut m = to_phase(*role, *phase);
        assert_eq!(m.phase(), *phase);
        let got = m.handle(Event::Abort, Time::from_millis(40_000)).unwrap();
        assert_eq!(rendered(&got), *want, "{role} abort from {phase}");
        assert_eq!(m.phase(), Phase::Aborted);
        assert!(m.is_clean(), "{role} from {phase}: {:?}", m.effects());
        assert!(DesiredState::from_migrations([&m]).is_empty());
        assert!(m
            .handle(Event::Abort, Time::from_millis(40_001))
            .unwrap()
            .is_empty());
        assert_eq!(m.poll_timeout(), None);
    }
}

#[test]
fn failed_forward_actions_abort_with_the_error_recorded() {
    // create-tunnel fails at prepare: the half-made tunnel is deleted.
    let mut m = new(Role::Source);
    run(
        &mut m,
        &[(
            0,
            Fail("create-tunnel"),
            &[
                "error #1",
                "phase aborting",
                "delete-tunnel",
                "phase aborted",
                "notify aborted: create-tunnel failed",
            ],
        )],
    );
    assert_eq!(m.errors().len(), 1);
    assert_eq!(m.errors()[0].seq, 1);
    assert_eq!(m.errors()[0].error, "create-tunnel failed");

    let mut m = new(Role::Source);
    run(
        &mut m,
        &[
            (
                0,
                ev(Event::Switchover),
                &["phase switched-over", "install-override"],
            ),
            (
                1,
                Fail("install-override"),
                &[
                    "error #3",
                    "phase aborting",
                    "remove-override",
                    "delete-tunnel",
                    "phase aborted",
                    "notify aborted: install-override failed",
                ],
            ),
        ],
    );

    // ensure-delivery fails inside the vm-seen batch: the announce after it was never
    // journaled nor done, so nothing is withdrawn.
    let mut m = new(Role::Destination);
    run(
        &mut m,
        &[
            (
                0,
                ev(Event::VmSeen),
                &[
                    "phase switched-over",
                    "ensure-delivery",
                    "phase announced",
                    "announce 10.0.0.1/32",
                    "notify switch-over-peer",
                ],
            ),
            (
                1,
                Fail("ensure-delivery"),
                &[
                    "error #3",
                    "phase aborting",
                    "disable-delivery",
                    "delete-tunnel",
                    "phase aborted",
                    "notify aborted: ensure-delivery failed",
                ],
            ),
        ],
    );
    let phases: Vec<Phase> = m.transitions().iter().map(|t| t.phase).collect();
    assert!(!phases.contains(&Phase::Announced), "{phases:?}");

    // announce fails: it may be half done, so it is withdrawn.
    let mut m = to_phase(Role::Destination, Phase::SwitchedOver);
    m.handle(Event::Announce, Time::from_millis(5)).unwrap();
    run(
        &mut m,
        &[(
            6,
            Fail("announce 10.0.0.1/32"),
            &[
                "error #5",
                "phase aborting",
                "withdraw 10.0.0.1/32",
                "disable-delivery",
                "delete-tunnel",
                "phase aborted",
                "notify aborted: announce 10.0.0.1/32 failed",
            ],
        )],
    );
}

#[test]
fn failed_undo_is_recorded_and_the_rest_goes_on() {
    let mut m = to_phase(Role::Source, Phase::Converging);
    run(
        &mut m,
        &[
            (4_000, ev(Event::Complete), TEARDOWN_SRC),
            (
                4_001,
                Fail("remove-override"),
                &["error #7", "delete-tunnel"],
            ),
        ],
    );
    assert_eq!(m.phase(), Phase::TornDown);
    assert_eq!(m.errors().len(), 1);
    assert!(DesiredState::from_migrations([&m]).is_empty());

    let mut m = to_phase(Role::Destination, Phase::Announced);
    run(
        &mut m,
        &[
            (100, ev(Event::Abort), ABORT_DST_ANNOUNCED),
            (
                101,
                Fail("withdraw 10.0.0.1/32"),
                &[
                    "error #7",
                    "disable-delivery",
                    "delete-tunnel",
                    "phase aborted",
                    "notify aborted: withdraw 10.0.0.1/32 failed",
                ],
            ),
        ],
    );
    assert_eq!(m.phase(), Phase::Aborted);
}

#[test]
fn failed_notice_is_only_recorded() {
    let mut m = new(Role::Destination);
    m.handle(Event::VmSeen, Time::ZERO).unwrap();
    run(
        &mut m,
        &[(1, Fail("notify switch-over-peer"), &["error #6"])],
    );
    assert_eq!(m.phase(), Phase::Announced);
}

#[test]
fn failure_outside_the_latest_batch_is_refused() {
    let mut m = new(Role::Source);
    m.handle(Event::Switchover, Time::ZERO).unwrap();
    let before = m.status();
    // seq 1 (create-tunnel) belongs to the prepare batch.
    let err = m
        .handle(
            Event::ActionFailed {
                seq: 1,
                error: "late".into(),
            },
            Time::ZERO,
        )
        .unwrap_err();
    assert_eq!(
        err,
        PeError::UnknownCommand {
            id: id("m1"),
            seq: 1
        }
    );
    let err = m
        .handle(
            Event::ActionFailed {
                seq: 99,
                error: "never issued".into(),
            },
            Time::ZERO,
        )
        .unwrap_err();
    assert!(matches!(err, PeError::UnknownCommand { seq: 99, .. }));
    assert_eq!(m.status(), before);
}

#[test]
fn policy_shapes_the_announcement() {
    let mut s = spec(Role::Destination, &[VM, "2001:db8::5/128"]);
    s.policy = RoutePolicy {
        preference: Preference::LocalPref(250),
        communities: vec![Community::new(65000, 42)],
    };
    let (mut m, _) = PeMigration::prepare(id("m1"), s, Time::ZERO).unwrap();
    let out = m.handle(Event::VmSeen, Time::ZERO).unwrap();
    let routes = out
        .iter()
        .find_map(|c| match &c.action {
            Action::Announce { routes } => Some(routes.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(routes.len(), 2);
    for r in &routes {
        assert_eq!(r.attrs.local_pref, Some(250));
        assert_eq!(r.attrs.communities, vec![Community::new(65000, 42)]);
    }
}

#[test]
fn restore_equals_the_machine_that_wrote_the_log() {
    let mut m = to_phase(Role::Destination, Phase::Converging);
    m.handle(Event::Abort, Time::from_millis(5_000)).unwrap();
    let r = PeMigration::restore(m.log(), Time::from_millis(6_000)).unwrap();
    assert_eq!(r.phase(), m.phase());
    assert_eq!(r.transitions(), m.transitions());
    assert_eq!(r.effects(), m.effects());
    assert_eq!(r.log(), m.log());
}

#[test]
fn restore_rejects_malformed_logs() {
    let m = to_phase(Role::Source, Phase::SwitchedOver);
    let log = m.log().to_vec();
    assert_eq!(
        PeMigration::restore(&[], Time::ZERO).unwrap_err(),
        ReplayError::Empty
    );
    assert!(matches!(
        PeMigration::restore(&log[1..], Time::ZERO).unwrap_err(),
        ReplayError::MissingCreation { seq: 1, .. }
    ));
    let gap = [log[0].clone(), log[2].clone()];
    assert!(matches!(
        PeMigration::restore(&gap, Time::ZERO).unwrap_err(),
        ReplayError::Gap {
            expected: 1,
            found: 2,
            ..
        }
    ));
    let mut dup = log.clone();
    dup.push(Command {
        seq: log.len() as u64,
        ..log[0].clone()
    });
    assert!(matches!(
        PeMigration::restore(&dup, Time::ZERO).unwrap_err(),
        ReplayError::DuplicateCreation { .. }
    ));
}

// ---- registry ----

fn registry_with(role: Role, name: &str, prefixes: &[&str], vni: u32) -> (Registry, Prepared) {
    let mut r = Registry::new();
    let mut s = spec(role, prefixes);
    s.tunnel = TunnelKind::Vxlan { vni };
    let p = r.prepare(id(name), s, Time::ZERO).unwrap();
    (r, p)
}

#[test]
fn same_put_twice_is_a_no_op_and_a_different_body_conflicts() {
    let (mut r, p) = registry_with(Role::Source, "m1", &[VM, "10.0.0.2/32"], 100);
    assert!(p.created);
    assert_eq!(rendered(&p.commands), ["created", "create-tunnel"]);
    // Same body, prefixes in another order.
    let mut again = spec(Role::Source, &["10.0.0.2/32", VM]);
    again.tunnel = TunnelKind::Vxlan { vni: 100 };
    let p2 = r
        .prepare(id("m1"), again.clone(), Time::from_millis(5))
        .unwrap();
    assert_eq!(
        p2,
        Prepared {
            created: false,
            commands: vec![]
        }
    );
    again.role = Role::Destination;
    assert_eq!(
        r.prepare(id("m1"), again, Time::from_millis(6)),
        Err(RegistryError::Conflict {
            id: id("m1"),
            reason: ConflictReason::DifferentBody
        })
    );
    assert_eq!(r.get(&id("m1")).unwrap().log().len(), 2);
}

#[test]
fn prefix_or_tunnel_of_a_live_migration_conflicts_until_it_ends() {
    let (mut r, _) = registry_with(Role::Source, "m1", &[VM], 100);
    let mut s = spec(Role::Source, &["10.0.0.9/32", VM]);
    s.tunnel = TunnelKind::Vxlan { vni: 200 };
    assert_eq!(
        r.prepare(id("m2"), s.clone(), Time::ZERO),
        Err(RegistryError::Conflict {
            id: id("m1"),
            reason: ConflictReason::PrefixInUse(VM.parse().unwrap())
        })
    );
    let mut same_tunnel = spec(Role::Source, &["10.0.0.9/32"]);
    same_tunnel.tunnel = TunnelKind::Vxlan { vni: 100 };
    assert_eq!(
        r.prepare(id("m3"), same_tunnel, Time::ZERO),
        Err(RegistryError::Conflict {
            id: id("m1"),
            reason: ConflictReason::TunnelInUse
        })
    );
    assert!(r.get(&id("m2")).is_none());
    r.handle(&id("m1"), Event::Abort, Time::ZERO).unwrap();
    assert!(r.prepare(id("m2"), s, Time::ZERO).unwrap().created);
    assert!(matches!(
        r.prepare(id("bad"), spec(Role::Source, &["10.0.0.0/24"]), Time::ZERO),
        Err(RegistryError::Spec(SpecError::NotHostRoute(_)))
    ));
    assert_eq!(
        r.handle(&id("nope"), Event::Abort, Time::ZERO),
        Err(RegistryError::NotFound(id("nope")))
    );
}

#[test]
fn vm_seen_is_routed_by_address_to_the_live_destination() {
    let (mut r, _) = registry_with(Role::Destination, "m1", &[VM], 100);
    let ip = "10.0.0.7".parse().unwrap();
    assert_eq!(
        r.vm_seen(ip, Time::ZERO),
        Err(RegistryError::NoMigrationFor(ip))
    );
    let out = r.vm_seen("10.0.0.1".parse().unwrap(), Time::ZERO).unwrap();
    assert!(rendered(&out).contains(&"announce 10.0.0.1/32".to_string()));
    assert_eq!(r.get(&id("m1")).unwrap().phase(), Phase::Announced);
}

#[test]
fn rarp_is_routed_by_mac_to_the_live_destination() {
    let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
    let other: MacAddr = "52:54:00:12:34:57".parse().unwrap();
    let mut r = Registry::new();
    let mut s = spec(Role::Destination, &[VM]);
    s.vm_mac = Some(mac);
    r.prepare(id("m1"), s, Time::ZERO).unwrap();
    assert_eq!(
        r.vm_seen_mac(other, Time::ZERO),
        Err(RegistryError::NoMigrationForMac(other))
    );
    assert_eq!(r.get(&id("m1")).unwrap().phase(), Phase::Prepared);
    let out = r.vm_seen_mac(mac, Time::from_millis(5)).unwrap();
    let done = rendered(&out);
    assert!(
        done.contains(&"announce 10.0.0.1/32".to_string()),
        "{done:?}"
    );
    assert!(
        done.iter().any(|c| c == "notify switch-over-peer"),
        "{done:?}"
    );
    assert_eq!(r.get(&id("m1")).unwrap().phase(), Phase::Announced);
    // Heard again (QEMU repeats its announcement): nothing more to do.
    assert!(r
        .vm_seen_mac(mac, Time::from_millis(50))
        .unwrap()
        .is_empty());
    // A source migration of the same VM is never the one that hears it.
    let mut r = Registry::new();
    let mut s = spec(Role::Source, &[VM]);
    s.vm_mac = Some(mac);
    r.prepare(id("m1"), s, Time::ZERO).unwrap();
    assert_eq!(
        r.vm_seen_mac(mac, Time::ZERO),
        Err(RegistryError::NoMigrationForMac(mac))
    );
}

#[test]
fn moving_the_vm_back_withdraws_the_old_destination_route_at_announce() {
    // m1: this PE was the destination and still announces the VM.
    let (mut r, _) = registry_with(Role::Destination, "m1", &[VM], 100);
    r.handle(&id("m1"), Event::VmSeen, Time::ZERO).unwrap();
    r.handle(&id("m1"), Event::Complete, Time::from_millis(10))
        .unwrap();
    assert_eq!(r.desired_state().routes.len(), 1);
    // m2: the VM leaves again; this PE is the source now.
    let mut s = spec(Role::Source, &[VM]);
    s.tunnel = TunnelKind::Vxlan { vni: 101 };
    r.prepare(id("m2"), s, Time::from_millis(20)).unwrap();
    r.handle(&id("m2"), Event::Switchover, Time::from_millis(30))
        .unwrap();
    assert_eq!(r.desired_state().routes.len(), 1, "kept until announce");
    let out = r
        .handle(&id("m2"), Event::Announce, Time::from_millis(40))
        .unwrap();
    let mine: Vec<(String, String)> = out
        .iter()
        .map(|c| (c.migration.to_string(), render(c)))
        .collect();
    assert_eq!(
        mine,
        [
            ("m2".into(), "phase announced".into()),
            ("m1".into(), "withdraw 10.0.0.1/32".into()),
        ]
    );
    assert!(r.desired_state().routes.is_empty());
    // Announce again: nothing more.
    assert!(r
        .handle(&id("m2"), Event::Announce, Time::from_millis(50))
        .unwrap()
        .is_empty());
}

#[test]
fn registry_timers_and_bgp_fan_out() {
    let (mut r, _) = registry_with(Role::Destination, "m1", &[VM], 100);
    let mut s = spec(Role::Source, &["10.0.0.2/32"]);
    s.tunnel = TunnelKind::Vxlan { vni: 101 };
    r.prepare(id("m2"), s, Time::ZERO).unwrap();
    assert_eq!(r.poll_timeout(), None);
    r.handle(&id("m2"), Event::Switchover, Time::from_millis(100))
        .unwrap();
    r.bgp_session(false, Time::from_millis(150));
    r.handle(&id("m1"), Event::VmSeen, Time::from_millis(200))
        .unwrap();
    // m1 holds nothing while BGP is down: only the stall deadlines count.
    assert_eq!(r.poll_timeout(), Some(Time::from_millis(30_100)));
    assert_eq!(r.counter_watch().cloned().collect::<Vec<_>>(), [id("m1")]);
    let out = r.handle_timeout(Time::from_millis(30_100));
    assert_eq!(rendered(&out), ["phase stalled", "notify stalled"]);
    assert_eq!(out[0].migration, id("m2"));
    r.bgp_session(true, Time::from_millis(30_200));
    assert_eq!(r.poll_timeout(), Some(Time::from_millis(30_200)));
    assert_eq!(
        rendered(&r.handle_timeout(Time::from_millis(30_200))),
        ["phase stalled", "notify stalled"]
    );
    assert_eq!(r.in_phase(Phase::Stalled).count(), 2);
    assert_eq!(r.live().count(), 2);
}

#[test]
fn new_migration_while_bgp_is_down_does_not_start_its_hold() {
    let mut r = Registry::new();
    r.bgp_session(false, Time::ZERO);
    r.prepare(id("m1"), spec(Role::Destination, &[VM]), Time::ZERO)
        .unwrap();
    r.handle(&id("m1"), Event::VmSeen, Time::ZERO).unwrap();
    r.handle(&id("m1"), Event::TunnelCounters { packets: 0 }, Time::ZERO)
        .unwrap();
    r.handle(
        &id("m1"),
        Event::TunnelCounters { packets: 0 },
        Time::from_millis(10_000),
    )
    .unwrap();
    assert!(r.handle_timeout(Time::from_millis(10_000)).is_empty());
    assert_eq!(r.get(&id("m1")).unwrap().phase(), Phase::Announced);
}

#[test]
fn status_serializes_for_the_get() {
    let m = to_phase(Role::Source, Phase::Announced);
    let v = serde_json::to_value(m.status()).unwrap();
    assert_eq!(v["phase"], "announced");
    assert_eq!(v["transitions"][1]["phase"], "switched-over");
    assert_eq!(v["effects"]["override_installed"], true);
    assert_eq!(v["spec"]["tunnel"]["kind"], "vxlan");
}

#[test]
fn restart_measures_hold_and_quiet_afresh_but_keeps_the_stall_deadline() {
    let m = to_phase(Role::Source, Phase::Announced); // announced at 0
    let mut r = PeMigration::restore(m.log(), Time::from_millis(10_000)).unwrap();
    // Hold restarts at the restart (13 s); the stall deadline is journaled time (30 s).
    assert_eq!(r.poll_timeout(), Some(Time::from_millis(13_000)));
    run(
        &mut r,
        &[
            (10_000, Resume, &[]),
            (12_000, counters(4), &[]),
            (12_999, Timeout, &[]),
            (13_000, Timeout, &["phase converging"]),
            (13_000, counters(4), TEARDOWN_SRC),
        ],
    );
}

#[test]
fn resume_after_a_crash_right_after_creation_creates_the_tunnel() {
    let m = new(Role::Destination);
    let mut r = PeMigration::restore(&m.log()[..1], Time::ZERO).unwrap();
    assert!(!r.effects().tunnel);
    run(&mut r, &[(0, Resume, &["create-tunnel"]), (1, Resume, &[])]);
}
