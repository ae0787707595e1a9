//! Two migroute speakers on loopback (127.0.0.1 and 127.0.0.2): sessions, announce and
//! withdraw with attributes, graceful restart across a crash, max-prefix, shutdown
//! communication, TCP-MD5.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use migroute_bgp::codec::{Attribute, Community, Family};
use migroute_bgp::fsm::{DownReason, State};
use migroute_bgp::{
    MaxPrefix, MaxPrefixAction, PeerConfig, RouteAttrs, Speaker, SpeakerConfig, SpeakerEvent,
};
use tokio::sync::broadcast::Receiver;

const A: [u8; 4] = [127, 0, 0, 1];
const B: [u8; 4] = [127, 0, 0, 2];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// Config for the speaker at `me` (listening on `my_port`) peering with `other`.
fn config(
    me: [u8; 4],
    my_port: u16,
    other: [u8; 4],
    other_port: u16,
    asn: u32,
    peer_as: u32,
) -> SpeakerConfig {
    let mut c = SpeakerConfig::new(asn, Ipv4Addr::from(me));
    c.listen = Some(SocketAddr::new(ip(me), my_port));
    c.hold_time = 9;
    let mut p = PeerConfig::new(ip(other), peer_as);
    p.port = other_port;
    p.local_address = Some(ip(me));
    p.connect_retry_secs = Some(1);
    p.families = vec![Family::Ipv4Unicast];
    c.peers.push(p);
    c
}

