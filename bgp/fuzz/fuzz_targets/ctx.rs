//! The first input byte picks the session context, so every target covers every
//! combination of 4-octet AS, add-path per family and extended message.

use migroute_bgp::codec::{AddPathFamilies, SessionContext};

pub fn split(data: &[u8]) -> Option<(SessionContext, &[u8])> {
    let (&b, rest) = data.split_first()?;
    let ap = AddPathFamilies {
        ipv4_unicast: b & 2 != 0,
        ipv6_unicast: b & 4 != 0,
    };
    Some((
        SessionContext {
            as4: b & 1 != 0,
            add_path_rx: ap,
            add_path_tx: ap,
            extended_message: b & 8 != 0,
        },
        rest,
    ))
}
