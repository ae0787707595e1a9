//! Decode and encode errors, and the RFC 7606 action each UPDATE error calls for.
//!
//! Every error names the field and the byte offset (from the start of the message,
//! header included) where it was found. NOTIFICATION codes are derived from the error
//! in one place, [`DecodeError::notification`], never chosen at the site that finds
//! the error.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::bytes::HexBytes;
use super::iana::{attr_type, notif, Afi, Safi};
use super::notification::Notification;
use super::prefix::NlriError;

/// A message that cannot be processed: the session must be reset with the
/// NOTIFICATION from [`DecodeError::notification`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header: {0}")]
    Header(#[from] HeaderError),
    #[error("OPEN: {0}")]
    Open(#[from] OpenError),
    #[error("UPDATE: {0}")]
    Update(#[from] UpdateError),
    #[error("ROUTE-REFRESH: {0}")]
    RouteRefresh(#[from] RouteRefreshError),
}

impl DecodeError {
    /// The NOTIFICATION to send for this error.
    pub fn notification(&self) -> Notification {
        match self {
            DecodeError::Header(e) => e.notification(),
            DecodeError::Open(e) => e.notification(),
            DecodeError::Update(e) => e.notification(),
            DecodeError::RouteRefresh(e) => e.notification(),
        }
    }

    /// Byte offset of the error in the message.
    pub fn offset(&self) -> usize {
        match self {
            DecodeError::Header(e) => e.offset(),
            DecodeError::Open(e) => e.offset(),
            DecodeError::Update(e) => e.offset,
            DecodeError::RouteRefresh(_) => 16,
        }
    }
}

impl From<&DecodeError> for Notification {
    fn from(e: &DecodeError) -> Notification {
        e.notification()
    }
}

impl From<DecodeError> for Notification {
    fn from(e: DecodeError) -> Notification {
        e.notification()
    }
}

/// A broken header (RFC 4271 section 6.1). The stream cannot be resynchronized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("marker byte at offset {offset} is not 0xff")]
    BadMarker { offset: usize },
    #[error("length field {length} at offset {offset} is out of range for the message type")]
    BadLength { length: u16, offset: usize },
    #[error("message type {msg_type} at offset {offset} is not defined")]
    BadType { msg_type: u8, offset: usize },
    #[error("length field says {length} bytes but only {available} were given")]
    Truncated { length: usize, available: usize },
}

impl HeaderError {
    pub fn offset(&self) -> usize {
        match self {
            HeaderError::BadMarker { offset }
            | HeaderError::BadLength { offset, .. }
            | HeaderError::BadType { offset, .. } => *offset,
            HeaderError::Truncated { .. } => 16,
        }
    }

    /// RFC 4271 section 6.1: Connection Not Synchronized, Bad Message Length (data:
    /// the length field) or Bad Message Type (data: the type field).
    pub fn notification(&self) -> Notification {
        let (sub, data) = match self {
            HeaderError::BadMarker { .. } => (notif::CONNECTION_NOT_SYNCHRONIZED, vec![]),
            HeaderError::BadLength { length, .. } => {
                (notif::BAD_MESSAGE_LENGTH, length.to_be_bytes().to_vec())
            }
            HeaderError::Truncated { length, .. } => (
                notif::BAD_MESSAGE_LENGTH,
                (*length as u16).to_be_bytes().to_vec(),
            ),
            HeaderError::BadType { msg_type, .. } => (notif::BAD_MESSAGE_TYPE, vec![*msg_type]),
        };
        Notification::new(notif::MESSAGE_HEADER_ERROR, sub, data)
    }
}

/// An OPEN that cannot be accepted (RFC 4271 section 6.2, RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("version {version} at offset {offset} is not 4")]
    UnsupportedVersion { version: u8, offset: usize },
    #[error("hold time {hold_time} at offset {offset} is 1 or 2 seconds")]
    UnacceptableHoldTime { hold_time: u16, offset: usize },
    #[error("BGP identifier at offset {offset} is 0.0.0.0")]
    BadBgpIdentifier { offset: usize },
    #[error("optional parameter type {param_type} at offset {offset} is not supported")]
    UnsupportedOptionalParameter { param_type: u8, offset: usize },
    #[error("{field} at offset {offset}: {reason}")]
    Malformed {
        field: &'static str,
        offset: usize,
        reason: String,
    },
}

impl OpenError {
    pub fn offset(&self) -> usize {
        match self {
            OpenError::UnsupportedVersion { offset, .. }
            | OpenError::UnacceptableHoldTime { offset, .. }
            | OpenError::BadBgpIdentifier { offset }
            | OpenError::UnsupportedOptionalParameter { offset, .. }
            | OpenError::Malformed { offset, .. } => *offset,
        }
    }

    /// RFC 4271 section 6.2; a malformed capability has no subcode of its own, so it
    /// gets Unspecific (RFC 4271 errata, as FRR and GoBGP do).
    pub fn notification(&self) -> Notification {
        let (sub, data) = match self {
            // Data: the largest supported version, as two octets.
            OpenError::UnsupportedVersion { .. } => (notif::UNSUPPORTED_VERSION_NUMBER, vec![0, 4]),
            OpenError::UnacceptableHoldTime { .. } => (notif::UNACCEPTABLE_HOLD_TIME, vec![]),
            OpenError::BadBgpIdentifier { .. } => (notif::BAD_BGP_IDENTIFIER, vec![]),
            OpenError::UnsupportedOptionalParameter { .. } => {
                (notif::UNSUPPORTED_OPTIONAL_PARAMETER, vec![])
            }
            OpenError::Malformed { .. } => (notif::UNSPECIFIC, vec![]),
        };
        Notification::new(notif::OPEN_MESSAGE_ERROR, sub, data)
    }
}

/// A ROUTE-REFRESH of the wrong length (RFC 7313 section 5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("length {length} is not 23")]
pub struct RouteRefreshError {
    pub length: usize,
    /// The whole message, which RFC 7313 puts in the NOTIFICATION data.
    pub message: HexBytes,
}

impl RouteRefreshError {
    pub fn notification(&self) -> Notification {
        Notification::new(
            notif::ROUTE_REFRESH_MESSAGE_ERROR,
            notif::INVALID_MESSAGE_LENGTH,
            self.message.0.clone(),
        )
    }
}

/// What RFC 7606 says to do about one error in an UPDATE, from mildest to harshest.
/// The order matters: when several errors are found, the harshest wins (RFC 7606
/// section 3, last paragraph).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttrAction {
    /// Drop the attribute and process the rest of the UPDATE (section 2).
    AttributeDiscard,
    /// Treat every NLRI of the UPDATE as withdrawn (section 2).
    TreatAsWithdraw,
    /// Withdraw all routes of the family and ignore it for the rest of the session
    /// (section 2, RFC 4760 section 7).
    AfiSafiDisable,
    /// Send a NOTIFICATION and close the session (section 2).
    SessionReset,
}

