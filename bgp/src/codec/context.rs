//! What the two ends of a session agreed on, which changes how bytes are read.
//!
//! The codec never looks at neighbor state: the caller passes a [`SessionContext`] to
//! every call, as holo-bgp does with its `DecodeCxt`/`EncodeCxt`. The same bytes mean
//! different things on different sessions (an AS_PATH of 2- or 4-octet ASNs, NLRI with
//! or without path identifiers), so a context-free decoder could only guess.

use serde::{Deserialize, Serialize};

use super::iana::{Family, Safi};
use super::open::{AddPathMode, Capability, Open};

/// Per-family add-path switches for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddPathFamilies {
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
}

impl AddPathFamilies {
    /// Both families on.
    pub const ALL: AddPathFamilies = AddPathFamilies {
        ipv4_unicast: true,
        ipv6_unicast: true,
    };

    pub fn get(&self, family: Family) -> bool {
        match family {
            Family::Ipv4Unicast => self.ipv4_unicast,
            Family::Ipv6Unicast => self.ipv6_unicast,
        }
    }

    pub fn set(&mut self, family: Family, on: bool) {
        match family {
            Family::Ipv4Unicast => self.ipv4_unicast = on,
            Family::Ipv6Unicast => self.ipv6_unicast = on,
        }
    }
}

/// The negotiated session parameters that decoding and encoding depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionContext {
    /// Both sides sent the 4-octet AS capability (RFC 6793): AS_PATH and AGGREGATOR
    /// carry 4-octet ASNs, and AS4_PATH/AS4_AGGREGATOR must not appear.
    pub as4: bool,
    /// NLRI we receive carry a path identifier (RFC 7911), per family.
    pub add_path_rx: AddPathFamilies,
    /// NLRI we send carry a path identifier, per family.
    pub add_path_tx: AddPathFamilies,
    /// Both sides sent the extended message capability (RFC 8654): UPDATE,
    /// NOTIFICATION and ROUTE-REFRESH may be up to 65535 bytes.
    pub extended_message: bool,
}

impl Default for SessionContext {
    /// A fresh session before OPEN: 4-octet AS (every implementation we peer with
    /// supports it), no add-path, 4096-byte messages.
    fn default() -> Self {
        SessionContext {
            as4: true,
            add_path_rx: AddPathFamilies::default(),
            add_path_tx: AddPathFamilies::default(),
            extended_message: false,
        }
    }
}

impl SessionContext {
    /// Largest message the session accepts (RFC 4271 section 4.1, RFC 8654).
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            super::MAX_EXTENDED_MESSAGE_LEN
        } else {
            super::MAX_MESSAGE_LEN
        }
    }

    /// The context both OPENs agree on: a capability is in force only when both sides
    /// sent it, and add-path in one direction needs "send" on one side and "receive"
    /// on the other (RFC 7911 section 5).
    pub fn negotiate(local: &Open, remote: &Open) -> SessionContext {
        let has = |open: &Open, f: &dyn Fn(&Capability) -> bool| open.capabilities.iter().any(f);
        let as4 = has(local, &|c| matches!(c, Capability::FourOctetAs(_)))
            && has(remote, &|c| matches!(c, Capability::FourOctetAs(_)));
        let extended_message = has(local, &|c| matches!(c, Capability::ExtendedMessage))
            && has(remote, &|c| matches!(c, Capability::ExtendedMessage));
        let mut ctx = SessionContext {
            as4,
            extended_message,
            ..SessionContext::default()
        };
        for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            let l = local.add_path_mode(family.afi(), Safi::Unicast);
            let r = remote.add_path_mode(family.afi(), Safi::Unicast);
            ctx.add_path_rx.set(
                family,
                l.is_some_and(AddPathMode::receives) && r.is_some_and(AddPathMode::sends),
            );
            ctx.add_path_tx.set(
                family,
                l.is_some_and(AddPathMode::sends) && r.is_some_and(AddPathMode::receives),
            );
        }
        ctx
    }

    /// Whether received NLRI of the family carry path identifiers.
    pub fn add_path_rx(&self, family: Family) -> bool {
        self.add_path_rx.get(family)
    }

    /// Whether sent NLRI of the family carry path identifiers.
    pub fn add_path_tx(&self, family: Family) -> bool {
        self.add_path_tx.get(family)
    }
}
