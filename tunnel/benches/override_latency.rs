//! Override install latency against a real kernel, in a throwaway namespace.
//!
//! `cargo bench -p migroute-tunnel --bench override_latency`
//!
//! Prints p50/p99 of 1000 single `replace` calls (each a full round trip: request,
//! kernel FIB insert, ack) and the time of one pipelined batch of 10 000 /32 replaces,
//! then the time to remove that batch. Needs root (creates a netns and a VXLAN link);
//! prints "SKIPPED" without it.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use migroute_tunnel::{
    override_route, tunnel, Inside, NetlinkHandle, Netns, Override, Prefix, TunnelSpec, VxlanSpec,
};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        println!("SKIPPED: override_latency needs root (network namespaces)");
        return;
    }
    let ns = format!("mrb-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!("SKIPPED: cannot create a network namespace");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(&ns));
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run(ns: &str) {
    let h = NetlinkHandle::open(Netns::Named(ns.to_string()))
        .await
        .expect("open netns");
    let spec = TunnelSpec::vxlan(
        "mr-bench",
        VxlanSpec::new(
            42,
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        ),
    )
    .with_inside(Inside::new(IpAddr::V4(Ipv4Addr::new(192, 168, 255, 0)), 31).unwrap());
    tunnel::create(&h, &spec).await.expect("create tunnel");
    let gw = Some(IpAddr::V4(Ipv4Addr::new(192, 168, 255, 1)));
    let prefix = |i: u32| Prefix::host(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));

    // Warm-up (rule creation, link lookup caches).
    let warm = Override {
        prefix: prefix(0),
        via: "mr-bench".into(),
        gateway: gw,
    };
    override_route::replace(&h, &warm).await.expect("warm-up");

    let mut single = Vec::with_capacity(1000);
    for i in 0..1000u32 {
        let o = Override {
            prefix: prefix(1 + i),
            via: "mr-bench".into(),
            gateway: gw,
        };
        let t = Instant::now();
        override_route::replace(&h, &o).await.expect("replace");
        single.push(t.elapsed());
    }
    single.sort();
    println!(
        "single override replace (incl. tunnel lookup), n=1000: p50 {:?} p99 {:?} max {:?}",
        pct(&single, 0.50),
        pct(&single, 0.99),
        single[single.len() - 1]
    );

    let batch: Vec<Override> = (0..10_000u32)
        .map(|i| Override {
            prefix: prefix(100_000 + i),
            via: "mr-bench".into(),
            gateway: gw,
        })
        .collect();
    for round in 0..3 {
        let t = Instant::now();
        override_route::replace_batch(&h, &batch)
            .await
            .expect("batch");
        let install = t.elapsed();
        let prefixes: Vec<Prefix> = batch.iter().map(|o| o.prefix).collect();
        let t = Instant::now();
        override_route::remove_batch(&h, &prefixes)
            .await
            .expect("remove");
        println!(
            "batch of 10000 /32 replaces (round {round}): install {install:?}, remove {:?}",
            t.elapsed()
        );
    }
}
