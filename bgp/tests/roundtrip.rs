//! Property: every valid message encodes, decodes back to itself with no RFC 7606
//! treatment, and survives the JSON form that `migroute bgp decode/encode` uses.

mod common;

use migroute_bgp::codec::{decode, encode, next_message_len, Message};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity((ctx, msg) in common::strategies::context_and_message()) {
        let bytes = encode(&msg, &ctx).expect("valid message encodes");
        prop_assert_eq!(next_message_len(&bytes, &ctx).unwrap(), Some(bytes.len()));
        let d = decode(&bytes, &ctx).expect("our own bytes decode");
        prop_assert_eq!(d.treatment, None, "errors: {:?}", d.errors);
        prop_assert_eq!(&d.message, &msg);
        // Encoding is deterministic, so bytes round-trip too.
        prop_assert_eq!(encode(&d.message, &ctx).unwrap(), bytes);
    }

    #[test]
    fn json_round_trip((_ctx, msg) in common::strategies::context_and_message()) {
        let text = serde_json::to_string(&msg).unwrap();
        let back: Message = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn truncating_a_message_never_panics((ctx, msg) in common::strategies::context_and_message(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&msg, &ctx).unwrap();
        let n = cut.index(bytes.len());
        // Whatever the result, it must not panic and must not claim success on a
        // shorter buffer than the header says.
        prop_assert!(decode(&bytes[..n], &ctx).is_err());
    }
}
