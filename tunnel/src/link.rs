//! Link lookups by name, and the delete request: the small shared pieces every tunnel
//! kind needs.

use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::{is_enoent, Error, Result};
use crate::handle::NetlinkHandle;
use crate::request::{Request, FLAGS_ACK};

/// `RTM_GETLINK` for one name (a get, not a dump).
pub fn get_by_name(name: &str) -> Request {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    Request::new(RouteNetlinkMessage::GetLink(m), FLAGS_ACK)
}

/// `RTM_DELLINK` for one ifindex.
pub fn delete(ifindex: u32) -> Request {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    Request::new(RouteNetlinkMessage::DelLink(m), FLAGS_ACK)
}

/// The link named `name`, or `None` when the kernel has none.
pub async fn find(handle: &NetlinkHandle, name: &str) -> Result<Option<LinkMessage>> {
    match handle.query(get_by_name(name)).await {
        Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })),
        Err(e) if is_enoent(&e) => Ok(None),
        Err(source) => Err(Error::Dump {
            netns: handle.netns().clone(),
            what: "link",
            source,
        }),
    }
}

/// ifindex of `name`, or `None`.
pub async fn index_of(handle: &NetlinkHandle, name: &str) -> Result<Option<u32>> {
    Ok(find(handle, name).await?.map(|l| l.header.index))
}

/// The name carried by a link message.
pub fn name_of(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}
