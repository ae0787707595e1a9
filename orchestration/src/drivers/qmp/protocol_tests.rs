//! Byte strings captured from qemu-storage-daemon 10.0.2 (Debian 1:10.0.2+ds-2) over
//! its unix-socket monitor, while a mirror job ran; ids renumbered to ours.

use super::*;
use serde_json::json;

const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"Debian 1:10.0.2+ds-2+deb13u1~bpo12+1\"}, \"capabilities\": [\"oob\"]}}\r\n";

fn sent(p: &mut Protocol) -> Vec<Value> {
    std::iter::from_fn(|| p.poll_transmit())
        .map(|b| {
            assert_eq!(b.last(), Some(&b'\n'), "each command is one line");
            serde_json::from_slice(&b).unwrap()
        })
        .collect()
}

fn outputs(p: &mut Protocol) -> Vec<Output> {
    std::iter::from_fn(|| p.poll_output()).collect()
}

/// A machine past the greeting and negotiation.
fn connected() -> Protocol {
    let mut p = Protocol::new();
    p.handle_input(GREETING).unwrap();
    let caps = sent(&mut p);
    let id = caps[0]["id"].as_u64().unwrap();
    p.handle_input(format!("{{\"return\": {{}}, \"id\": {id}}}\r\n").as_bytes())
        .unwrap();
    outputs(&mut p);
    p
}

#[test]
fn greeting_then_capabilities_then_held_commands() {
    let mut p = Protocol::new();
    let early = p.send("query-block-jobs", Value::Null);
    assert_eq!(
        sent(&mut p),
        Vec::<Value>::new(),
        "nothing before the greeting"
    );
    p.handle_input(GREETING).unwrap();
    let caps = sent(&mut p);
    assert_eq!(caps.len(), 1, "only qmp_capabilities while negotiating");
    assert_eq!(caps[0]["execute"], "qmp_capabilities");
    assert!(!p.is_ready());
    assert_eq!(
        p.greeting().map(|g| g.version),
        Some(QemuVersion {
            major: 10,
            minor: 0,
            micro: 2
        })
    );
    let id = caps[0]["id"].as_u64().unwrap();
    p.handle_input(format!("{{\"return\": {{}}, \"id\": {id}}}\r\n").as_bytes())
        .unwrap();
    assert!(p.is_ready());
    let out = outputs(&mut p);
    assert!(
        matches!(&out[..], [Output::Connected(g)] if g.capabilities == ["oob"]
        && g.package.starts_with("Debian"))
    );
    let released = sent(&mut p);
    assert_eq!(
        released,
        vec![json!({"execute": "query-block-jobs", "id": early})]
    );
}

#[test]
fn interleaved_events_and_responses_are_matched_by_id() {
    let mut p = connected();
    let mirror = p.send(
        "blockdev-mirror",
        json!({"job-id": "mj", "device": "vda", "target": "mt", "sync": "full"}),
    );
    let query = p.send("query-block-jobs", Value::Null);
    let out = sent(&mut p);
    assert_eq!(out[0]["arguments"]["job-id"], "mj");
    assert!(
        out[1].get("arguments").is_none(),
        "no arguments member when none"
    );
    // The daemon emits the job's status changes before answering the command, and the
    // query's answer before the mirror's here (answers are matched by id, not order).
    let wire = format!(
        "{{\"timestamp\": {{\"seconds\": 1795330056, \"microseconds\": 520527}}, \"event\": \"JOB_STATUS_CHANGE\", \"data\": {{\"status\": \"created\", \"id\": \"mj\"}}}}\r\n\
         {{\"return\": [{{\"auto-finalize\": true, \"io-status\": \"ok\", \"device\": \"mj\", \"auto-dismiss\": true, \"busy\": true, \"len\": 134217728, \"offset\": 1048576, \"status\": \"running\", \"paused\": false, \"speed\": 0, \"ready\": false, \"type\": \"mirror\", \"actively-synced\": false}}], \"id\": {query}}}\r\n\
         {{\"timestamp\": {{\"seconds\": 1795330061, \"microseconds\": 21463}}, \"event\": \"BLOCK_JOB_READY\", \"data\": {{\"device\": \"mj\", \"len\": 135266304, \"offset\": 135266304, \"speed\": 0, \"type\": \"mirror\"}}}}\r\n\
         {{\"return\": {{}}, \"id\": {mirror}}}\r\n"
    );
    p.handle_input(wire.as_bytes()).unwrap();
    let out = outputs(&mut p);
    assert_eq!(out.len(), 4);
    assert!(
        matches!(&out[0], Output::Event(e) if e.name == "JOB_STATUS_CHANGE"
        && e.data["status"] == "created" && e.timestamp == Some((1795330056, 520527)))
    );
    assert!(
        matches!(&out[1], Output::Response { id, result: Ok(Value::Array(jobs)) }
        if *id == query && jobs[0]["offset"] == 1048576)
    );
    assert!(
        matches!(&out[2], Output::Event(e) if e.name == "BLOCK_JOB_READY"
        && e.data["device"] == "mj")
    );
    assert_eq!(
        out[3],
        Output::Response {
            id: mirror,
            result: Ok(json!({}))
        }
    );
    assert_eq!(p.in_flight().count(), 0);
}

