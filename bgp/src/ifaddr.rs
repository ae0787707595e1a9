//! Our IPv6 address beside an IPv4 one: the next hop for IPv6 routes sent on a session
//! that runs over IPv4 (MP-BGP carries IPv6 NLRI there, but the session's own address
//! cannot be their next hop). FRR does the same with the interface's global address.

use std::net::{Ipv4Addr, Ipv6Addr};

use nix::ifaddrs::getifaddrs;

/// The first global IPv6 address on the interface that holds `v4`, in the calling
/// thread's network namespace.
pub(crate) fn ipv6_beside(v4: Ipv4Addr) -> Option<Ipv6Addr> {
    let addrs: Vec<_> = getifaddrs().ok()?.collect();
    let ifname = addrs.iter().find_map(|a| {
        let sin = a.address.as_ref()?.as_sockaddr_in()?;
        (sin.ip() == v4).then(|| a.interface_name.clone())
    })?;
    addrs
        .iter()
        .filter(|a| a.interface_name == ifname)
        .filter_map(|a| Some(a.address.as_ref()?.as_sockaddr_in6()?.ip()))
        .find(is_global)
}

/// Not link-local, loopback or unspecified: usable as a next hop off the link.
fn is_global(ip: &Ipv6Addr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_unicast_link_local() || ip.is_multicast())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_global_ipv6_beside_it() {
        // ::1 is on lo next to 127.0.0.1, but it is no next hop.
        assert_eq!(ipv6_beside(Ipv4Addr::LOCALHOST), None);
    }

    #[test]
    fn link_local_is_not_global() {
        assert!(!is_global(&"fe80::1".parse().unwrap()));
        assert!(is_global(&"2001:db8::1".parse().unwrap()));
    }
}
