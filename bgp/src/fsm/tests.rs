//! FSM scripts: (time, event) → expected actions, no sockets, simulated clock.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::codec::{Decoded, Family, Update};
use crate::negotiate::LocalCapabilities;

const PEER_AS: u32 = 65002;

fn caps(asn: u32, id: [u8; 4], hold: u16) -> LocalCapabilities {
    LocalCapabilities {
        local_as: asn,
        router_id: Ipv4Addr::from(id),
        hold_time: hold,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        extended_message: false,
        add_path_receive: false,
        restart_time: 120,
        restarting: false,
    }
}

fn local_open() -> Open {
    caps(65001, [10, 0, 0, 5], 90).open()
}

fn peer_open(id: [u8; 4], hold: u16) -> Open {
    caps(PEER_AS, id, hold).open()
}

fn msg(m: Message) -> Decoded {
    Decoded {
        message: m,
        treatment: None,
        errors: vec![],
    }
}

/// A machine and a clock that only moves when the script says so.
struct Script {
    fsm: Fsm,
    t0: Instant,
}

impl Script {
    fn new(passive: bool) -> Script {
        let mut cfg = FsmConfig::new(local_open(), PEER_AS);
        cfg.passive = passive;
        Script {
            fsm: Fsm::new(cfg),
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn step(&mut self, secs: f64, e: Event) -> Vec<Action> {
        let now = self.at(secs);
        self.fsm.handle(e, now)
    }

    /// Drives a fresh active session to Established on connection 1 at t=0..1.
    fn establish(&mut self, peer_hold: u16) {
        assert_eq!(self.step(0.0, Event::Start), vec![Action::Connect]);
        self.step(
            0.1,
            Event::TcpConnected {
                conn: 1,
                direction: Direction::Outbound,
            },
        );
        self.step(
            0.2,
            Event::Message {
                conn: 1,
                message: msg(Message::Open(peer_open([10, 0, 0, 9], peer_hold))),
            },
        );
        let a = self.step(
            0.3,
            Event::Message {
                conn: 1,
                message: msg(Message::Keepalive),
            },
        );
        assert!(matches!(a.as_slice(), [Action::SessionUp { conn: 1, .. }]));
        assert_eq!(self.fsm.state(), State::Established);
    }
}

fn sends(a: &[Action]) -> Vec<(ConnId, u8)> {
    a.iter()
        .filter_map(|x| match x {
            Action::Send { conn, message } => Some((*conn, message.type_code())),
            _ => None,
        })
        .collect()
}

#[test]
fn active_open_to_established() {
    let mut s = Script::new(false);
    assert_eq!(s.step(0.0, Event::Start), vec![Action::Connect]);
    assert_eq!(s.fsm.state(), State::Connect);
    let a = s.step(
        0.1,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Outbound,
        },
    );
    assert_eq!(
        a,
        vec![Action::Send {
            conn: 1,
            message: Message::Open(local_open())
        }]
    );
    assert_eq!(s.fsm.state(), State::OpenSent);
    assert_eq!(s.fsm.timer(Timer::Hold), Some(s.at(0.1) + OPEN_HOLD_TIME));
    let a = s.step(
        0.2,
        Event::Message {
            conn: 1,
            message: msg(Message::Open(peer_open([10, 0, 0, 9], 30))),
        },
    );
    assert_eq!(
        a,
        vec![Action::Send {
            conn: 1,
            message: Message::Keepalive
        }]
    );
    assert_eq!(s.fsm.state(), State::OpenConfirm);
    // Negotiated hold is min(90, 30): hold 30 s, keepalive 10 s.
    assert_eq!(s.fsm.timer(Timer::Hold), Some(s.at(30.2)));
    assert_eq!(s.fsm.timer(Timer::Keepalive), Some(s.at(10.2)));
    let a = s.step(
        0.3,
        Event::Message {
            conn: 1,
            message: msg(Message::Keepalive),
        },
    );
    let [Action::SessionUp {
        conn: 1,
        negotiated,
    }] = a.as_slice()
    else {
        panic!("{a:?}")
    };
    assert_eq!(negotiated.hold_time, 30);
    assert_eq!(negotiated.remote_as, PEER_AS);
    assert_eq!(s.fsm.established_conn(), Some(1));
}

#[test]
fn keepalives_and_hold_timer() {
    let mut s = Script::new(false);
    s.establish(30);
    assert_eq!(s.fsm.poll_timeout(), Some(s.at(10.3)));
    // Keepalive timer fires at 10.3: one KEEPALIVE, re-armed 10 s later.
    let a = s.step(10.3, Event::Timeout);
    assert_eq!(sends(&a), vec![(1, 4)]);
    assert_eq!(s.fsm.timer(Timer::Keepalive), Some(s.at(20.3)));
    // An UPDATE restarts the hold timer and is delivered.
    let a = s.step(
        15.0,
        Event::Message {
            conn: 1,
            message: msg(Message::Update(Update::default())),
        },
    );
    assert!(matches!(a.as_slice(), [Action::Deliver(_)]));
    assert_eq!(s.fsm.timer(Timer::Hold), Some(s.at(45.0)));
    s.step(20.3, Event::Timeout);
    s.step(30.3, Event::Timeout);
    s.step(40.3, Event::Timeout);
    // Nothing heard since 15 s: hold expires at 45 s.
    let a = s.step(45.0, Event::Timeout);
    assert_eq!(
        a,
        vec![
            Action::Send {
                conn: 1,
                message: Message::Notification(Notification::new(4, 0, vec![]))
            },
            Action::Close { conn: 1 },
            Action::SessionDown {
                reason: DownReason::HoldTimerExpired
            }
        ]
    );
    assert_eq!(s.fsm.state(), State::Idle);
    // First failure: idle hold 1 s, then connect again.
    assert_eq!(s.fsm.timer(Timer::IdleHold), Some(s.at(46.0)));
    assert_eq!(s.step(46.0, Event::Timeout), vec![Action::Connect]);
}

#[test]
fn zero_hold_time_disables_timers() {
    let mut s = Script::new(false);
    s.establish(0);
    assert_eq!(s.fsm.poll_timeout(), None);
}

#[test]
fn connect_retry_after_refused_connection() {
    let mut s = Script::new(false);
    s.step(0.0, Event::Start);
    assert!(s.step(0.1, Event::TcpConnectFailed).is_empty());
    assert_eq!(s.fsm.state(), State::Active);
    assert_eq!(s.fsm.poll_timeout(), Some(s.at(5.1)));
    assert!(s.step(5.0, Event::Timeout).is_empty());
    assert_eq!(s.step(5.1, Event::Timeout), vec![Action::Connect]);
    assert_eq!(s.fsm.state(), State::Connect);
}

#[test]
fn passive_peer_never_connects() {
    let mut s = Script::new(true);
    assert!(s.step(0.0, Event::Start).is_empty());
    assert_eq!(s.fsm.state(), State::Active);
    assert_eq!(s.fsm.poll_timeout(), None);
    let a = s.step(
        1.0,
        Event::TcpConnected {
            conn: 7,
            direction: Direction::Inbound,
        },
    );
    assert_eq!(sends(&a), vec![(7, 1)]);
    assert_eq!(s.fsm.state(), State::OpenSent);
}

#[test]
fn idle_hold_backs_off_exponentially() {
    let mut s = Script::new(false);
    let mut t = 0.0;
    s.step(t, Event::Start);
    let mut holds = vec![];
    for conn in 1..=4 {
        s.step(
            t + 0.1,
            Event::TcpConnected {
                conn,
                direction: Direction::Outbound,
            },
        );
        // The peer refuses us with a NOTIFICATION each time.
        s.step(
            t + 0.2,
            Event::Message {
                conn,
                message: msg(Message::Notification(Notification::new(6, 5, vec![]))),
            },
        );
        assert_eq!(s.fsm.state(), State::Idle);
        let d = s.fsm.timer(Timer::IdleHold).unwrap() - s.at(t + 0.2);
        holds.push(d.as_secs());
        t += 0.2 + d.as_secs_f64();
        assert_eq!(s.step(t, Event::Timeout), vec![Action::Connect]);
    }
    assert_eq!(holds, vec![1, 2, 4, 8]);
}

#[test]
fn unexpected_message_is_an_fsm_error() {
    let mut s = Script::new(false);
    s.step(0.0, Event::Start);
    s.step(
        0.1,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Outbound,
        },
    );
    let a = s.step(
        0.2,
        Event::Message {
            conn: 1,
            message: msg(Message::Keepalive),
        },
    );
    assert_eq!(
        a,
        vec![
            Action::Send {
                conn: 1,
                message: Message::Notification(Notification::new(5, 1, vec![]))
            },
            Action::Close { conn: 1 }
        ]
    );
}

