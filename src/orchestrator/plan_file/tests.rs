//! Plan files: the shipped examples parse and validate, a plan survives TOML both ways,
//! and errors name the field.

use super::*;
use migroute_orchestration::migration::{HypervisorPlan, QuiesceStyle};

fn shipped(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("labs/plans")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[test]
fn shipped_plans_parse_validate_and_mirror_each_other() {
    let (pa, a) = shipped("wan-migration-a-to-b.toml");
    let (pb, b) = shipped("wan-migration-b-to-a.toml");
    let a = parse_plan(&a, &pa).unwrap();
    let b = parse_plan(&b, &pb).unwrap();
    assert_eq!(a.source, b.destination);
    assert_eq!(a.destination, b.source);
    assert_eq!(a.vm, b.vm);
    assert_ne!(a.id, b.id);
    assert_eq!(a.hypervisor.quiesce_style(), QuiesceStyle::Hook);
    let HypervisorPlan::Lab {
        topology,
        to,
        pause_ms,
        ..
    } = &a.hypervisor
    else {
        panic!("lab hypervisor expected: {:?}", a.hypervisor);
    };
    assert_eq!((to.as_str(), *pause_ms), ("dc-b", 100));
    // The topology named is the lab file beside the plans.
    assert!(pa.parent().unwrap().join(topology).exists(), "{topology}");
}

#[test]
fn plan_round_trips_through_toml() {
    let (pa, a) = shipped("wan-migration-a-to-b.toml");
    let plan = parse_plan(&a, &pa).unwrap();
    let text = toml::to_string(&plan).unwrap();
    let again = parse_plan(&text, Path::new("again.toml")).unwrap();
    assert_eq!(plan, again, "{text}");
    // Defaults left out of a file come back the same way too.
    let minimal = r#"
id = "m1"
tunnel = { kind = "gre", key = 7 }
[vm]
name = "vm"
prefixes = ["10.10.0.5/32"]
[source]
agent_url = "http://a:8080"
tunnel_endpoint = "10.0.0.1"
[destination]
agent_url = "http://b:8080"
tunnel_endpoint = "10.0.0.2"
[hypervisor]
kind = "libvirt"
source_uri = "qemu+ssh://a/system"
destination_uri = "qemu+ssh://b/system"
"#;
    let plan = parse_plan(minimal, Path::new("m.toml")).unwrap();
    let again = parse_plan(&toml::to_string(&plan).unwrap(), Path::new("m2.toml")).unwrap();
    assert_eq!(plan, again);
    assert_eq!(plan.hypervisor.quiesce_style(), QuiesceStyle::Observe);
}

#[test]
fn errors_name_the_field() {
    let (pa, a) = shipped("wan-migration-a-to-b.toml");
    let cases = [
        // Shape errors come from TOML, naming the key.
        (
            a.replace("agent_url = \"http://127.0.0.1:8081\"\n", ""),
            "agent_url",
        ),
        (
            a.replace("pause_ms = 100", "pause_ms = 100\nbogus = 1"),
            "bogus",
        ),
        // Inside a tagged table TOML names the table.
        (a.replace("vni = 5005", "vni = \"x\""), "[tunnel]"),
        // Value errors come from the plan's validation, naming the dotted field.
        (
            a.replace("http://127.0.0.1:8082", "ftp://b"),
            "destination.agent_url",
        ),
        (
            a.replace("switchover_ms = 2000", "switchover_ms = 0"),
            "timeouts.switchover_ms",
        ),
        (
            a.replace("\"10.10.0.5/32\"", "\"10.10.0.0/24\""),
            "vm.prefixes",
        ),
        (a.replace("node = \"vm\"", "node = \"\""), "hypervisor.node"),
    ];
    for (text, field) in cases {
        let e = parse_plan(&text, &pa).unwrap_err().to_string();
        assert!(e.contains(field), "{field}: {e}");
        assert!(e.contains("wan-migration-a-to-b.toml"), "{e}");
    }
}
