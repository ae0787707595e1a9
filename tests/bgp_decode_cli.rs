//! `migroute bgp decode` and `migroute bgp encode`, run as the binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_migroute"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn migroute");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn decode_hex(args: &[&str], hex: &str) -> (Vec<Value>, Option<i32>) {
    let mut all = vec!["bgp", "decode", "--hex"];
    all.extend_from_slice(args);
    let out = run(&all, hex.as_bytes());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let objs = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect();
    (objs, out.status.code())
}

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

/// OPEN, AS 65001, hold 90, id 192.0.2.1; capabilities: MP IPv6 unicast, route
/// refresh, enhanced route refresh, 4-octet AS 4200000001, graceful restart (R and N
/// bits, 120 s, IPv4 unicast with forwarding bit), add-path IPv4 unicast both,
/// extended message, and unknown capability 73 (FQDN).
const OPEN: &str = "ffffffffffffffffffffffffffffffff 0046 01 04 fde9 005a c0000201 29 02 27
    01 04 0002 00 01   02 00   46 00   41 04 fa56ea01
    40 06 c078 0001 01 80   45 04 0001 01 03   06 00   49 05 0470653161";

/// UPDATE: MP_REACH IPv6 unicast, next hop 2001:db8::1 + fe80::1, 2001:db8:1::/48;
/// ORIGIN IGP; AS_PATH sequence 65001 4200000001; LARGE_COMMUNITIES 65001:1:2.
const UPDATE_V6: &str = "ffffffffffffffffffffffffffffffff 0066 02 0000 004f
    800e2c 0002 01 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00
           30 20010db80001
    400101 00
    40020a 02 02 0000fde9 fa56ea01
    c0200c 0000fde9 00000001 00000002";

#[test]
fn keepalive() {
    let out = run(
        &["bgp", "decode", "--hex"],
        b"ffffffffffffffffffffffffffffffff001304",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        r#"{"type":"keepalive"}"#
    );
}

#[test]
fn open_with_graceful_restart_and_add_path() {
    let (objs, code) = decode_hex(&[], OPEN);
    assert_eq!(code, Some(0), "{objs:?}");
    let o = &objs[0];
    assert_eq!(o["type"], "open");
    assert_eq!(o["my_as"], 65001);
    assert_eq!(o["hold_time"], 90);
    assert_eq!(o["bgp_id"], "192.0.2.1");
    let caps = o["capabilities"].as_array().unwrap();
    assert_eq!(caps[0]["multiprotocol"]["afi"], "ipv6");
    assert_eq!(caps[1], "route_refresh");
    assert_eq!(caps[2], "enhanced_route_refresh");
    assert_eq!(caps[3]["four_octet_as"], 4200000001u32);
    let gr = &caps[4]["graceful_restart"];
    assert_eq!(gr["restart_state"], true);
    assert_eq!(gr["notification"], true);
    assert_eq!(gr["restart_time"], 120);
    assert_eq!(gr["families"][0]["afi"], "ipv4");
    assert_eq!(gr["families"][0]["forwarding"], true);
    assert_eq!(caps[5]["add_path"][0]["mode"], "both");
    assert_eq!(caps[6], "extended_message");
    assert_eq!(caps[7]["unknown"]["code"], 73);
    assert_eq!(caps[7]["unknown"]["value"], "0470653161");
}

#[test]
fn update_with_ipv6_mp_reach_and_large_communities() {
    let (objs, code) = decode_hex(&[], UPDATE_V6);
    assert_eq!(code, Some(0), "{objs:?}");
    let u = &objs[0];
    assert_eq!(u["type"], "update");
    assert_eq!(u["treatment"], "none");
    assert_eq!(u["errors"].as_array().unwrap().len(), 0);
    let attrs = u["attributes"].as_array().unwrap();
    let mp = &attrs[0]["mp_reach"];
    assert_eq!(mp["family"], "ipv6_unicast");
    assert_eq!(mp["next_hop"]["global"], "2001:db8::1");
    assert_eq!(mp["next_hop"]["link_local"], "fe80::1");
    assert_eq!(mp["nlri"][0]["prefix"], "2001:db8:1::/48");
    assert_eq!(attrs[1]["origin"], "igp");
    assert_eq!(
        attrs[2]["as_path"][0]["sequence"],
        serde_json::json!([65001, 4200000001u32])
    );
    assert_eq!(attrs[3]["large_communities"][0], "65001:1:2");
}

