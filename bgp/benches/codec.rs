//! Decode and encode throughput of UPDATEs carrying 1 and 500 IPv4 /24 prefixes with
//! typical attributes (ORIGIN, a 3-AS AS_PATH, NEXT_HOP, MED, LOCAL_PREF, two
//! communities, one large community), reported as prefixes per second.
//!
//! Run: `cargo bench -p migroute-bgp --bench codec`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use migroute_bgp::codec::{
    decode, encode, AsSegment, Attribute, Community, LargeCommunity, Message, Nlri, Origin, Prefix,
    SessionContext, Update,
};

fn update(prefixes: u32) -> Update {
    let nlri = (0..prefixes)
        .map(|i| {
            let a = Ipv4Addr::from(0x0a00_0000 | (i << 8));
            Nlri::new(Prefix::new(IpAddr::V4(a), 24).unwrap())
        })
        .collect();
    Update {
        withdrawn: vec![],
        attributes: vec![
            Attribute::Origin(Origin::Igp),
            Attribute::AsPath(vec![AsSegment::Sequence(vec![65001, 4200000001, 65010])]),
            Attribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)),
            Attribute::MultiExitDisc(50),
            Attribute::LocalPref(100),
            Attribute::Communities(vec![Community(65001 << 16 | 100), Community::NO_EXPORT]),
            Attribute::LargeCommunities(vec![LargeCommunity {
                global: 4200000001,
                local1: 1,
                local2: 2,
            }]),
        ],
        nlri,
    }
}

fn bench(c: &mut Criterion) {
    let ctx = SessionContext::default();
    for n in [1u32, 500] {
        let msg = Message::Update(update(n));
        let bytes = encode(&msg, &ctx).unwrap();
        let mut g = c.benchmark_group(format!("update_{n}_prefixes"));
        // Elements are prefixes, so criterion prints prefixes per second.
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_function("decode", |b| {
            b.iter(|| decode(black_box(&bytes), &ctx).unwrap())
        });
        g.bench_function("encode", |b| {
            b.iter(|| encode(black_box(&msg), &ctx).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
