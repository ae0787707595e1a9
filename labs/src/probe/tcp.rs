//! The TCP liveness probe: one connection, a 16-byte message (sequence, send time)
//! every few milliseconds, echoed by the server. A live-migrated VM must keep such a
//! connection: the report says whether it survived and how long it stalled at worst.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::report::TcpReport;
use super::unix_ns;

const MSG_LEN: usize = 16;

/// What the client does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpConfig {
    pub target: SocketAddr,
    pub duration: Duration,
    /// Spacing of messages.
    pub interval: Duration,
    /// Declare the connection dead after this long without progress.
    pub stall_limit: Duration,
    pub connect_timeout: Duration,
}

impl TcpConfig {
    /// A message every 5 ms for `duration`; dead after 30 s without progress.
    pub fn new(target: SocketAddr, duration: Duration) -> Self {
        TcpConfig {
            target,
            duration,
            interval: Duration::from_millis(5),
            stall_limit: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The echo server.
pub struct EchoServer {
    listener: TcpListener,
}

/// What the server saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EchoReport {
    pub peer: Option<SocketAddr>,
    pub bytes_echoed: u64,
    /// The client closed cleanly (EOF), rather than a reset or a timeout.
    pub clean_close: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl EchoServer {
    /// Binds before the client starts, so the client never races the listener.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(EchoServer {
            listener: TcpListener::bind(addr)?,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts one connection (waiting at most `accept_timeout`) and echoes until EOF;
    /// `idle_timeout` bounds a silent connection.
    pub fn run(self, accept_timeout: Duration, idle_timeout: Duration) -> io::Result<EchoReport> {
        self.listener.set_nonblocking(true)?;
        let deadline = Instant::now() + accept_timeout;
        let (mut stream, peer) = loop {
            match self.listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no TCP probe client",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(idle_timeout))?;
        let mut report = EchoReport {
            peer: Some(peer),
            bytes_echoed: 0,
            clean_close: false,
            error: None,
        };
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    report.clean_close = true;
                    let _ = stream.shutdown(Shutdown::Write);
                    break;
                }
                Ok(n) => {
                    if let Err(e) = stream.write_all(&buf[..n]) {
                        report.error = Some(e.to_string());
                        break;
                    }
                    report.bytes_echoed += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    report.error = Some(e.to_string());
                    break;
                }
            }
        }
        Ok(report)
    }
}

/// Runs the client side and reports; never fails: a failure is the report's finding.
pub fn run_client(cfg: &TcpConfig) -> TcpReport {
    let started = Instant::now();
    let mut report = TcpReport {
        connected: false,
        survived: false,
        messages_sent: 0,
        messages_echoed: 0,
        longest_stall_ms: 0.0,
        longest_stall_start_unix_ns: 0,
        duration_ms: 0.0,
        error: None,
    };
    let stream = match TcpStream::connect_timeout(&cfg.target, cfg.connect_timeout) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(format!("connect {}: {e}", cfg.target));
            return report;
        }
    };
    report.connected = true;
    let setup = (|| -> io::Result<TcpStream> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(cfg.stall_limit))?;
        stream.set_write_timeout(Some(cfg.stall_limit))?;
        stream.try_clone()
    })();
    let mut reader = match setup {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let sent = Arc::new(AtomicU64::new(0));
    let sent_r = Arc::clone(&sent);
    // The reader measures stalls: time between echo arrivals while messages are out.
    let reader_thread = std::thread::spawn(move || {
        let mut echoed = 0u64;
        let mut last = Instant::now();
        let mut last_unix = unix_ns();
        let (mut longest, mut longest_start) = (Duration::ZERO, 0u64);
        let mut msg = [0u8; MSG_LEN];
        let err = loop {
            match reader.read_exact(&mut msg) {
                Ok(()) => {
                    let now = Instant::now();
                    if now - last > longest {
                        longest = now - last;
                        longest_start = last_unix;
                    }
                    last = now;
                    last_unix = unix_ns();
                    echoed += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break None,
                Err(e) => break Some(e.to_string()),
            }
        };
        // Time since the last echo counts too if messages were still outstanding.
        if echoed < sent_r.load(Ordering::SeqCst) && last.elapsed() > longest {
            longest = last.elapsed();
            longest_start = last_unix;
        }
        (echoed, longest, longest_start, err)
    });
    let mut writer = stream;
    let mut write_err = None;
    let mut seq = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < cfg.duration {
        let mut msg = [0u8; MSG_LEN];
        msg[..8].copy_from_slice(&seq.to_be_bytes());
        msg[8..].copy_from_slice(&unix_ns().to_be_bytes());
        if let Err(e) = writer.write_all(&msg) {
            write_err = Some(e.to_string());
            break;
        }
        seq += 1;
        sent.store(seq, Ordering::SeqCst);
        let due = t0 + cfg.interval * seq as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let _ = writer.shutdown(Shutdown::Write);
    let (echoed, longest, longest_start, read_err) =
        reader_thread
            .join()
            .unwrap_or((0, Duration::ZERO, 0, Some("reader panicked".into())));
    report.messages_sent = seq;
    report.messages_echoed = echoed;
    report.longest_stall_ms = longest.as_secs_f64() * 1e3;
    report.longest_stall_start_unix_ns = longest_start;
    report.error = write_err.or(read_err);
    report.survived = report.error.is_none() && echoed == seq && seq > 0;
    report.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_connection_survives_with_short_stalls() {
        let server = EchoServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            server
                .run(Duration::from_secs(5), Duration::from_secs(5))
                .unwrap()
        });
        let r = run_client(&TcpConfig::new(addr, Duration::from_millis(300)));
        let s = h.join().unwrap();
        assert!(r.survived, "{r:?}");
        assert!(r.messages_sent >= 30, "{r:?}");
        assert_eq!(r.messages_echoed, r.messages_sent);
        assert!(r.longest_stall_ms < 1000.0, "{r:?}");
        assert!(s.clean_close);
        assert_eq!(s.bytes_echoed, r.messages_sent * MSG_LEN as u64);
    }

    #[test]
    fn refused_connection_is_reported_not_survived() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let r = run_client(&TcpConfig::new(addr, Duration::from_millis(100)));
        assert!(!r.connected && !r.survived);
        assert!(r.error.is_some());
    }
}
