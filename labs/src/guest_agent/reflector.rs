//! The UDP reflector: every datagram goes back unchanged to its sender, so the probe's
//! open-loop stream can be counted where it started ([`crate::probe::udp::echo_probe`]).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::probe::udp::{enlarge_rcvbuf, RCVBUF};

/// How often a blocked receive looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// A bound reflector.
pub struct Reflector {
    sock: UdpSocket,
}

impl Reflector {
    /// Binds `addr` (`[::]:port` also serves IPv4) with a large receive buffer: the
    /// guest's vCPU may not run for a while and must not drop the probe itself.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let sock = UdpSocket::bind(addr)?;
        enlarge_rcvbuf(&sock, RCVBUF);
        sock.set_read_timeout(Some(POLL))?;
        Ok(Reflector { sock })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Reflects until `stop` is set; returns how many datagrams went back.
    pub fn run(self, stop: &AtomicBool) -> u64 {
        let mut buf = vec![0u8; 65536];
        let mut reflected = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(r) => r,
                // Timeouts (to look at `stop`), and ICMP errors some kernels report.
                Err(_) => continue,
            };
            if self.sock.send_to(&buf[..n], from).is_ok() {
                reflected += 1;
            }
        }
        reflected
    }

    /// [`Reflector::run`] on its own thread.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
        std::thread::spawn(move || self.run(&stop))
    }
}
