//! Hearing the VM at the destination (`pe.detect_vm`): right after a migration QEMU
//! announces the VM with RARP frames from its MAC, and a guest that announces itself
//! sends gratuitous ARP or unsolicited IPv6 neighbour advertisements. Whichever is heard
//! first on the VM-facing interface tells the owner task, which announces the VM's
//! route at once and tells the source to switch over and announce: the switch no longer
//! waits for the migration software's webhook, and needs none (the libvirt hook).
//!
//! [`classify`] is the pure part (frame bytes → what was heard), decoded with
//! `etherparse`; [`PacketSocket`] is an `AF_PACKET` socket bound to the interface in the
//! agent's namespace, with a classic BPF filter so the kernel passes only the three
//! kinds of frame.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use etherparse::{ArpHardwareId, ArpPacketSlice, EtherType, Icmpv6Type, NetSlice, SlicedPacket};
use migroute_orchestration::pe::MacAddr;
use migroute_tunnel::Netns;
use tokio::io::unix::AsyncFd;

use super::runtime::AgentHandle;

/// RARP's EtherType (RFC 903); `etherparse` has no constant for it.
pub const ETHERTYPE_RARP: u16 = 0x8035;
/// ICMPv6 neighbour advertisement (RFC 4861 §4.4).
const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// The Solicited flag of a neighbour advertisement: clear in an unsolicited one.
const NA_SOLICITED: u8 = 0x40;

/// What a frame says about a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// RARP from this MAC (QEMU's post-migration announcement).
    Mac(MacAddr),
    /// Gratuitous ARP or unsolicited neighbour advertisement for this address.
    Addr(IpAddr),
}

/// Classifies one Ethernet frame: RARP (by its sender hardware address), gratuitous
/// ARP (sender IP = target IP), or an unsolicited neighbour advertisement (its target
/// address). Anything else, or anything malformed, is `None`.
pub fn classify(frame: &[u8]) -> Option<Heard> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let link = packet.link.as_ref()?.ether_payload()?;
    if link.ether_type == EtherType(ETHERTYPE_RARP) {
        let arp = ArpPacketSlice::from_slice(link.payload).ok()?;
        if arp.hw_addr_type() != ArpHardwareId::ETHERNET {
            return None;
        }
        let mac: [u8; 6] = arp.sender_hw_addr().try_into().ok()?;
        return Some(Heard::Mac(MacAddr(mac)));
    }
    match packet.net.as_ref()? {
        NetSlice::Arp(arp) => {
            if arp.proto_addr_type() != EtherType::IPV4 {
                return None;
            }
            let sender: [u8; 4] = arp.sender_protocol_addr().try_into().ok()?;
            let target: [u8; 4] = arp.target_protocol_addr().try_into().ok()?;
            let ip = Ipv4Addr::from(sender);
            (sender == target && !ip.is_unspecified()).then_some(Heard::Addr(IpAddr::V4(ip)))
        }
        NetSlice::Ipv6(_) => {
            let icmp = match packet.transport.as_ref()? {
                etherparse::TransportSlice::Icmpv6(icmp) => icmp,
                _ => return None,
            };
            let Icmpv6Type::Unknown {
                type_u8: ICMPV6_NEIGHBOR_ADVERTISEMENT,
                code_u8: 0,
                bytes5to8,
            } = icmp.icmp_type()
            else {
                return None;
            };
            if bytes5to8[0] & NA_SOLICITED != 0 {
                return None;
            }
            let target: [u8; 16] = icmp.payload().get(..16)?.try_into().ok()?;
            Some(Heard::Addr(IpAddr::V6(Ipv6Addr::from(target))))
        }
        _ => None,
    }
}

