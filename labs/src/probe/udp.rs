//! The open-loop UDP stream: the sender keeps its schedule whatever happens to the
//! packets (a late sender catches up rather than drifting), the receiver records every
//! sequence number and builds a [`UdpReport`].

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::report::{RunInfo, Slot, UdpReport};
use super::unix_ns;
use super::wire::{Header, Kind, HEADER_LEN};

/// Refuse sequence numbers beyond this (a stray datagram must not allocate gigabytes):
/// one hour at 100 kpps.
const MAX_SEQ: u64 = 360_000_000;

/// Receive buffer asked for: seconds of traffic at 1 kpps.
pub(crate) const RCVBUF: libc::c_int = 8 << 20;

/// Best effort: `SO_RCVBUFFORCE` (root may exceed `rmem_max`), else `SO_RCVBUF`.
pub(crate) fn enlarge_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) {
    use std::os::unix::io::AsRawFd;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on a valid fd with a pointer to a live c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// What to send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendConfig {
    pub target: SocketAddr,
    pub rate_pps: u32,
    pub duration: Duration,
    /// Datagram size in bytes (at least the 48-byte header).
    pub size: usize,
}

impl SendConfig {
    /// 1000 packets/s of 64 bytes for `duration`.
    pub fn new(target: SocketAddr, duration: Duration) -> Self {
        SendConfig {
            target,
            rate_pps: 1000,
            duration,
            size: 64,
        }
    }
}

/// What the sender did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    pub run_id: u64,
    pub target: SocketAddr,
    pub sent: u64,
    /// Sends the kernel refused (no route, unreachable, …): counted in `sent`, since
    /// for the stream they are lost packets.
    pub send_errors: u64,
    pub start_unix_ns: u64,
    pub last_send_unix_ns: u64,
    /// How far behind schedule the sender ever was, in µs (a loaded machine shows here).
    pub max_lag_us: u64,
}

/// The wildcard address of `target`'s family, port 0.
fn ephemeral_for(target: SocketAddr) -> SocketAddr {
    if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    }
}

/// Sends the stream, then an end marker (five times, 10 ms apart) carrying the count.
pub fn send(cfg: &SendConfig) -> io::Result<SendReport> {
    let sock = UdpSocket::bind(ephemeral_for(cfg.target))?;
    send_on(&sock, cfg)
}

/// [`send`] from an existing socket (the echo probe receives the reflections on it).
fn send_on(sock: &UdpSocket, cfg: &SendConfig) -> io::Result<SendReport> {
    let rate = cfg.rate_pps.max(1) as u64;
    let interval_ns = 1_000_000_000 / rate;
    let total = (cfg.duration.as_nanos() as u64).saturating_mul(rate) / 1_000_000_000;
    let run_id = unix_ns() ^ ((std::process::id() as u64) << 32);
    let mut buf = vec![0u8; cfg.size.max(HEADER_LEN)];
    let t0 = Instant::now();
    let start_ns = unix_ns();
    let mut header = Header {
        kind: Kind::Data,
        run_id,
        seq: 0,
        send_ns: 0,
        start_ns,
        interval_ns,
    };
    let (mut errors, mut max_lag, mut last_send) = (0u64, 0u64, start_ns);
    for seq in 0..total {
        let due = t0 + Duration::from_nanos(seq * interval_ns);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            max_lag = max_lag.max((now - due).as_micros() as u64);
        }
        header.seq = seq;
        header.send_ns = unix_ns();
        last_send = header.send_ns;
        header.encode(&mut buf);
        if sock.send_to(&buf, cfg.target).is_err() {
            errors += 1;
        }
    }
    header.kind = Kind::End;
    header.seq = total;
    header.send_ns = last_send;
    header.encode(&mut buf);
    for _ in 0..5 {
        let _ = sock.send_to(&buf, cfg.target);
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(SendReport {
        run_id,
        target: cfg.target,
        sent: total,
        send_errors: errors,
        start_unix_ns: start_ns,
        last_send_unix_ns: last_send,
        max_lag_us: max_lag,
    })
}

/// When the receiver stops.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RecvOptions {
    /// Give up if no packet arrives at all within this time.
    pub first_packet_timeout: Duration,
    /// After the first packet, stop when nothing arrived for this long (a lost end
    /// marker, a dead sender). Must exceed the longest outage to be measured.
    pub idle_timeout: Duration,
}

