//! The product's promise, measured: `migroute lab run … --scenario planned-migration
//! --runs 3` on a private copy of the `wan-migration` lab. For every migroute move the
//! probe lost nothing outside the VM's own pause and the TCP connection survived; the
//! naive baseline ran in the same bring-up and is reported (not asserted: its loss is
//! the point of comparison). After each migroute move the mover itself checks that no
//! `mr-*` link and no proto-245 route is left in pe-a or pe-b and that the ingress PE
//! forwards to the VM's new site — a leftover fails the run, and so this test. After
//! the run, nothing of the lab is left either.
//!
//! Needs root, iproute2, VXLAN and FRR: SKIPPED without them (a panic under CI).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const FRR: &[&str] = &[
    "/usr/lib/frr/zebra",
    "/usr/lib/frr/bgpd",
    "/usr/lib/frr/ospfd",
];

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false)
}

/// Root, iproute2, VXLAN and FRR: or SKIPPED (a panic under CI).
fn can_run(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    let why = if !root {
        Some("needs root".to_string())
    } else if !on_path("ip") || !on_path("vtysh") {
        Some("needs iproute2 and vtysh".to_string())
    } else if let Some(missing) = FRR.iter().find(|p| !Path::new(p).exists()) {
        Some(format!("needs FRR ({missing})"))
    } else {
        let probe = format!("mrsprobe{}", std::process::id() % 10_000);
        let made = Command::new("ip")
            .args([
                "link", "add", &probe, "type", "vxlan", "id", "1", "dstport", "0",
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        let _ = Command::new("ip").args(["link", "del", &probe]).output();
        (!made).then(|| "kernel lacks vxlan".to_string())
    };
    match why {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("{test}: {why} (CI is set)"),
        Some(why) => {
            eprintln!("SKIPPED: {test}: {why}");
            false
        }
    }
}

#[test]
fn planned_migration_loses_nothing_outside_the_pause_and_naive_is_measured_beside_it() {
    let test = "planned_migration_loses_nothing_outside_the_pause_and_naive_is_measured_beside_it";
    if !can_run(test) {
        return;
    }
    let name = format!("mrs{}", std::process::id() % 100_000);
    let dir = tempfile::tempdir().unwrap();
    let labs = Path::new(env!("CARGO_MANIFEST_DIR")).join("labs");
    let text = std::fs::read_to_string(labs.join("wan-migration.clab.yml"))
        .unwrap()
        .replace("\nname: wan-migration\n", &format!("\nname: {name}\n"))
        .replace(
            "- wan-migration/",
            &format!("- {}/", labs.join("wan-migration").display()),
        );
    let file = dir.path().join(format!("{name}.clab.yml"));
    std::fs::write(&file, text).unwrap();
    let report_path = dir.path().join("report.json");
    let svg_path = dir.path().join("timeline.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_migroute"))
        .args(["lab", "run"])
        .arg(&file)
        .args(["--scenario", "planned-migration", "--runs", "3", "--report"])
        .arg(&report_path)
        .arg("--svg")
        .arg(&svg_path)
        .output()
        .unwrap();
    let context = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The lab (namespaces and daemons) is gone whatever happened.
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{name}-")))
        .map(str::to_string)
        .collect();
    if !left.is_empty() {
        let _ = Command::new(env!("CARGO_BIN_EXE_migroute"))
            .args(["lab", "down"])
            .arg(&file)
            .output();
    }
    assert!(out.status.success(), "{context}");
    assert!(left.is_empty(), "namespaces left: {left:?}\n{context}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    let of = |mode: &str| -> Vec<&Value> { runs.iter().filter(|r| r["mode"] == mode).collect() };
    let (migroute, naive) = (of("migroute"), of("naive"));
    assert_eq!(migroute.len(), 3, "{report}");
    assert_eq!(naive.len(), 3, "{report}");
    // migroute first, alternating directions from site A.
    assert_eq!(runs[0]["mode"], "migroute");
    let dirs: Vec<&str> = migroute
        .iter()
        .map(|r| r["direction"].as_str().unwrap())
        .collect();
    assert_eq!(dirs, ["A->B", "B->A", "A->B"]);
    for r in &migroute {
        let brief = format!(
            "run {}: {} lost outside the pause at {:?} ms (pause {} ms), phases {}",
            r["index"], r["lost_outside_pause"], r["lost_send_ms"], r["pause_ms"], r["phases"]
        );
        assert_eq!(r["lost_outside_pause"], 0, "{brief}");
        assert_eq!(r["tcp_survived"], true, "{brief}");
        assert_eq!(r["probe_covers_move"], true, "{brief}");
        // The pause is the VM's own and at least what the plan asked for.
        assert!(r["pause_ms"].as_f64().unwrap() >= 100.0, "{brief}");
        // The routing change reached the ingress PE's FIB and was measured.
        assert!(
            r["announce_to_ingress_fib_ms"].as_f64().unwrap() > 0.0,
            "{brief}"
        );
        let phases: Vec<&str> = r["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for p in [
            "pause",
            "switching-over",
            "announcing",
            "converging",
            "tearing-down",
        ] {
            assert!(phases.contains(&p), "{p} missing: {brief}");
        }
    }
    // Naive moves were measured: each has its pause and its FIB time.
    for r in &naive {
        assert!(r["pause_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["announce_to_ingress_fib_ms"].is_number(), "{r}");
    }
    assert_eq!(report["summary"]["migroute"]["tcp_survived"], 3);
    assert_eq!(
        report["summary"]["migroute"]["lost_outside_pause"]["max"],
        0.0
    );
    assert!(report["summary"]["naive"]["runs"] == 3);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| migroute | 3 | 0 (0–0) |"), "{context}");
    assert!(std::fs::read_to_string(&svg_path).unwrap().contains("<svg"));
}
