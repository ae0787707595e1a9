//! "VM seen at the destination": a destination agent with `pe.detect_vm` listens on its
//! VM-facing interface (here one end of a veth standing for the VM's port; the test
//! sends from the other end). QEMU's RARP announcement with the VM's MAC, a gratuitous
//! ARP, or an unsolicited neighbour advertisement for the VM's address makes it
//! announce the route at once, without the announce webhook, and tell the source agent
//! to switch over and announce (over https, trusting the test CA through
//! `api.peer_ca_file`), so both converge and tear down by themselves. A
//! gratuitous ARP for an unrelated address or a RARP from another MAC changes nothing.
//! Needs root and VXLAN: SKIPPED without them (panics under CI).

mod agent_lab;

use std::ffi::CString;
use std::time::{Duration, Instant};

use agent_lab::{can_run, tls_extra, Agent, Lab, A4, B4, VM};
use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header};
use serde_json::{json, Value};

const VM_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const VM2: &str = "10.10.0.6";
const VM3: &str = "2001:db8:10::6";

/// An ARP-format frame (RARP when `ether_type` is 0x8035) from the VM's MAC.
fn arp_frame(ether_type: u16, mac: [u8; 6], op: u16, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation(op),
        &mac,
        &sender,
        &mac,
        &target,
    )
    .unwrap();
    let mut out = Vec::new();
    Ethernet2Header {
        source: mac,
        destination: [0xff; 6],
        ether_type: EtherType(ether_type),
    }
    .write(&mut out)
    .unwrap();
    arp.write(&mut out).unwrap();
    out
}

fn rarp(mac: [u8; 6]) -> Vec<u8> {
    // What QEMU sends after a migration: reverse request, no protocol addresses.
    arp_frame(0x8035, mac, 3, [0; 4], [0; 4])
}

/// An unsolicited neighbour advertisement (Override flag only) for `ip` from the VM.
fn unsolicited_na(ip: &str) -> Vec<u8> {
    let ip: std::net::Ipv6Addr = ip.parse().unwrap();
    let all_nodes: std::net::Ipv6Addr = "ff02::1".parse().unwrap();
    let builder = etherparse::PacketBuilder::ethernet2(VM_MAC, [0x33, 0x33, 0, 0, 0, 1])
        .ipv6(ip.octets(), all_nodes.octets(), 255)
        .icmpv6(etherparse::Icmpv6Type::Unknown {
            type_u8: 136,
            code_u8: 0,
            bytes5to8: [0x20, 0, 0, 0],
        });
    // Target address, then the target link-layer address option.
    let mut payload = ip.octets().to_vec();
    payload.extend_from_slice(&[2, 1]);
    payload.extend_from_slice(&VM_MAC);
    let mut out = Vec::new();
    builder.write(&mut out, &payload).unwrap();
    out
}

fn garp(ip: &str) -> Vec<u8> {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    arp_frame(0x0806, VM_MAC, 1, ip.octets(), ip.octets())
}

/// Sends `frame` out of `ifname` in namespace `netns`, from a thread that entered it.
fn send_frame(netns: &str, ifname: &str, frame: &[u8]) {
    let ns = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
    let ifname = CString::new(ifname).unwrap();
    let frame = frame.to_vec();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // SAFETY: plain libc calls on a descriptor owned here; pointers refer to live
        // locals of the sizes passed.
        unsafe {
            let index = libc::if_nametoindex(ifname.as_ptr());
            assert!(index > 0, "no {ifname:?}");
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(n, frame.len() as isize, "{err}");
        }
    })
    .join()
    .unwrap();
}

