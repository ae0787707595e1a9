//! proptest generators of valid messages for a given session context: every message
//! they produce must encode, and decode back to itself with no RFC 7606 treatment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use migroute_bgp::codec::*;
use proptest::collection::vec;
use proptest::prelude::*;

pub fn context() -> impl Strategy<Value = SessionContext> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(as4, v4, v6)| {
        let ap = AddPathFamilies {
            ipv4_unicast: v4,
            ipv6_unicast: v6,
        };
        SessionContext {
            as4,
            add_path_rx: ap,
            add_path_tx: ap,
            extended_message: false,
        }
    })
}

fn afi() -> impl Strategy<Value = Afi> {
    prop_oneof![
        Just(Afi::Ipv4),
        Just(Afi::Ipv6),
        any::<u16>().prop_map(Afi::from)
    ]
}

fn safi() -> impl Strategy<Value = Safi> {
    prop_oneof![Just(Safi::Unicast), any::<u8>().prop_map(Safi::from)]
}

fn capability() -> impl Strategy<Value = Capability> {
    let known = [1u8, 2, 6, 64, 65, 69, 70];
    prop_oneof![
        (afi(), safi()).prop_map(|(afi, safi)| Capability::Multiprotocol { afi, safi }),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        Just(Capability::ExtendedMessage),
        any::<u32>().prop_map(Capability::FourOctetAs),
        vec(
            (
                afi(),
                safi(),
                prop_oneof![
                    Just(AddPathMode::Receive),
                    Just(AddPathMode::Send),
                    Just(AddPathMode::Both)
                ]
            ),
            0..4
        )
        .prop_map(|v| Capability::AddPath(
            v.into_iter()
                .map(|(afi, safi, mode)| AddPathFamily { afi, safi, mode })
                .collect()
        )),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            vec((afi(), safi(), any::<bool>()), 0..4)
        )
            .prop_map(|(restart_state, notification, restart_time, f)| {
                Capability::GracefulRestart(GracefulRestart {
                    restart_state,
                    notification,
                    restart_time,
                    families: f
                        .into_iter()
                        .map(|(afi, safi, forwarding)| GracefulRestartFamily {
                            afi,
                            safi,
                            forwarding,
                        })
                        .collect(),
                })
            }),
        (
            any::<u8>().prop_filter("known code", move |c| !known.contains(c)),
            vec(any::<u8>(), 0..20)
        )
            .prop_map(|(code, v)| Capability::Unknown {
                code,
                value: HexBytes(v)
            }),
    ]
}

pub fn open() -> impl Strategy<Value = Open> {
    (
        any::<u16>(),
        any::<u16>().prop_filter("1 and 2 are invalid", |h| *h != 1 && *h != 2),
        1u32..,
        vec(capability(), 0..8),
    )
        .prop_map(|(my_as, hold_time, id, capabilities)| Open {
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
        })
}

fn masked(addr: IpAddr, len: u8) -> Prefix {
    let addr = match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    };
    Prefix::new(addr, len).unwrap()
}

pub fn nlri(family: Family, add_path: bool) -> impl Strategy<Value = Nlri> {
    let prefix = match family {
        Family::Ipv4Unicast => (any::<u32>(), 0u8..=32)
            .prop_map(|(a, l)| masked(IpAddr::V4(Ipv4Addr::from(a)), l))
            .boxed(),
        Family::Ipv6Unicast => (any::<u128>(), 0u8..=128)
            .prop_map(|(a, l)| masked(IpAddr::V6(Ipv6Addr::from(a)), l))
            .boxed(),
    };
    (prefix, any::<u32>()).prop_map(move |(prefix, id)| Nlri {
        path_id: add_path.then_some(id),
        prefix,
    })
}

fn asn(as4: bool) -> BoxedStrategy<u32> {
    if as4 {
        any::<u32>().boxed()
    } else {
        (0u32..=65535).boxed()
    }
}

