//! The planned-migration scenario's naive baseline on a real lab (root, FRR). Without
//! them the test prints `SKIPPED: <why>` and returns, except under `CI`, where a
//! missing prerequisite is a failure. Its own lab name, so it runs beside other labs.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use migroute_labs::preflight::Preflight;
use migroute_labs::scenario::{
    svg, Direction, Mode, Report, Scenario, ScenarioKind, ScenarioOptions, Site,
};
use migroute_labs::{Lab, Topology};

fn can_run() -> bool {
    Preflight::new("scenario test")
        .root()
        .tools(&[
            "/usr/lib/frr/zebra",
            "/usr/lib/frr/bgpd",
            "/usr/lib/frr/ospfd",
            "vtysh",
            "ip",
        ])
        .ready()
}

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

#[test]
fn naive_baseline_loses_outside_the_pause_and_reports_it() {
    if !can_run() {
        return;
    }
    let mut t =
        Topology::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("wan-migration.clab.yml"))
            .unwrap();
    t.name = "wsc-naive".into();
    let lab = Lab::new(t);
    let _ = lab.down(); // a previous, interrupted run
    let scenario = Scenario::new(
        lab.clone(),
        Site::wan_migration(),
        ScenarioOptions::new(ScenarioKind::Naive, 2),
    );
    let mut movers = scenario.movers().unwrap();
    let mut seen = Vec::new();
    let report = scenario
        .run(&mut movers, &AtomicBool::new(false), &mut |r| {
            seen.push(r.index)
        })
        .unwrap();

    // The lab is gone.
    assert!(
        !lab.is_up(),
        "state dir left: {}",
        lab.state_dir().display()
    );
    assert_eq!(namespaces_with_prefix("wsc-naive-"), Vec::<String>::new());

    assert_eq!(seen, [0, 1]);
    assert_eq!(report.runs.len(), 2);
    let (ab, ba) = (&report.runs[0], &report.runs[1]);
    assert_eq!(
        (ab.mode, ab.direction, ba.mode, ba.direction),
        (Mode::Naive, Direction::AToB, Mode::Naive, Direction::BToA)
    );
    for r in [ab, ba] {
        // The pause asked for (100 ms) plus the `ip` calls around it.
        assert!((100.0..1000.0).contains(&r.pause_ms), "{r:?}");
        assert!(r.lost_in_pause > 50, "the port was down: {r:?}");
        assert!(r.sent >= 3900, "{r:?}");
        assert_eq!(r.lost, r.lost_in_pause + r.lost_outside_pause);
        assert!(
            r.probe_covers_move,
            "probe ended before the FIB changed: {r:?}"
        );
        let fib = r.announce_to_ingress_fib_ms.expect("naive changes a route");
        assert!(fib > 0.0 && fib < 15_000.0, "{fib}");
        let names: Vec<&str> = r.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names[0], "pause");
        assert!(names.contains(&"convergence"), "{names:?}");
        // TCP outcome recorded: survived, or an error saying why not.
        assert!(r.tcp_survived || r.tcp_error.is_some(), "{r:?}");
        assert!(r.longest_gap_ms >= r.pause_ms - 10.0, "{r:?}");
    }
    // The point of the baseline: traffic keeps going to pe-a after the VM left, until
    // pe-b's announce reaches pe-in's FIB.
    assert!(ab.lost_outside_pause > 0, "{ab:?}");
    assert!(ab.phases.iter().any(|p| p.name == "announce"));
    assert!(ba.phases.iter().any(|p| p.name == "withdraw"));

    // report.json round-trips with the field names; summary per mode.
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("report.json");
    report.write(&json_path).unwrap();
    let text = std::fs::read_to_string(&json_path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["runs"][0]["mode"], "naive");
    assert_eq!(v["runs"][0]["direction"], "A->B");
    assert!(v["runs"][0]["tcp_survived"].is_boolean());
    let s = &v["summary"]["naive"];
    assert_eq!(s["runs"], 2);
    for f in [
        "pause_ms",
        "lost_in_pause",
        "lost_outside_pause",
        "longest_gap_ms",
        "announce_to_ingress_fib_ms",
    ] {
        let st = &s[f];
        let (min, med, max) = (
            st["min"].as_f64().unwrap(),
            st["median"].as_f64().unwrap(),
            st["max"].as_f64().unwrap(),
        );
        assert!(min <= med && med <= max, "{f}: {st}");
    }
    assert!(v["summary"].get("migroute").is_none());
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back.runs.len(), 2);
    assert_eq!(back.runs[0].lost_send_ms.len() as u64, ab.lost);
    assert_eq!(back.summary.keys().collect::<Vec<_>>(), [&Mode::Naive]);

    // The SVG: one band per phase of the drawn (A→B) run, balanced groups.
    let svg_path = dir.path().join("timeline.svg");
    svg::write(&report, &svg_path).unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    assert!(svg.trim_end().ends_with("</svg>"));
    for p in &ab.phases {
        assert_eq!(
            svg.matches(&format!("class=\"phase phase-{}\"", p.name))
                .count(),
            1,
            "band of phase {}",
            p.name
        );
    }
    assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
    assert!(svg.matches("<line").count() >= ab.lost as usize);
}
