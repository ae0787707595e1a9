//! encode ∘ decode: whatever decodes (after RFC 7606 treatment) encodes, and decodes
//! again to the same message with nothing left to treat.
#![no_main]

use libfuzzer_sys::fuzz_target;
use migroute_bgp::codec::{decode, encode};

mod ctx;

fuzz_target!(|data: &[u8]| {
    let Some((ctx, bytes)) = ctx::split(data) else {
        return;
    };
    let Ok(first) = decode(bytes, &ctx) else {
        return;
    };
    let encoded = encode(&first.message, &ctx)
        .unwrap_or_else(|e| panic!("decoded message does not encode: {e}\n{:?}", first.message));
    let second = decode(&encoded, &ctx).unwrap_or_else(|e| {
        panic!(
            "re-encoded message does not decode: {e}\n{:?}",
            first.message
        )
    });
    assert_eq!(
        second.treatment, None,
        "re-encoded message has errors: {:?}",
        second.errors
    );
    assert_eq!(second.message, first.message);
});
