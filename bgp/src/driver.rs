//! The tokio driver: one task per peer that owns the sockets, the clock and the
//! Adj-RIBs, and feeds the pure [`Fsm`]. This is the crate's only async code.
//!
//! Per connection a reader task cuts the byte stream into messages (decoding happens
//! in the peer task, with the session's negotiated context) and a writer task drains a
//! bounded queue of encoded bytes. Backpressure: route UPDATEs are generated from the
//! per-peer set of changed prefixes only while the writer queue has room, so a slow
//! peer costs at most the queue (16 chunks) plus one entry per changed prefix, and a
//! burst of changes to one prefix collapses into one UPDATE.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Bound;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::codec::{
    decode, encode_into, next_message_len, AddPathFamilies, Family, Message, Notification, Prefix,
    RouteRefresh, RouteRefreshSubtype, SessionContext,
};
use crate::config::{MaxPrefixAction, PeerConfig};
use crate::events::{PeerStatus, ReceivedRoute, SpeakerEvent};
use crate::fsm::{Action, ConnId, Direction, DownReason, Event, Fsm, FsmConfig, State};
use crate::md5;
use crate::negotiate::{LocalCapabilities, Negotiated};
use crate::policy::ExportContext;
use crate::rib::{end_of_rib, pack, AdjRibIn, AdjRibOut, Origins, Outgoing, RibChange};

/// Encoded chunks a connection's writer may hold.
const WRITE_QUEUE: usize = 16;
/// Slots kept free for KEEPALIVE/NOTIFICATION while routes are being sent.
const HEADROOM: usize = 4;
/// Prefixes turned into UPDATEs per step.
const BATCH: usize = 2048;
/// How long stale routes wait for End-of-RIB once a restarted peer is back
/// (RFC 4724 leaves it local; 360 s is the common default).
const STALE_PATH_TIME: Duration = Duration::from_secs(360);
/// Cease subcode 1 (RFC 4486).
const CEASE_MAX_PREFIX: u8 = 1;

/// State shared by the speaker handle and all peer tasks.
pub(crate) struct SpeakerShared {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub hold_time: u16,
    pub restart_time: u16,
    pub restarting: bool,
    pub origins: RwLock<Origins>,
    pub events: broadcast::Sender<SpeakerEvent>,
}

/// What the speaker handle shares with one peer task.
pub(crate) struct PeerShared {
    pub config: PeerConfig,
    /// Prefixes whose origin changed since this peer was last brought in line.
    pub dirty: Mutex<HashSet<Prefix>>,
    pub notify: Notify,
    pub status: Mutex<PeerStatus>,
    pub cmd: mpsc::Sender<PeerCommand>,
    /// The session negotiated IPv6 unicast but we know no IPv6 address of ours to be
    /// the next hop of IPv6 routes (a session over IPv4, no global IPv6 address on its
    /// interface, no next hop in the export policy).
    pub ipv6_next_hop_missing: std::sync::atomic::AtomicBool,
}

pub(crate) enum PeerCommand {
    Incoming(TcpStream),
    Shutdown {
        notification: Notification,
        done: oneshot::Sender<()>,
    },
    Received(oneshot::Sender<Vec<ReceivedRoute>>),
}

enum IoEvent {
    Connected(TcpStream),
    ConnectFailed(io::Error),
    /// Whole messages back to back, as read (one allocation per read, not per
    /// message).
    Frames(ConnId, Vec<u8>),
    FrameError(ConnId, Notification),
    Closed(ConnId),
}