impl fmt::Display for AttrAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttrAction::AttributeDiscard => "attribute-discard",
            AttrAction::TreatAsWithdraw => "treat-as-withdraw",
            AttrAction::AfiSafiDisable => "afi-safi-disable",
            AttrAction::SessionReset => "session-reset",
        })
    }
}

/// Where in an UPDATE an error was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateField {
    WithdrawnRoutesLength,
    WithdrawnRoutes,
    TotalPathAttributeLength,
    /// The attribute list itself (a header that does not fit).
    PathAttributes,
    /// A path attribute, by type code.
    Attribute(u8),
    Nlri,
}

impl fmt::Display for UpdateField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateField::WithdrawnRoutesLength => f.write_str("Withdrawn Routes Length"),
            UpdateField::WithdrawnRoutes => f.write_str("Withdrawn Routes"),
            UpdateField::TotalPathAttributeLength => f.write_str("Total Path Attribute Length"),
            UpdateField::PathAttributes => f.write_str("Path Attributes"),
            UpdateField::Attribute(t) => match attr_type::name(*t) {
                "unrecognized attribute" => write!(f, "attribute type {t}"),
                name => f.write_str(name),
            },
            UpdateField::Nlri => f.write_str("NLRI"),
        }
    }
}

/// What is wrong, independent of where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateErrorKind {
    #[error("length {declared} overruns the {available} bytes available")]
    LengthOverrun { declared: usize, available: usize },
    #[error("{available} bytes left, too few for an attribute header")]
    AttributeHeaderTruncated { available: usize },
    #[error("flags {flags:#04x} conflict with the attribute's optional/transitive bits")]
    AttributeFlags { flags: u8 },
    #[error("length {length} is invalid for the attribute")]
    AttributeLength { length: usize },
    #[error("attribute appears more than once")]
    Duplicate,
    #[error("well-known mandatory attribute {} is missing", attr_type::name(*type_code))]
    MissingWellKnown { type_code: u8 },
    #[error("well-known attribute type {type_code} is not recognized")]
    UnrecognizedWellKnown { type_code: u8 },
    #[error("undefined ORIGIN value {value}")]
    InvalidOrigin { value: u8 },
    #[error("malformed AS path: {reason}")]
    MalformedAsPath { reason: &'static str },
    #[error("next hop length {length} is not 4, 16 or 32 for {afi:?}/{safi:?}")]
    MpNextHopLength { length: usize, afi: Afi, safi: Safi },
    #[error("{0}")]
    Nlri(NlriError),
    #[error("{what} on a session that {why}")]
    Context {
        what: &'static str,
        why: &'static str,
    },
}

