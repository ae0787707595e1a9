//! Decoding never panics, for any context, and a decoded message always encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use migroute_bgp::codec::{decode, encode, next_message_len, Notification};

mod ctx;

fuzz_target!(|data: &[u8]| {
    let Some((ctx, bytes)) = ctx::split(data) else {
        return;
    };
    // Framing, as a driver would run it over a stream.
    let mut rest = bytes;
    while let Ok(Some(len)) = next_message_len(rest, &ctx) {
        let (msg, tail) = rest.split_at(len);
        rest = tail;
        match decode(msg, &ctx) {
            Ok(d) => {
                let _ = encode(&d.message, &ctx);
            }
            Err(e) => {
                let _ = Notification::from(&e);
                let _ = e.to_string();
            }
        }
    }
    // And the whole input as one message.
    let _ = decode(bytes, &ctx);
});