struct ConnIo {
    tx: mpsc::Sender<Vec<u8>>,
    local: Option<IpAddr>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

struct Session {
    conn: ConnId,
    neg: Negotiated,
    local: Option<IpAddr>,
    /// Next hop for IPv6 routes on a session over IPv4.
    local_v6: Option<Ipv6Addr>,
    ibgp: bool,
    /// Families disabled after a malformed UPDATE (RFC 4760 section 7).
    disabled: Vec<Family>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResyncKind {
    /// After the session comes up: everything, then End-of-RIB per family.
    Initial,
    /// A route refresh; with enhanced route refresh bracketed by BoRR/EoRR.
    Refresh { enhanced: bool },
}

struct Resync {
    families: VecDeque<Family>,
    cursor: Option<Prefix>,
    kind: ResyncKind,
    started: bool,
}

enum Wake {
    Cmd(Option<PeerCommand>),
    Io(IoEvent),
    Timer,
    Stale,
    Work,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Builds a socket with MD5/GTSM/source address and connects it.
async fn connect(cfg: PeerConfig, timeout: Duration) -> io::Result<TcpStream> {
    let addr = cfg.socket_addr();
    let v6 = addr.is_ipv6();
    let sock = if v6 {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    if let Some(pw) = &cfg.md5_password {
        md5::set_md5(sock.as_raw_fd(), cfg.address, pw.as_bytes(), v6)?;
    }
    if cfg.ttl_security {
        md5::set_ttl_security(sock.as_raw_fd(), v6)?;
    }
    if let Some(l) = cfg.local_address {
        sock.bind(SocketAddr::new(l, 0))?;
    }
    let s = tokio::time::timeout(timeout, sock.connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Framing accepts extended lengths; the decoder, which knows whether extended
/// messages were negotiated, enforces the limit.
const FRAMING: SessionContext = SessionContext {
    as4: true,
    add_path_rx: NO_ADD_PATH,
    add_path_tx: NO_ADD_PATH,
    extended_message: true,
};
const NO_ADD_PATH: AddPathFamilies = AddPathFamilies {
    ipv4_unicast: false,
    ipv6_unicast: false,
};

/// Bytes asked of the socket per read: a full table arrives in a few hundred reads.
const READ_CHUNK: usize = 1 << 18;

/// Cuts the stream into whole messages and hands them over in batches.
async fn reader(mut rd: OwnedReadHalf, conn: ConnId, tx: mpsc::Sender<IoEvent>) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        let mut whole = 0;
        loop {
            match next_message_len(&buf[whole..], &FRAMING) {
                Ok(Some(n)) => whole += n,
                Ok(None) => break,
                Err(e) => {
                    let n = Notification::from(&crate::codec::DecodeError::from(e));
                    let _ = tx.send(IoEvent::FrameError(conn, n)).await;
                    return;
                }
            }
        }
        if whole > 0 {
            // The partial message at the end starts the next buffer.
            let mut next = Vec::with_capacity(READ_CHUNK.max(buf.len() - whole));
            next.extend_from_slice(&buf[whole..]);
            buf.truncate(whole);
            let frames = std::mem::replace(&mut buf, next);
            if tx.send(IoEvent::Frames(conn, frames)).await.is_err() {
                return;
            }
        }
        buf.reserve(READ_CHUNK / 4);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(IoEvent::Closed(conn)).await;
                return;
            }
            Ok(_) => {}
        }
    }
}

async fn writer(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(chunk) = rx.recv().await {
        if wr.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// One peer: its session machine, connections, Adj-RIB-In and Adj-RIB-Out.
pub(crate) struct PeerTask {
    sp: Arc<SpeakerShared>,
    me: Arc<PeerShared>,
    caps: LocalCapabilities,
    fsm: Fsm,
    conns: HashMap<ConnId, ConnIo>,
    next_conn: ConnId,
    connecting: Option<JoinHandle<()>>,
    io_tx: mpsc::Sender<IoEvent>,
    io_rx: mpsc::Receiver<IoEvent>,
    cmd_rx: mpsc::Receiver<PeerCommand>,
    adj_in: AdjRibIn,
    adj_out: AdjRibOut,
    session: Option<Session>,
    resync: VecDeque<Resync>,
    stale_deadline: Option<Instant>,
    max_prefix_hit: bool,
    closing: Vec<JoinHandle<()>>,
}

impl PeerTask {
    pub(crate) fn new(
        sp: Arc<SpeakerShared>,
        me: Arc<PeerShared>,
        cmd_rx: mpsc::Receiver<PeerCommand>,
    ) -> PeerTask {
        let c = &me.config;
        let caps = LocalCapabilities {
            local_as: sp.local_as,
            router_id: sp.router_id,
            hold_time: c.hold_time.unwrap_or(sp.hold_time),
            families: c.families.clone(),
            extended_message: c.extended_message,
            add_path_receive: c.add_path_receive,
            restart_time: sp.restart_time,
            restarting: sp.restarting,
        };
        let mut fc = FsmConfig::new(caps.open(), c.remote_as);
        fc.passive = c.passive;
        fc.delay_open = c.delay_open_secs.map(Duration::from_secs);
        if let Some(s) = c.connect_retry_secs {
            fc.connect_retry = Duration::from_secs(s.max(1));
        }
        let (io_tx, io_rx) = mpsc::channel(64);
        PeerTask {
            adj_in: AdjRibIn::new(c.keep_adj_rib_in),
            sp,
            caps,
            fsm: Fsm::new(fc),
            conns: HashMap::new(),
            next_conn: 1,
            connecting: None,
            io_tx,
            io_rx,
            cmd_rx,
            adj_out: AdjRibOut::default(),
            session: None,
            resync: VecDeque::new(),
            stale_deadline: None,
            max_prefix_hit: false,
            closing: Vec::new(),
            me,
        }
    }

    fn peer(&self) -> IpAddr {
        self.me.config.address
    }

    fn emit(&self, e: SpeakerEvent) {
        let _ = self.sp.events.send(e);
    }

    pub(crate) async fn run(mut self) {
        self.handle_fsm(Event::Start);
        loop {
            let fsm_deadline = self.fsm.poll_timeout();
            let stale = self.stale_deadline;
            let session_tx = self
                .session
                .as_ref()
                .and_then(|s| self.conns.get(&s.conn))
                .map(|c| c.tx.clone());
            let wait_writer = self.has_route_work()
                && session_tx
                    .as_ref()
                    .is_some_and(|t| t.capacity() <= HEADROOM);
            let wake = tokio::select! {
                c = self.cmd_rx.recv() => Wake::Cmd(c),
                Some(ev) = self.io_rx.recv() => Wake::Io(ev),
                _ = sleep_opt(fsm_deadline) => Wake::Timer,
                _ = sleep_opt(stale) => Wake::Stale,
                _ = self.me.notify.notified() => Wake::Work,
                _ = async { session_tx.as_ref().map(|t| t.reserve()).unwrap().await }, if wait_writer => Wake::Work,
            };
            match wake {
                Wake::Cmd(None) => break,
                Wake::Cmd(Some(PeerCommand::Shutdown { notification, done })) => {
                    self.handle_fsm(Event::Stop(Some(notification)));
                    self.finish().await;
                    let _ = done.send(());
                    return;
                }
                Wake::Cmd(Some(PeerCommand::Incoming(stream))) => {
                    let _ = stream.set_nodelay(true);
                    if self.me.config.ttl_security {
                        let _ = md5::set_ttl_security(
                            stream.as_raw_fd(),
                            stream.local_addr().is_ok_and(|a| a.is_ipv6()),
                        );
                    }
                    let conn = self.register(stream);
                    self.handle_fsm(Event::TcpConnected {
                        conn,
                        direction: Direction::Inbound,
                    });
                }
                Wake::Cmd(Some(PeerCommand::Received(reply))) => {
                    let routes = self
                        .adj_in
                        .routes()
                        .into_iter()
                        .map(|(n, attributes, stale)| ReceivedRoute {
                            prefix: n.prefix,
                            path_id: n.path_id,
                            attributes,
                            stale,
                        })
                        .collect();
                    let _ = reply.send(routes);
                }
                Wake::Io(ev) => self.on_io(ev),
                Wake::Timer => self.handle_fsm(Event::Timeout),
                Wake::Stale => {
                    self.stale_deadline = None;
                    let gone = self.adj_in.sweep_stale(None);
                    self.emit_withdrawn(gone, true);
                }
                Wake::Work => {}
            }
            self.pump();
            self.update_status();
            self.closing.retain(|h| !h.is_finished());
        }
        self.finish().await;
    }

    /// Lets writers flush (NOTIFICATION on stop) for a bounded time.
    async fn finish(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        if let Some(h) = self.connecting.take() {
            h.abort();
        }
        for h in self.closing.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
        }
        self.update_status();
    }

    fn register(&mut self, stream: TcpStream) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        let local = stream.local_addr().ok().map(|a| a.ip().to_canonical());
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let reader = tokio::spawn(reader(rd, id, self.io_tx.clone()));
        let writer = tokio::spawn(writer(wr, rx));
        self.conns.insert(
            id,
            ConnIo {
                tx,
                local,
                reader,
                writer,
            },
        );
        id
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            c.reader.abort();
            drop(c.tx);
            self.closing.push(c.writer);
        }
    }

