//! Differential: bgpkit-parser, an independent implementation, must read every
//! message we encode with the same meaning we give it.

mod common;

use bgpkit_parser::models::AsnLength;
use bgpkit_parser::parser::bgp::parse_bgp_message;
use bytes::Bytes;
use migroute_bgp::codec::{
    decode, encode, AddPathFamilies, Attribute, Message, Nlri, SessionContext,
};
use proptest::prelude::*;

/// bgpkit has one add-path switch for all families, so both families agree here.
fn kit_context() -> impl Strategy<Value = SessionContext> {
    (any::<bool>(), any::<bool>()).prop_map(|(as4, ap)| {
        let fams = if ap {
            AddPathFamilies::ALL
        } else {
            AddPathFamilies::default()
        };
        SessionContext {
            as4,
            add_path_rx: fams,
            add_path_tx: fams,
            extended_message: false,
        }
    })
}

/// bgpkit-parser guesses add-path when, in a non-add-path NLRI list, a prefix starts
/// with a 0 byte (a /0 prefix), and then misreads it. Such lists are valid BGP; we skip them here
/// rather than compare against a guess.
fn kit_guesses_add_path(msg: &Message, ctx: &SessionContext) -> bool {
    let Message::Update(u) = msg else {
        return false;
    };
    let starts_with_default = |v: &[Nlri]| v.iter().any(|n| n.prefix.prefix_len() == 0);
    let mut lists: Vec<&[Nlri]> = vec![&u.withdrawn, &u.nlri];
    for a in &u.attributes {
        match a {
            Attribute::MpReach(m) => lists.push(&m.nlri),
            Attribute::MpUnreach(m) => lists.push(&m.withdrawn),
            _ => {}
        }
    }
    !ctx.add_path_rx.ipv4_unicast && lists.into_iter().any(starts_with_default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn bgpkit_reads_what_we_write(
        (ctx, msg) in kit_context().prop_flat_map(|c| (Just(c), common::strategies::message(c)))
    ) {
        prop_assume!(!kit_guesses_add_path(&msg, &ctx));
        let bytes = encode(&msg, &ctx).unwrap();
        let ours = decode(&bytes, &ctx).unwrap().message;
        let asn_len = if ctx.as4 { AsnLength::Bits32 } else { AsnLength::Bits16 };
        let add_path = ctx.add_path_rx.ipv4_unicast;
        let theirs = parse_bgp_message(&mut Bytes::from(bytes.clone()), add_path, &asn_len);
        let theirs = match theirs {
            Ok(m) => m,
            Err(e) => return Err(TestCaseError::fail(format!("bgpkit rejected {}: {e}", migroute_bgp::codec::to_hex(&bytes)))),
        };
        prop_assert_eq!(common::differential::ours(&ours), common::differential::theirs(&theirs), "bytes {}", migroute_bgp::codec::to_hex(&bytes));
    }
}

/// Fuzzing regression (differential target, crash-e1cb593b): an MP_UNREACH_NLRI for
/// AFI 2 / SAFI 129 (VPN) is kept raw by us and parsed by bgpkit-parser; the
/// projection must only compare the unicast families migroute models.
#[test]
fn fuzz_regression_vpn_mp_unreach_is_not_compared_as_unicast() {
    let bytes = migroute_bgp::codec::from_hex(
        "ffffffffffffffffffffffffffffffff00590200000042400101024002060201fa56ea03c00804fde900c8800f1c\
         0002811020010db80120010300c00db8200cfa5600b02001000db803c0200cfa56ea03fc0000c40000ff0a",
    )
    .unwrap();
    let ctx = SessionContext::default();
    let d = decode(&bytes, &ctx).unwrap();
    assert_eq!(d.treatment, None);
    let Message::Update(u) = &d.message else {
        panic!()
    };
    assert!(u
        .attributes
        .iter()
        .any(|a| matches!(a, Attribute::Unknown(raw) if raw.type_code == 15)));
    let theirs =
        parse_bgp_message(&mut Bytes::from(bytes.clone()), false, &AsnLength::Bits32).unwrap();
    assert_eq!(
        common::differential::ours(&d.message),
        common::differential::theirs(&theirs)
    );
}
