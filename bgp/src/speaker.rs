//! The speaker handle: what the PE agent and `migroute bgp speak` call.
//!
//! [`Speaker::start`] spawns one task per peer (see [`crate::driver`]) and, with
//! `listen` set, an accept loop. The handle is cheap to clone; `announce` and
//! `withdraw` persist the change (graceful-restart store) before any peer can send it,
//! then mark the prefixes changed for every peer, which sends them as soon as its
//! session and write queue allow.
//!
//! ```no_run
//! use migroute_bgp::codec::Community;
//! use migroute_bgp::{PeerConfig, RouteAttrs, Speaker, SpeakerConfig};
//!
//! # async fn pe() -> Result<(), migroute_bgp::SpeakerError> {
//! let mut cfg = SpeakerConfig::new(65001, "192.0.2.1".parse().unwrap());
//! cfg.state_dir = Some("/var/lib/migroute/bgp".into()); // survive restarts
//! cfg.peers.push(PeerConfig::new("192.0.2.254".parse().unwrap(), 65001));
//! let (speaker, _join) = Speaker::start(cfg).await?;
//! let mut events = speaker.subscribe();
//! // The migrated VM's host route, preferred over the old site's, kept inside the AS.
//! let attrs = RouteAttrs {
//!     local_pref: Some(200),
//!     communities: vec![Community::NO_EXPORT],
//!     ..RouteAttrs::default()
//! };
//! speaker.announce("203.0.113.7/32".parse().unwrap(), attrs).await?;
//! while let Ok(e) = events.recv().await {
//!     println!("{}", serde_json::to_string(&e).unwrap());
//! #   break;
//! }
//! speaker.shutdown("agent stopping").await;
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::codec::iana::notif;
use crate::codec::{Family, Notification, Prefix};
use crate::config::SpeakerConfig;
use crate::driver::{PeerCommand, PeerShared, PeerTask, SpeakerShared};
use crate::error::SpeakerError;
use crate::events::{PeerStatus, ReceivedRoute, SpeakerEvent};
use crate::gr_store::GrStore;
use crate::md5;
use crate::policy::RouteAttrs;
use crate::rib::Origins;

/// Events kept for slow subscribers before they see `Lagged`. Route events carry a
/// whole UPDATE, so this bounds the memory a slow subscriber can pin.
const EVENT_BUFFER: usize = 4096;

struct Inner {
    sp: Arc<SpeakerShared>,
    peers: Vec<Arc<PeerShared>>,
    store: Option<Arc<GrStore>>,
    /// Serializes changes so that the store and the origins table agree.
    write_lock: tokio::sync::Mutex<()>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

/// A running BGP speaker. Clone it freely; every clone drives the same speaker.
#[derive(Clone)]
pub struct Speaker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("local_as", &self.inner.sp.local_as)
            .field("router_id", &self.inner.sp.router_id)
            .finish()
    }
}