    fn ctx(&self, conn: ConnId) -> SessionContext {
        match &self.session {
            Some(s) if s.conn == conn => s.neg.ctx,
            _ => SessionContext::default(),
        }
    }

    fn on_io(&mut self, ev: IoEvent) {
        match ev {
            IoEvent::Connected(stream) => {
                self.connecting = None;
                let conn = self.register(stream);
                self.handle_fsm(Event::TcpConnected {
                    conn,
                    direction: Direction::Outbound,
                });
            }
            IoEvent::ConnectFailed(e) => {
                self.connecting = None;
                tracing::debug!(peer = %self.peer(), error = %e, "connect failed");
                self.handle_fsm(Event::TcpConnectFailed);
            }
            IoEvent::Frames(conn, frames) => {
                let mut rest = &frames[..];
                while let Ok(Some(n)) = next_message_len(rest, &FRAMING) {
                    let (f, tail) = rest.split_at(n);
                    rest = tail;
                    if !self.conns.contains_key(&conn) {
                        break;
                    }
                    self.me.status.lock().unwrap().messages_received += 1;
                    let event = match decode(f, &self.ctx(conn)) {
                        Ok(message) => Event::Message { conn, message },
                        Err(e) => {
                            tracing::warn!(peer = %self.peer(), error = %e, "bad message");
                            Event::MessageError {
                                conn,
                                notification: Notification::from(&e),
                            }
                        }
                    };
                    self.handle_fsm(event);
                }
            }
            IoEvent::FrameError(conn, notification) => {
                self.handle_fsm(Event::MessageError { conn, notification })
            }
            IoEvent::Closed(conn) => self.handle_fsm(Event::TcpClosed { conn }),
        }
    }