/// Classic BPF: accept RARP, ARP, and IPv6 ICMPv6 type 136 without extension headers
/// (what a neighbour advertisement looks like on the wire); drop the rest in the kernel.
fn filter() -> [libc::sock_filter; 10] {
    const LDH_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
    const LDB_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        op(LDH_ABS, 0, 0, 12),                                   // 0: EtherType
        op(JEQ, 6, 0, u32::from(ETHERTYPE_RARP)),                // 1: → accept
        op(JEQ, 5, 0, 0x0806),                                   // 2: ARP → accept
        op(JEQ, 0, 5, 0x86dd),                                   // 3: not IPv6 → drop
        op(LDB_ABS, 0, 0, 14 + 6),                               // 4: next header
        op(JEQ, 0, 3, 58),                                       // 5: not ICMPv6 → drop
        op(LDB_ABS, 0, 0, 14 + 40),                              // 6: ICMPv6 type
        op(JEQ, 0, 1, u32::from(ICMPV6_NEIGHBOR_ADVERTISEMENT)), // 7: not NA → drop
        op(RET, 0, 0, 0xffff),                                   // 8: accept
        op(RET, 0, 0, 0),                                        // 9: drop
    ]
}

/// An `AF_PACKET` socket receiving the frames of one interface.
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
}

impl PacketSocket {
    /// Opens a socket on `ifname` in `netns`. The socket is created by a thread that
    /// entered the namespace, and stays in it: the interface index is looked up there
    /// too. Needs `CAP_NET_RAW`.
    pub async fn open(netns: &Netns, ifname: &str) -> io::Result<Self> {
        let name = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        let fd = super::sysctl::run_in(netns, move || open_bound(&name)).await?;
        // SAFETY: `fd` is an open socket owned by the `AsyncFd` from here on; an
        // `OwnedFd` always returns that same descriptor.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(PacketSocket { fd })
    }

    /// The next frame received (not sent) on the interface, into `buf`; returns its
    /// length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_incoming(fd.get_ref(), buf)) {
                Ok(Ok(Some(n))) => return Ok(n),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn open_bound(ifname: &std::ffi::CStr) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain libc calls on a descriptor we own; every pointer passed refers to a
    // live local of the size given.
    unsafe {
        let ifindex = libc::if_nametoindex(ifname.as_ptr());
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("interface {ifname:?}: {}", io::Error::last_os_error()),
            ));
        }
        let raw = cvt(libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::c_int::from(proto),
        ))?;
        let fd = OwnedFd::from_raw_fd(raw);
        let prog = filter();
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        cvt(libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        ))?;
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        cvt(libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        ))?;
        Ok(fd)
    }
}

