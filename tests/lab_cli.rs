//! `migroute lab` and `migroute probe` from the command line: up, status (JSON), exec,
//! a probe run between two nodes through `lab exec`, and down leaving nothing. Needs
//! root and FRR; prints `SKIPPED: <why>` without them, fails under `CI`.

use std::path::Path;
use std::process::{Command, Stdio};

use migroute_labs::preflight::Preflight;

const BIN: &str = env!("CARGO_BIN_EXE_migroute");

fn can_run() -> bool {
    Preflight::new("lab CLI test")
        .root()
        .files(&[
            "/usr/lib/frr/zebra",
            "/usr/lib/frr/bgpd",
            "/usr/bin/vtysh",
            "/usr/sbin/ip",
        ])
        .ready()
}

fn migroute(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn lab_up_status_exec_probe_down_from_the_command_line() {
    if !can_run() {
        return;
    }
    // The shipped topology under its own lab name, binds made absolute.
    let labs = Path::new(env!("CARGO_MANIFEST_DIR")).join("labs");
    let text = std::fs::read_to_string(labs.join("wan-migration.clab.yml"))
        .unwrap()
        .replace("name: wan-migration", "name: clit")
        .replace(
            "- wan-migration/",
            &format!("- {}/wan-migration/", labs.display()),
        );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clit.clab.yml");
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    let _ = migroute(&["lab", "down", file]);

    let up = migroute(&["lab", "up", "--timeout", "60", file]);
    assert!(
        up.status.success(),
        "up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let st = migroute(&["lab", "status", "--json", file]);
    assert!(st.status.success());
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let routers: Vec<&serde_json::Value> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["daemon"] == "frr")
        .collect();
    assert_eq!(routers.len(), 3);
    for r in routers {
        let sessions = r["bgp"].as_array().unwrap();
        assert!(!sessions.is_empty(), "{r}");
        assert!(sessions.iter().all(|s| s["state"] == "Established"), "{r}");
    }
    let text = migroute(&["lab", "status", file]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("Established"));

    let ex = migroute(&[
        "lab", "exec", file, "vm", "--", "ip", "-o", "addr", "show", "dev", "eth1",
    ]);
    assert!(String::from_utf8_lossy(&ex.stdout).contains("10.10.0.5/32"));
    let ex = migroute(&["lab", "exec", file, "vm", "--", "false"]);
    assert_eq!(
        ex.status.code(),
        Some(1),
        "exec passes the exit code through"
    );

    // Probe client → vm through the CLI (receiver first, then sender).
    let rx = Command::new(BIN)
        .args([
            "lab",
            "exec",
            file,
            "vm",
            "--",
            BIN,
            "probe",
            "recv",
            "--listen",
            "[::]:7400",
            "--idle-timeout",
            "5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let tx = migroute(&[
        "lab",
        "exec",
        file,
        "client",
        "--",
        BIN,
        "probe",
        "send",
        "--to",
        "10.10.0.5:7400",
        "--duration",
        "1",
    ]);
    assert!(
        tx.status.success(),
        "{}",
        String::from_utf8_lossy(&tx.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&tx.stdout).unwrap();
    assert_eq!(sent["sent"], 1000);
    let out = rx.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sent"], 1000);
    assert!(report["received"].as_u64().unwrap() > 0, "{report}");

    let down = migroute(&["lab", "down", file]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.starts_with("clit-")));
    let st = migroute(&["lab", "status", file]);
    assert_eq!(st.status.code(), Some(3), "status of a lab that is down");
}
