//! Full-table ingest into the speaker in this process, over loopback: the receive path
//! (framing, decode, FSM, Adj-RIB-In) without namespaces or other daemons. Meant for
//! `valgrind --tool=callgrind`, whose instruction counts do not depend on the load of a
//! shared machine, and for a quick before/after of the wall-clock time.
//!
//! `cargo bench -p migroute-bgp --bench ingest_loopback` (PREFIXES=N, default
//! 1,000,000; KEEP=0 to store keys only). Prints the ingest time and the growth of
//! this process's resident memory while the table went in.

#[path = "support/feeder.rs"]
mod feeder;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use migroute_bgp::codec::Family;
use migroute_bgp::{PeerConfig, Speaker, SpeakerConfig};

fn rss_kb() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("PREFIXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let keep = std::env::var("KEEP").map_or(true, |v| v != "0");
    let lo = Ipv4Addr::LOCALHOST;
    let (bytes, sets) = feeder::table(n, lo);
    let port = std::net::TcpListener::bind((lo, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = SpeakerConfig::new(65001, Ipv4Addr::new(192, 0, 2, 1));
    cfg.listen = Some(SocketAddr::new(IpAddr::V4(lo), port));
    cfg.hold_time = 240;
    let mut p = PeerConfig::new(IpAddr::V4(lo), 65100);
    p.passive = true;
    p.families = vec![Family::Ipv4Unicast];
    p.keep_adj_rib_in = keep;
    cfg.peers.push(p);
    let (speaker, _join) = rt.block_on(Speaker::start(cfg)).expect("speaker starts");
    let before = rss_kb();
    let stream = TcpStream::connect((lo, port)).expect("connect to the speaker");
    let (t0, _s) = feeder::feed(stream, Ipv4Addr::new(192, 0, 2, 2), &bytes);
    let deadline = t0 + Duration::from_secs(600);
    loop {
        let got = speaker.peers().first().map_or(0, |p| p.prefixes_received);
        if got >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {n} prefixes arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{n} prefixes, {sets} attribute sets, {:.1} MB of UPDATEs: {secs:.3} s, RSS +{:.1} MiB (keep attributes: {keep})",
        bytes.len() as f64 / 1e6,
        rss_kb().saturating_sub(before) as f64 / 1024.0,
    );
}