/// One error found in an UPDATE, with the RFC 7606 action it calls for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} at offset {offset}: {kind} ({action})")]
pub struct UpdateError {
    pub field: UpdateField,
    pub offset: usize,
    pub kind: UpdateErrorKind,
    pub action: AttrAction,
    /// The family to disable, for [`AttrAction::AfiSafiDisable`].
    pub afi_safi: Option<(Afi, Safi)>,
    /// NOTIFICATION data should the session be reset: the attribute as received
    /// (RFC 4271 section 6.3), or nothing.
    pub data: HexBytes,
}

impl UpdateError {
    /// The UPDATE Message Error subcode for this error (RFC 4271 section 6.3, RFC 4760
    /// section 7 for MP_REACH/MP_UNREACH, RFC 7606 section 3 for duplicates).
    pub fn notification(&self) -> Notification {
        use UpdateErrorKind as K;
        let mp = matches!(
            self.field,
            UpdateField::Attribute(attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI)
        );
        let sub = match (&self.kind, self.field) {
            (_, _) if mp && !matches!(self.kind, K::Duplicate | K::AttributeFlags { .. }) => {
                notif::OPTIONAL_ATTRIBUTE_ERROR
            }
            (K::Nlri(_), _) => notif::INVALID_NETWORK_FIELD,
            (K::LengthOverrun { .. }, UpdateField::Attribute(_)) => notif::ATTRIBUTE_LENGTH_ERROR,
            (K::LengthOverrun { .. } | K::AttributeHeaderTruncated { .. } | K::Duplicate, _) => {
                notif::MALFORMED_ATTRIBUTE_LIST
            }
            (K::AttributeFlags { .. }, _) => notif::ATTRIBUTE_FLAGS_ERROR,
            (K::AttributeLength { .. }, _) => notif::ATTRIBUTE_LENGTH_ERROR,
            (K::MissingWellKnown { .. }, _) => notif::MISSING_WELL_KNOWN_ATTRIBUTE,
            (K::UnrecognizedWellKnown { .. }, _) => notif::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
            (K::InvalidOrigin { .. }, _) => notif::INVALID_ORIGIN_ATTRIBUTE,
            (K::MalformedAsPath { .. }, _) => notif::MALFORMED_AS_PATH,
            (K::MpNextHopLength { .. } | K::Context { .. }, _) => notif::OPTIONAL_ATTRIBUTE_ERROR,
        };
        Notification::new(notif::UPDATE_MESSAGE_ERROR, sub, self.data.0.clone())
    }
}

/// A message that cannot be put on the wire as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message is {length} bytes, more than the session's {max}")]
    TooLong { length: usize, max: usize },
    #[error("{field}: AS {asn} does not fit in 2 octets on a session without 4-octet AS (use AS_TRANS and AS4_PATH)")]
    AsnTooWide { field: &'static str, asn: u32 },
    #[error("{field}: {count} ASNs do not fit in one AS path segment (max 255)")]
    SegmentTooLong { field: &'static str, count: usize },
    #[error("{field}: value of {length} bytes exceeds 65535")]
    ValueTooLong { field: &'static str, length: usize },
    #[error("{field}: prefix {prefix} is not of family {family}")]
    WrongFamily {
        field: &'static str,
        prefix: String,
        family: &'static str,
    },
    #[error("{field}: prefix {prefix} lacks a path identifier on an add-path session")]
    MissingPathId { field: &'static str, prefix: String },
    #[error("{field}: prefix {prefix} has a path identifier but add-path is off")]
    UnexpectedPathId { field: &'static str, prefix: String },
    #[error("{field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}
