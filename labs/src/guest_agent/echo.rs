//! The TCP echo server of the guest: long-lived, any number of sequential or
//! concurrent connections (a thread each), unlike the probe's one-shot
//! [`crate::probe::tcp::EchoServer`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a blocked accept or read looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// A bound echo server.
pub struct TcpEcho {
    listener: TcpListener,
}

impl TcpEcho {
    /// Binds `addr` (`[::]:port` also serves IPv4).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(TcpEcho {
            listener: TcpListener::bind(addr)?,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and echoes until `stop` is set.
    pub fn run(self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            if !readable(&self.listener, POLL) {
                continue;
            }
            let Ok((stream, _)) = self.listener.accept() else {
                continue;
            };
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || echo(stream, &stop));
        }
    }

    /// [`TcpEcho::run`] on its own thread.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        std::thread::spawn(move || self.run(stop))
    }
}

/// Whether the listener has a connection waiting, within `timeout`.
fn readable(l: &TcpListener, timeout: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut fds, 1, timeout.as_millis() as libc::c_int) };
    rc > 0
}

/// Echoes one connection until EOF, an error or `stop`.
fn echo(mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
}
