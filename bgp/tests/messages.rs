//! Non-UPDATE messages, framing, negotiation, encode errors and the UPDATE packer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use migroute_bgp::codec::*;

fn msg(t: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(t);
    m.extend_from_slice(body);
    m
}

fn notif_of(bytes: &[u8]) -> (u8, u8, Vec<u8>) {
    let e = decode(bytes, &SessionContext::default()).expect_err("must fail");
    let n = Notification::from(&e);
    (n.code, n.subcode, n.data.0)
}

/// OPEN body: version, AS 65001, hold, id, no parameters.
fn open_body(version: u8, hold: u16, id: [u8; 4]) -> Vec<u8> {
    let mut b = vec![version, 0xfd, 0xe9];
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(0);
    b
}

#[test]
fn open_errors_map_to_open_message_error_subcodes() {
    assert_eq!(
        notif_of(&msg(1, &open_body(3, 90, [1, 1, 1, 1]))),
        (2, 1, vec![0, 4])
    );
    assert_eq!(
        notif_of(&msg(1, &open_body(4, 2, [1, 1, 1, 1]))),
        (2, 6, vec![])
    );
    assert_eq!(
        notif_of(&msg(1, &open_body(4, 90, [0, 0, 0, 0]))),
        (2, 3, vec![])
    );
    // Optional parameter type 1 (authentication, deprecated).
    let mut b = open_body(4, 90, [1, 1, 1, 1]);
    *b.last_mut().unwrap() = 3;
    b.extend_from_slice(&[1, 1, 0]);
    assert_eq!(notif_of(&msg(1, &b)).1, 4);
    // 4-octet AS capability of length 3.
    let mut b = open_body(4, 90, [1, 1, 1, 1]);
    *b.last_mut().unwrap() = 7;
    b.extend_from_slice(&[2, 5, 65, 3, 0, 0, 1]);
    let e = decode(&msg(1, &b), &SessionContext::default()).unwrap_err();
    assert_eq!(Notification::from(&e).subcode, 0);
    assert_eq!(e.offset(), 31, "{e}");
}

#[test]
fn open_with_extended_optional_parameters_length_decodes() {
    // RFC 9072: 255, 255, 2-byte length, then parameters with 2-byte lengths.
    let mut b = open_body(4, 90, [1, 1, 1, 1]);
    *b.last_mut().unwrap() = 255;
    b.extend_from_slice(&[255, 0, 5, 2, 0, 2, 2, 0]);
    let d = decode(&msg(1, &b), &SessionContext::default()).unwrap();
    let Message::Open(o) = d.message else {
        panic!()
    };
    assert_eq!(o.capabilities, vec![Capability::RouteRefresh]);
}

#[test]
fn header_errors() {
    assert_eq!(notif_of(&msg(9, &[])), (1, 3, vec![9]));
    // KEEPALIVE with a body.
    assert_eq!(notif_of(&msg(4, &[0])).1, 2);
    // OPEN shorter than 29.
    assert_eq!(notif_of(&msg(1, &[4])).1, 2);
    // 4097-byte UPDATE without extended message; fine with it.
    let mut body = vec![0u8, 0, 0, 0];
    body.resize(4097 - 19, 0);
    let big = msg(2, &body);
    assert_eq!(notif_of(&big), (1, 2, vec![0x10, 0x01]));
    let ext = SessionContext {
        extended_message: true,
        ..SessionContext::default()
    };
    // The padding after an empty attribute list is read as NLRI /0 prefixes.
    assert!(decode(&big, &ext).is_ok());
}

#[test]
fn route_refresh_wrong_length_is_code_7() {
    let (c, s, data) = notif_of(&msg(5, &[0, 1, 0, 1, 9]));
    assert_eq!((c, s), (7, 1));
    assert_eq!(data.len(), 24, "the whole message is the data");
}

#[test]
fn route_refresh_reserved_subtype_is_decoded_for_the_session_to_ignore() {
    let d = decode(&msg(5, &[0, 2, 7, 1]), &SessionContext::default()).unwrap();
    assert_eq!(
        d.message,
        Message::RouteRefresh(RouteRefresh {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
            subtype: RouteRefreshSubtype::Reserved(7)
        })
    );
}

#[test]
fn notification_shutdown_message() {
    let n = Notification::shutdown(2, "maintenance: moving vm42").unwrap();
    let bytes = encode(
        &Message::Notification(n.clone()),
        &SessionContext::default(),
    )
    .unwrap();
    let Message::Notification(back) = decode(&bytes, &SessionContext::default()).unwrap().message
    else {
        panic!()
    };
    assert_eq!(back.shutdown_message(), Some("maintenance: moving vm42"));
    // A length byte that disagrees with the data is not a shutdown message.
    assert_eq!(
        Notification::new(6, 2, vec![9, b'a']).shutdown_message(),
        None
    );
    assert!(Notification::shutdown(2, &"x".repeat(256)).is_err());
}

