//! Numbers for `GET /metrics`, kept by the runtime and rendered as Prometheus text.
//!
//! Hand-rendered rather than through a metrics crate: a handful of series, and the
//! text format is stable and simple.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use migroute_orchestration::pe::Phase;

use super::announcer::RouteAnnouncer;

/// Upper bounds (seconds) of the override install latency histogram.
const LATENCY_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

#[derive(Debug, Default)]
struct Inner {
    by_phase: BTreeMap<String, u64>,
    /// Time spent in each phase, for phases that were left: (sum seconds, count).
    phase_seconds: BTreeMap<String, (f64, u64)>,
    override_buckets: [u64; LATENCY_BUCKETS.len()],
    override_sum: f64,
    override_count: u64,
    commands: u64,
    failures: u64,
}

/// Shared between the runtime (writer) and the API (reader).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// All zero.
    pub fn new() -> Self {
        Metrics::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("metrics lock"))
    }

    /// Replaces the per-phase migration counts.
    pub fn set_phases(&self, counts: impl IntoIterator<Item = (Phase, u64)>) {
        self.with(|m| {
            m.by_phase.clear();
            for (p, n) in counts {
                *m.by_phase.entry(p.to_string()).or_default() += n;
            }
        })
    }

    /// A migration left `phase` after `ms`.
    pub fn observe_phase(&self, phase: Phase, ms: u64) {
        self.with(|m| {
            let e = m.phase_seconds.entry(phase.to_string()).or_default();
            e.0 += ms as f64 / 1000.0;
            e.1 += 1;
        })
    }

    /// Netlink request sent → ACK received for an override batch.
    pub fn observe_override_install(&self, d: Duration) {
        let s = d.as_secs_f64();
        self.with(|m| {
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                if s <= *b {
                    m.override_buckets[i] += 1;
                }
            }
            m.override_sum += s;
            m.override_count += 1;
        })
    }

    /// Commands journaled, and how many of them failed.
    pub fn observe_commands(&self, journaled: usize, failed: usize) {
        self.with(|m| {
            m.commands += journaled as u64;
            m.failures += failed as u64;
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self, bgp: &dyn RouteAnnouncer) -> String {
        let mut out = String::new();
        let m = self.inner.lock().expect("metrics lock");
        let w = &mut out;
        let _ = writeln!(
            w,
            "# HELP migroute_migrations Migrations on this PE by phase."
        );
        let _ = writeln!(w, "# TYPE migroute_migrations gauge");
        for p in ALL_PHASES {
            let name = p.to_string();
            let n = m.by_phase.get(&name).copied().unwrap_or(0);
            let _ = writeln!(w, "migroute_migrations{{phase=\"{name}\"}} {n}");
        }
        let _ = writeln!(
            w,
            "# HELP migroute_phase_duration_seconds Time spent in a phase before leaving it."
        );
        let _ = writeln!(w, "# TYPE migroute_phase_duration_seconds summary");
        for (p, (sum, count)) in &m.phase_seconds {
            let _ = writeln!(
                w,
                "migroute_phase_duration_seconds_sum{{phase=\"{p}\"}} {sum}"
            );
            let _ = writeln!(
                w,
                "migroute_phase_duration_seconds_count{{phase=\"{p}\"}} {count}"
            );
        }
        let _ = writeln!(w, "# HELP migroute_override_install_seconds Override batch: netlink request sent to ACK received.");
        let _ = writeln!(w, "# TYPE migroute_override_install_seconds histogram");
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                w,
                "migroute_override_install_seconds_bucket{{le=\"{b}\"}} {}",
                m.override_buckets[i]
            );
        }
        let _ = writeln!(
            w,
            "migroute_override_install_seconds_bucket{{le=\"+Inf\"}} {}",
            m.override_count
        );
        let _ = writeln!(
            w,
            "migroute_override_install_seconds_sum {}",
            m.override_sum
        );
        let _ = writeln!(
            w,
            "migroute_override_install_seconds_count {}",
            m.override_count
        );
        let _ = writeln!(w, "# HELP migroute_commands_total Commands journaled.");
        let _ = writeln!(w, "# TYPE migroute_commands_total counter");
        let _ = writeln!(w, "migroute_commands_total {}", m.commands);
        let _ = writeln!(
            w,
            "# HELP migroute_command_failures_total Commands whose effect failed."
        );
        let _ = writeln!(w, "# TYPE migroute_command_failures_total counter");
        let _ = writeln!(w, "migroute_command_failures_total {}", m.failures);
        drop(m);
        let _ = writeln!(
            w,
            "# HELP migroute_bgp_session_up 1 when the session to the peer is established."
        );
        let _ = writeln!(w, "# TYPE migroute_bgp_session_up gauge");
        for p in bgp.peers() {
            let up = u8::from(p.state == "established");
            let _ = writeln!(
                w,
                "migroute_bgp_session_up{{peer=\"{}\",state=\"{}\"}} {up}",
                p.address, p.state
            );
        }
        let s = bgp.stats();
        let _ = writeln!(w, "# HELP migroute_bgp_updates_total BGP UPDATE messages.");
        let _ = writeln!(w, "# TYPE migroute_bgp_updates_total counter");
        let _ = writeln!(
            w,
            "migroute_bgp_updates_total{{direction=\"in\"}} {}",
            s.updates_in
        );
        let _ = writeln!(
            w,
            "migroute_bgp_updates_total{{direction=\"out\"}} {}",
            s.updates_out
        );
        out
    }
}

/// Every phase, so that a scrape shows zeros instead of missing series.
pub const ALL_PHASES: [Phase; 8] = [
    Phase::Prepared,
    Phase::SwitchedOver,
    Phase::Announced,
    Phase::Converging,
    Phase::TornDown,
    Phase::Stalled,
    Phase::Aborting,
    Phase::Aborted,
];
