//! From one move's raw material (the mover's windows, the probe reports) to its
//! [`RunRecord`]: loss split by the pause window, times made relative to the pause.

use super::report::{PhaseRecord, RunRecord};
use super::{Direction, Mode, MoveRecord};
use crate::probe::{TcpReport, UdpReport};

/// The pause window is widened by this much each side before loss is called "outside
/// the pause": packets in flight when the port went down, and the few µs–ms between a
/// timestamp and the `ip` call it brackets, are the VM's pause, not the network's.
pub const PAUSE_MARGIN_NS: u64 = 5_000_000;

/// How long the probe must outlast a move's last phase for the run to count as
/// measured to the end.
pub const COVER_NS: u64 = 200_000_000;

/// `t` in ms after `t0`, rounded to the µs (the report stays readable).
fn rel_ms(t: u64, t0: u64) -> f64 {
    ((t as i128 - t0 as i128) as f64 / 1e3).round() / 1e3
}

/// Builds the record of run `index`.
pub fn run_record(
    index: usize,
    mode: Mode,
    direction: Direction,
    mv: &MoveRecord,
    udp: &UdpReport,
    tcp: &TcpReport,
) -> RunRecord {
    let t0 = mv.pause.start_unix_ns;
    let w = udp.loss_in_window(
        mv.pause.start_unix_ns.saturating_sub(PAUSE_MARGIN_NS),
        mv.pause.end_unix_ns + PAUSE_MARGIN_NS,
    );
    RunRecord {
        index,
        mode,
        direction,
        pause_ms: mv.pause.ms(),
        lost_in_pause: w.inside,
        lost_outside_pause: w.outside,
        longest_gap_ms: udp.longest_gap_ms,
        tcp_survived: tcp.survived,
        announce_to_ingress_fib_ms: mv.announce_to_ingress_fib_ms,
        phases: mv
            .phases
            .iter()
            .map(|p| PhaseRecord {
                name: p.name.clone(),
                start_ms: rel_ms(p.window.start_unix_ns, t0),
                duration_ms: p.window.ms(),
            })
            .collect(),
        sent: udp.sent,
        lost: udp.lost,
        tcp_longest_stall_ms: tcp.longest_stall_ms,
        tcp_error: tcp.error.clone(),
        probe_start_ms: rel_ms(udp.first_send_unix_ns, t0),
        probe_end_ms: rel_ms(udp.last_send_unix_ns, t0),
        lost_send_ms: udp
            .lost_send_unix_ns
            .iter()
            .map(|t| rel_ms(*t, t0))
            .collect(),
        probe_covers_move: mv
            .phases
            .iter()
            .map(|p| p.window.end_unix_ns)
            .max()
            .is_none_or(|end| end + COVER_NS <= udp.last_send_unix_ns),
        t0_unix_ns: t0,
        hypervisor: mv.hypervisor.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::report::{RunInfo, Slot};
    use crate::scenario::{Phase, Window};

    const MS: u64 = 1_000_000;

    #[test]
    fn loss_splits_at_the_widened_pause_and_times_are_relative_to_it() {
        // 1000 packets from t=1000 ms, 1 per ms; pause 1300..1400 ms; lost: 1296..1420
        // (4 before the pause: inside the 5 ms margin; 15 after: 1405..1419 outside).
        let start = 1000 * MS;
        let lost: Vec<u64> = (296..420).collect();
        let slots: Vec<Slot> = (0..1000u64)
            .map(|k| (!lost.contains(&k)).then_some((start + k * MS, start + k * MS + 50_000)))
            .collect();
        let info = RunInfo {
            run_id: 1,
            start_ns: start,
            interval_ns: MS,
            end: Some((1000, start + 999 * MS)),
        };
        let udp = UdpReport::build(&info, &slots, 0, 0);
        let pause = Window {
            start_unix_ns: 1300 * MS,
            end_unix_ns: 1400 * MS,
        };
        let mv = MoveRecord {
            pause,
            phases: vec![Phase {
                name: "pause".into(),
                window: pause,
            }],
            announce_to_ingress_fib_ms: Some(12.5),
            hypervisor: None,
        };
        let tcp = TcpReport {
            connected: true,
            survived: true,
            messages_sent: 1,
            messages_echoed: 1,
            longest_stall_ms: 0.0,
            longest_stall_start_unix_ns: 0,
            duration_ms: 1.0,
            error: None,
        };
        let r = run_record(3, Mode::Naive, Direction::BToA, &mv, &udp, &tcp);
        assert_eq!(r.lost, 124);
        assert_eq!(r.lost_in_pause, 110); // 1296..=1405
        assert_eq!(r.lost_outside_pause, 14); // 1406..=1419
        assert_eq!(r.pause_ms, 100.0);
        assert_eq!(r.probe_start_ms, -300.0);
        assert_eq!(r.lost_send_ms[0], -4.0);
        assert_eq!(r.phases[0].duration_ms, 100.0);
        assert_eq!(r.longest_gap_ms, 124.0);
        assert!(r.probe_covers_move);
        let late = MoveRecord {
            phases: vec![Phase {
                name: "convergence".into(),
                window: Window {
                    start_unix_ns: 1400 * MS,
                    end_unix_ns: 1900 * MS,
                },
            }],
            ..mv
        };
        assert!(!run_record(0, Mode::Naive, Direction::AToB, &late, &udp, &tcp).probe_covers_move);
    }
}