#[test]
fn bad_marker_is_notification_1_1() {
    let (objs, code) = decode_hex(&[], "fffffffffffffffffffffffffffffffe001304");
    assert_eq!(code, Some(1));
    assert_eq!(objs[0]["error"]["notification"], serde_json::json!([1, 1]));
    assert!(objs[0]["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("marker"));
}

#[test]
fn bad_length_is_notification_1_2() {
    let (objs, code) = decode_hex(&[], &format!("{MARKER}001404"));
    assert_eq!(code, Some(1));
    assert_eq!(objs[0]["error"]["notification"], serde_json::json!([1, 2]));
    assert!(objs[0]["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("length"));
}

#[test]
fn origin_7_is_treat_as_withdraw_with_prefixes_withdrawn() {
    // ORIGIN 7, AS_PATH 65001, NEXT_HOP 192.0.2.1, NLRI 10.0.0.0/24 10.0.1.0/24.
    let hex = format!(
        "{MARKER} 0033 02 0000 0014 40010107 400206020100 00fde9 400304c0000201 180a0000 180a0001"
    );
    let (objs, code) = decode_hex(&[], &hex);
    assert_eq!(code, Some(0), "{objs:?}");
    let u = &objs[0];
    assert_eq!(u["treatment"], "treat-as-withdraw");
    assert_eq!(u["withdrawn"][0]["prefix"], "10.0.0.0/24");
    assert_eq!(u["withdrawn"][1]["prefix"], "10.0.1.0/24");
    assert_eq!(u["nlri"].as_array().unwrap().len(), 0);
    let e = &u["errors"][0];
    assert_eq!(e["field"], "ORIGIN");
    assert_eq!(e["offset"], 23);
    assert_eq!(e["action"], "treat-as-withdraw");
    assert_eq!(e["notification"], serde_json::json!([3, 6]));
}

#[test]
fn session_reset_update_exits_1_and_later_messages_still_decode() {
    // NLRI prefix length 33, then a KEEPALIVE.
    let hex = format!("{MARKER} 0018 02 0000 0000 21 {MARKER} 0013 04");
    let (objs, code) = decode_hex(&[], &hex);
    assert_eq!(code, Some(1));
    assert_eq!(objs[0]["error"]["notification"], serde_json::json!([3, 10]));
    assert_eq!(objs[1]["type"], "keepalive");
}

#[test]
fn decode_then_encode_reproduces_the_bytes() {
    let hex: String = format!("{OPEN}{UPDATE_V6}{MARKER}001304")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let decoded = run(&["bgp", "decode", "--hex"], hex.as_bytes());
    assert_eq!(decoded.status.code(), Some(0));
    let encoded = run(&["bgp", "encode", "--hex"], &decoded.stdout);
    assert_eq!(
        encoded.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&encoded.stderr)
    );
    assert_eq!(String::from_utf8(encoded.stdout).unwrap().trim(), hex);
}

#[test]
fn raw_binary_input_and_output() {
    let json = br#"{"type":"route_refresh","afi":"ipv6","safi":"unicast","subtype":"eorr"}"#;
    let bytes = run(&["bgp", "encode"], json);
    assert_eq!(bytes.stdout.len(), 23);
    let decoded = run(&["bgp", "decode"], &bytes.stdout);
    let v: Value = serde_json::from_slice(&decoded.stdout).unwrap();
    assert_eq!(v["subtype"], "eorr");
    assert_eq!(v["afi"], "ipv6");
}

#[test]
fn two_octet_and_add_path_contexts() {
    // AS_PATH of 2-octet ASNs with --no-as4; NLRI with path id 7 with --addpath ipv4.
    let hex = format!(
        "{MARKER} 0031 02 0000 0012 40010100 40020402010001 400304c0000201 00000007 180a0000"
    );
    let (objs, code) = decode_hex(&["--no-as4", "--addpath", "ipv4"], &hex);
    assert_eq!(code, Some(0), "{objs:?}");
    assert_eq!(
        objs[0]["attributes"][1]["as_path"][0]["sequence"],
        serde_json::json!([1])
    );
    assert_eq!(objs[0]["nlri"][0]["path_id"], 7);
    // The same bytes on a 4-octet session without add-path are not the same message.
    let (objs, _) = decode_hex(&[], &hex);
    assert_ne!(objs[0]["treatment"], "none");
}

#[test]
fn shutdown_communication_is_shown_and_can_be_crafted() {
    let json = br#"{"type":"notification","code":6,"subcode":2,"shutdown_message":"moving vm42"}"#;
    let bytes = run(&["bgp", "encode", "--hex"], json);
    let (objs, code) = decode_hex(&[], &String::from_utf8(bytes.stdout).unwrap());
    assert_eq!(code, Some(0));
    assert_eq!(objs[0]["shutdown_message"], "moving vm42");
    assert_eq!(objs[0]["code"], 6);
}

#[test]
fn a_reader_that_goes_away_ends_decode_quietly() {
    // 20,000 OPENs decode to ~8 MiB of JSON, far beyond a pipe's buffer: `decode | head`.
    let input = OPEN.repeat(20_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_migroute"))
        .args(["bgp", "decode", "--hex"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn migroute");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc_sigpipe()),
        "{:?}",
        out.status
    );
}

fn libc_sigpipe() -> i32 {
    nix::sys::signal::Signal::SIGPIPE as i32
}