#[test]
fn framing_reports_incomplete_complete_and_broken() {
    let ctx = SessionContext::default();
    let ka = msg(4, &[]);
    let mut stream = ka.clone();
    stream.extend_from_slice(&ka[..10]);
    assert_eq!(next_message_len(&stream, &ctx).unwrap(), Some(19));
    assert_eq!(next_message_len(&stream[19..], &ctx).unwrap(), None);
    assert_eq!(next_message_len(&stream[..18], &ctx).unwrap(), None);
    // A wrong marker byte is reported before the header is complete.
    assert!(matches!(
        next_message_len(&[0xff, 0xfe], &ctx),
        Err(HeaderError::BadMarker { offset: 1 })
    ));
}

#[test]
fn negotiation_needs_both_sides() {
    let open = |caps: Vec<Capability>| Open {
        my_as: 65001,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(1, 1, 1, 1),
        capabilities: caps,
    };
    let ap = |mode| {
        Capability::AddPath(vec![AddPathFamily {
            afi: Afi::Ipv4,
            safi: Safi::Unicast,
            mode,
        }])
    };
    let local = open(vec![
        Capability::FourOctetAs(65001),
        ap(AddPathMode::Receive),
        Capability::ExtendedMessage,
    ]);
    let remote = open(vec![Capability::FourOctetAs(65002), ap(AddPathMode::Both)]);
    let ctx = SessionContext::negotiate(&local, &remote);
    assert!(ctx.as4);
    assert!(!ctx.extended_message);
    assert!(ctx.add_path_rx.ipv4_unicast && !ctx.add_path_tx.ipv4_unicast);
    assert!(!ctx.add_path_rx.ipv6_unicast);
    let ctx = SessionContext::negotiate(&local, &open(vec![]));
    assert!(!ctx.as4);
}

#[test]
fn encode_refuses_what_the_session_cannot_carry() {
    let two = SessionContext {
        as4: false,
        ..SessionContext::default()
    };
    let u = Update {
        attributes: vec![Attribute::AsPath(vec![AsSegment::Sequence(vec![
            4200000001,
        ])])],
        ..Update::default()
    };
    assert!(matches!(
        encode(&Message::Update(u), &two),
        Err(EncodeError::AsnTooWide {
            asn: 4200000001,
            ..
        })
    ));
    let v6 = Prefix::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).unwrap();
    let u = Update {
        nlri: vec![Nlri::new(v6)],
        ..Update::default()
    };
    assert!(matches!(
        encode(&Message::Update(u), &two),
        Err(EncodeError::WrongFamily { .. })
    ));
}

#[test]
fn packer_splits_to_the_message_size_and_keeps_every_prefix() {
    let ctx = SessionContext::default();
    let attrs = vec![
        Attribute::Origin(Origin::Igp),
        Attribute::AsPath(vec![AsSegment::Sequence(vec![65001])]),
        Attribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)),
    ];
    let prefixes: Vec<Nlri> = (0..3000u32)
        .map(|i| {
            Nlri::new(Prefix::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i << 8)), 24).unwrap())
        })
        .collect();
    let updates = pack_announcements(&attrs, Family::Ipv4Unicast, &prefixes, &ctx).unwrap();
    assert!(updates.len() >= 3);
    let mut all = Vec::new();
    for u in &updates {
        let bytes = encode(&Message::Update(u.clone()), &ctx).unwrap();
        assert!(bytes.len() <= MAX_MESSAGE_LEN);
        // Each is full but the last: packing is not wasteful.
        all.extend(u.nlri.iter().copied());
    }
    assert_eq!(all, prefixes);
    let first = encode(&Message::Update(updates[0].clone()), &ctx).unwrap();
    assert!(first.len() > MAX_MESSAGE_LEN - 4);

    // IPv6: the MP_REACH_NLRI template comes first in every UPDATE.
    let mp = Attribute::MpReach(MpReach {
        family: Family::Ipv6Unicast,
        next_hop: MpNextHop {
            global: "2001:db8::1".parse().unwrap(),
            link_local: None,
        },
        nlri: vec![],
    });
    let v6: Vec<Nlri> = (0..1000u128)
        .map(|i| {
            Nlri::new(
                Prefix::new(
                    IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | i << 64)),
                    64,
                )
                .unwrap(),
            )
        })
        .collect();
    let mut attrs6 = attrs[..2].to_vec();
    attrs6.push(mp);
    let updates = pack_announcements(&attrs6, Family::Ipv6Unicast, &v6, &ctx).unwrap();
    let mut n = 0;
    for u in &updates {
        assert!(matches!(u.attributes[0], Attribute::MpReach(_)));
        let bytes = encode(&Message::Update(u.clone()), &ctx).unwrap();
        assert!(bytes.len() <= MAX_MESSAGE_LEN, "{}", bytes.len());
        let d = decode(&bytes, &ctx).unwrap();
        assert_eq!(d.treatment, None);
        n += u.mp_reach().unwrap().nlri.len();
    }
    assert_eq!(n, 1000);
}