/// Clears host bits, so that `10.0.0.1/24` and `10.0.0.0/24` are one route.
pub fn normalize(p: Prefix) -> Prefix {
    let len = p.prefix_len();
    let addr = match p.addr() {
        IpAddr::V4(a) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    Prefix::new(addr, len).unwrap_or(p)
}

fn bind_listener(
    config: &SpeakerConfig,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, SpeakerError> {
    let err = |source| SpeakerError::Listen { addr, source };
    let v6 = addr.is_ipv6();
    let sock = if v6 {
        TcpSocket::new_v6()
    } else {
        TcpSocket::new_v4()
    }
    .map_err(err)?;
    sock.set_reuseaddr(true).map_err(err)?;
    for p in &config.peers {
        if let Some(pw) = &p.md5_password {
            if p.address.is_ipv6() && !v6 {
                continue;
            }
            md5::set_md5(sock.as_raw_fd(), p.address, pw.as_bytes(), v6).map_err(|source| {
                SpeakerError::Socket {
                    peer: p.address,
                    op: "TCP-MD5 on the listening socket",
                    source,
                }
            })?;
        }
    }
    // GTSM: the SYN-ACK must leave with TTL 255; when every peer uses GTSM the
    // listener also drops low-TTL segments before a connection exists.
    let gtsm = |p: &crate::config::PeerConfig| p.ttl_security;
    if config.peers.iter().any(gtsm) {
        let all = config.peers.iter().all(gtsm);
        let r = if all {
            md5::set_ttl_security(sock.as_raw_fd(), v6)
        } else {
            md5::set_outgoing_ttl(sock.as_raw_fd(), v6)
        };
        r.map_err(err)?;
    }
    sock.bind(addr).map_err(err)?;
    sock.listen(128).map_err(err)
}

impl Speaker {
    /// Starts the speaker: loads the graceful-restart store (a restart re-advertises
    /// what it holds before End-of-RIB), binds the listener, starts every peer. The
    /// join handle completes after [`Speaker::shutdown`].
    pub async fn start(config: SpeakerConfig) -> Result<(Speaker, JoinHandle<()>), SpeakerError> {
        let (speaker, _events, join) = Speaker::start_subscribed(config).await?;
        Ok((speaker, join))
    }

    /// [`Speaker::start`], with a subscription taken before any session can come up,
    /// so that no event is missed (a consumer printing events, a test).
    pub async fn start_subscribed(
        config: SpeakerConfig,
    ) -> Result<(Speaker, broadcast::Receiver<SpeakerEvent>, JoinHandle<()>), SpeakerError> {
        if config.router_id.is_unspecified() {
            return Err(SpeakerError::Config("router id must not be 0.0.0.0".into()));
        }
        let mut seen = HashSet::new();
        for p in &config.peers {
            if !seen.insert(p.address) {
                return Err(SpeakerError::Config(format!(
                    "peer {} is configured twice",
                    p.address
                )));
            }
        }
        let (store, origins, restarting) = match &config.state_dir {
            Some(dir) => {
                let store = GrStore::open(dir)?;
                let mut origins = Origins::new();
                for (p, a) in store.load()? {
                    origins.insert(p, Arc::new(a));
                }
                let restarting = store.existed();
                (Some(Arc::new(store)), origins, restarting)
            }
            None => (None, Origins::new(), false),
        };
        if restarting {
            tracing::info!(
                routes = origins.len(),
                "restarting with a persisted Adj-RIB-Out"
            );
        }
        let sp = Arc::new(SpeakerShared {
            local_as: config.local_as,
            router_id: config.router_id,
            hold_time: config.hold_time,
            restart_time: config.restart_time,
            restarting,
            origins: RwLock::new(origins),
            events: broadcast::channel(EVENT_BUFFER).0,
        });
        let listener = match config.listen {
            Some(addr) => Some(bind_listener(&config, addr)?),
            None => None,
        };
        let events = sp.events.subscribe();
        let mut peers = Vec::new();
        let mut tasks = Vec::new();
        let mut by_addr = HashMap::new();
        for pc in &config.peers {
            let (cmd, cmd_rx) = mpsc::channel(16);
            let me = Arc::new(PeerShared {
                config: pc.clone(),
                dirty: Mutex::new(HashSet::new()),
                notify: Notify::new(),
                status: Mutex::new(PeerStatus::new(pc.address, pc.remote_as)),
                cmd: cmd.clone(),
                ipv6_next_hop_missing: Default::default(),
            });
            by_addr.insert(pc.address, cmd);
            tasks.push(tokio::spawn(
                PeerTask::new(sp.clone(), me.clone(), cmd_rx).run(),
            ));
            peers.push(me);
        }
        let listener = listener.map(|l| {
            tokio::spawn(async move {
                loop {
                    let Ok((stream, from)) = l.accept().await else {
                        continue;
                    };
                    match by_addr.get(&from.ip().to_canonical()) {
                        Some(tx) => {
                            let _ = tx.try_send(PeerCommand::Incoming(stream));
                        }
                        None => tracing::info!(%from, "connection from an unknown peer refused"),
                    }
                }
            })
        });
        let inner = Arc::new(Inner {
            sp,
            peers,
            store,
            write_lock: tokio::sync::Mutex::new(()),
            listener: Mutex::new(listener),
        });
        let join = tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        Ok((Speaker { inner }, events, join))
    }

    /// Announces (or changes) one route to every peer.
    pub async fn announce(&self, prefix: Prefix, attrs: RouteAttrs) -> Result<(), SpeakerError> {
        self.announce_batch(vec![(prefix, attrs)]).await
    }

    /// Withdraws one route from every peer.
    pub async fn withdraw(&self, prefix: Prefix) -> Result<(), SpeakerError> {
        self.withdraw_batch(vec![prefix]).await
    }

    /// Announces many routes with one store transaction; routes with equal attributes
    /// share UPDATEs.
    pub async fn announce_batch(
        &self,
        routes: Vec<(Prefix, RouteAttrs)>,
    ) -> Result<(), SpeakerError> {
        let changes = routes
            .into_iter()
            .map(|(p, a)| (normalize(p), Some(a)))
            .collect();
        self.change(changes).await
    }

    /// Withdraws many routes with one store transaction.
    pub async fn withdraw_batch(&self, prefixes: Vec<Prefix>) -> Result<(), SpeakerError> {
        let changes = prefixes.into_iter().map(|p| (normalize(p), None)).collect();
        self.change(changes).await
    }

    async fn change(&self, changes: Vec<(Prefix, Option<RouteAttrs>)>) -> Result<(), SpeakerError> {
        // An IPv6 route that an established peer could not be sent: refused whole,
        // naming the first such prefix and peer.
        for (prefix, attrs) in &changes {
            let Some(a) = attrs else { continue };
            if prefix.family() != Family::Ipv6Unicast || a.next_hop.is_some_and(|n| n.is_ipv6()) {
                continue;
            }
            let missing = self.inner.peers.iter().find(|p| {
                p.ipv6_next_hop_missing
                    .load(std::sync::atomic::Ordering::Relaxed)
            });
            if let Some(p) = missing {
                return Err(SpeakerError::NoIpv6NextHop {
                    prefix: *prefix,
                    peer: p.config.address,
                });
            }
        }
        let _guard = self.inner.write_lock.lock().await;
        if let Some(store) = &self.inner.store {
            let store = store.clone();
            let c = changes.clone();
            tokio::task::spawn_blocking(move || store.apply(&c))
                .await
                .map_err(|_| SpeakerError::Stopped)??;
        }
        {
            let mut o = self.inner.sp.origins.write().unwrap();
            for (p, a) in &changes {
                match a {
                    Some(a) => {
                        o.insert(*p, Arc::new(a.clone()));
                    }
                    None => {
                        o.remove(p);
                    }
                }
            }
        }
        for peer in &self.inner.peers {
            peer.dirty
                .lock()
                .unwrap()
                .extend(changes.iter().map(|(p, _)| *p));
            peer.notify.notify_one();
        }
        Ok(())
    }

    /// Every peer's state and counters, in configuration order.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.inner
            .peers
            .iter()
            .map(|p| p.status.lock().unwrap().clone())
            .collect()
    }

    /// The routes we originate (our Adj-RIB-Out before per-peer policy).
    pub fn routes(&self) -> Vec<(Prefix, RouteAttrs)> {
        self.inner
            .sp
            .origins
            .read()
            .unwrap()
            .iter()
            .map(|(p, a)| (*p, (**a).clone()))
            .collect()
    }

    /// A peer's Adj-RIB-In.
    pub async fn received(&self, peer: IpAddr) -> Result<Vec<ReceivedRoute>, SpeakerError> {
        let p = self
            .inner
            .peers
            .iter()
            .find(|p| p.config.address == peer)
            .ok_or_else(|| SpeakerError::Config(format!("no peer {peer}")))?;
        let (tx, rx) = oneshot::channel();
        p.cmd
            .send(PeerCommand::Received(tx))
            .await
            .map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Session and route events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SpeakerEvent> {
        self.inner.sp.events.subscribe()
    }

    /// Sends Cease/Administrative Shutdown with `message` (RFC 8203) to every peer,
    /// closes the sessions and stops. Peers drop our routes: this is a deliberate
    /// stop, not a restart.
    pub async fn shutdown(&self, message: &str) {
        if let Some(l) = self.inner.listener.lock().unwrap().take() {
            l.abort();
        }
        let text: String = message.chars().take(128).collect();
        let n =
            Notification::shutdown(notif::ADMINISTRATIVE_SHUTDOWN, &text).unwrap_or_else(|_| {
                Notification::new(notif::CEASE, notif::ADMINISTRATIVE_SHUTDOWN, vec![])
            });
        let mut waits = Vec::new();
        for p in &self.inner.peers {
            let (done, rx) = oneshot::channel();
            let cmd = PeerCommand::Shutdown {
                notification: n.clone(),
                done,
            };
            if p.cmd.send(cmd).await.is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
    }
}