#[test]
fn bad_peer_as_refused() {
    let mut s = Script::new(false);
    s.step(0.0, Event::Start);
    s.step(
        0.1,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Outbound,
        },
    );
    let wrong = caps(65099, [10, 0, 0, 9], 90).open();
    let a = s.step(
        0.2,
        Event::Message {
            conn: 1,
            message: msg(Message::Open(wrong)),
        },
    );
    let Action::Send {
        message: Message::Notification(n),
        ..
    } = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!((n.code, n.subcode), (2, 2));
    assert_eq!(s.fsm.state(), State::Idle);
}

#[test]
fn collision_higher_remote_id_keeps_inbound() {
    // Our id 10.0.0.5 < peer 10.0.0.9: the peer's (inbound) connection wins.
    let mut s = Script::new(false);
    s.step(0.0, Event::Start);
    s.step(
        0.1,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Outbound,
        },
    );
    let a = s.step(
        0.15,
        Event::TcpConnected {
            conn: 2,
            direction: Direction::Inbound,
        },
    );
    assert_eq!(sends(&a), vec![(2, 1)]);
    let a = s.step(
        0.2,
        Event::Message {
            conn: 2,
            message: msg(Message::Open(peer_open([10, 0, 0, 9], 90))),
        },
    );
    assert_eq!(
        a,
        vec![
            Action::Send {
                conn: 2,
                message: Message::Keepalive
            },
            Action::Send {
                conn: 1,
                message: Message::Notification(Notification::new(6, 7, vec![]))
            },
            Action::Close { conn: 1 },
        ]
    );
    assert_eq!(s.fsm.state(), State::OpenConfirm);
    let a = s.step(
        0.3,
        Event::Message {
            conn: 2,
            message: msg(Message::Keepalive),
        },
    );
    assert!(matches!(a.as_slice(), [Action::SessionUp { conn: 2, .. }]));
}

