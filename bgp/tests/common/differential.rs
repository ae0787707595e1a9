//! The meaning of a message as a list of `key=value` lines, computed from our
//! decoded message and from bgpkit-parser's, so that two independent parsers can be
//! compared without sharing types. Only what both model is compared.

use bgpkit_parser::models::{
    Afi as KitAfi, AsPathSegment, AttrType, AttributeValue, BgpMessage, Community as KitCommunity,
    MetaCommunity, NetworkPrefix, NextHopAddress, ParamValue, Safi,
};
use migroute_bgp::codec::{AsSegment, Attribute, Message, MpNextHop, Nlri, Update};

fn nlri_key(n: &Nlri) -> String {
    format!("{}#{}", n.prefix, n.path_id.map_or(-1, i64::from))
}

fn kit_nlri_key(n: &NetworkPrefix) -> String {
    format!("{}#{}", n.prefix, n.path_id.map_or(-1, i64::from))
}

fn segs(path: &[AsSegment]) -> String {
    path.iter()
        .map(|s| {
            let kind = match s {
                AsSegment::Sequence(_) => "seq",
                AsSegment::Set(_) => "set",
                AsSegment::ConfedSequence(_) => "cseq",
                AsSegment::ConfedSet(_) => "cset",
            };
            format!("{kind}{:?}", s.asns())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn kit_segs(path: &bgpkit_parser::models::AsPath) -> String {
    path.segments
        .iter()
        .map(|s| {
            let (kind, v) = match s {
                AsPathSegment::AsSequence(v) => ("seq", v),
                AsPathSegment::AsSet(v) => ("set", v),
                AsPathSegment::ConfedSequence(v) => ("cseq", v),
                AsPathSegment::ConfedSet(v) => ("cset", v),
            };
            let asns: Vec<u32> = v.iter().map(|a| a.to_u32()).collect();
            format!("{kind}{asns:?}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn nh_key(nh: &MpNextHop) -> String {
    match nh.link_local {
        Some(ll) => format!("{} {}", nh.global, ll),
        None => nh.global.to_string(),
    }
}

fn kit_nh_key(nh: &NextHopAddress) -> String {
    match nh {
        NextHopAddress::Ipv4(a) => a.to_string(),
        NextHopAddress::Ipv6(a) => a.to_string(),
        NextHopAddress::Ipv6LinkLocal(a, ll) => format!("{a} {ll}"),
        other => format!("{other:?}"),
    }
}

fn sorted(mut v: Vec<String>) -> String {
    v.sort();
    v.join(",")
}

fn update_meaning(u: &Update) -> Vec<String> {
    let mut out = Vec::new();
    let mut withdrawn: Vec<String> = u.withdrawn.iter().map(nlri_key).collect();
    let mut announced: Vec<String> = u.nlri.iter().map(nlri_key).collect();
    let mut communities = Vec::new();
    for a in &u.attributes {
        match a {
            Attribute::Origin(o) => out.push(format!("origin={o:?}").to_lowercase()),
            Attribute::AsPath(p) => out.push(format!("as_path={}", segs(p))),
            Attribute::As4Path(p) => out.push(format!("as4_path={}", segs(p))),
            Attribute::NextHop(a) => out.push(format!("next_hop={a}")),
            Attribute::MultiExitDisc(v) => out.push(format!("med={v}")),
            Attribute::LocalPref(v) => out.push(format!("local_pref={v}")),
            Attribute::AtomicAggregate => out.push("atomic_aggregate".into()),
            Attribute::Aggregator(a) => out.push(format!("aggregator={} {}", a.asn, a.address)),
            Attribute::Communities(cs) => {
                communities.extend(cs.iter().map(|c| format!("c{}", c.0)))
            }
            Attribute::LargeCommunities(cs) => communities.extend(
                cs.iter()
                    .map(|c| format!("l{}:{}:{}", c.global, c.local1, c.local2)),
            ),
            Attribute::ExtendedCommunities(cs) => communities.push(format!("e{}", cs.len())),
            Attribute::OriginatorId(a) => out.push(format!("originator_id={a}")),
            Attribute::ClusterList(ids) => {
                let v: Vec<u32> = ids.iter().map(|a| u32::from(*a)).collect();
                out.push(format!("cluster_list={v:?}"));
            }
            Attribute::MpReach(m) => {
                out.push(format!("mp_next_hop={}", nh_key(&m.next_hop)));
                announced.extend(m.nlri.iter().map(nlri_key));
            }
            Attribute::MpUnreach(m) => withdrawn.extend(m.withdrawn.iter().map(nlri_key)),
            Attribute::As4Aggregator(_) | Attribute::Unknown(_) => {}
        }
    }
    if !communities.is_empty() {
        out.push(format!("communities={}", sorted(communities)));
    }
    out.push(format!("withdrawn={}", sorted(withdrawn)));
    out.push(format!("announced={}", sorted(announced)));
    out.sort();
    out
}

/// Our side.
pub fn ours(m: &Message) -> Vec<String> {
    match m {
        Message::Open(o) => vec![
            "type=open".into(),
            format!("my_as={}", o.my_as),
            format!("hold_time={}", o.hold_time),
            format!("bgp_id={}", o.bgp_id),
            format!("capabilities={}", o.capabilities.len()),
        ],
        Message::Update(u) => {
            let mut v = vec!["type=update".to_string()];
            v.extend(update_meaning(u));
            v
        }
        Message::Notification(n) => vec![
            "type=notification".into(),
            format!("code={} subcode={}", n.code, n.subcode),
            format!("data={:?}", n.data.0),
        ],
        Message::Keepalive => vec!["type=keepalive".into()],
        Message::RouteRefresh(r) => vec![
            "type=route_refresh".into(),
            format!(
                "afi={} safi={} subtype={}",
                u16::from(r.afi),
                u8::from(r.safi),
                u8::from(r.subtype)
            ),
        ],
    }
}

/// bgpkit-parser's side.
pub fn theirs(m: &BgpMessage) -> Vec<String> {
    match m {
        BgpMessage::Open(o) => {
            let caps: usize = o
                .opt_params
                .iter()
                .map(|p| match &p.param_value {
                    ParamValue::Capacities(c) => c.len(),
                    ParamValue::Raw(_) => 0,
                })
                .sum();
            vec![
                "type=open".into(),
                format!("my_as={}", o.asn.to_u32()),
                format!("hold_time={}", o.hold_time),
                format!("bgp_id={}", o.bgp_identifier),
                format!("capabilities={caps}"),
            ]
        }
        BgpMessage::Update(u) => {
            let a = &u.attributes;
            let mut out = Vec::new();
            let mut withdrawn: Vec<String> =
                u.withdrawn_prefixes.iter().map(kit_nlri_key).collect();
            let mut announced: Vec<String> =
                u.announced_prefixes.iter().map(kit_nlri_key).collect();
            if a.has_attr(AttrType::ORIGIN) {
                out.push(format!("origin={:?}", a.origin()).to_lowercase());
            }
            if let Some(p) = a.as_path() {
                out.push(format!("as_path={}", kit_segs(p)));
            }
            if let Some(p) = a.as4_path() {
                out.push(format!("as4_path={}", kit_segs(p)));
            }
            if a.has_attr(AttrType::NEXT_HOP) {
                if let Some(AttributeValue::NextHop(nh)) =
                    a.get_attr(AttrType::NEXT_HOP).map(|x| x.value)
                {
                    out.push(format!("next_hop={nh}"));
                }
            }
            if let Some(v) = a.multi_exit_discriminator() {
                out.push(format!("med={v}"));
            }
            if let Some(v) = a.local_preference() {
                out.push(format!("local_pref={v}"));
            }
            if a.atomic_aggregate() {
                out.push("atomic_aggregate".into());
            }
            // `aggregator()` prefers AS4_AGGREGATOR; compare the attribute itself.
            if let Some(AttributeValue::Aggregator { asn, id }) =
                a.get_attr(AttrType::AGGREGATOR).map(|x| x.value)
            {
                out.push(format!("aggregator={} {}", asn.to_u32(), id));
            }
            let mut communities = Vec::new();
            let mut ext = 0usize;
            for c in a.iter_communities() {
                match c {
                    MetaCommunity::Plain(KitCommunity::Custom(asn, v)) => {
                        communities.push(format!("c{}", asn.to_u32() << 16 | u32::from(v)))
                    }
                    MetaCommunity::Plain(KitCommunity::NoExport) => {
                        communities.push(format!("c{}", 0xffff_ff01u32))
                    }
                    MetaCommunity::Plain(KitCommunity::NoAdvertise) => {
                        communities.push(format!("c{}", 0xffff_ff02u32))
                    }
                    MetaCommunity::Plain(KitCommunity::NoExportSubConfed) => {
                        communities.push(format!("c{}", 0xffff_ff03u32))
                    }
                    MetaCommunity::Large(l) => communities.push(format!(
                        "l{}:{}:{}",
                        l.global_admin, l.local_data[0], l.local_data[1]
                    )),
                    MetaCommunity::Extended(_) | MetaCommunity::Ipv6Extended(_) => ext += 1,
                }
            }
            if ext > 0 {
                communities.push(format!("e{ext}"));
            }
            if !communities.is_empty() {
                out.push(format!("communities={}", sorted(communities)));
            }
            if let Some(id) = a.origin_id() {
                out.push(format!("originator_id={id}"));
            }
            if let Some(c) = a.clusters() {
                out.push(format!("cluster_list={:?}", c.to_vec()));
            }
            // migroute models IPv4/IPv6 unicast only and keeps other families as raw
            // bytes, with no meaning to compare.
            let unicast = |n: &&bgpkit_parser::models::Nlri| {
                n.safi == Safi::Unicast && matches!(n.afi, KitAfi::Ipv4 | KitAfi::Ipv6)
            };
            if let Some(n) = a.get_reachable_nlri().filter(unicast) {
                if let Some(nh) = &n.next_hop {
                    out.push(format!("mp_next_hop={}", kit_nh_key(nh)));
                }
                announced.extend(n.prefixes.iter().map(kit_nlri_key));
            }
            if let Some(n) = a.get_unreachable_nlri().filter(unicast) {
                withdrawn.extend(n.prefixes.iter().map(kit_nlri_key));
            }
            out.push(format!("withdrawn={}", sorted(withdrawn)));
            out.push(format!("announced={}", sorted(announced)));
            out.sort();
            let mut v = vec!["type=update".to_string()];
            v.extend(out);
            v
        }
        BgpMessage::Notification(n) => {
            let (code, sub) = n.error.get_codes();
            vec![
                "type=notification".into(),
                format!("code={code} subcode={sub}"),
                format!("data={:?}", n.data),
            ]
        }
        BgpMessage::KeepAlive => vec!["type=keepalive".into()],
        BgpMessage::RouteRefresh(r) => vec![
            "type=route_refresh".into(),
            format!("afi={} safi={} subtype={}", r.afi, r.safi, r.subtype),
        ],
    }
}
