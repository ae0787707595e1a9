//! The `ip rule` that sends lookups to migroute's table, one per address family.
//!
//! Kept separate from the routes so `ip rule` shows at a glance whether migroute is
//! steering anything; tagged with migroute's protocol so ownership can find it.

use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::{Deserialize, Serialize};

use crate::error::{is_eexist, is_enoent, Error, Result};
use crate::handle::NetlinkHandle;
use crate::ids::{PROTOCOL, RULE_PRIORITY, TABLE};
use crate::request::{Request, FLAGS_ACK, FLAGS_CREATE};

/// Address family of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
    /// The family of an address.
    pub fn of(addr: std::net::IpAddr) -> Self {
        if addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }
    fn af(self) -> AddressFamily {
        match self {
            Family::Ipv4 => AddressFamily::Inet,
            Family::Ipv6 => AddressFamily::Inet6,
        }
    }
}

/// `from all lookup migroute` at migroute's priority, tagged `proto migroute` (pure).
pub fn rule_message(family: Family) -> RuleMessage {
    rule_message_with(family, RULE_PRIORITY, TABLE)
}

/// A migroute-tagged rule with any priority and table (to delete leftovers exactly).
pub fn rule_message_with(family: Family, priority: u32, table: u32) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family.af();
    m.header.action = RuleAction::ToTable;
    m.header.table = 0;
    m.attributes.push(RuleAttribute::Table(table));
    m.attributes.push(RuleAttribute::Priority(priority));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::Other(PROTOCOL)));
    m
}

/// Add with `NLM_F_EXCL`: without it the kernel would happily add a duplicate rule.
pub fn add_request(family: Family) -> Request {
    Request::new(
        RouteNetlinkMessage::NewRule(rule_message(family)),
        FLAGS_CREATE,
    )
}

pub fn delete_request(family: Family) -> Request {
    Request::new(
        RouteNetlinkMessage::DelRule(rule_message(family)),
        FLAGS_ACK,
    )
}

/// Ensures the rule exists (EEXIST means it does).
pub async fn ensure(handle: &NetlinkHandle, family: Family) -> Result<()> {
    match handle.execute(add_request(family)).await {
        Ok(()) => Ok(()),
        Err(e) if is_eexist(&e) => Ok(()),
        Err(source) => Err(Error::RuleAdd {
            netns: handle.netns().clone(),
            priority: RULE_PRIORITY,
            table: TABLE,
            family: family.name(),
            source,
        }),
    }
}

/// Removes the rule; already gone is fine.
pub async fn remove(handle: &NetlinkHandle, family: Family) -> Result<()> {
    remove_exact(handle, family, RULE_PRIORITY, TABLE).await
}

/// Removes a migroute-tagged rule as observed; already gone is fine.
pub async fn remove_exact(
    handle: &NetlinkHandle,
    family: Family,
    priority: u32,
    table: u32,
) -> Result<()> {
    let req = Request::new(
        RouteNetlinkMessage::DelRule(rule_message_with(family, priority, table)),
        FLAGS_ACK,
    );
    match handle.execute(req).await {
        Ok(()) => Ok(()),
        Err(e) if is_enoent(&e) => Ok(()),
        Err(source) => Err(Error::RuleDelete {
            netns: handle.netns().clone(),
            priority,
            family: family.name(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_EXCL};

    #[test]
    fn rule_is_tagged_and_exclusive() {
        let req = add_request(Family::Ipv6);
        assert_ne!(
            req.flags & NLM_F_EXCL,
            0,
            "without EXCL the kernel adds duplicates"
        );
        let nl = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&req.to_bytes()).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRule(m)) = nl.payload else {
            panic!("not RTM_NEWRULE");
        };
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!(m.header.action, RuleAction::ToTable);
        assert!(m.attributes.contains(&RuleAttribute::Table(TABLE)));
        assert!(m
            .attributes
            .contains(&RuleAttribute::Priority(RULE_PRIORITY)));
        assert!(m
            .attributes
            .contains(&RuleAttribute::Protocol(RouteProtocol::Other(PROTOCOL))));
    }
}