#[test]
fn collision_lower_remote_id_keeps_outbound() {
    let mut s = Script::new(false);
    s.step(0.0, Event::Start);
    s.step(
        0.1,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Outbound,
        },
    );
    s.step(
        0.15,
        Event::TcpConnected {
            conn: 2,
            direction: Direction::Inbound,
        },
    );
    // OPEN arrives first on our own connection; the peer (10.0.0.1) loses.
    let a = s.step(
        0.2,
        Event::Message {
            conn: 1,
            message: msg(Message::Open(peer_open([10, 0, 0, 1], 90))),
        },
    );
    assert_eq!(
        a,
        vec![
            Action::Send {
                conn: 2,
                message: Message::Notification(Notification::new(6, 7, vec![]))
            },
            Action::Close { conn: 2 },
            Action::Send {
                conn: 1,
                message: Message::Keepalive
            },
        ]
    );
    assert_eq!(s.fsm.state(), State::OpenConfirm);
}

#[test]
fn established_refuses_a_second_connection_from_non_gr_peer() {
    let mut s = Script::new(false);
    // A peer without graceful restart: strip it from its OPEN.
    s.step(0.0, Event::Start);
    s.step(
        0.1,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Outbound,
        },
    );
    let mut o = peer_open([10, 0, 0, 9], 90);
    o.capabilities
        .retain(|c| !matches!(c, crate::codec::Capability::GracefulRestart(_)));
    s.step(
        0.2,
        Event::Message {
            conn: 1,
            message: msg(Message::Open(o)),
        },
    );
    s.step(
        0.3,
        Event::Message {
            conn: 1,
            message: msg(Message::Keepalive),
        },
    );
    let a = s.step(
        1.0,
        Event::TcpConnected {
            conn: 2,
            direction: Direction::Inbound,
        },
    );
    assert_eq!(sends(&a), vec![(2, 3)]);
    assert_eq!(s.fsm.established_conn(), Some(1));
}

#[test]
fn restarted_gr_peer_replaces_the_old_session() {
    let mut s = Script::new(false);
    s.establish(90);
    let a = s.step(
        5.0,
        Event::TcpConnected {
            conn: 2,
            direction: Direction::Inbound,
        },
    );
    assert_eq!(sends(&a), vec![(2, 1)]);
    let a = s.step(
        5.1,
        Event::Message {
            conn: 2,
            message: msg(Message::Open(peer_open([10, 0, 0, 9], 90))),
        },
    );
    assert_eq!(
        a,
        vec![
            Action::Send {
                conn: 2,
                message: Message::Keepalive
            },
            Action::Close { conn: 1 },
            Action::SessionDown {
                reason: DownReason::PeerRestarted
            },
        ]
    );
    assert_eq!(s.fsm.state(), State::OpenConfirm);
    let a = s.step(
        5.2,
        Event::Message {
            conn: 2,
            message: msg(Message::Keepalive),
        },
    );
    assert!(matches!(a.as_slice(), [Action::SessionUp { conn: 2, .. }]));
}

