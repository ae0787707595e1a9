//! The timeline picture: one run of each mode (the first A→B run) on a shared time
//! axis in ms from the start of the VM's pause — each phase as a band on its own row,
//! each lost probe packet as a red tick at its send time — so the loss outside the
//! pause is visible at a glance. Hand-written SVG: no dependency for one picture.

use std::fmt::Write as _;
use std::path::Path;

use super::report::{Report, RunRecord};
use super::{Direction, ScenarioError};

const WIDTH: f64 = 1080.0;
const LEFT: f64 = 250.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 14.0;
const LANE_GAP: f64 = 34.0;

/// Colour of a phase band (unknown phases cycle through a palette).
fn colour(name: &str, i: usize) -> &'static str {
    match name {
        "pause" => "#9e9e9e",
        "move" => "#607d8b",
        "announce" => "#1e88e5",
        "withdraw" => "#8e24aa",
        "convergence" => "#fb8c00",
        // The orchestrator's phases (migroute mode): the same hue family as the naive
        // phase they correspond to, so the two lanes read side by side.
        "preparing" => "#c0ca33",
        "migrating" => "#00acc1",
        "switching-over" => "#d81b60",
        "resuming" => "#43a047",
        "announcing" => "#1e88e5",
        "converging" => "#fb8c00",
        "tearing-down" => "#6d4c41",
        _ => ["#5e35b1", "#00897b", "#f4511e", "#3949ab"][i % 4],
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The runs drawn: per mode, its first A→B run (else its first run).
pub fn chosen_runs(report: &Report) -> Vec<&RunRecord> {
    report
        .summary
        .keys()
        .filter_map(|m| {
            let of_mode = || report.runs.iter().filter(move |r| r.mode == *m);
            of_mode()
                .find(|r| r.direction == Direction::AToB)
                .or_else(|| of_mode().next())
        })
        .collect()
}

/// A step of 1, 2 or 5 × 10^k giving about 10 ticks over `span`.
fn tick_step(span: f64) -> f64 {
    let raw = (span / 10.0).max(1e-3);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|k| k * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Renders the SVG text.
pub fn render(report: &Report) -> String {
    let runs = chosen_runs(report);
    // Time range: every phase and every loss, plus a margin; at least -100..+500 ms.
    let (mut lo, mut hi) = (-100.0f64, 500.0f64);
    for r in &runs {
        for p in &r.phases {
            lo = lo.min(p.start_ms);
            hi = hi.max(p.start_ms + p.duration_ms);
        }
        for t in &r.lost_send_ms {
            lo = lo.min(*t);
            hi = hi.max(*t);
        }
    }
    let step = tick_step(hi - lo);
    lo = (lo / step).floor() * step - step / 2.0;
    hi = (hi / step).ceil() * step + step / 2.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + (t - lo) / (hi - lo) * plot_w;
    let names: Vec<String> = {
        let mut n: Vec<String> = Vec::new();
        for r in &runs {
            for p in &r.phases {
                if !n.contains(&p.name) {
                    n.push(p.name.clone());
                }
            }
        }
        n
    };
    let lane_h = (names.len() as f64 + 1.0) * ROW;
    let top = 50.0;
    let axis_y = top + runs.len() as f64 * (lane_h + LANE_GAP);
    // Room for a legend of up to two rows.
    let height = axis_y + 98.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{} — {}, pause {} ms, {} pps ({})</text>"#,
        esc(&report.lab),
        esc(&report.scenario),
        report.pause_ms,
        report.rate_pps,
        esc(&report.family)
    );
    for (li, r) in runs.iter().enumerate() {
        let y0 = top + li as f64 * (lane_h + LANE_GAP);
        let _ = writeln!(
            s,
            r#"<g class="run mode-{m}"><text x="8" y="{:.1}" font-weight="bold">{m} {d}</text><text x="8" y="{:.1}">lost {} ({} outside pause)</text><text x="8" y="{:.1}">gap {:.0} ms, TCP {}</text>"#,
            y0 + ROW,
            y0 + 2.0 * ROW + 2.0,
            r.lost,
            r.lost_outside_pause,
            y0 + 3.0 * ROW + 4.0,
            r.longest_gap_ms,
            if r.tcp_survived { "survived" } else { "broke" },
            m = r.mode,
            d = esc(&r.direction.to_string()),
        );
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y0:.1}" width="{plot_w:.1}" height="{lane_h:.1}" fill="#fafafa" stroke="#ddd"/>"##
        );
        for p in &r.phases {
            let row = names.iter().position(|n| *n == p.name).unwrap_or(0);
            let (x0, x1) = (x(p.start_ms), x(p.start_ms + p.duration_ms));
            let _ = writeln!(
                s,
                r#"<rect class="phase phase-{n}" x="{x0:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{c}"><title>{n}: {:.1} ms at {:.1} ms</title></rect>"#,
                y0 + row as f64 * ROW + 2.0,
                (x1 - x0).max(1.0),
                ROW - 4.0,
                p.duration_ms,
                p.start_ms,
                n = esc(&p.name),
                c = colour(&p.name, row),
            );
        }
        let ly = y0 + names.len() as f64 * ROW + 1.0;
        let _ = write!(s, r##"<g class="lost" stroke="#e53935" stroke-width="1">"##);
        for t in &r.lost_send_ms {
            let xt = x(*t);
            let _ = write!(
                s,
                r#"<line x1="{xt:.2}" y1="{ly:.1}" x2="{xt:.2}" y2="{:.1}"/>"#,
                ly + ROW - 2.0
            );
        }
        let _ = writeln!(s, "</g></g>");
    }
    // Axis with ticks and the pause start.
    let _ = writeln!(
        s,
        r##"<g class="axis"><line x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#333"/>"##,
        LEFT + plot_w
    );
    let mut t = (lo / step).ceil() * step;
    while t <= hi {
        let xt = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{xt:.1}" y1="{axis_y:.1}" x2="{xt:.1}" y2="{:.1}" stroke="#333"/><line x1="{xt:.1}" y1="{top}" x2="{xt:.1}" y2="{axis_y:.1}" stroke="#eee"/><text x="{xt:.1}" y="{:.1}" text-anchor="middle">{t:.0}</text>"##,
            axis_y + 5.0,
            axis_y + 18.0
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">ms from the start of the VM pause (probe send time)</text></g>"#,
        LEFT + plot_w / 2.0,
        axis_y + 34.0
    );
    // Legend.
    let mut ly = axis_y + 56.0;
    let mut lx = LEFT;
    // Wraps the legend onto a second row rather than drawing past the right edge.
    let place = |lx: &mut f64, ly: &mut f64, w: f64| {
        if *lx + w > WIDTH - RIGHT {
            *lx = LEFT;
            *ly += 18.0;
        }
    };
    let _ = write!(s, r#"<g class="legend">"#);
    for (i, n) in names.iter().enumerate() {
        place(&mut lx, &mut ly, 30.0 + 7.0 * n.len() as f64);
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="10" fill="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 9.0,
            colour(n, i),
            lx + 18.0,
            esc(n)
        );
        lx += 30.0 + 7.0 * n.len() as f64;
    }
    place(&mut lx, &mut ly, 130.0);
    let _ = writeln!(
        s,
        r##"<line x1="{lx:.1}" y1="{:.1}" x2="{lx:.1}" y2="{ly:.1}" stroke="#e53935" stroke-width="2"/><text x="{:.1}" y="{ly:.1}">lost probe packet</text></g>"##,
        ly - 10.0,
        lx + 6.0
    );
    s.push_str("</svg>\n");
    s
}

