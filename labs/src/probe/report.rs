//! Probe reports, shaped for the migration scenarios: per lost packet its send time (so
//! loss splits into "inside the VM pause window" and "outside"), every gap with its
//! first and last missing send time, the longest gap in ms, and for TCP whether the
//! connection survived and its longest stall. All serialize to JSON.

use serde::{Deserialize, Serialize};

/// A run of consecutive lost packets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    /// Send time (Unix ns) of the first packet missing.
    pub first_missing_send_unix_ns: u64,
    /// Send time (Unix ns) of the last packet missing.
    pub last_missing_send_unix_ns: u64,
    /// Span of send time not delivered: last − first missing send time + one interval.
    pub gap_ms: f64,
}

/// Loss split by a time window (e.g. the VM's stop-and-copy pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowLoss {
    pub inside: u64,
    pub outside: u64,
}

/// Result of a UDP probe run, as seen by the receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UdpReport {
    pub run_id: u64,
    /// Packets sent: from the sender's end marker, else the highest sequence seen + 1.
    pub sent: u64,
    /// Distinct packets received.
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Packets that arrived after a higher sequence number.
    pub reordered: u64,
    /// Whether the sender's end marker arrived (if not, tail loss may be undercounted).
    pub end_seen: bool,
    pub rate_pps: f64,
    pub first_send_unix_ns: u64,
    pub last_send_unix_ns: u64,
    /// Longest [`Gap::gap_ms`], 0 without loss.
    pub longest_gap_ms: f64,
    pub gaps: Vec<Gap>,
    /// Send time (Unix ns) of every lost packet, in sequence order. Measured send times
    /// of the packets around a gap are interpolated; at the edges the schedule is used.
    pub lost_send_unix_ns: Vec<u64>,
    /// One-way delay (same host clock), over received packets.
    pub max_latency_us: u64,
    pub mean_latency_us: u64,
}

/// What the receiver knows about the run besides the packets.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunInfo {
    pub run_id: u64,
    pub start_ns: u64,
    pub interval_ns: u64,
    /// From the end marker: (packets sent, send time of the last one).
    pub end: Option<(u64, u64)>,
}

/// One received packet: (send time, receive time), indexed by sequence number.
pub type Slot = Option<(u64, u64)>;

impl UdpReport {
    /// Builds the report from the received slots (index = sequence number).
    pub fn build(info: &RunInfo, slots: &[Slot], duplicates: u64, reordered: u64) -> Self {
        let sent = info
            .end
            .map(|(n, _)| n)
            .unwrap_or(slots.len() as u64)
            .max(slots.len() as u64);
        let interval = info.interval_ns.max(1);
        let slot = |k: u64| slots.get(k as usize).copied().flatten();
        let scheduled = |k: u64| info.start_ns + k * interval;
        let mut received = 0u64;
        let (mut lat_sum, mut lat_max) = (0u64, 0u64);
        let mut gaps = Vec::new();
        let mut lost_times = Vec::new();
        let mut prev: Option<(u64, u64)> = None; // last received (seq, send_ns)
        let mut k = 0u64;
        while k < sent {
            if let Some((s, r)) = slot(k) {
                received += 1;
                let lat = r.saturating_sub(s) / 1000;
                lat_sum += lat;
                lat_max = lat_max.max(lat);
                prev = Some((k, s));
                k += 1;
                continue;
            }
            let first = k;
            while k < sent && slot(k).is_none() {
                k += 1;
            }
            let last = k - 1;
            // Bounds of the gap in measured send time, if known.
            let next = if k < sent {
                slot(k).map(|(s, _)| (k, s))
            } else {
                info.end.map(|(n, t)| (n - 1, t)).filter(|(n, _)| *n > last)
            };
            for m in first..=last {
                let t = match (prev, next) {
                    (Some((a, ta)), Some((b, tb))) if b > a && tb >= ta => {
                        ta + ((tb - ta) as u128 * (m - a) as u128 / (b - a) as u128) as u64
                    }
                    _ => scheduled(m),
                };
                lost_times.push(t);
            }
            let first_t = lost_times[lost_times.len() - (last - first + 1) as usize];
            let last_t = *lost_times.last().expect("gap is not empty");
            gaps.push(Gap {
                first_seq: first,
                last_seq: last,
                count: last - first + 1,
                first_missing_send_unix_ns: first_t,
                last_missing_send_unix_ns: last_t,
                gap_ms: (last_t - first_t + interval) as f64 / 1e6,
            });
        }
        let first_send = slot(0).map(|(s, _)| s).unwrap_or(info.start_ns);
        let last_send = info
            .end
            .map(|(_, t)| t)
            .or_else(|| slots.iter().rev().flatten().next().map(|(s, _)| *s))
            .unwrap_or(first_send);
        UdpReport {
            run_id: info.run_id,
            sent,
            received,
            lost: sent - received,
            duplicates,
            reordered,
            end_seen: info.end.is_some(),
            rate_pps: 1e9 / interval as f64,
            first_send_unix_ns: first_send,
            last_send_unix_ns: last_send,
            longest_gap_ms: gaps.iter().map(|g| g.gap_ms).fold(0.0, f64::max),
            gaps,
            lost_send_unix_ns: lost_times,
            max_latency_us: lat_max,
            mean_latency_us: lat_sum.checked_div(received).unwrap_or(0),
        }
    }

