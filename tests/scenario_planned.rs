//! The product's promise, measured: `migroute lab run … --scenario planned-migration
//! --runs 3` on a private copy of the `wan-migration` lab. For every migroute move the
//! probe lost nothing outside the VM's own pause and the TCP connection survived; the
//! naive baseline ran in the same bring-up and is reported (not asserted: its loss is
//! the point of comparison). After each migroute move the mover itself checks that no
//! `mr-*` link and no proto-245 route is left in pe-a or pe-b and that the ingress PE
//! forwards to the VM's new site — a leftover fails the run, and so this test. After
//! the run, nothing of the lab is left either.
//!
//! The IPv6 case does the same over IPv6 (the probe to 2001:db8:10::5, the /128 moved
//! along with the /32), keeps the lab up at the end and looks into pe-a and pe-b itself:
//! no IPv6 route in table 4245, no migroute rule, no `mr-*` link once the migroute mode
//! finished.
//!
//! The two scenarios run one after the other (a lock), never side by side: each one
//! alone keeps a 2-core machine busy, and loss outside the pause is what they measure.
//!
//! Needs root, iproute2, VXLAN and FRR: SKIPPED without them (a panic under CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use migroute_labs::preflight::{self, Preflight};
use serde_json::Value;

const FRR: &[&str] = &[
    "/usr/lib/frr/zebra",
    "/usr/lib/frr/bgpd",
    "/usr/lib/frr/ospfd",
];

/// Root, iproute2, FRR and VXLAN: or SKIPPED (a panic under CI).
fn can_run(test: &str) -> bool {
    Preflight::new(test)
        .root()
        .tools(&["ip", "vtysh"])
        .files(FRR)
        .check(preflight::vxlan)
        .ready()
}

/// One scenario at a time in this process (see the module comment).
static SCENARIO: Mutex<()> = Mutex::new(());

/// A private copy of the `wan-migration` lab named `name`; brought down (if up) on drop,
/// so a failed assertion leaves no namespace or daemon behind.
struct LabCopy {
    name: String,
    file: PathBuf,
    dir: tempfile::TempDir,
}

impl LabCopy {
    fn new(name: String) -> Self {
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
        LabCopy { name, file, dir }
    }

    /// `migroute lab run FILE --scenario planned-migration --report … --svg … ARGS`.
    fn run(&self, args: &[&str]) -> (Output, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_migroute"))
            .args(["lab", "run"])
            .arg(&self.file)
            .args(["--scenario", "planned-migration", "--report"])
            .arg(self.report_path())
            .arg("--svg")
            .arg(self.svg_path())
            .args(args)
            .output()
            .unwrap();
        let context = format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, context)
    }

    fn report_path(&self) -> PathBuf {
        self.dir.path().join("report.json")
    }

    fn svg_path(&self) -> PathBuf {
        self.dir.path().join("timeline.svg")
    }

    fn report(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.report_path()).unwrap()).unwrap()
    }

    /// The lab's namespaces that exist now.
    fn namespaces(&self) -> Vec<String> {
        let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&netns.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|l| l.starts_with(&format!("{}-", self.name)))
            .map(str::to_string)
            .collect()
    }

    /// A shell line in a node's namespace.
    fn sh(&self, node: &str, line: &str) -> String {
        let ns = format!("{}-{node}", self.name);
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "sh", "-c", line])
            .output()
            .unwrap();
        assert!(out.status.success(), "{ns}: {line}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn down(&self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_migroute"))
            .args(["lab", "down"])
            .arg(&self.file)
            .output();
    }
}

impl Drop for LabCopy {
    fn drop(&mut self) {
        if !self.namespaces().is_empty() {
            self.down();
        }
    }
}