fn as_path(as4: bool) -> impl Strategy<Value = Vec<AsSegment>> {
    vec(
        (0..4u8, vec(asn(as4), 1..8)).prop_map(|(k, v)| match k {
            0 => AsSegment::Sequence(v),
            1 => AsSegment::Set(v),
            2 => AsSegment::ConfedSequence(v),
            _ => AsSegment::ConfedSet(v),
        }),
        0..4,
    )
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn mp_next_hop(family: Family) -> impl Strategy<Value = MpNextHop> {
    let v6 = (any::<u128>(), proptest::option::of(any::<u128>())).prop_map(|(g, ll)| MpNextHop {
        global: IpAddr::V6(Ipv6Addr::from(g)),
        link_local: ll.map(Ipv6Addr::from),
    });
    match family {
        Family::Ipv4Unicast => prop_oneof![
            ipv4().prop_map(|a| MpNextHop {
                global: IpAddr::V4(a),
                link_local: None
            }),
            v6
        ]
        .boxed(),
        Family::Ipv6Unicast => v6.boxed(),
    }
}

/// Optional attributes other than the mandatory ones and MP.
fn extra_attributes(as4: bool) -> impl Strategy<Value = Vec<Attribute>> {
    let known: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 32];
    let unknown = (
        any::<u8>().prop_filter("known", move |t| !known.contains(t)),
        any::<bool>(),
        vec(any::<u8>(), 0..300),
    )
        .prop_map(|(type_code, transitive, v)| {
            Attribute::Unknown(RawAttribute {
                // Optional (a well-known unknown resets); Partial set on transitive
                // ones, as the decoder does when it keeps them.
                flags: if transitive { 0xe0 } else { 0x80 },
                type_code,
                value: HexBytes(v),
            })
        });
    let aggregator = (asn(as4), ipv4()).prop_map(|(asn, address)| Aggregator { asn, address });
    (
        proptest::option::of(any::<u32>().prop_map(Attribute::MultiExitDisc)),
        proptest::option::of(any::<u32>().prop_map(Attribute::LocalPref)),
        proptest::option::of(Just(Attribute::AtomicAggregate)),
        proptest::option::of(aggregator.prop_map(Attribute::Aggregator)),
        proptest::option::of(
            vec(any::<u32>().prop_map(Community), 1..10).prop_map(Attribute::Communities),
        ),
        proptest::option::of(ipv4().prop_map(Attribute::OriginatorId)),
        proptest::option::of(vec(ipv4(), 1..5).prop_map(Attribute::ClusterList)),
        proptest::option::of(
            vec(any::<[u8; 8]>().prop_map(ExtendedCommunity), 1..5)
                .prop_map(Attribute::ExtendedCommunities),
        ),
        proptest::option::of(
            vec(
                (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(global, local1, local2)| {
                    LargeCommunity {
                        global,
                        local1,
                        local2,
                    }
                }),
                1..5,
            )
            .prop_map(Attribute::LargeCommunities),
        ),
        proptest::option::of(unknown),
        // AS4_PATH/AS4_AGGREGATOR only where they are allowed.
        proptest::option::of((as_path(true), asn(true), ipv4())).prop_map(move |o| match o {
            Some((p, asn, address)) if !as4 => {
                vec![
                    Attribute::As4Path(p),
                    Attribute::As4Aggregator(Aggregator { asn, address }),
                ]
            }
            _ => vec![],
        }),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i, j, k)| {
            let mut v: Vec<Attribute> = [a, b, c, d, e, f, g, h, i, j]
                .into_iter()
                .flatten()
                .collect();
            v.extend(k);
            v
        })
}

pub fn update(ctx: SessionContext) -> impl Strategy<Value = Update> {
    let v4ap = ctx.add_path_tx.ipv4_unicast;
    let v6ap = ctx.add_path_tx.ipv6_unicast;
    let mp_family = prop_oneof![Just(Family::Ipv4Unicast), Just(Family::Ipv6Unicast)];
    let mp_reach = mp_family.clone().prop_flat_map(move |f| {
        let ap = if f == Family::Ipv4Unicast { v4ap } else { v6ap };
        (mp_next_hop(f), vec(nlri(f, ap), 0..20)).prop_map(move |(next_hop, nlri)| MpReach {
            family: f,
            next_hop,
            nlri,
        })
    });
    let mp_unreach = mp_family.prop_flat_map(move |f| {
        let ap = if f == Family::Ipv4Unicast { v4ap } else { v6ap };
        vec(nlri(f, ap), 0..20).prop_map(move |withdrawn| MpUnreach {
            family: f,
            withdrawn,
        })
    });
    (
        vec(nlri(Family::Ipv4Unicast, v4ap), 0..20),
        vec(nlri(Family::Ipv4Unicast, v4ap), 0..20),
        proptest::option::of(mp_reach),
        proptest::option::of(mp_unreach),
        prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ],
        as_path(ctx.as4),
        ipv4(),
        extra_attributes(ctx.as4),
        any::<bool>(),
    )
        .prop_map(
            |(withdrawn, nlri, reach, unreach, origin, path, nh, extra, with_path_attrs)| {
                let mut attributes = Vec::new();
                // MP attributes first (RFC 7606 section 5.1).
                let has_reach = reach.is_some();
                attributes.extend(reach.map(Attribute::MpReach));
                attributes.extend(unreach.map(Attribute::MpUnreach));
                if has_reach || !nlri.is_empty() || with_path_attrs {
                    attributes.push(Attribute::Origin(origin));
                    attributes.push(Attribute::AsPath(path));
                    if !nlri.is_empty() || with_path_attrs {
                        attributes.push(Attribute::NextHop(nh));
                    }
                    attributes.extend(extra);
                }
                Update {
                    withdrawn,
                    attributes,
                    nlri,
                }
            },
        )
}

pub fn notification() -> impl Strategy<Value = Notification> {
    prop_oneof![
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..40))
            .prop_map(|(c, s, d)| Notification::new(c, s, d)),
        (prop_oneof![Just(2u8), Just(4u8)], "[ -~]{1,60}")
            .prop_map(|(s, m)| Notification::shutdown(s, &m).unwrap()),
    ]
}

pub fn route_refresh() -> impl Strategy<Value = RouteRefresh> {
    (afi(), safi(), any::<u8>()).prop_map(|(afi, safi, s)| RouteRefresh {
        afi,
        safi,
        subtype: RouteRefreshSubtype::from(s),
    })
}

/// Any message valid on `ctx`.
pub fn message(ctx: SessionContext) -> impl Strategy<Value = Message> {
    prop_oneof![
        1 => open().prop_map(Message::Open),
        4 => update(ctx).prop_map(Message::Update),
        1 => notification().prop_map(Message::Notification),
        1 => Just(Message::Keepalive),
        1 => route_refresh().prop_map(Message::RouteRefresh),
    ]
}

/// A context and a message valid on it.
pub fn context_and_message() -> impl Strategy<Value = (SessionContext, Message)> {
    context().prop_flat_map(|ctx| (Just(ctx), message(ctx)))
}