    /// Splits loss by a window of send time `[start_ns, end_ns]`.
    pub fn loss_in_window(&self, start_ns: u64, end_ns: u64) -> WindowLoss {
        let inside = self
            .lost_send_unix_ns
            .iter()
            .filter(|t| (start_ns..=end_ns).contains(*t))
            .count() as u64;
        WindowLoss {
            inside,
            outside: self.lost - inside,
        }
    }
}

/// Result of a TCP probe run, as seen by the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpReport {
    /// Whether the connection was established at all.
    pub connected: bool,
    /// Connected, no error, every message echoed and the close was clean.
    pub survived: bool,
    pub messages_sent: u64,
    pub messages_echoed: u64,
    /// Longest time without an echo arriving while messages were outstanding.
    pub longest_stall_ms: f64,
    /// When that stall began (Unix ns): the arrival of the echo before it.
    pub longest_stall_start_unix_ns: u64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn info(end: Option<(u64, u64)>) -> RunInfo {
        RunInfo {
            run_id: 1,
            start_ns: 1000 * MS,
            interval_ns: MS,
            end,
        }
    }

    /// Packets 0..n sent on schedule, all received 100 µs later, except `lost`.
    fn slots(n: u64, lost: &[u64]) -> Vec<Slot> {
        (0..n)
            .map(|k| {
                let s = 1000 * MS + k * MS;
                (!lost.contains(&k)).then_some((s, s + 100_000))
            })
            .collect()
    }

    #[test]
    fn no_loss_reports_zero() {
        let r = UdpReport::build(&info(Some((10, 1009 * MS))), &slots(10, &[]), 0, 0);
        assert_eq!((r.sent, r.received, r.lost), (10, 10, 0));
        assert!(r.gaps.is_empty());
        assert_eq!(r.longest_gap_ms, 0.0);
        assert_eq!(r.mean_latency_us, 100);
    }

    #[test]
    fn gaps_carry_send_times_and_lengths() {
        let r = UdpReport::build(
            &info(Some((10, 1009 * MS))),
            &slots(10, &[3, 4, 5, 8]),
            0,
            0,
        );
        assert_eq!(r.lost, 4);
        assert_eq!(r.gaps.len(), 2);
        let g = &r.gaps[0];
        assert_eq!((g.first_seq, g.last_seq, g.count), (3, 5, 3));
        assert_eq!(g.first_missing_send_unix_ns, 1003 * MS);
        assert_eq!(g.last_missing_send_unix_ns, 1005 * MS);
        assert_eq!(g.gap_ms, 3.0);
        assert_eq!(r.longest_gap_ms, 3.0);
        assert_eq!(
            r.lost_send_unix_ns,
            vec![1003 * MS, 1004 * MS, 1005 * MS, 1008 * MS]
        );
        let w = r.loss_in_window(1002 * MS, 1006 * MS);
        assert_eq!(
            w,
            WindowLoss {
                inside: 3,
                outside: 1
            }
        );
    }

    #[test]
    fn tail_loss_counts_from_end_marker_and_interpolates_to_last_send() {
        // 10 sent, the last 3 never arrive (slots only hold 0..7).
        let r = UdpReport::build(&info(Some((10, 1009 * MS))), &slots(7, &[]), 0, 0);
        assert_eq!((r.sent, r.lost), (10, 3));
        assert_eq!(r.gaps[0].first_seq, 7);
        assert_eq!(r.lost_send_unix_ns, vec![1007 * MS, 1008 * MS, 1009 * MS]);
    }

    #[test]
    fn measured_send_times_beat_the_schedule() {
        // The sender fell 50 ms behind schedule before packet 5.
        let mut s = slots(10, &[5, 6]);
        for v in s.iter_mut().skip(7) {
            *v = v.map(|(t, r)| (t + 50 * MS, r + 50 * MS));
        }
        let r = UdpReport::build(&info(None), &s, 0, 0);
        assert_eq!(r.lost, 2);
        assert!(!r.end_seen);
        // Between packet 4 (1004 ms) and 7 (1057 ms): one third and two thirds.
        assert_eq!(r.lost_send_unix_ns[0], 1004 * MS + 53 * MS / 3);
        assert!(r.gaps[0].gap_ms > 18.0);
    }
}
