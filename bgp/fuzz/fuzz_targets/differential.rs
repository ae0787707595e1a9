//! Differential against bgpkit-parser: every message we accept without treatment,
//! once re-encoded by us, must mean the same to bgpkit-parser.
#![no_main]

use bgpkit_parser::models::AsnLength;
use bgpkit_parser::parser::bgp::parse_bgp_message;
use libfuzzer_sys::fuzz_target;
use migroute_bgp::codec::{decode, encode, Attribute, Message, Nlri};

mod ctx;
#[allow(dead_code)]
#[path = "../../tests/common/differential.rs"]
mod differential;

/// bgpkit-parser guesses add-path on a 0 byte where a prefix starts; skip those.
fn kit_guesses_add_path(msg: &Message) -> bool {
    let Message::Update(u) = msg else {
        return false;
    };
    let has_default = |v: &[Nlri]| v.iter().any(|n| n.prefix.prefix_len() == 0);
    has_default(&u.withdrawn)
        || has_default(&u.nlri)
        || u.attributes.iter().any(|a| match a {
            Attribute::MpReach(m) => has_default(&m.nlri),
            Attribute::MpUnreach(m) => has_default(&m.withdrawn),
            _ => false,
        })
}

fuzz_target!(|data: &[u8]| {
    let Some((mut ctx, bytes)) = ctx::split(data) else {
        return;
    };
    // bgpkit has one add-path switch for every family.
    ctx.add_path_rx.ipv6_unicast = ctx.add_path_rx.ipv4_unicast;
    ctx.add_path_tx = ctx.add_path_rx;
    ctx.extended_message = false;
    let Ok(d) = decode(bytes, &ctx) else { return };
    if d.treatment.is_some() || (!ctx.add_path_rx.ipv4_unicast && kit_guesses_add_path(&d.message))
    {
        return;
    }
    let Ok(encoded) = encode(&d.message, &ctx) else {
        return;
    };
    let asn_len = if ctx.as4 {
        AsnLength::Bits32
    } else {
        AsnLength::Bits16
    };
    let theirs = parse_bgp_message(
        &mut bytes::Bytes::from(encoded.clone()),
        ctx.add_path_rx.ipv4_unicast,
        &asn_len,
    )
    .unwrap_or_else(|e| {
        panic!(
            "bgpkit rejects {}: {e}",
            migroute_bgp::codec::to_hex(&encoded)
        )
    });
    assert_eq!(
        differential::ours(&d.message),
        differential::theirs(&theirs),
        "bytes {}",
        migroute_bgp::codec::to_hex(&encoded)
    );
});