    fn handle_fsm(&mut self, e: Event) {
        let t = now();
        let mut queue: VecDeque<Action> = self.fsm.handle(e, t).into();
        while let Some(a) = queue.pop_front() {
            if let Some(follow) = self.act(a, t) {
                queue.extend(self.fsm.handle(follow, t));
            }
        }
        self.update_status();
    }

    /// Performs one action; may return a follow-up event (max-prefix reset).
    fn act(&mut self, a: Action, t: Instant) -> Option<Event> {
        match a {
            Action::Connect => {
                if let Some(h) = self.connecting.take() {
                    h.abort();
                }
                let cfg = self.me.config.clone();
                let tx = self.io_tx.clone();
                let timeout = Duration::from_secs(cfg.connect_retry_secs.unwrap_or(5).max(1));
                self.connecting = Some(tokio::spawn(async move {
                    let ev = match connect(cfg, timeout).await {
                        Ok(s) => IoEvent::Connected(s),
                        Err(e) => IoEvent::ConnectFailed(e),
                    };
                    let _ = tx.send(ev).await;
                }));
            }
            Action::Send { conn, message } => self.send(conn, &message),
            Action::Close { conn } => self.close(conn),
            Action::SessionUp { conn, negotiated } => self.session_up(conn, *negotiated, t),
            Action::SessionDown { reason } => self.session_down(reason, t),
            Action::Deliver(d) => return self.deliver(*d, t),
            Action::RouteRefresh(r) => self.route_refresh(r, t),
        }
        None
    }

    fn send(&mut self, conn: ConnId, message: &Message) {
        let ctx = self.ctx(conn);
        let Some(io) = self.conns.get(&conn) else {
            return;
        };
        let mut buf = Vec::new();
        if let Err(e) = encode_into(message, &ctx, &mut buf) {
            tracing::error!(peer = %self.peer(), error = %e, "cannot encode");
            return;
        }
        if io.tx.try_send(buf).is_err() {
            tracing::warn!(peer = %self.peer(), "write queue full, message dropped");
            return;
        }
        self.me.status.lock().unwrap().messages_sent += 1;
    }

