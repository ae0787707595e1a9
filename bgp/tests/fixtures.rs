//! Real OPEN and UPDATE bytes captured from FRR 8.4 bgpd and gobgpd 3.10 by
//! `bgp/fixtures/capture.sh`: each file holds the daemon's messages ("rx") and the
//! capturing peer's ("tx"). The session context is negotiated from the two OPENs,
//! exactly as the session FSM will do, and every message must decode cleanly, mean
//! the same to bgpkit-parser, and survive encode∘decode.

mod common;

use bgpkit_parser::models::AsnLength;
use bgpkit_parser::parser::bgp::parse_bgp_message;
use migroute_bgp::codec::{
    decode, encode, from_hex, Attribute, Capability, Decoded, Family, Message, SessionContext,
    Update,
};

struct Capture {
    ctx: SessionContext,
    remote_open: migroute_bgp::codec::Open,
    /// Bytes and decoded form of every message the daemon sent.
    received: Vec<(Vec<u8>, Decoded)>,
}

fn load(name: &str) -> Capture {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let lines: Vec<(&str, Vec<u8>)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(dir, hex)| (dir, from_hex(hex).unwrap()))
        .collect();
    let open_of = |dir: &str| {
        let (_, bytes) = lines
            .iter()
            .find(|(d, b)| *d == dir && b[18] == 1)
            .expect("an OPEN");
        match decode(bytes, &SessionContext::default()).unwrap().message {
            Message::Open(o) => o,
            m => panic!("not an OPEN: {m:?}"),
        }
    };
    let remote_open = open_of("rx");
    let ctx = SessionContext::negotiate(&open_of("tx"), &remote_open);
    let received = lines
        .iter()
        .filter(|(d, _)| *d == "rx")
        .map(|(_, b)| {
            let d = decode(b, &ctx).unwrap_or_else(|e| panic!("{name}: {e}"));
            (b.clone(), d)
        })
        .collect();
    Capture {
        ctx,
        remote_open,
        received,
    }
}

fn updates(c: &Capture) -> Vec<&Update> {
    c.received
        .iter()
        .filter_map(|(_, d)| match &d.message {
            Message::Update(u) => Some(u),
            _ => None,
        })
        .collect()
}

fn check_every_message(name: &str) -> Capture {
    let c = load(name);
    for (bytes, d) in &c.received {
        assert_eq!(d.treatment, None, "{name}: {:?}", d.errors);
        // Re-encode as the daemon would have: our tx switches mirror our rx ones.
        let mirror = SessionContext {
            add_path_tx: c.ctx.add_path_rx,
            ..c.ctx
        };
        let re = encode(&d.message, &mirror).unwrap();
        assert_eq!(
            decode(&re, &mirror).unwrap().message,
            d.message,
            "{name}: re-encoding changed the meaning"
        );
        // bgpkit-parser reads the daemon's own bytes the same way.
        let v6 = matches!(&d.message, Message::Update(u) if u.attributes.iter().any(|a|
            matches!(a, Attribute::MpReach(m) if m.family == Family::Ipv6Unicast)
            || matches!(a, Attribute::MpUnreach(m) if m.family == Family::Ipv6Unicast)));
        let add_path = c.ctx.add_path_rx(if v6 {
            Family::Ipv6Unicast
        } else {
            Family::Ipv4Unicast
        });
        let asn_len = if c.ctx.as4 {
            AsnLength::Bits32
        } else {
            AsnLength::Bits16
        };
        let theirs =
            parse_bgp_message(&mut bytes::Bytes::from(bytes.clone()), add_path, &asn_len).unwrap();
        assert_eq!(
            common::differential::ours(&d.message),
            common::differential::theirs(&theirs)
        );
    }
    c
}

#[test]
fn frr_bgpd_open_and_updates() {
    let c = check_every_message("frr.txt");
    let o = &c.remote_open;
    assert_eq!(o.asn(), 4200000001);
    assert_eq!(o.my_as, 23456);
    assert!(o.capabilities.contains(&Capability::EnhancedRouteRefresh));
    assert!(o
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::GracefulRestart(_))));
    // FRR's hostname capability (73) is kept as unknown.
    assert!(o
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::Unknown { code: 73, .. })));
    assert!(c.ctx.as4 && c.ctx.add_path_rx.ipv4_unicast && c.ctx.add_path_rx.ipv6_unicast);

    let ups = updates(&c);
    let v4 = ups
        .iter()
        .find(|u| !u.nlri.is_empty())
        .expect("IPv4 UPDATE");
    let prefixes: Vec<String> = v4.nlri.iter().map(|n| n.prefix.to_string()).collect();
    assert_eq!(prefixes, ["192.0.2.0/24", "198.51.100.0/24"]);
    assert!(v4.nlri.iter().all(|n| n.path_id.is_some()));
    assert!(v4
        .attributes
        .iter()
        .any(|a| matches!(a, Attribute::LargeCommunities(l)
        if l[0].to_string() == "4200000001:1:2")));
    assert!(v4.attributes.contains(&Attribute::MultiExitDisc(50)));

    let v6 = ups
        .iter()
        .find_map(|u| u.mp_reach())
        .expect("IPv6 MP_REACH");
    assert_eq!(v6.family, Family::Ipv6Unicast);
    assert_eq!(v6.nlri[0].prefix.to_string(), "2001:db8:1::/48");

    // End-of-RIB for both families.
    let eors: Vec<Family> = c
        .received
        .iter()
        .filter_map(|(_, d)| d.end_of_rib())
        .collect();
    assert!(
        eors.contains(&Family::Ipv4Unicast) && eors.contains(&Family::Ipv6Unicast),
        "{eors:?}"
    );
}

#[test]
fn gobgpd_open_and_updates() {
    let c = check_every_message("gobgp.txt");
    assert_eq!(c.remote_open.asn(), 4200000003);
    // GoBGP offered add-path send for IPv4 only: IPv6 NLRI carry no path id.
    assert!(c.ctx.add_path_rx.ipv4_unicast && !c.ctx.add_path_rx.ipv6_unicast);

    let ups = updates(&c);
    let v4 = ups
        .iter()
        .find(|u| !u.nlri.is_empty())
        .expect("IPv4 UPDATE");
    assert_eq!(v4.nlri[0].prefix.to_string(), "203.0.113.0/24");
    assert!(v4
        .attributes
        .iter()
        .any(|a| matches!(a, Attribute::AsPath(p) if p[0].asns() == [4200000003, 65010, 65011])));
    let v6 = ups
        .iter()
        .find_map(|u| u.mp_reach())
        .expect("IPv6 MP_REACH");
    assert_eq!(v6.nlri[0].prefix.to_string(), "2001:db8:3::/48");
    assert_eq!(v6.nlri[0].path_id, None);
}