#[test]
fn stop_sends_the_shutdown_notification_and_stays_idle() {
    let mut s = Script::new(false);
    s.establish(90);
    let n = Notification::shutdown(2, "maintenance").unwrap();
    let a = s.step(2.0, Event::Stop(Some(n.clone())));
    assert_eq!(
        a,
        vec![
            Action::Send {
                conn: 1,
                message: Message::Notification(n.clone())
            },
            Action::Close { conn: 1 },
            Action::SessionDown {
                reason: DownReason::sent(&n)
            }
        ]
    );
    assert_eq!(s.fsm.poll_timeout(), None);
    assert_eq!(s.fsm.state(), State::Idle);
}

#[test]
fn reset_restarts_after_the_given_idle_time() {
    let mut s = Script::new(false);
    s.establish(90);
    let a = s.step(
        2.0,
        Event::Reset {
            notification: Notification::new(6, 1, vec![]),
            idle_for: Some(Duration::from_secs(30)),
        },
    );
    assert_eq!(sends(&a), vec![(1, 3)]);
    assert_eq!(s.fsm.timer(Timer::IdleHold), Some(s.at(32.0)));
    assert!(s.step(31.0, Event::Timeout).is_empty());
    assert_eq!(s.step(32.0, Event::Timeout), vec![Action::Connect]);
}

#[test]
fn transport_loss_in_established_keeps_routes_for_gr() {
    let mut s = Script::new(false);
    s.establish(90);
    let a = s.step(3.0, Event::TcpClosed { conn: 1 });
    let reason = DownReason::ConnectionClosed;
    assert!(reason.keeps_routes(false));
    assert_eq!(
        a,
        vec![Action::Close { conn: 1 }, Action::SessionDown { reason }]
    );
}

#[test]
fn route_refresh_is_passed_up_when_negotiated() {
    let mut s = Script::new(false);
    s.establish(90);
    let rr = crate::codec::RouteRefresh {
        afi: crate::codec::Afi::Ipv4,
        safi: crate::codec::Safi::Unicast,
        subtype: RouteRefreshSubtype::Request,
    };
    let a = s.step(
        1.0,
        Event::Message {
            conn: 1,
            message: msg(Message::RouteRefresh(rr)),
        },
    );
    assert_eq!(a, vec![Action::RouteRefresh(rr)]);
}

#[test]
fn transport_loss_in_open_sent_goes_active_and_retries() {
    let mut s = Script::new(false);
    s.step(0.0, Event::Start);
    s.step(
        0.1,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Outbound,
        },
    );
    let a = s.step(0.2, Event::TcpClosed { conn: 1 });
    assert_eq!(a, vec![Action::Close { conn: 1 }]);
    assert_eq!(s.fsm.state(), State::Active);
    assert_eq!(s.fsm.poll_timeout(), Some(s.at(5.2)));
    assert_eq!(s.step(5.2, Event::Timeout), vec![Action::Connect]);
}

#[test]
fn hold_timer_in_open_confirm_ends_the_attempt() {
    let mut s = Script::new(false);
    s.step(0.0, Event::Start);
    s.step(
        0.1,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Outbound,
        },
    );
    s.step(
        0.2,
        Event::Message {
            conn: 1,
            message: msg(Message::Open(peer_open([10, 0, 0, 9], 9))),
        },
    );
    // Hold 9 s, keepalive 3 s: keepalives go out while we wait for the peer's.
    assert_eq!(sends(&s.step(3.2, Event::Timeout)), vec![(1, 4)]);
    assert_eq!(sends(&s.step(6.2, Event::Timeout)), vec![(1, 4)]);
    let a = s.step(9.2, Event::Timeout);
    assert_eq!(sends(&a), vec![(1, 3)]);
    // No SessionDown: the session never came up.
    assert!(!a.iter().any(|x| matches!(x, Action::SessionDown { .. })));
    assert_eq!(s.fsm.state(), State::Idle);
}

