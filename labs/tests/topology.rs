//! Parser and checker of containerlab files: the shipped labs parse into what the
//! runner needs, and each kind of bad input is refused with an error naming the node
//! and the field.

use std::path::{Path, PathBuf};

use migroute_labs::{Daemon, Topology, TopologyError};

fn labs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Writes `text` as a topology file (plus an frr.conf it may bind) in a fresh folder.
fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("frr.conf"), "hostname x\n").unwrap();
    let path = dir.path().join("t.clab.yml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn err(text: &str) -> TopologyError {
    let (_dir, path) = write(text);
    Topology::load(&path).expect_err("topology should be refused")
}

#[test]
fn wan_migration_parses_with_frr_pes_and_plain_hosts() {
    let t = Topology::load(labs_dir().join("wan-migration.clab.yml")).unwrap();
    assert_eq!(t.name, "wan-migration");
    let names: Vec<&str> = t.nodes.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["client", "dc-a", "dc-b", "pe-a", "pe-b", "pe-in", "vm"]
    );
    for pe in ["pe-in", "pe-a", "pe-b"] {
        match &t.nodes[pe].daemon {
            Daemon::Frr { config, daemons } => {
                assert!(config.ends_with(format!("wan-migration/{pe}/frr.conf")));
                assert!(daemons.is_some());
            }
            other => panic!("{pe}: expected FRR, got {other:?}"),
        }
    }
    assert_eq!(t.nodes["vm"].daemon, Daemon::None);
    assert_eq!(t.links.len(), 7);
    assert_eq!(t.netns("pe-a"), "wan-migration-pe-a");
    let (_, peer) = t.peer_of("vm", "eth1").unwrap();
    assert_eq!(peer.to_string(), "dc-a:eth2");
}

#[test]
fn interop_parses_with_bird_and_gobgp_nodes() {
    let t = Topology::load(labs_dir().join("interop.clab.yml")).unwrap();
    assert!(matches!(t.nodes["bird"].daemon, Daemon::Bird { .. }));
    assert!(matches!(t.nodes["gobgp"].daemon, Daemon::Gobgp { .. }));
    assert!(matches!(t.nodes["frr"].daemon, Daemon::Frr { .. }));
}

#[test]
fn unknown_kind_names_node_and_field() {
    let e = err("name: t\ntopology:\n  nodes:\n    r1:\n      kind: nokia_srlinux\n");
    assert!(
        matches!(&e, TopologyError::UnknownKind { node, kind } if node == "r1" && kind == "nokia_srlinux")
    );
    let msg = e.to_string();
    assert!(msg.contains("`r1`") && msg.contains("`kind`"), "{msg}");
}

#[test]
fn link_to_missing_node_names_link_and_node() {
    let e = err("name: t\ntopology:\n  nodes:\n    a: {}\n  links:\n    - endpoints: [\"a:eth1\", \"ghost:eth1\"]\n");
    assert!(matches!(&e, TopologyError::LinkToMissingNode { link: 0, node } if node == "ghost"));
    assert!(e.to_string().contains("endpoints"), "{e}");
}

#[test]
fn duplicate_interface_names_node_interface_and_both_links() {
    let e = err("name: t\ntopology:\n  nodes:\n    a: {}\n    b: {}\n    c: {}\n  links:\n    - endpoints: [\"a:eth1\", \"b:eth1\"]\n    - endpoints: [\"c:eth1\", \"a:eth1\"]\n");
    match &e {
        TopologyError::DuplicateInterface {
            node,
            interface,
            first,
            second,
        } => {
            assert_eq!(
                (node.as_str(), interface.as_str(), *first, *second),
                ("a", "eth1", 0, 1)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unreadable_file_names_the_path() {
    let e = Topology::load("/nonexistent/lab.clab.yml").unwrap_err();
    assert!(
        matches!(&e, TopologyError::Read { path, .. } if path == Path::new("/nonexistent/lab.clab.yml"))
    );
    assert!(e.to_string().contains("/nonexistent/lab.clab.yml"));
}

#[test]
fn malformed_yaml_and_missing_name_are_refused() {
    assert!(matches!(
        err("name: [unclosed\n"),
        TopologyError::Yaml { .. }
    ));
    assert!(matches!(
        err("topology:\n  nodes: {}\n"),
        TopologyError::BadLabName { .. }
    ));
    assert!(matches!(
        err("name: a/b\n"),
        TopologyError::BadLabName { .. }
    ));
}

#[test]
fn bad_endpoints_and_interface_names_are_refused() {
    let e = err("name: t\ntopology:\n  nodes:\n    a: {}\n  links:\n    - endpoints: [\"a-eth1\", \"a:eth2\"]\n");
    assert!(matches!(&e, TopologyError::BadEndpoint { link: 0, endpoint } if endpoint == "a-eth1"));
    let e =
        err("name: t\ntopology:\n  nodes:\n    a: {}\n  links:\n    - endpoints: [\"a:eth1\"]\n");
    assert!(matches!(
        e,
        TopologyError::EndpointCount { link: 0, count: 1 }
    ));
    let e = err("name: t\ntopology:\n  nodes:\n    a: {}\n    b: {}\n  links:\n    - endpoints: [\"a:averyveryverylongname\", \"b:eth1\"]\n");
    assert!(matches!(&e, TopologyError::BadInterfaceName { node, .. } if node == "a"));
}

#[test]
fn frr_node_needs_a_readable_frr_conf_bind() {
    let e = err("name: t\ntopology:\n  nodes:\n    r1:\n      kind: linux\n      image: quay.io/frrouting/frr:8.4.4\n");
    assert!(matches!(&e, TopologyError::MissingBind { node, .. } if node == "r1"));
    assert!(e.to_string().contains("`binds`"), "{e}");
    let e = err("name: t\ntopology:\n  nodes:\n    r1:\n      image: quay.io/frrouting/frr\n      binds: [\"missing.conf:/etc/frr/frr.conf\"]\n");
    assert!(matches!(&e, TopologyError::BindUnreadable { node, .. } if node == "r1"));
    let (_d, path) = write("name: t\ntopology:\n  nodes:\n    r1:\n      image: quay.io/frrouting/frr\n      binds: [\"frr.conf:/etc/frr/frr.conf\"]\n");
    let t = Topology::load(path).unwrap();
    assert!(matches!(
        t.nodes["r1"].daemon,
        Daemon::Frr { daemons: None, .. }
    ));
}

#[test]
fn daemon_label_overrides_image_and_unknown_daemon_is_refused() {
    let (_d, path) = write("name: t\ntopology:\n  nodes:\n    h:\n      image: quay.io/frrouting/frr\n      labels: {migroute.daemon: none}\n");
    assert_eq!(
        Topology::load(path).unwrap().nodes["h"].daemon,
        Daemon::None
    );
    let e = err("name: t\ntopology:\n  nodes:\n    h:\n      labels: {migroute.daemon: quagga}\n");
    assert!(
        matches!(&e, TopologyError::UnknownDaemon { node, daemon } if node == "h" && daemon == "quagga")
    );
}

#[test]
fn defaults_kind_applies_to_nodes_without_kind() {
    let e = err("name: t\ntopology:\n  defaults:\n    kind: ceos\n  nodes:\n    a: {}\n");
    assert!(matches!(&e, TopologyError::UnknownKind { node, .. } if node == "a"));
}