async fn wait_for<F: FnMut(&SpeakerEvent) -> bool>(
    rx: &mut Receiver<SpeakerEvent>,
    what: &str,
    mut f: F,
) -> SpeakerEvent {
    let fut = async {
        loop {
            match rx.recv().await {
                Ok(e) if f(&e) => return e,
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn is_up(e: &SpeakerEvent) -> bool {
    matches!(e, SpeakerEvent::SessionUp { .. })
}

fn received(e: &SpeakerEvent, prefix: &str) -> Option<std::sync::Arc<Vec<Attribute>>> {
    match e {
        SpeakerEvent::RoutesReceived {
            nlri, attributes, ..
        } if nlri.iter().any(|n| n.prefix.to_string() == prefix) => Some(attributes.clone()),
        _ => None,
    }
}

struct Pair {
    a: Speaker,
    b: Speaker,
    b_events: Receiver<SpeakerEvent>,
    a_events: Receiver<SpeakerEvent>,
}

async fn pair(
    mut ca: SpeakerConfig,
    mut cb: SpeakerConfig,
    tweak: impl FnOnce(&mut SpeakerConfig, &mut SpeakerConfig),
) -> Pair {
    tweak(&mut ca, &mut cb);
    let (b, mut b_events, _) = Speaker::start_subscribed(cb).await.unwrap();
    let (a, mut a_events, _) = Speaker::start_subscribed(ca).await.unwrap();
    wait_for(&mut b_events, "session up at B", is_up).await;
    // The status is current when the event arrives.
    assert_eq!(b.peers()[0].state, State::Established);
    wait_for(&mut a_events, "session up at A", is_up).await;
    assert_eq!(a.peers()[0].state, State::Established);
    Pair {
        a,
        b,
        b_events,
        a_events,
    }
}

fn ports() -> (u16, u16) {
    (free_port(), free_port())
}

#[tokio::test]
async fn ebgp_announce_withdraw_and_shutdown_message() {
    let (pa, pb) = ports();
    let mut p = pair(
        config(A, pa, B, pb, 65001, 65002),
        config(B, pb, A, pa, 65002, 65001),
        |_, _| {},
    )
    .await;
    let st = p.a.peers();
    assert_eq!(st[0].state, State::Established);
    assert_eq!(st[0].hold_time, Some(9));
    let attrs = RouteAttrs {
        med: Some(42),
        local_pref: Some(250),
        communities: vec![Community::NO_EXPORT],
        large_communities: vec!["65001:1:2".parse().unwrap()],
        ..RouteAttrs::default()
    };
    p.a.announce("203.0.113.7/32".parse().unwrap(), attrs)
        .await
        .unwrap();
    let e = wait_for(&mut p.b_events, "route at B", |e| {
        received(e, "203.0.113.7/32").is_some()
    })
    .await;
    let got = received(&e, "203.0.113.7/32").unwrap();
    assert!(
        got.contains(&Attribute::NextHop(Ipv4Addr::from(A))),
        "{got:?}"
    );
    assert!(got.contains(&Attribute::MultiExitDisc(42)));
    assert!(got.contains(&Attribute::Communities(vec![Community::NO_EXPORT])));
    // eBGP: our AS in the path, no LOCAL_PREF.
    assert!(got.contains(&Attribute::AsPath(vec![
        migroute_bgp::codec::AsSegment::Sequence(vec![65001])
    ])));
    assert!(!got.iter().any(|a| matches!(a, Attribute::LocalPref(_))));
    let rib = p.b.received(ip(A)).await.unwrap();
    assert_eq!(rib.len(), 1);
    assert_eq!(rib[0].prefix.to_string(), "203.0.113.7/32");

    p.a.withdraw("203.0.113.7/32".parse().unwrap())
        .await
        .unwrap();
    wait_for(&mut p.b_events, "withdrawal at B", |e| {
        matches!(e, SpeakerEvent::RoutesWithdrawn { nlri, stale: false, .. } if nlri[0].prefix.to_string() == "203.0.113.7/32")
    })
    .await;
    assert!(p.b.received(ip(A)).await.unwrap().is_empty());

    p.a.shutdown("maintenance window").await;
    let e = wait_for(&mut p.b_events, "session down at B", |e| {
        matches!(e, SpeakerEvent::SessionDown { .. })
    })
    .await;
    let SpeakerEvent::SessionDown {
        reason,
        stale_routes,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(
        reason,
        DownReason::NotificationReceived {
            code: 6,
            subcode: 2
        }
    );
    assert_eq!(stale_routes, 0);
    drop(p.a_events);
}

#[tokio::test]
async fn ibgp_local_pref_and_many_prefixes_packed() {
    let (pa, pb) = ports();
    let mut p = pair(
        config(A, pa, B, pb, 65001, 65001),
        config(B, pb, A, pa, 65001, 65001),
        |_, _| {},
    )
    .await;
    let routes: Vec<_> = (0..3000u32)
        .map(|i| {
            let a = Ipv4Addr::from(0x0a00_0000 + (i << 8));
            (
                format!("{a}/24").parse().unwrap(),
                RouteAttrs {
                    local_pref: Some(300),
                    ..RouteAttrs::default()
                },
            )
        })
        .collect();
    p.a.announce_batch(routes).await.unwrap();
    let mut n = 0;
    while n < 3000 {
        let e = wait_for(&mut p.b_events, "3000 routes", |e| {
            matches!(e, SpeakerEvent::RoutesReceived { .. })
        })
        .await;
        if let SpeakerEvent::RoutesReceived {
            nlri, attributes, ..
        } = e
        {
            assert!(attributes.contains(&Attribute::LocalPref(300)));
            assert!(attributes.contains(&Attribute::AsPath(vec![])));
            n += nlri.len();
        }
    }
    assert_eq!(n, 3000);
    // 3000 × 4 bytes with extended message (negotiated by both): one UPDATE.
    let st = p.a.peers();
    assert_eq!(st[0].prefixes_advertised, 3000);
    assert!(st[0].updates_sent <= 3, "{} updates", st[0].updates_sent);
}

fn state_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Runs speaker A on its own runtime in a thread, so that dropping the runtime kills
/// it like a crash: sockets close, no NOTIFICATION.
fn spawn_a(
    cfg: SpeakerConfig,
    announce: bool,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, _) = Speaker::start(cfg).await.unwrap();
            if announce {
                a.announce(
                    "198.51.100.0/24".parse().unwrap(),
                    RouteAttrs {
                        med: Some(7),
                        ..RouteAttrs::default()
                    },
                )
                .await
                .unwrap();
            }
            tokio::task::spawn_blocking(move || stop_rx.recv())
                .await
                .unwrap()
                .ok();
        });
        rt.shutdown_timeout(Duration::ZERO);
    });
    (stop_tx, h)
}

