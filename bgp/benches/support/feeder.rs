//! The feeder shared by the ingest benches: a deterministic full table encoded with
//! migroute's encoder, and a minimal BGP speaker that streams it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use migroute_bgp::codec::{
    decode, encode_into, next_message_len, pack_announcements, AsSegment, Attribute, Capability,
    Community, Family, LargeCommunity, Message, Nlri, Open, Origin, Prefix, SessionContext, Update,
};

const FEEDER_AS: u32 = 65100;

/// xorshift64*: deterministic, so every receiver gets the same table.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The whole table as encoded UPDATEs, then End-of-RIB.
pub fn table(prefixes: usize, next_hop: Ipv4Addr) -> (Vec<u8>, usize) {
    let ctx = SessionContext::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pool: Vec<u32> = (0..5000)
        .map(|i| {
            if i % 10 == 0 {
                4_200_000_000 + i
            } else {
                1000 + i * 11
            }
        })
        .collect();
    let mut out = Vec::with_capacity(prefixes * 6);
    let mut i = 0usize;
    let mut sets = 0;
    while i < prefixes {
        let n = (1 + rng.below(16) as usize).min(prefixes - i);
        let hops = 1 + rng.below(6) as usize;
        let mut path = vec![FEEDER_AS];
        path.extend((0..hops).map(|_| pool[rng.below(pool.len() as u64) as usize]));
        let mut attrs = vec![
            Attribute::Origin(if rng.below(10) == 0 {
                Origin::Incomplete
            } else {
                Origin::Igp
            }),
            Attribute::AsPath(vec![AsSegment::Sequence(path)]),
            Attribute::NextHop(next_hop),
        ];
        if rng.below(10) < 3 {
            attrs.push(Attribute::MultiExitDisc(rng.below(1000) as u32));
        }
        let nc = rng.below(5);
        if nc > 0 {
            let mut c: Vec<Community> = (0..nc)
                .map(|_| Community((FEEDER_AS << 16) | rng.below(200) as u32))
                .collect();
            c.sort();
            c.dedup();
            attrs.push(Attribute::Communities(c));
        }
        if rng.below(10) == 0 {
            attrs.push(Attribute::LargeCommunities(vec![LargeCommunity {
                global: FEEDER_AS,
                local1: rng.below(100) as u32,
                local2: rng.below(100) as u32,
            }]));
        }
        let nlri: Vec<Nlri> = (i..i + n)
            .map(|k| {
                // /24s from 11.0.0.0 upward.
                let a = Ipv4Addr::from(0x0b00_0000u32 + ((k as u32) << 8));
                Nlri::new(Prefix::new(a.into(), 24).unwrap())
            })
            .collect();
        for u in pack_announcements(&attrs, Family::Ipv4Unicast, &nlri, &ctx).unwrap() {
            encode_into(&Message::Update(u), &ctx, &mut out).unwrap();
        }
        i += n;
        sets += 1;
    }
    encode_into(&Message::Update(Update::default()), &ctx, &mut out).unwrap();
    (out, sets)
}

fn open(id: Ipv4Addr) -> Message {
    Message::Open(Open {
        my_as: FEEDER_AS as u16,
        hold_time: 240,
        bgp_id: id,
        capabilities: vec![
            Capability::Multiprotocol {
                afi: migroute_bgp::codec::Afi::Ipv4,
                safi: migroute_bgp::codec::Safi::Unicast,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs(FEEDER_AS),
        ],
    })
}

/// Reads until one whole message is buffered and returns it.
fn read_msg(s: &mut TcpStream, buf: &mut Vec<u8>) -> Message {
    let ctx = SessionContext::default();
    loop {
        if let Ok(Some(n)) = next_message_len(buf, &ctx) {
            let m = decode(&buf[..n], &ctx).expect("decodable").message;
            buf.drain(..n);
            return m;
        }
        let mut tmp = [0u8; 4096];
        let r = s.read(&mut tmp).expect("read");
        assert!(r > 0, "receiver closed the session");
        buf.extend_from_slice(&tmp[..r]);
    }
}

/// Brings the session up on a connected stream, then streams `bytes` with a KEEPALIVE between
/// chunks every 20 s. Returns when the last byte is written, and the start instant.
pub fn feed(mut s: TcpStream, id: Ipv4Addr, bytes: &[u8]) -> (Instant, TcpStream) {
    let ctx = SessionContext::default();
    s.set_nodelay(true).unwrap();
    let mut first = Vec::new();
    encode_into(&open(id), &ctx, &mut first).unwrap();
    s.write_all(&first).unwrap();
    let mut buf = Vec::new();
    assert!(matches!(read_msg(&mut s, &mut buf), Message::Open(_)));
    let mut ka = Vec::new();
    encode_into(&Message::Keepalive, &ctx, &mut ka).unwrap();
    s.write_all(&ka).unwrap();
    loop {
        match read_msg(&mut s, &mut buf) {
            Message::Keepalive => break,
            Message::Notification(n) => panic!("receiver refused the session: {n:?}"),
            _ => {}
        }
    }
    // Drain whatever the receiver sends from now on, so it never blocks on us.
    let mut rd = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sink = [0u8; 65536];
        while matches!(rd.read(&mut sink), Ok(n) if n > 0) {}
    });
    let t0 = Instant::now();
    let mut last_ka = t0;
    let mut pos = 0;
    while pos < bytes.len() {
        // Cut on message boundaries, about 256 KiB at a time.
        let mut end = pos;
        while end < bytes.len() && end - pos < 256 * 1024 {
            end += usize::from(u16::from_be_bytes([bytes[end + 16], bytes[end + 17]]));
        }
        s.write_all(&bytes[pos..end]).unwrap();
        pos = end;
        if last_ka.elapsed() > Duration::from_secs(20) {
            s.write_all(&ka).unwrap();
            last_ka = Instant::now();
        }
    }
    let mut ks = s.try_clone().unwrap();
    std::thread::spawn(move || {
        while ks.write_all(&ka).is_ok() {
            std::thread::sleep(Duration::from_secs(20));
        }
    });
    (t0, s)
}