/// One frame, or `None` for a frame this host sent (an `ETH_P_ALL` socket sees both).
fn recv_incoming(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` and `addr` are live and sized as passed.
    unsafe {
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        let n = libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut addr as *mut libc::sockaddr_ll).cast(),
            &mut len,
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((addr.sll_pkttype != libc::PACKET_OUTGOING).then_some(n as usize))
    }
}

/// Listens on `socket` until the owner task is gone, handing every VM sighting to it.
pub async fn listen(socket: PacketSocket, agent: AgentHandle) {
    let mut buf = vec![0u8; 2048];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "VM detection: receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(heard) = classify(&buf[..n]) else {
            continue;
        };
        if agent.vm_seen(heard).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{ArpOperation, ArpPacket, Ethernet2Header, PacketBuilder};

    const VM_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn arp_frame(ether_type: u16, op: ArpOperation, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let arp = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            op,
            &VM_MAC,
            &sender,
            &[0xff; 6],
            &target,
        )
        .unwrap();
        let mut out = Vec::new();
        Ethernet2Header {
            source: VM_MAC,
            destination: [0xff; 6],
            ether_type: EtherType(ether_type),
        }
        .write(&mut out)
        .unwrap();
        arp.write(&mut out).unwrap();
        out
    }

    fn na_frame(flags: u8, target: Ipv6Addr) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2(VM_MAC, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(
                target.octets(),
                "ff02::1".parse::<Ipv6Addr>().unwrap().octets(),
                255,
            )
            .icmpv6(Icmpv6Type::Unknown {
                type_u8: ICMPV6_NEIGHBOR_ADVERTISEMENT,
                code_u8: 0,
                bytes5to8: [flags, 0, 0, 0],
            });
        let payload = target.octets();
        let mut out = Vec::new();
        builder.write(&mut out, &payload).unwrap();
        out
    }

    #[test]
    fn rarp_names_the_mac() {
        // QEMU's announcement: reverse request, no protocol addresses.
        let f = arp_frame(ETHERTYPE_RARP, ArpOperation(3), [0; 4], [0; 4]);
        assert_eq!(classify(&f), Some(Heard::Mac(MacAddr(VM_MAC))));
    }

    #[test]
    fn gratuitous_arp_names_the_address_and_other_arp_is_ignored() {
        let ip = [10, 10, 0, 5];
        for op in [ArpOperation::REQUEST, ArpOperation::REPLY] {
            let f = arp_frame(0x0806, op, ip, ip);
            assert_eq!(classify(&f), Some(Heard::Addr(IpAddr::from(ip))));
        }
        let asking = arp_frame(0x0806, ArpOperation::REQUEST, ip, [10, 10, 0, 1]);
        assert_eq!(classify(&asking), None);
        let probe = arp_frame(0x0806, ArpOperation::REQUEST, [0; 4], [0; 4]);
        assert_eq!(classify(&probe), None);
    }

    #[test]
    fn unsolicited_neighbour_advertisement_names_its_target() {
        let vm: Ipv6Addr = "2001:db8:10::5".parse().unwrap();
        // Override flag only: unsolicited.
        assert_eq!(
            classify(&na_frame(0x20, vm)),
            Some(Heard::Addr(IpAddr::V6(vm)))
        );
        // Solicited: an answer to someone's question, not an announcement.
        assert_eq!(classify(&na_frame(0x60, vm)), None);
    }

    #[test]
    fn garbage_and_other_traffic_are_ignored() {
        assert_eq!(classify(&[]), None);
        assert_eq!(classify(&[0u8; 13]), None);
        let f = arp_frame(ETHERTYPE_RARP, ArpOperation(3), [0; 4], [0; 4]);
        assert_eq!(classify(&f[..20]), None, "truncated RARP");
        let builder = PacketBuilder::ethernet2(VM_MAC, [0xff; 6])
            .ipv4([10, 10, 0, 5], [10, 10, 0, 1], 64)
            .udp(1, 2);
        let mut udp = Vec::new();
        builder.write(&mut udp, b"hi").unwrap();
        assert_eq!(classify(&udp), None);
    }

    #[test]
    fn the_filter_passes_exactly_the_frames_classify_reads() {
        // Run the BPF program over frames with a tiny interpreter of the opcodes used.
        fn run(prog: &[libc::sock_filter], frame: &[u8]) -> bool {
            let mut pc = 0;
            let mut acc: u32 = 0;
            loop {
                let i = prog[pc];
                let class = u32::from(i.code) & 0x07;
                match class {
                    c if c == libc::BPF_LD => {
                        let k = i.k as usize;
                        acc = if u32::from(i.code) & 0x18 == libc::BPF_H {
                            match frame.get(k..k + 2) {
                                Some(b) => u32::from(u16::from_be_bytes([b[0], b[1]])),
                                None => return false,
                            }
                        } else {
                            match frame.get(k) {
                                Some(b) => u32::from(*b),
                                None => return false,
                            }
                        };
                        pc += 1;
                    }
                    c if c == libc::BPF_JMP => {
                        pc += 1 + usize::from(if acc == i.k { i.jt } else { i.jf });
                    }
                    _ => return i.k != 0,
                }
            }
        }
        let prog = filter();
        let vm: Ipv6Addr = "2001:db8:10::5".parse().unwrap();
        let ip = [10, 10, 0, 5];
        assert!(run(
            &prog,
            &arp_frame(ETHERTYPE_RARP, ArpOperation(3), [0; 4], [0; 4])
        ));
        assert!(run(
            &prog,
            &arp_frame(0x0806, ArpOperation::REQUEST, ip, ip)
        ));
        assert!(run(&prog, &na_frame(0x20, vm)));
        let builder = PacketBuilder::ethernet2(VM_MAC, [0xff; 6])
            .ipv6(vm.octets(), vm.octets(), 64)
            .udp(1, 2);
        let mut udp6 = Vec::new();
        builder.write(&mut udp6, b"hi").unwrap();
        assert!(!run(&prog, &udp6));
    }
}