/// Asserts a migration's status records having entered `phases`.
fn assert_passed(status: &Value, phases: &[&str]) {
    let seen: Vec<&str> = status["transitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["phase"].as_str())
        .collect();
    for p in phases {
        assert!(seen.contains(p), "never {p}: {status}");
    }
}

async fn phase(agent: &Agent, id: &str) -> Value {
    agent.get(&format!("/v1/migrations/{id}")).await.1["phase"].clone()
}

/// Sends `frame` every 300 ms (QEMU repeats its announcement too) until `agent` has
/// `id` in `want`.
async fn announce_until(lab: &Lab, frame: &[u8], agent: &Agent, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        send_frame(&lab.b, "mrvmp", frame);
        if phase(agent, id).await == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never {want}:\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn body(role: &str, ip: &str, vni: u32, peer: &str, peer_api: &str) -> Value {
    let len = if ip.contains(':') { 128 } else { 32 };
    json!({
        "prefixes": [format!("{ip}/{len}")],
        "role": role,
        "peer": {"tunnel_endpoint": peer, "api_url": peer_api},
        "tunnel": {"kind": "vxlan", "vni": vni},
        "vm_mac": "52:54:00:12:34:56",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_hears_the_vm_and_switches_without_webhooks() {
    if !can_run("destination_hears_the_vm_and_switches_without_webhooks") {
        return;
    }
    let lab = Lab::new("vms");
    // The VM's port at B: the agent listens on mrvm0, the "VM" sends from mrvmp.
    lab.ip(
        &lab.b,
        &[
            "link", "add", "mrvm0", "type", "veth", "peer", "name", "mrvmp",
        ],
    );
    lab.ip(&lab.b, &["link", "set", "mrvm0", "up"]);
    lab.ip(&lab.b, &["link", "set", "mrvmp", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_extra(dir.path());
    let a = agent_lab::Agent::with(dir.path(), "a", &lab.a, A4, tls.clone()).await;
    let b = Agent::with(
        dir.path(),
        "b",
        &lab.b,
        B4,
        agent_lab::Extra {
            pe: "vm_interface = \"mrvm0\"\ndetect_vm = true\n".into(),
            ..tls
        },
    )
    .await;

    // m1 moves VM (heard by RARP), m2 moves VM2 (heard by gratuitous ARP), m3 moves an
    // IPv6 address (heard by an unsolicited neighbour advertisement).
    for (id, ip, vni) in [("m1", VM, 4242), ("m2", VM2, 4243), ("m3", VM3, 4244)] {
        let (code, v) = b.put(id, body("destination", ip, vni, A4, &a.base)).await;
        assert_eq!(code, 201, "{v}\n{}", b.logs());
        let (code, v) = a.put(id, body("source", ip, vni, B4, &b.base)).await;
        assert_eq!(code, 201, "{v}\n{}", a.logs());
    }

    // Unrelated: another host's gratuitous ARP, another MAC's RARP. Nothing moves. (The
    // agent opens its socket before its API answers, so these frames are read.)
    send_frame(&lab.b, "mrvmp", &garp("10.10.0.99"));
    send_frame(&lab.b, "mrvmp", &rarp([0x52, 0x54, 0, 0, 0, 0x99]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in ["m1", "m2", "m3"] {
        assert_eq!(phase(&b, id).await, "prepared", "{id}\n{}", b.logs());
        assert_eq!(phase(&a, id).await, "prepared", "{id}");
    }
    let (_, routes) = b.get("/v1/bgp/routes").await;
    assert_eq!(routes, json!([]), "nothing announced yet");

    // RARP with the VM's MAC: B announces m1 at once and tells A, which switches over
    // and announces (nobody else would); both then converge by themselves.
    announce_until(&lab, &rarp(VM_MAC), &b, "m1", "announced").await;
    let (_, routes) = b.get("/v1/bgp/routes").await;
    let announced: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["prefix"].as_str())
        .collect();
    assert_eq!(announced, [format!("{VM}/32")], "only m1's route");
    assert_eq!(
        phase(&b, "m2").await,
        "prepared",
        "m2 untouched by m1's RARP"
    );
    let m1 = a
        .wait_phase("m1", "torn-down", Duration::from_secs(30))
        .await;
    assert_passed(&m1, &["switched-over", "announced"]);
    b.wait_phase("m1", "torn-down", Duration::from_secs(30))
        .await;

    // Gratuitous ARP for VM2: the same for m2.
    announce_until(&lab, &garp(VM2), &b, "m2", "announced").await;
    let m2 = a
        .wait_phase("m2", "torn-down", Duration::from_secs(30))
        .await;
    assert_passed(&m2, &["switched-over", "announced"]);

    // Unsolicited neighbour advertisement for VM3: the same for m3.
    announce_until(&lab, &unsolicited_na(VM3), &b, "m3", "announced").await;
    let m3 = a
        .wait_phase("m3", "torn-down", Duration::from_secs(30))
        .await;
    assert_passed(&m3, &["switched-over", "announced"]);

    // The VM announcing itself again later changes nothing.
    send_frame(&lab.b, "mrvmp", &rarp(VM_MAC));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(phase(&b, "m1").await, "torn-down");
}
