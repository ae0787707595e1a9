//! `report.json`: one record per measured move (`runs[]`) and, per mode, the median,
//! minimum and maximum of every numeric field (`summary`). Times inside a run are in
//! ms relative to the start of that run's pause, so runs overlay on one axis; the
//! lost packets' send times are kept so the SVG can be redrawn from the report alone.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Direction, Mode, ScenarioError};

/// One phase of a run, relative to the run's pause start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub name: String,
    pub start_ms: f64,
    pub duration_ms: f64,
}

/// One measured move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// 0-based, in the order the moves ran.
    pub index: usize,
    pub mode: Mode,
    pub direction: Direction,
    /// Measured pause: port down → port up on the new side.
    pub pause_ms: f64,
    /// Lost packets sent inside the pause window widened by 5 ms each side.
    pub lost_in_pause: u64,
    /// Lost packets sent outside it: the loss the network, not the VM, caused.
    pub lost_outside_pause: u64,
    pub longest_gap_ms: f64,
    pub tcp_survived: bool,
    /// Routing change → ingress PE's kernel FIB; `null` for a mode without one.
    pub announce_to_ingress_fib_ms: Option<f64>,
    /// Per-phase start and duration.
    pub phases: Vec<PhaseRecord>,
    /// Probe detail: packets sent and lost in this run, TCP's worst stall.
    pub sent: u64,
    pub lost: u64,
    pub tcp_longest_stall_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_error: Option<String>,
    /// The probe's span and the send time of every lost packet, relative to the pause.
    pub probe_start_ms: f64,
    pub probe_end_ms: f64,
    pub lost_send_ms: Vec<f64>,
    /// Whether the probe kept running at least 200 ms past the move's last phase: if
    /// not, loss after the probe ended went unmeasured (raise the probe duration).
    pub probe_covers_move: bool,
    /// The run's time origin (pause start), Unix ns.
    pub t0_unix_ns: u64,
    /// A real guest's migration as the hypervisor reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<HypervisorRecord>,
}

/// What libvirt reported of one live migration: its own downtime figure (QEMU's, from
/// the job statistics) beside the pause window the events gave, and the bytes moved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HypervisorRecord {
    /// libvirt's downtime of the completed job, ms.
    pub downtime_ms: Option<f64>,
    /// The whole job, ms.
    pub migration_ms: Option<f64>,
    /// Guest memory sent, bytes.
    pub memory_bytes: Option<u64>,
    /// Disk bytes copied (libvirt-copy storage).
    pub disk_bytes: Option<u64>,
    /// Guest disk records acknowledged just before the move and the last one after
    /// it: the guest kept writing across the migration.
    pub guest_acked_before: Option<u64>,
    pub guest_acked_after: Option<u64>,
}

/// The guest's disk at the end of the KVM scenario, checked from outside with the
/// guest powered off. After the measured moves the guest's writer stops and one more,
/// unmeasured move takes the idle guest across: the disk it left behind must then be
/// byte-identical to the one it runs on (nothing lost at cutover), and every record
/// the guest acknowledged, before and during the measured moves, must be on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskReport {
    /// The last record the guest acknowledged (its write returned, O_DSYNC).
    pub acked: u64,
    /// Records checked on the final disk (all of them, up to the ring's size).
    pub records_checked: u64,
    /// Acknowledged records not found (at most the first 20) and how many in all.
    pub missing: Vec<u64>,
    #[serde(default)]
    pub missing_count: u64,
    /// SHA-256 of the raw contents of the disk left behind by the last move and of
    /// the final disk.
    pub left_behind_sha256: String,
    pub final_sha256: String,
    /// The two images are byte-identical: the last move's cutover lost nothing.
    pub identical: bool,
    /// Virtual size of the disk, bytes.
    pub disk_bytes: u64,
}

/// Median, minimum and maximum of one field over a mode's runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    /// `None` for no values; the median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// A mode's summary: run count, TCP survivals, and a [`Stat`] per numeric field
/// (`pause_ms`, `lost_in_pause`, …, and `phase_<name>_ms` per phase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub runs: usize,
    /// How many runs' TCP connection survived.
    pub tcp_survived: usize,
    #[serde(flatten)]
    pub stats: BTreeMap<String, Stat>,
}

impl Summary {
    /// Summarizes `runs` (all of one mode).
    pub fn of(runs: &[&RunRecord]) -> Summary {
        let mut fields: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut put = |k: &str, v: f64| fields.entry(k.to_string()).or_default().push(v);
        for r in runs {
            put("pause_ms", r.pause_ms);
            put("lost_in_pause", r.lost_in_pause as f64);
            put("lost_outside_pause", r.lost_outside_pause as f64);
            put("longest_gap_ms", r.longest_gap_ms);
            if let Some(a) = r.announce_to_ingress_fib_ms {
                put("announce_to_ingress_fib_ms", a);
            }
            for p in &r.phases {
                put(&format!("phase_{}_ms", p.name), p.duration_ms);
            }
            if let Some(h) = &r.hypervisor {
                let mut opt = |k: &str, v: Option<f64>| {
                    if let Some(v) = v {
                        put(k, v);
                    }
                };
                opt("libvirt_downtime_ms", h.downtime_ms);
                opt("migration_ms", h.migration_ms);
                opt("memory_mib", h.memory_bytes.map(|b| b as f64 / 1048576.0));
                opt("disk_mib", h.disk_bytes.map(|b| b as f64 / 1048576.0));
            }
        }
        Summary {
            runs: runs.len(),
            tcp_survived: runs.iter().filter(|r| r.tcp_survived).count(),
            stats: fields
                .into_iter()
                .filter_map(|(k, v)| Stat::of(&v).map(|s| (k, s)))
                .collect(),
        }
    }