    fn session_up(&mut self, conn: ConnId, neg: Negotiated, t: Instant) {
        let local = self.conns.get(&conn).and_then(|c| c.local);
        let ibgp = neg.remote_as == self.sp.local_as;
        let local_v6 = match local {
            Some(IpAddr::V4(a)) if neg.families.contains(&Family::Ipv6Unicast) => {
                crate::ifaddr::ipv6_beside(a)
            }
            _ => None,
        };
        // IPv6 routes without a next hop of their own cannot be sent to this peer:
        // `announce` says so instead of leaving them out silently.
        let v6_next_hop = matches!(local, Some(IpAddr::V6(_)))
            || local_v6.is_some()
            || self.me.config.export.next_hop.is_some_and(|a| a.is_ipv6());
        self.me.ipv6_next_hop_missing.store(
            neg.families.contains(&Family::Ipv6Unicast) && !v6_next_hop,
            std::sync::atomic::Ordering::Relaxed,
        );
        tracing::info!(peer = %self.peer(), remote_as = neg.remote_as, "session established");
        self.adj_out.clear();
        self.me.dirty.lock().unwrap().clear();
        self.resync.clear();
        self.resync.push_back(Resync {
            families: neg.families.iter().copied().collect(),
            cursor: None,
            kind: ResyncKind::Initial,
            started: false,
        });
        if self.adj_in.stale_count() > 0 {
            for f in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
                if !neg.peer_kept_forwarding(f) || !neg.families.contains(&f) {
                    let gone = self.adj_in.sweep_stale(Some(f));
                    self.emit_withdrawn(gone, true);
                }
            }
            self.stale_deadline = (self.adj_in.stale_count() > 0).then_some(t + STALE_PATH_TIME);
        }
        {
            let mut st = self.me.status.lock().unwrap();
            st.established_transitions += 1;
            st.remote_id = Some(neg.remote_id);
            st.hold_time = Some(neg.hold_time);
            st.families = neg.families.clone();
            st.families_disabled.clear();
        }
        // `peers()` must already say Established when a subscriber sees the event.
        self.update_status();
        self.emit(SpeakerEvent::SessionUp {
            peer: self.peer(),
            remote_as: neg.remote_as,
            remote_id: neg.remote_id,
            hold_time: neg.hold_time,
            families: neg.families.clone(),
        });
        self.session = Some(Session {
            conn,
            neg,
            local,
            local_v6,
            ibgp,
            disabled: Vec::new(),
        });
    }

    fn session_down(&mut self, reason: DownReason, t: Instant) {
        let Some(s) = self.session.take() else {
            return;
        };
        tracing::info!(peer = %self.peer(), ?reason, "session down");
        self.me
            .ipv6_next_hop_missing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.adj_out.clear();
        self.resync.clear();
        self.me.dirty.lock().unwrap().clear();
        let gr = s
            .neg
            .peer_graceful_restart
            .as_ref()
            .filter(|_| reason.keeps_routes(s.neg.notification_gr));
        match gr {
            Some(gr) => {
                let all = [Family::Ipv4Unicast, Family::Ipv6Unicast];
                self.adj_in.mark_stale(&all);
                for f in all {
                    if !s.neg.peer_preserves(f) {
                        let gone = self.adj_in.sweep_stale(Some(f));
                        self.emit_withdrawn(gone, true);
                    }
                }
                if gr.restart_time == 0 {
                    let gone = self.adj_in.sweep_stale(None);
                    self.emit_withdrawn(gone, true);
                } else if self.adj_in.stale_count() > 0 {
                    self.stale_deadline = Some(t + Duration::from_secs(u64::from(gr.restart_time)));
                }
            }
            None => {
                let gone = self.adj_in.clear();
                self.emit_withdrawn(gone, false);
            }
        }
        self.me.status.lock().unwrap().last_down = Some(reason.clone());
        self.update_status();
        self.emit(SpeakerEvent::SessionDown {
            peer: self.peer(),
            reason,
            stale_routes: self.adj_in.stale_count(),
        });
    }

    fn emit_withdrawn(&self, nlri: Vec<crate::codec::Nlri>, stale: bool) {
        if !nlri.is_empty() {
            self.emit(SpeakerEvent::RoutesWithdrawn {
                peer: self.peer(),
                nlri,
                stale,
            });
        }
    }

