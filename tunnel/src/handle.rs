//! One rtnetlink socket, opened inside one network namespace.
//!
//! A netlink socket belongs to the namespace of the thread that created it, forever.
//! For a named namespace we `setns` on a short-lived helper thread, create the socket
//! there and hand it back to tokio; the calling thread never changes namespace. This is
//! the only module that sends anything to the kernel.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};

use futures_util::stream::{self, StreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::request::{Request, FLAGS_DUMP};

/// Requests in flight at once in a pipelined batch. Bounded so that the acks queued in
/// the socket never overflow its receive buffer (ENOBUFS would lose acks).
pub const BATCH_WINDOW: usize = 256;
/// Receive buffer asked for (forced when running as root).
const RCVBUF_BYTES: usize = 8 << 20;

/// An rtnetlink connection bound to one namespace. Clone-free on purpose: open one per
/// namespace and pass references.
#[derive(Debug)]
pub struct NetlinkHandle {
    netns: Netns,
    inner: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NetlinkHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NetlinkHandle {
    /// Opens a socket in `netns` and spawns its connection task on the current tokio
    /// runtime. A missing namespace is reported as [`Error::NetnsOpen`].
    pub async fn open(netns: Netns) -> Result<Self> {
        netns.check().map_err(|reason| Error::NetnsOpen {
            netns: netns.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, reason),
        })?;
        let socket = match netns.path() {
            None => Socket::new(NETLINK_ROUTE).map_err(|source| Error::NetnsEnter {
                netns: netns.clone(),
                source,
            })?,
            Some(path) => {
                let file = File::open(&path).map_err(|source| Error::NetnsOpen {
                    netns: netns.clone(),
                    source,
                })?;
                socket_in_netns(file).map_err(|source| Error::NetnsEnter {
                    netns: netns.clone(),
                    source,
                })?
            }
        };
        tune(&socket);
        // SAFETY: the fd was just created and is owned by nobody else.
        let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (conn, inner, _unsolicited) = rtnetlink::from_socket(socket);
        let task = tokio::spawn(conn);
        Ok(Self { netns, inner, task })
    }

    /// The namespace every request of this handle lands in.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Sends one request and waits for its ack; the kernel's errno comes back as an
    /// `io::Error` with `raw_os_error()` set.
    pub(crate) async fn execute(&self, req: Request) -> io::Result<()> {
        let mut stream = self.send(req)?;
        while let Some(msg) = stream.next().await {
            if let NetlinkPayload::Error(e) = msg.payload {
                if let Some(code) = e.code {
                    return Err(io::Error::from_raw_os_error(-code.get()));
                }
            }
        }
        Ok(())
    }

    /// Sends many requests pipelined ([`BATCH_WINDOW`] in flight) and returns one result
    /// per request, in order.
    pub(crate) async fn execute_batch(&self, reqs: Vec<Request>) -> Vec<io::Result<()>> {
        stream::iter(reqs.into_iter().map(|r| self.execute(r)))
            .buffered(BATCH_WINDOW)
            .collect()
            .await
    }

    /// Sends a dump request and collects every reply message.
    pub(crate) async fn dump(
        &self,
        message: RouteNetlinkMessage,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.query(Request::new(message, FLAGS_DUMP)).await
    }

    /// Sends a get (or dump) request and collects every reply message.
    pub(crate) async fn query(&self, req: Request) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut stream = self.send(req)?;
        let mut out = Vec::new();
        while let Some(msg) = stream.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(io::Error::from_raw_os_error(-code.get()));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn send(
        &self,
        req: Request,
    ) -> io::Result<impl futures_util::Stream<Item = NetlinkMessage<RouteNetlinkMessage>>> {
        let mut nl = NetlinkMessage::from(req.message);
        nl.header.flags = req.flags;
        self.inner
            .clone()
            .request(nl)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "netlink connection closed"))
    }
}

/// Creates the socket from a helper thread that entered the namespace; the thread ends
/// right after, so no other code ever runs in the wrong namespace.
fn socket_in_netns(file: File) -> io::Result<Socket> {
    std::thread::spawn(move || -> io::Result<Socket> {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Socket::new(NETLINK_ROUTE)
    })
    .join()
    .map_err(|_| io::Error::other("netns helper thread panicked"))?
}

/// Bigger receive buffer and capped acks, so pipelined batches do not hit ENOBUFS.
/// Best effort: an unprivileged process keeps the defaults.
fn tune(socket: &Socket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &RCVBUF_BYTES).is_err() {
        let _ = socket.set_rx_buf_sz(RCVBUF_BYTES);
    }
    let _ = socket.set_cap_ack(true);
    let _ = socket.set_ext_ack(true);
}