#[test]
fn decode_error_sends_the_derived_notification() {
    let mut s = Script::new(false);
    s.establish(90);
    let n = Notification::new(3, 1, vec![]);
    let a = s.step(
        1.0,
        Event::MessageError {
            conn: 1,
            notification: n.clone(),
        },
    );
    assert_eq!(
        a,
        vec![
            Action::Send {
                conn: 1,
                message: Message::Notification(n.clone())
            },
            Action::Close { conn: 1 },
            Action::SessionDown {
                reason: DownReason::sent(&n)
            }
        ]
    );
}

#[test]
fn keeps_routes_only_for_transport_loss_without_n_bit() {
    assert!(DownReason::PeerRestarted.keeps_routes(false));
    assert!(!DownReason::HoldTimerExpired.keeps_routes(false));
    assert!(DownReason::HoldTimerExpired.keeps_routes(true));
    let cease = |subcode| DownReason::NotificationReceived { code: 6, subcode };
    assert!(!cease(2).keeps_routes(false));
    assert!(cease(2).keeps_routes(true));
    // Hard Reset (RFC 8538) always drops.
    assert!(!cease(9).keeps_routes(true));
}

fn delay_open_script(passive: bool) -> Script {
    let mut s = Script::new(passive);
    s.fsm.cfg.delay_open = Some(Duration::from_secs(5));
    s
}

fn sends_open(a: &[Action]) -> bool {
    a.iter().any(|a| {
        matches!(
            a,
            Action::Send {
                message: Message::Open(_),
                ..
            }
        )
    })
}

#[test]
fn delay_open_waits_then_sends_open_when_the_timer_fires() {
    let mut s = delay_open_script(true);
    s.step(0.0, Event::Start);
    let a = s.step(
        1.0,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Inbound,
        },
    );
    assert!(!sends_open(&a), "{a:?}");
    assert_eq!(s.fsm.state(), State::Active);
    assert_eq!(s.fsm.poll_timeout(), Some(s.at(6.0)));
    // Nothing before the deadline.
    assert!(s.step(5.9, Event::Timeout).is_empty());
    let a = s.step(6.0, Event::Timeout);
    assert!(sends_open(&a), "{a:?}");
    assert_eq!(s.fsm.state(), State::OpenSent);
}

#[test]
fn delay_open_answers_the_peers_open_with_open_and_keepalive() {
    let mut s = delay_open_script(false);
    s.step(0.0, Event::Start);
    s.step(
        0.5,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Outbound,
        },
    );
    assert_eq!(s.fsm.state(), State::Connect);
    let a = s.step(
        1.0,
        Event::Message {
            conn: 1,
            message: msg(Message::Open(peer_open([10, 0, 0, 9], 90))),
        },
    );
    let sent: Vec<&Message> = a
        .iter()
        .filter_map(|a| match a {
            Action::Send { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        matches!(sent[..], [Message::Open(_), Message::Keepalive]),
        "{a:?}"
    );
    assert_eq!(s.fsm.state(), State::OpenConfirm);
    assert_eq!(s.fsm.timer(Timer::DelayOpen), None);
    let a = s.step(
        1.1,
        Event::Message {
            conn: 1,
            message: msg(Message::Keepalive),
        },
    );
    assert!(a.iter().any(|a| matches!(a, Action::SessionUp { .. })));
    assert_eq!(s.fsm.state(), State::Established);
}

#[test]
fn delay_open_connection_lost_goes_back_to_active_and_retries() {
    let mut s = delay_open_script(false);
    s.step(0.0, Event::Start);
    s.step(
        0.5,
        Event::TcpConnected {
            conn: 1,
            direction: Direction::Outbound,
        },
    );
    // A second connection while the first waits is closed.
    let a = s.step(
        0.6,
        Event::TcpConnected {
            conn: 2,
            direction: Direction::Inbound,
        },
    );
    assert_eq!(a, vec![Action::Close { conn: 2 }]);
    let a = s.step(1.0, Event::TcpClosed { conn: 1 });
    assert_eq!(a, vec![Action::Close { conn: 1 }]);
    assert_eq!(s.fsm.state(), State::Active);
    assert_eq!(s.fsm.timer(Timer::DelayOpen), None);
    // Connect-retry brings a new attempt; the stale DelayOpen deadline sends nothing.
    let a = s.step(6.0, Event::Timeout);
    assert_eq!(a, vec![Action::Connect]);
}
