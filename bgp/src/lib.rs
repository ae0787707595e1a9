//! BGP for migroute: the message codec (with RFC 7606 treatment of malformed UPDATEs),
//! the sans-IO session FSM, RIBs, graceful restart and the speaker.
//!
//! # The codec
//!
//! [`codec`] holds migroute's own message types and a decoder/encoder written for
//! them: [`codec::next_message_len`] frames a byte stream, [`codec::decode`] reads one
//! message in a [`codec::SessionContext`] (4-octet AS, add-path per family and
//! direction, extended message), and [`codec::encode`] writes one. [`tool`] is the
//! logic of `migroute bgp decode|encode`.
//!
//! # RFC 7606 treatment of UPDATE errors
//!
//! Every error found in an UPDATE is an [`codec::UpdateError`] naming the field and
//! the byte offset (from the start of the message), with the [`codec::AttrAction`]
//! below. A session-reset error is returned as [`codec::DecodeError`]; the others are
//! applied (the decoded UPDATE is already treated) and listed in
//! [`codec::Decoded::errors`]; the harshest one is [`codec::Decoded::treatment`]. The
//! NOTIFICATION is derived from the error by `Notification::from(&DecodeError)` /
//! [`codec::UpdateError::notification`], never chosen where the error is found.
//!
//! | case | treatment | NOTIFICATION if reset | RFC |
//! |---|---|---|---|
//! | Withdrawn Routes Length or Total Path Attribute Length overruns the message | session-reset | 3/1 Malformed Attribute List | 4271 §6.3, 7606 §4 |
//! | Withdrawn Routes or NLRI field: prefix length > 32, or prefix overruns the field | session-reset | 3/10 Invalid Network Field | 7606 §5.3, §3 (j) |
//! | attribute header does not fit in what is left of the attribute list | treat-as-withdraw | 3/1 | 7606 §4 |
//! | attribute length overruns the Total Path Attribute Length | treat-as-withdraw | 3/5 Attribute Length Error | 7606 §4 |
//! | Optional/Transitive flag bits wrong for a known attribute | treat-as-withdraw | 3/4 Attribute Flags Error | 7606 §3 (c) |
//! | attribute repeated (other than MP_REACH/MP_UNREACH) | attribute-discard (first kept) | 3/1 | 7606 §3 (g) |
//! | MP_REACH_NLRI or MP_UNREACH_NLRI repeated | session-reset | 3/1 | 7606 §3 (g) |
//! | unrecognized well-known attribute (Optional bit clear) | session-reset | 3/2 | 4271 §6.3 |
//! | ORIGIN, AS_PATH (and NEXT_HOP when the NLRI field is non-empty) missing, only when the UPDATE carries NLRI | treat-as-withdraw | 3/3 Missing Well-known Attribute | 7606 §3 (d), 4760 §3 |
//! | ORIGIN length not 1, or value not 0/1/2 | treat-as-withdraw | 3/5, 3/6 Invalid ORIGIN | 7606 §7.1 |
//! | AS_PATH segment overrun, zero-length segment, undefined segment type | treat-as-withdraw | 3/11 Malformed AS_PATH | 7606 §7.2 |
//! | NEXT_HOP length not 4 | treat-as-withdraw | 3/5 | 7606 §7.3 |
//! | MULTI_EXIT_DISC or LOCAL_PREF length not 4 | treat-as-withdraw | 3/5 | 7606 §7.4, §7.5 |
//! | ATOMIC_AGGREGATE length not 0 | attribute-discard | 3/5 | 7606 §7.6 |
//! | AGGREGATOR length not 6 (2-octet session) / 8 (4-octet session) | attribute-discard | 3/5 | 7606 §7.7 |
//! | COMMUNITIES length not a non-zero multiple of 4 | treat-as-withdraw | 3/5 | 7606 §7.8 |
//! | ORIGINATOR_ID length not 4 | treat-as-withdraw | 3/5 | 7606 §7.9 |
//! | CLUSTER_LIST length not a non-zero multiple of 4 | treat-as-withdraw | 3/5 | 7606 §7.10 |
//! | MP_REACH_NLRI/MP_UNREACH_NLRI too short for AFI/SAFI | session-reset | 3/9 Optional Attribute Error | 7606 §7.11, 4760 §7 |
//! | MP_REACH_NLRI next-hop length not 4/16/32 (IPv4) or 16/32 (IPv6), or next hop overruns | afi-safi-disable | 3/9 | 7606 §7.11 |
//! | MP_REACH/MP_UNREACH NLRI: prefix length > 32/128, or prefix overruns | afi-safi-disable | 3/9 | 7606 §7.11, §5.3 |
//! | MP_REACH/MP_UNREACH for a family migroute does not model | kept raw, no error | — | 4760 |
//! | EXTENDED_COMMUNITIES length not a non-zero multiple of 8 | treat-as-withdraw | 3/5 | 7606 §7.14 |
//! | LARGE_COMMUNITIES length not a non-zero multiple of 12 | treat-as-withdraw | 3/5 | 8092 §6 |
//! | AS4_PATH/AS4_AGGREGATOR malformed, or received on a 4-octet session | attribute-discard | 3/9, 3/11 | 6793 §6, §3 |
//! | unknown optional transitive attribute | kept, Partial bit set | — | 4271 §5 |
//!
//! When several errors are found the harshest approach is the treatment (7606 §3).
//! Treat-as-withdraw is still applied to the families left when another error
//! disabled one, so that a bad ORIGIN never lets IPv4 NLRI through because IPv6 was
//! disabled by the same UPDATE. An UPDATE emptied by treat-as-withdraw is never
//! reported as End-of-RIB ([`codec::Decoded::end_of_rib`]).
//!
//! The speaker applies afi-safi-disable as RFC 4760 section 7 describes it: the
//! family's routes from that peer are deleted and its later UPDATEs ignored until the
//! session restarts (`PeerStatus::families_disabled`); the other families carry on.
//!
//! Not checked by the codec, because they need session state: LOCAL_PREF presence on
//! iBGP and its removal on eBGP (7606 §7.5), martian next hops, first AS on eBGP.

pub mod codec;
pub mod config;
mod driver;
pub mod error;
pub mod events;
pub mod fsm;
pub mod gr_store;
mod ifaddr;
pub mod md5;
pub mod negotiate;
pub mod policy;
pub mod rib;
pub mod speaker;
pub mod text_api;
pub mod tool;

pub use config::{MaxPrefix, MaxPrefixAction, PeerConfig, SpeakerConfig};
pub use error::SpeakerError;
pub use events::{PeerStatus, ReceivedRoute, SpeakerEvent};
pub use policy::{ExportPolicy, RouteAttrs};
pub use speaker::Speaker;