/// What every migroute run must show, and the naive runs' measurements.
fn check_runs(report: &Value, runs_per_mode: usize, stdout: &str, context: &str) {
    let runs = report["runs"].as_array().unwrap();
    let of = |mode: &str| -> Vec<&Value> { runs.iter().filter(|r| r["mode"] == mode).collect() };
    let (migroute, naive) = (of("migroute"), of("naive"));
    assert_eq!(migroute.len(), runs_per_mode, "{report}");
    assert_eq!(naive.len(), runs_per_mode, "{report}");
    // migroute first, alternating directions from site A.
    assert_eq!(runs[0]["mode"], "migroute");
    let dirs: Vec<&str> = migroute
        .iter()
        .map(|r| r["direction"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = ["A->B", "B->A"]
        .iter()
        .cycle()
        .take(runs_per_mode)
        .copied()
        .collect();
    assert_eq!(dirs, expected);
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
    assert_eq!(report["summary"]["migroute"]["tcp_survived"], runs_per_mode);
    assert_eq!(
        report["summary"]["migroute"]["lost_outside_pause"]["max"],
        0.0
    );
    assert!(report["summary"]["naive"]["runs"] == runs_per_mode);
    assert!(
        stdout.contains(&format!("| migroute | {runs_per_mode} | 0 (0–0) |")),
        "{context}"
    );
}

#[test]
fn planned_migration_loses_nothing_outside_the_pause_and_naive_is_measured_beside_it() {
    let test = "planned_migration_loses_nothing_outside_the_pause_and_naive_is_measured_beside_it";
    if !can_run(test) {
        return;
    }
    let _one = SCENARIO.lock().unwrap_or_else(|e| e.into_inner());
    let lab = LabCopy::new(format!("mrs{}", std::process::id() % 100_000));
    let (out, context) = lab.run(&["--runs", "3"]);
    // The lab (namespaces and daemons) is gone whatever happened.
    let left = lab.namespaces();
    assert!(out.status.success(), "{context}");
    assert!(left.is_empty(), "namespaces left: {left:?}\n{context}");
    let report = lab.report();
    assert_eq!(report["family"], "ipv4", "{report}");
    check_runs(&report, 3, &String::from_utf8_lossy(&out.stdout), &context);
    assert!(std::fs::read_to_string(lab.svg_path())
        .unwrap()
        .contains("<svg"));
}

#[test]
fn planned_migration_over_ipv6_loses_nothing_outside_the_pause_and_leaves_no_v6_state() {
    let test = "planned_migration_over_ipv6_loses_nothing_outside_the_pause_and_leaves_no_v6_state";
    if !can_run(test) {
        return;
    }
    let _one = SCENARIO.lock().unwrap_or_else(|e| e.into_inner());
    let lab = LabCopy::new(format!("mr6s{}", std::process::id() % 100_000));
    // Kept up so the PEs can be looked into; the guard brings it down.
    let (out, context) = lab.run(&["--runs", "3", "--ipv6", "--keep-up"]);
    assert!(out.status.success(), "{context}");
    let report = lab.report();
    assert_eq!(report["family"], "ipv6", "{report}");
    check_runs(&report, 3, &String::from_utf8_lossy(&out.stdout), &context);
    // Nothing of migroute's in either PE after its mode finished (the naive moves that
    // followed touch FRR only): no IPv6 (or IPv4) route in its table or with its
    // protocol, no rule, no tunnel link.
    for pe in ["pe-a", "pe-b"] {
        for family in ["-6", "-4"] {
            let routes = lab.sh(
                pe,
                &format!("ip {family} route show table all | grep -E '(table (4245|migroute)|proto (245|migroute))( |$)' || true"),
            );
            assert!(routes.trim().is_empty(), "{pe} {family}: {routes}");
            let rules = lab.sh(pe, &format!("ip {family} rule show priority 4245"));
            assert!(rules.trim().is_empty(), "{pe} {family}: {rules}");
        }
        let links = lab.sh(pe, "ip -o link show | grep -o 'mr-[^:@ ]*' || true");
        assert!(links.trim().is_empty(), "{pe}: {links}");
    }
    lab.down();
    assert!(lab.namespaces().is_empty(), "{:?}", lab.namespaces());
}