#[tokio::test]
async fn graceful_restart_keeps_and_refreshes_routes_across_a_crash() {
    let (pa, pb) = ports();
    let dir: PathBuf = state_dir().keep();
    let mut ca = config(A, pa, B, pb, 65001, 65002);
    ca.state_dir = Some(dir.clone());
    let cb = config(B, pb, A, pa, 65002, 65001);
    let (b, _) = Speaker::start(cb).await.unwrap();
    let mut ev = b.subscribe();
    let (stop, h) = spawn_a(ca.clone(), true);
    wait_for(&mut ev, "route from A", |e| {
        received(e, "198.51.100.0/24").is_some()
    })
    .await;
    // Crash A.
    stop.send(()).unwrap();
    h.join().unwrap();
    let e = wait_for(&mut ev, "session down", |e| {
        matches!(e, SpeakerEvent::SessionDown { .. })
    })
    .await;
    let SpeakerEvent::SessionDown {
        reason,
        stale_routes,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(reason, DownReason::ConnectionClosed);
    assert_eq!(stale_routes, 1, "route kept stale");
    assert!(b.received(ip(A)).await.unwrap()[0].stale);
    // Restart A without announcing anything: the store brings the route back.
    let (stop, h) = spawn_a(ca, false);
    let mut refreshed = false;
    loop {
        let e = wait_for(&mut ev, "refresh and End-of-RIB", |_| true).await;
        match e {
            SpeakerEvent::RoutesWithdrawn { .. } => {
                panic!("route withdrawn during the restart: {e:?}")
            }
            e if received(&e, "198.51.100.0/24").is_some() => refreshed = true,
            SpeakerEvent::EndOfRib {
                family: Family::Ipv4Unicast,
                ..
            } => break,
            _ => {}
        }
    }
    assert!(refreshed, "route re-advertised before End-of-RIB");
    let rib = b.received(ip(A)).await.unwrap();
    assert_eq!(rib.len(), 1);
    assert!(!rib[0].stale);
    stop.send(()).unwrap();
    h.join().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn max_prefix_cease() {
    let (pa, pb) = ports();
    let mut p = pair(
        config(A, pa, B, pb, 65001, 65002),
        config(B, pb, A, pa, 65002, 65001),
        |_, b| {
            b.peers[0].max_prefixes = Some(MaxPrefix {
                limit: 2,
                action: MaxPrefixAction::Cease,
                restart_secs: Some(60),
            });
        },
    )
    .await;
    let routes = ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]
        .iter()
        .map(|s| (s.parse().unwrap(), RouteAttrs::default()))
        .collect();
    p.a.announce_batch(routes).await.unwrap();
    wait_for(&mut p.b_events, "max-prefix event", |e| {
        matches!(e, SpeakerEvent::MaxPrefixExceeded { limit: 2, .. })
    })
    .await;
    let e = wait_for(&mut p.a_events, "cease at A", |e| {
        matches!(e, SpeakerEvent::SessionDown { .. })
    })
    .await;
    let SpeakerEvent::SessionDown { reason, .. } = e else {
        unreachable!()
    };
    assert_eq!(
        reason,
        DownReason::NotificationReceived {
            code: 6,
            subcode: 1
        }
    );
    assert_eq!(p.b.peers()[0].state, State::Idle);
}

#[tokio::test]
async fn md5_and_gtsm_protected_session() {
    let (pa, pb) = ports();
    let p = pair(
        config(A, pa, B, pb, 65001, 65002),
        config(B, pb, A, pa, 65002, 65001),
        |a, b| {
            a.peers[0].md5_password = Some("s3cret".into());
            b.peers[0].md5_password = Some("s3cret".into());
            // GTSM too: on loopback the TTL is 255, so the session must come up.
            a.peers[0].ttl_security = true;
            b.peers[0].ttl_security = true;
        },
    )
    .await;
    assert_eq!(p.a.peers()[0].state, State::Established);
}

#[tokio::test]
async fn md5_mismatch_never_establishes() {
    let (pa, pb) = ports();
    let mut ca = config(A, pa, B, pb, 65001, 65002);
    let cb = config(B, pb, A, pa, 65002, 65001);
    ca.peers[0].md5_password = Some("s3cret".into());
    let (b, _) = Speaker::start(cb).await.unwrap();
    let (a, _) = Speaker::start(ca).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(a.peers()[0].state, State::Established);
    assert_ne!(b.peers()[0].state, State::Established);
}

/// A peer that completes the handshake and then stops reading: the speaker must stop
/// generating UPDATEs (memory stays bounded) and resume when the peer reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_peer_backpressure() {
    use migroute_bgp::codec::{decode, encode, next_message_len, Capability, Message, Open};
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (resume_tx, resume_rx) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let ctx = migroute_bgp::codec::SessionContext::default();
        let open = Open {
            my_as: 65002,
            hold_time: 0,
            bgp_id: Ipv4Addr::new(127, 0, 0, 2),
            capabilities: vec![Capability::FourOctetAs(65002)],
        };
        s.write_all(&encode(&Message::Open(open), &ctx).unwrap())
            .unwrap();
        s.write_all(&encode(&Message::Keepalive, &ctx).unwrap())
            .unwrap();
        // Stop reading until told to.
        resume_rx.recv().unwrap();
        let mut buf = Vec::new();
        let mut prefixes = 0usize;
        let mut tmp = vec![0u8; 1 << 16];
        while prefixes < 150_000 {
            let n = s.read(&mut tmp).unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&tmp[..n]);
            while let Ok(Some(len)) = next_message_len(&buf, &ctx) {
                if let Message::Update(u) = decode(&buf[..len], &ctx).unwrap().message {
                    prefixes += u.nlri.len();
                }
                buf.drain(..len);
            }
        }
        prefixes
    });
    let mut c = SpeakerConfig::new(65001, Ipv4Addr::from(A));
    let mut p = PeerConfig::new(ip(B), 65002);
    p.port = port;
    p.local_address = Some(ip(A));
    p.families = vec![Family::Ipv4Unicast];
    c.peers.push(p);
    let (a, mut ev, _) = Speaker::start_subscribed(c).await.unwrap();
    wait_for(&mut ev, "session up", is_up).await;
    // 150,000 routes with distinct attributes: one UPDATE of ~120 bytes each, 18 MB,
    // far more than the socket buffers hold.
    let comms: Vec<Community> = (0..16).map(|i| Community(65001 << 16 | i)).collect();
    let routes = (0..150_000u32)
        .map(|i| {
            let a = Ipv4Addr::from(0x0a00_0000 + i);
            let attrs = RouteAttrs {
                med: Some(i),
                communities: comms.clone(),
                ..RouteAttrs::default()
            };
            (format!("{a}/32").parse().unwrap(), attrs)
        })
        .collect();
    a.announce_batch(routes).await.unwrap();
    // Generation runs until the socket buffers and the 16-chunk write queue are full
    // (about 8 MB here), then stops: wait until the count holds still for a second.
    let mut stuck = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = a.peers()[0].prefixes_advertised;
        if now == stuck {
            break;
        }
        stuck = now;
    }
    assert_eq!(a.peers()[0].prefixes_advertised, stuck, "generation paused");
    assert!(
        stuck < 100_000,
        "{stuck} of 150000 routes generated for a peer that reads nothing"
    );
    resume_tx.send(()).unwrap();
    let got = tokio::task::spawn_blocking(move || peer.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got, 150_000);
    assert_eq!(a.peers()[0].prefixes_advertised, 150_000);
}