#[test]
fn error_responses_carry_class_and_desc() {
    let mut p = connected();
    let id = p.send(
        "nbd-server-start",
        json!({"addr": {"type": "inet", "data": {"host": "10.99.0.2", "port": "10809"}}}),
    );
    sent(&mut p);
    p.handle_input(
        format!("{{\"id\": {id}, \"error\": {{\"class\": \"GenericError\", \"desc\": \"NBD server already running\"}}}}\r\n")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        outputs(&mut p),
        vec![Output::Response {
            id,
            result: Err(CommandError {
                class: "GenericError".into(),
                desc: "NBD server already running".into()
            })
        }]
    );
}

#[test]
fn partial_lines_are_reassembled_byte_by_byte() {
    let mut p = Protocol::new();
    for b in GREETING {
        p.handle_input(&[*b]).unwrap();
    }
    let caps = sent(&mut p);
    assert_eq!(caps.len(), 1);
    let id = caps[0]["id"].as_u64().unwrap();
    let wire = format!(
        "{{\"return\": {{}}, \"id\": {id}}}\r\n{{\"timestamp\": {{\"seconds\": 1795330061, \"microseconds\": 186078}}, \"event\": \"BLOCK_JOB_COMPLETED\", \"data\": {{\"device\": \"mj\", \"len\": 137363456, \"offset\": 137363456, \"speed\": 0, \"type\": \"mirror\"}}}}\r\n"
    );
    let (a, b) = wire.as_bytes().split_at(wire.len() - 7);
    p.handle_input(a).unwrap();
    let out = outputs(&mut p);
    assert!(matches!(&out[..], [Output::Connected(_)]), "{out:?}");
    p.handle_input(b).unwrap();
    let out = outputs(&mut p);
    assert!(
        matches!(&out[..], [Output::Event(e)] if e.name == "BLOCK_JOB_COMPLETED"
        && e.data["len"] == 137363456)
    );
}

#[test]
fn broken_peers_are_reported() {
    let mut p = Protocol::new();
    assert!(matches!(
        p.handle_input(b"{\"return\": {}}\n"),
        Err(ProtocolError::NoGreeting(_))
    ));
    let mut p = connected();
    assert!(matches!(
        p.handle_input(b"{\"return\": {}, \"id\": 99}\n"),
        Err(ProtocolError::UnmatchedResponse(_))
    ));
    // QEMU answers a line it cannot parse with an error without id.
    let mut p = connected();
    assert!(matches!(
        p.handle_input(
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, invalid keyword\"}}\r\n"
        ),
        Err(ProtocolError::UnmatchedResponse(_))
    ));
    let mut p = connected();
    assert!(matches!(
        p.handle_input(b"not json\n"),
        Err(ProtocolError::BadJson { .. })
    ));
    let mut p = Protocol::new();
    p.handle_input(GREETING).unwrap();
    let id = sent(&mut p)[0]["id"].as_u64().unwrap();
    assert!(matches!(
        p.handle_input(
            format!("{{\"id\": {id}, \"error\": {{\"class\": \"CommandNotFound\", \"desc\": \"no\"}}}}\n").as_bytes()
        ),
        Err(ProtocolError::Negotiation(e)) if e.class == "CommandNotFound"
    ));
}