impl Default for RecvOptions {
    fn default() -> Self {
        RecvOptions {
            first_packet_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// A bound receiver: bind first, then start the sender, then [`Receiver::run`].
pub struct Receiver {
    sock: UdpSocket,
}

impl Receiver {
    /// Binds the receiving socket (`[::]:port` also receives IPv4) with a large
    /// receive buffer, so that a receiver descheduled for a while on a loaded machine
    /// does not itself drop packets and blame the network.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self::from_socket(UdpSocket::bind(addr)?))
    }

    /// A receiver on a socket bound elsewhere (the echo probe's own sending socket),
    /// with the same large receive buffer.
    pub fn from_socket(sock: UdpSocket) -> Self {
        enlarge_rcvbuf(&sock, RCVBUF);
        Receiver { sock }
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Receives one run (the first run id seen) until its end marker or a timeout.
    pub fn run(self, opts: RecvOptions) -> io::Result<UdpReport> {
        let mut buf = [0u8; 65536];
        let mut slots: Vec<Slot> = Vec::new();
        let mut info: Option<RunInfo> = None;
        let (mut dups, mut reordered, mut highest) = (0u64, 0u64, None::<u64>);
        let started = Instant::now();
        let mut last_rx = Instant::now();
        loop {
            let wait = match info {
                None => opts.first_packet_timeout.checked_sub(started.elapsed()),
                Some(_) => opts.idle_timeout.checked_sub(last_rx.elapsed()),
            };
            let Some(wait) = wait.filter(|w| !w.is_zero()) else {
                break;
            };
            self.sock.set_read_timeout(Some(wait))?;
            let n = match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let recv_ns = unix_ns();
            let Some(h) = Header::decode(&buf[..n]) else {
                continue;
            };
            let run = info.get_or_insert(RunInfo {
                run_id: h.run_id,
                start_ns: h.start_ns,
                interval_ns: h.interval_ns,
                end: None,
            });
            if h.run_id != run.run_id || h.seq > MAX_SEQ {
                continue;
            }
            last_rx = Instant::now();
            match h.kind {
                Kind::End => {
                    run.end = Some((h.seq, h.send_ns));
                    break;
                }
                Kind::Data => {
                    let i = h.seq as usize;
                    if slots.len() <= i {
                        slots.resize(i + 1, None);
                    }
                    if slots[i].is_some() {
                        dups += 1;
                        continue;
                    }
                    slots[i] = Some((h.send_ns, recv_ns));
                    if highest.is_some_and(|top| h.seq < top) {
                        reordered += 1;
                    }
                    highest = highest.max(Some(h.seq));
                }
            }
        }
        let info = info.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no probe packet within {:?}", opts.first_packet_timeout),
            )
        })?;
        Ok(UdpReport::build(&info, &slots, dups, reordered))
    }
}

/// The round-trip variant for a target that cannot host a receiver (a real guest):
/// the stream goes to a reflector (the guest agent's UDP port) that sends every
/// datagram back unchanged, and the reflections are counted on the same ephemeral
/// socket. A packet lost on the way out or on the way back shows as a gap at its send
/// time; the report's latencies are round trips.
pub fn echo_probe(cfg: &SendConfig, opts: RecvOptions) -> io::Result<(SendReport, UdpReport)> {
    let sock = UdpSocket::bind(ephemeral_for(cfg.target))?;
    let rx = Receiver::from_socket(sock.try_clone()?);
    let rx_thread = std::thread::spawn(move || rx.run(opts));
    let sent = send_on(&sock, cfg);
    let report = rx_thread
        .join()
        .map_err(|_| io::Error::other("echo probe receiver panicked"))?;
    Ok((sent?, report?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_run_at_1kpps_loses_nothing() {
        let rx = Receiver::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let target = rx.local_addr().unwrap();
        let h = std::thread::spawn(move || rx.run(RecvOptions::default()).unwrap());
        let cfg = SendConfig::new(target, Duration::from_millis(300));
        let sent = send(&cfg).unwrap();
        let r = h.join().unwrap();
        assert_eq!(sent.sent, 300);
        assert_eq!(r.sent, 300);
        assert_eq!(r.received, 300);
        assert_eq!(r.lost, 0);
        assert!(r.end_seen);
        assert_eq!(r.run_id, sent.run_id);
    }

    #[test]
    fn receiver_without_sender_times_out() {
        let rx = Receiver::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let e = rx
            .run(RecvOptions {
                first_packet_timeout: Duration::from_millis(100),
                idle_timeout: Duration::from_millis(100),
            })
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    /// Reflects datagrams on a loopback socket, dropping those for which `drop`
    /// says so, until `stop` is set.
    fn dropping_reflector(
        mut drop: impl FnMut(u64) -> bool + Send + 'static,
    ) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        use std::sync::atomic::{AtomicBool, Ordering};
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut n_data = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let is_data = Header::decode(&buf[..n]).is_some_and(|h| h.kind == Kind::Data);
                if is_data {
                    n_data += 1;
                    if drop(n_data) {
                        continue;
                    }
                }
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        (addr, stop)
    }

    #[test]
    fn echo_probe_against_the_guest_agent_reflector_loses_nothing() {
        let agent = crate::guest_agent::Reflector::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let target = agent.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let h = agent.spawn(stop.clone());
        let cfg = SendConfig::new(target, Duration::from_millis(500));
        let (sent, r) = echo_probe(&cfg, RecvOptions::default()).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reflected = h.join().unwrap();
        assert_eq!(sent.sent, 500);
        assert_eq!((r.sent, r.received, r.lost), (500, 500, 0), "{r:?}");
        assert!(r.end_seen);
        assert_eq!(r.run_id, sent.run_id);
        assert!(reflected >= 500, "reflector counted {reflected}");
    }

    #[test]
    fn echo_probe_sees_every_dropped_reflection_as_a_gap() {
        let (target, stop) = dropping_reflector(|n| n % 10 == 0);
        let cfg = SendConfig::new(target, Duration::from_millis(500));
        let (sent, r) = echo_probe(&cfg, RecvOptions::default()).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(sent.sent, 500);
        assert_eq!(r.sent, 500);
        assert_eq!(r.lost, 50, "{r:?}");
        assert_eq!(r.gaps.len(), 50);
        // The 10th, 20th, … data packet (seq 9, 19, …) is the one dropped.
        assert!(r.gaps.iter().all(|g| g.count == 1 && g.first_seq % 10 == 9));
        assert_eq!(r.lost_send_unix_ns.len(), 50);
    }
}