    fn deliver(&mut self, d: crate::codec::Decoded, _t: Instant) -> Option<Event> {
        self.me.status.lock().unwrap().updates_received += 1;
        if let Some(f) = d.end_of_rib() {
            let gone = self.adj_in.sweep_stale(Some(f));
            self.emit_withdrawn(gone, true);
            if self.adj_in.stale_count() == 0 {
                self.stale_deadline = None;
            }
            self.emit(SpeakerEvent::EndOfRib {
                peer: self.peer(),
                family: f,
            });
            return None;
        }
        for (afi, safi) in d.disabled_families() {
            if let Some(f) = Family::from_afi_safi(afi, safi) {
                self.disable_family(f);
            }
        }
        let Message::Update(mut u) = d.message else {
            return None;
        };
        if let Some(s) = &self.session {
            for f in &s.disabled {
                u.drop_family(*f);
            }
        }
        for c in self.adj_in.apply_owned(u) {
            self.emit(match c {
                RibChange::Announced { nlri, attributes } => SpeakerEvent::RoutesReceived {
                    peer: self.peer(),
                    nlri,
                    attributes,
                },
                RibChange::Withdrawn { nlri } => SpeakerEvent::RoutesWithdrawn {
                    peer: self.peer(),
                    nlri,
                    stale: false,
                },
            });
        }
        let mp = self.me.config.max_prefixes?;
        let count = self.adj_in.len();
        if count <= mp.limit {
            self.max_prefix_hit = false;
            return None;
        }
        if !self.max_prefix_hit {
            self.max_prefix_hit = true;
            tracing::warn!(peer = %self.peer(), count, limit = mp.limit, "max-prefix exceeded");
            self.emit(SpeakerEvent::MaxPrefixExceeded {
                peer: self.peer(),
                count,
                limit: mp.limit,
                action: mp.action,
            });
        }
        if mp.action != MaxPrefixAction::Cease {
            return None;
        }
        // RFC 4486 section 4: AFI, SAFI and the upper bound.
        let mut data = vec![0, 1, 1];
        data.extend_from_slice(&(mp.limit.min(u32::MAX as usize) as u32).to_be_bytes());
        self.max_prefix_hit = false;
        Some(Event::Reset {
            notification: Notification::new(6, CEASE_MAX_PREFIX, data),
            idle_for: mp.restart_after(),
        })
    }

    /// RFC 7606 "AFI/SAFI disable" as RFC 4760 section 7 describes it: the family's
    /// routes from this peer are deleted and its later UPDATEs ignored, for the rest
    /// of the session; the other families carry on.
    fn disable_family(&mut self, f: Family) {
        let Some(s) = &mut self.session else { return };
        if s.disabled.contains(&f) {
            return;
        }
        s.disabled.push(f);
        let disabled = s.disabled.clone();
        tracing::warn!(peer = %self.peer(), family = ?f, "malformed UPDATE: family disabled for the session");
        self.me.status.lock().unwrap().families_disabled = disabled;
        let gone = self.adj_in.remove_family(f);
        self.emit_withdrawn(gone, false);
    }

    fn route_refresh(&mut self, r: RouteRefresh, t: Instant) {
        let Some(s) = &self.session else { return };
        let Some(f) = Family::from_afi_safi(r.afi, r.safi) else {
            return;
        };
        if !s.neg.families.contains(&f) {
            return;
        }
        let enhanced = s.neg.enhanced_route_refresh;
        match r.subtype {
            RouteRefreshSubtype::Request => {}
            // RFC 7313 section 4.2: the peer re-sends the family between BoRR and
            // EoRR; what it did not re-send by EoRR is gone. Without the capability
            // negotiated these subtypes are ignored (section 5).
            RouteRefreshSubtype::Borr if enhanced => {
                self.adj_in.mark_stale(&[f]);
                // The EoRR may never come: the stale routes go after the same local
                // time a restarting peer gets (section 4.2 leaves it local).
                self.stale_deadline.get_or_insert(t + STALE_PATH_TIME);
                return;
            }
            RouteRefreshSubtype::Eorr if enhanced => {
                let gone = self.adj_in.sweep_stale(Some(f));
                self.emit_withdrawn(gone, true);
                if self.adj_in.stale_count() == 0 {
                    self.stale_deadline = None;
                }
                return;
            }
            _ => return,
        }
        self.adj_out.forget_family(f);
        self.resync.push_back(Resync {
            families: [f].into(),
            cursor: None,
            kind: ResyncKind::Refresh { enhanced },
            started: false,
        });
    }

    fn has_route_work(&self) -> bool {
        self.session.is_some()
            && (!self.resync.is_empty() || !self.me.dirty.lock().unwrap().is_empty())
    }

