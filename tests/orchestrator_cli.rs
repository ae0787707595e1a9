//! `migroute migrate` and `migroute orchestrator` at the command line, without a lab:
//! plan checks (shipped plans pass, errors name the field and fail the process) and
//! the service's OpenAPI document.

use std::process::Command;

fn migroute(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_migroute"))
        .args(args)
        .output()
        .unwrap()
}

fn plan(name: &str) -> String {
    format!("{}/labs/plans/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_plans_check_ok() {
    for name in ["wan-migration-a-to-b.toml", "wan-migration-b-to-a.toml"] {
        let out = migroute(&["migrate", "--check", "--plan", &plan(name)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(stdout.contains(": ok"), "{stdout}");
    }
}

#[test]
fn a_bad_plan_fails_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(plan("wan-migration-a-to-b.toml"))
        .unwrap()
        .replace("resume_ms = 10000", "resume_ms = 0");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    let out = migroute(&["migrate", "--check", "--plan", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timeouts.resume_ms"), "{stderr}");

    let out = migroute(&["migrate", "--plan", "/nonexistent/plan.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/plan.toml"));
}

#[test]
fn a_lab_that_is_not_up_is_refused_before_anything_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped lab under a name nobody has up.
    let labs = format!("{}/labs", env!("CARGO_MANIFEST_DIR"));
    let topo = std::fs::read_to_string(format!("{labs}/wan-migration.clab.yml"))
        .unwrap()
        .replace(
            "\nname: wan-migration\n",
            &format!("\nname: mrcli{}\n", std::process::id()),
        )
        .replace("- wan-migration/", &format!("- {labs}/wan-migration/"));
    let topo_path = dir.path().join("lab.clab.yml");
    std::fs::write(&topo_path, topo).unwrap();
    let text = std::fs::read_to_string(plan("wan-migration-a-to-b.toml"))
        .unwrap()
        .replace("../wan-migration.clab.yml", topo_path.to_str().unwrap());
    let plan_path = dir.path().join("plan.toml");
    std::fs::write(&plan_path, text).unwrap();
    let journal = dir.path().join("j.redb");
    let out = migroute(&[
        "migrate",
        "--plan",
        plan_path.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hypervisor.topology"), "{stderr}");
    assert!(
        !journal.exists(),
        "journal created before the plan's drivers were checked"
    );
}

#[test]
fn orchestrator_prints_its_openapi_document() {
    let out = migroute(&["orchestrator", "--openapi"]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["paths"]["/v1/migrations"]["post"].is_object(), "{doc}");
    assert!(doc["paths"]["/v1/events"]["get"].is_object(), "{doc}");
    assert!(
        doc["components"]["securitySchemes"]["bearer"].is_object(),
        "{doc}"
    );
}