/// Renders and writes the SVG.
pub fn write(report: &Report, path: &Path) -> Result<(), ScenarioError> {
    std::fs::write(path, render(report)).map_err(|source| ScenarioError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::report::PhaseRecord;
    use crate::scenario::Mode;

    fn run(mode: Mode, direction: Direction, lost: Vec<f64>) -> RunRecord {
        RunRecord {
            index: 0,
            mode,
            direction,
            pause_ms: 100.0,
            lost_in_pause: 100,
            lost_outside_pause: lost.len() as u64,
            longest_gap_ms: 300.0,
            tcp_survived: true,
            announce_to_ingress_fib_ms: Some(200.0),
            phases: ["pause", "move", "announce", "convergence"]
                .iter()
                .enumerate()
                .map(|(i, n)| PhaseRecord {
                    name: n.to_string(),
                    start_ms: i as f64 * 100.0,
                    duration_ms: 100.0,
                })
                .collect(),
            sent: 4000,
            lost: lost.len() as u64,
            tcp_longest_stall_ms: 0.0,
            tcp_error: None,
            probe_start_ms: -800.0,
            probe_end_ms: 3200.0,
            lost_send_ms: lost,
            probe_covers_move: true,
            t0_unix_ns: 0,
            hypervisor: None,
        }
    }

    #[test]
    fn draws_one_band_per_phase_and_a_tick_per_lost_packet_of_the_a_to_b_run() {
        let mut r = Report {
            scenario: "naive".into(),
            lab: "w<m>".into(),
            family: "ipv4".into(),
            rate_pps: 1000,
            pause_ms: 100,
            runs_per_mode: 2,
            started_unix_ns: 0,
            runs: vec![
                run(Mode::Naive, Direction::BToA, vec![1.0]),
                run(Mode::Naive, Direction::AToB, vec![1.0, 2.0, 350.0]),
            ],
            summary: Default::default(),
            disk: None,
        };
        r.summarize();
        let svg = render(&r);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        for p in ["pause", "move", "announce", "convergence"] {
            assert_eq!(
                svg.matches(&format!("class=\"phase phase-{p}\"")).count(),
                1,
                "{p}"
            );
        }
        // The A→B run (3 lost) is drawn, not the B→A one.
        assert_eq!(
            svg.matches("<line x1").count()
                - svg.matches("stroke=\"#333\"").count()
                - svg.matches("stroke=\"#eee\"").count()
                - 1,
            3
        );
        assert!(svg.contains("w&lt;m&gt;"));
        assert!(svg.contains("naive A-&gt;B"));
    }

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(600.0), 100.0);
        assert_eq!(tick_step(1500.0), 200.0);
        assert_eq!(tick_step(4000.0), 500.0);
    }
}
