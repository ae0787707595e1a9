//! Socket options for BGP transport security: TCP-MD5 (RFC 2385, Linux
//! `TCP_MD5SIG`) and GTSM (RFC 5082, TTL 255 with a minimum accepted TTL).
//!
//! Both must be set before the connection exists (MD5 on the listening or connecting
//! socket, so that the SYN is signed), which is why the driver builds sockets with
//! `TcpSocket` and calls these on the raw descriptor.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

/// Longest key the kernel accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = 80;
/// `IPV6_MINHOPCOUNT` (linux/in6.h).
const IPV6_MINHOPCOUNT: libc::c_int = 73;

/// `struct tcp_md5sig` from linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: u32,
    key: [u8; MAX_KEY_LEN],
}

fn sockaddr(peer: IpAddr, v6_socket: bool) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let peer = match peer {
        IpAddr::V4(a) if v6_socket => IpAddr::V6(a.to_ipv6_mapped()),
        p => p,
    };
    match peer {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(a).to_be();
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    ss
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the given size for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Signs every segment to and from `peer` on socket `fd` with `password` (an empty
/// password removes the key). `v6_socket`: the socket is AF_INET6, so an IPv4 peer is
/// given as a mapped address.
pub fn set_md5(fd: RawFd, peer: IpAddr, password: &[u8], v6_socket: bool) -> io::Result<()> {
    if password.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP-MD5 password is {} bytes, the kernel takes at most {MAX_KEY_LEN}",
                password.len()
            ),
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr(peer, v6_socket),
        flags: 0,
        prefixlen: 0,
        keylen: password.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    sig.key[..password.len()].copy_from_slice(password);
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// Sends with TTL (hop limit) 255 without filtering what arrives: for a listening
/// socket shared by GTSM and ordinary peers, so that the SYN-ACK to a GTSM peer
/// already carries TTL 255 (accepted sockets inherit it).
pub fn set_outgoing_ttl(fd: RawFd, v6_socket: bool) -> io::Result<()> {
    let ttl: libc::c_int = 255;
    if v6_socket {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl)
    }
}

/// GTSM: send with TTL (hop limit) 255 and drop segments that arrive with less than
/// 254, so that only a directly connected peer can reach the session.
pub fn set_ttl_security(fd: RawFd, v6_socket: bool) -> io::Result<()> {
    let ttl: libc::c_int = 255;
    let min: libc::c_int = 254;
    if v6_socket {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
        setsockopt(fd, libc::IPPROTO_IPV6, IPV6_MINHOPCOUNT, &min)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn struct_matches_the_kernel_layout() {
        // linux/tcp.h: 128 + 1 + 1 + 2 + 4 + 80.
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn options_are_accepted_by_the_kernel() {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_md5(
            s.as_raw_fd(),
            "127.0.0.2".parse().unwrap(),
            b"secret",
            false,
        )
        .unwrap();
        set_ttl_security(s.as_raw_fd(), false).unwrap();
        let long = [b'x'; 81];
        assert!(set_md5(s.as_raw_fd(), "127.0.0.2".parse().unwrap(), &long, false).is_err());
    }
}
