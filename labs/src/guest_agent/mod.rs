//! The in-guest agent of the KVM lab (binary `migroute-guest`, put into the guest's
//! initramfs by [`crate::kvm::with_agent`]), and the host side that talks to it.
//!
//! A live-migration scenario needs the guest to take part in the measurement, since the
//! probe's receiver cannot run inside it:
//! - UDP port 7351 reflects every datagram to its sender, so the open-loop stream is
//!   counted back where it started ([`crate::probe::udp::echo_probe`]);
//! - TCP port 7352 echoes, for the connection-survival probe;
//! - a disk writer puts a sequence-numbered 4 KiB record on `/dev/vda` every 20 ms with
//!   `O_DIRECT|O_DSYNC`, and counts the last acknowledged one, so that after the move
//!   the image can be checked for every acknowledged write ([`check_records`]);
//! - UDP port 7353 answers `status`, `stop-writes` and `poweroff` ([`control`]).
//!
//! Plain std threads and blocking sockets: the guest is a busybox initramfs on an
//! emulated CPU.

mod control;
mod disk;
mod echo;
mod records;
mod reflector;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use control::{control, GuestStatus, PowerOff, Request};
pub use disk::{DiskConfig, DiskWriter};
pub use echo::TcpEcho;
pub use records::{
    check_records, check_slots, fill_record, parse_record, slot_offset, RecordCheck, BLOCK_SIZE,
};
pub use reflector::Reflector;

/// Default UDP reflector port.
pub const UDP_PORT: u16 = 7351;
/// Default TCP echo port.
pub const TCP_PORT: u16 = 7352;
/// Default control port.
pub const CONTROL_PORT: u16 = 7353;
/// The line the agent prints on the console once its ports are open.
pub const READY_LINE: &str = "migroute-guest: ready";

/// What the agent serves and where.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Address the three ports bind; `::` (the default) also serves IPv4, and falls
    /// back to `0.0.0.0` on a kernel without IPv6.
    pub bind: IpAddr,
    /// The reflector's port (0: any).
    pub udp_port: u16,
    /// The echo server's port (0: any).
    pub tcp_port: u16,
    /// The control port (0: any).
    pub control_port: u16,
    /// The disk writer's device and schedule.
    pub disk: DiskConfig,
    /// What `poweroff` does.
    pub power_off: PowerOff,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            bind: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            udp_port: UDP_PORT,
            tcp_port: TCP_PORT,
            control_port: CONTROL_PORT,
            disk: DiskConfig {
                path: PathBuf::from("/dev/vda"),
                wait: Duration::from_secs(10),
                interval: Duration::from_millis(20),
            },
            power_off: PowerOff::Halt,
        }
    }
}

/// The running agent. Dropping it stops every thread (within ~200 ms).
pub struct Agent {
    /// Where the reflector is bound (the configured port may have been 0).
    pub udp_addr: SocketAddr,
    /// Where the echo server is bound.
    pub tcp_addr: SocketAddr,
    /// Where the control server is bound.
    pub control_addr: SocketAddr,
    /// The disk writer, shared with the control server.
    pub disk: Arc<DiskWriter>,
    stop: Arc<AtomicBool>,
    exit: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds `ip:port`, falling back to IPv4's wildcard when IPv6's is not available.
fn bind_with_fallback<T>(
    ip: IpAddr,
    port: u16,
    bind: impl Fn(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    match bind(SocketAddr::new(ip, port)) {
        Err(e) if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)).map_err(|_| e)
        }
        r => r,
    }
}

impl Agent {
    /// Binds all three ports (so a failure is reported before anything runs), then
    /// starts the reflector, the echo server, the control server and the disk writer.
    pub fn start(cfg: AgentConfig) -> io::Result<Agent> {
        let reflector = bind_with_fallback(cfg.bind, cfg.udp_port, Reflector::bind)?;
        let tcp = bind_with_fallback(cfg.bind, cfg.tcp_port, TcpEcho::bind)?;
        let ctl = bind_with_fallback(cfg.bind, cfg.control_port, UdpSocket::bind)?;
        let (udp_addr, tcp_addr, control_addr) = (
            reflector.local_addr()?,
            tcp.local_addr()?,
            ctl.local_addr()?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let disk = Arc::new(DiskWriter::start(cfg.disk));
        let (exit_tx, exit) = mpsc::channel();
        let mut threads = Vec::new();
        let s = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            reflector.run(&s);
        }));
        threads.push(tcp.spawn(Arc::clone(&stop)));
        let (d, s) = (Arc::clone(&disk), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            control::serve(ctl, d, cfg.power_off, exit_tx, s)
        }));
        Ok(Agent {
            udp_addr,
            tcp_addr,
            control_addr,
            disk,
            stop,
            exit,
            threads,
        })
    }

    /// Blocks until a `poweroff` request under [`PowerOff::Exit`] (with
    /// [`PowerOff::Halt`] the machine goes down instead and this never returns).
    pub fn wait(&self) {
        let _ = self.exit.recv();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.disk.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Whether this process runs from an initramfs (`/` is the kernel's `rootfs`): only
/// there does `poweroff` by default power the machine off, never on a host.
pub fn in_initramfs() -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mnt, fs) = (f.next(), f.next(), f.next());
            mnt == Some("/") && fs == Some("rootfs")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tcp::{run_client, TcpConfig};
    use crate::probe::udp::{echo_probe, RecvOptions, SendConfig};

    #[test]
    fn agent_on_loopback_reflects_echoes_writes_and_exits_on_poweroff() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        std::fs::write(&disk, vec![0u8; 256 * BLOCK_SIZE as usize]).unwrap();
        let agent = Agent::start(AgentConfig {
            bind: "127.0.0.1".parse().unwrap(),
            udp_port: 0,
            tcp_port: 0,
            control_port: 0,
            disk: DiskConfig {
                path: disk.clone(),
                wait: Duration::from_secs(1),
                interval: Duration::from_millis(5),
            },
            power_off: PowerOff::Exit,
        })
        .unwrap();
        let t = Duration::from_secs(2);
        let (sent, r) = echo_probe(
            &SendConfig::new(agent.udp_addr, Duration::from_millis(300)),
            RecvOptions::default(),
        )
        .unwrap();
        assert_eq!((sent.sent, r.received, r.lost), (300, 300, 0), "{r:?}");
        // Sequential connections to the same long-lived server.
        for _ in 0..2 {
            let c = run_client(&TcpConfig::new(agent.tcp_addr, Duration::from_millis(100)));
            assert!(c.survived, "{c:?}");
        }
        let a = control(agent.control_addr, "status", t).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let b = control(agent.control_addr, "status", t).unwrap();
        assert!(b.writing && b.acked > a.acked, "{a:?} then {b:?}");
        assert_eq!((b.block_size, b.blocks), (BLOCK_SIZE, 256));
        let stopped = control(agent.control_addr, "stop-writes", t).unwrap();
        assert!(!stopped.writing);
        let e = control(agent.control_addr, "bogus", t).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let off = control(agent.control_addr, "poweroff", t).unwrap();
        assert_eq!(off.ok, Some(true));
        assert_eq!(off.acked, stopped.acked);
        agent.wait();
        drop(agent);
        let c = check_records(&disk, stopped.acked.unwrap(), BLOCK_SIZE, 256).unwrap();
        assert!(c.is_complete() && c.checked > 10, "{c:?}");
    }

    #[test]
    fn tests_do_not_run_from_an_initramfs() {
        assert!(!in_initramfs());
    }
}