    /// The stat of a field, if any run had it.
    pub fn stat(&self, field: &str) -> Option<Stat> {
        self.stats.get(field).copied()
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `planned-migration` or `naive`.
    pub scenario: String,
    pub lab: String,
    /// `ipv4` or `ipv6`: the probe's family.
    pub family: String,
    pub rate_pps: u32,
    /// The pause asked for (the measured one is per run).
    pub pause_ms: u64,
    pub runs_per_mode: usize,
    pub started_unix_ns: u64,
    pub runs: Vec<RunRecord>,
    pub summary: BTreeMap<Mode, Summary>,
    /// A real guest's disk after the last move (the KVM scenario).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskReport>,
}

impl Report {
    /// Recomputes `summary` from `runs`.
    pub fn summarize(&mut self) {
        let modes: std::collections::BTreeSet<Mode> = self.runs.iter().map(|r| r.mode).collect();
        self.summary = modes
            .into_iter()
            .map(|m| {
                let runs: Vec<&RunRecord> = self.runs.iter().filter(|r| r.mode == m).collect();
                (m, Summary::of(&runs))
            })
            .collect();
    }

    /// Writes the report as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), ScenarioError> {
        let text = serde_json::to_string_pretty(self).expect("report serializes");
        std::fs::write(path, text + "\n").map_err(|source| ScenarioError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The summary as a text table (one row per mode), for terminals and the README.
    pub fn table(&self) -> String {
        let cell = |s: &Summary, f: &str| match s.stat(f) {
            Some(st) => format!("{:.0} ({:.0}–{:.0})", st.median, st.min, st.max),
            None => "-".into(),
        };
        let mut out = String::from(
            "| mode | runs | lost outside pause | lost in pause | longest gap ms | announce→ingress FIB ms | TCP survived |\n|---|---|---|---|---|---|---|\n",
        );
        for (mode, s) in &self.summary {
            out.push_str(&format!(
                "| {mode} | {} | {} | {} | {} | {} | {}/{} |\n",
                s.runs,
                cell(s, "lost_outside_pause"),
                cell(s, "lost_in_pause"),
                cell(s, "longest_gap_ms"),
                cell(s, "announce_to_ingress_fib_ms"),
                s.tcp_survived,
                s.runs
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: Mode, outside: u64, fib: Option<f64>) -> RunRecord {
        RunRecord {
            index: 0,
            mode,
            direction: Direction::AToB,
            pause_ms: 100.0,
            lost_in_pause: 100,
            lost_outside_pause: outside,
            longest_gap_ms: 100.0 + outside as f64,
            tcp_survived: outside < 300,
            announce_to_ingress_fib_ms: fib,
            phases: vec![PhaseRecord {
                name: "pause".into(),
                start_ms: 0.0,
                duration_ms: 100.0,
            }],
            sent: 4000,
            lost: 100 + outside,
            tcp_longest_stall_ms: 0.0,
            tcp_error: None,
            probe_start_ms: -800.0,
            probe_end_ms: 3200.0,
            lost_send_ms: vec![],
            probe_covers_move: true,
            t0_unix_ns: 1,
            hypervisor: None,
        }
    }

    #[test]
    fn stat_median_of_odd_and_even_counts() {
        let s = Stat::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        assert_eq!(Stat::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Stat::of(&[]), None);
    }

    #[test]
    fn summary_per_mode_with_the_issue_field_names() {
        let mut r = Report {
            scenario: "planned-migration".into(),
            lab: "wan-migration".into(),
            family: "ipv4".into(),
            rate_pps: 1000,
            pause_ms: 100,
            runs_per_mode: 2,
            started_unix_ns: 0,
            runs: vec![
                run(Mode::Naive, 210, Some(190.0)),
                run(Mode::Naive, 400, Some(390.0)),
                run(Mode::Migroute, 0, None),
            ],
            summary: BTreeMap::new(),
            disk: None,
        };
        r.summarize();
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        let naive = &v["summary"]["naive"];
        assert_eq!(naive["runs"], 2);
        assert_eq!(naive["tcp_survived"], 1);
        assert_eq!(naive["lost_outside_pause"]["median"], 305.0);
        assert_eq!(naive["announce_to_ingress_fib_ms"]["max"], 390.0);
        assert_eq!(naive["phase_pause_ms"]["min"], 100.0);
        assert!(v["summary"]["migroute"]["announce_to_ingress_fib_ms"].is_null());
        let run0 = &v["runs"][0];
        for k in [
            "mode",
            "direction",
            "pause_ms",
            "lost_in_pause",
            "lost_outside_pause",
            "longest_gap_ms",
            "tcp_survived",
            "announce_to_ingress_fib_ms",
            "phases",
        ] {
            assert!(run0.get(k).is_some(), "runs[0].{k} missing");
        }
        assert_eq!(run0["mode"], "naive");
        assert_eq!(run0["direction"], "A->B");
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert!(
            r.table().contains("| naive | 2 | 305 (210–400) |"),
            "{}",
            r.table()
        );
    }
}
