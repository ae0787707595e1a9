//! The traffic probe. Not ping: ping holds back sends while replies are missing and so
//! under-counts loss. The UDP probe is open-loop — a fixed rate (default 1000/s) of
//! sequence-numbered, send-timestamped datagrams no matter what comes back — and the
//! receiver reports every gap with the send times of the packets it never got, so a
//! migration scenario can split loss into "inside the VM's pause" and "outside". The
//! TCP probe keeps one connection exchanging small messages every few milliseconds and
//! reports whether it survived and its longest stall.
//!
//! Plain std (threads, blocking sockets): the probe must keep its schedule on a loaded
//! two-core machine and needs nothing else. Timestamps are `CLOCK_REALTIME` in
//! nanoseconds: sender and receiver in a lab share the host clock, so one-way delays
//! and pause windows compare directly.

pub mod in_lab;
pub mod report;
pub mod tcp;
pub mod udp;
pub mod wire;

pub use report::{Gap, TcpReport, UdpReport, WindowLoss};

/// Default UDP/TCP port of the probe.
pub const DEFAULT_PORT: u16 = 7331;

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