    /// Turns pending changes and resyncs into UPDATEs while the writer has room.
    fn pump(&mut self) {
        loop {
            let Some(s) = &self.session else { return };
            let Some(io) = self.conns.get(&s.conn) else {
                return;
            };
            if io.tx.capacity() <= HEADROOM {
                return;
            }
            let mut before: Vec<Message> = Vec::new();
            let mut after: Vec<Message> = Vec::new();
            let mut prefixes: Vec<Prefix> = {
                let mut d = self.me.dirty.lock().unwrap();
                let v: Vec<Prefix> = d.iter().take(BATCH).copied().collect();
                for p in &v {
                    d.remove(p);
                }
                v
            };
            if prefixes.is_empty() {
                let Some(r) = self.resync.front_mut() else {
                    return;
                };
                let Some(&family) = r.families.front() else {
                    self.resync.pop_front();
                    continue;
                };
                let rr = |subtype| {
                    Message::RouteRefresh(RouteRefresh {
                        afi: family.afi(),
                        safi: family.safi(),
                        subtype,
                    })
                };
                if !r.started {
                    r.started = true;
                    if r.kind == (ResyncKind::Refresh { enhanced: true }) {
                        before.push(rr(RouteRefreshSubtype::Borr));
                    }
                }
                {
                    let origins = self.sp.origins.read().unwrap();
                    let lower = match r.cursor {
                        Some(c) => Bound::Excluded(c),
                        None => Bound::Unbounded,
                    };
                    prefixes.extend(
                        origins
                            .range((lower, Bound::Unbounded))
                            .map(|(p, _)| *p)
                            .filter(|p| p.family() == family)
                            .take(BATCH),
                    );
                }
                r.cursor = prefixes.last().copied().or(r.cursor);
                if prefixes.len() < BATCH {
                    match r.kind {
                        ResyncKind::Initial => after.push(Message::Update(end_of_rib(family))),
                        ResyncKind::Refresh { enhanced: true } => {
                            after.push(rr(RouteRefreshSubtype::Eorr))
                        }
                        ResyncKind::Refresh { enhanced: false } => {}
                    }
                    r.families.pop_front();
                    r.cursor = None;
                    r.started = false;
                    if r.families.is_empty() {
                        let kind = r.kind;
                        self.resync.pop_front();
                        if kind == ResyncKind::Initial && self.caps.restarting {
                            // Our restart is over for this peer: later OPENs say so.
                            self.caps.restarting = false;
                            self.fsm.set_local_open(self.caps.open());
                        }
                    }
                }
            }
            let Some(s) = &self.session else { return };
            let out: Outgoing = {
                let origins = self.sp.origins.read().unwrap();
                let cx = ExportContext {
                    local_as: self.sp.local_as,
                    ibgp: s.ibgp,
                    local_addr: s.local,
                    local_v6: s.local_v6,
                    policy: &self.me.config.export,
                };
                self.adj_out.sync(&prefixes, &origins, &s.neg.families, &cx)
            };
            let ctx = s.neg.ctx;
            let updates = match pack(&out, &ctx) {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(peer = %self.peer(), error = %e, "cannot pack routes");
                    Vec::new()
                }
            };
            let mut buf = Vec::new();
            let mut n_updates = 0u64;
            let msgs = before
                .into_iter()
                .chain(updates.into_iter().map(Message::Update))
                .chain(after);
            for m in msgs {
                if matches!(m, Message::Update(_)) {
                    n_updates += 1;
                }
                if let Err(e) = encode_into(&m, &ctx, &mut buf) {
                    tracing::error!(peer = %self.peer(), error = %e, "cannot encode UPDATE");
                }
            }
            if buf.is_empty() {
                continue;
            }
            let Some(io) = self.conns.get(&s.conn) else {
                return;
            };
            if io.tx.try_send(buf).is_ok() {
                let mut st = self.me.status.lock().unwrap();
                st.updates_sent += n_updates;
                st.messages_sent += n_updates;
            }
        }
    }

    fn update_status(&self) {
        let mut st = self.me.status.lock().unwrap();
        st.state = self.fsm.state();
        st.prefixes_received = self.adj_in.len();
        st.prefixes_stale = if self.stale_deadline.is_some() {
            self.adj_in.stale_count()
        } else {
            0
        };
        st.prefixes_advertised = self.adj_out.len();
        if st.state != State::Established {
            st.hold_time = None;
        }
    }
}
