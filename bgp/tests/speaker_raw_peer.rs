//! The speaker against a scripted peer on loopback: a plain TCP stream speaking BGP
//! with migroute's codec, so that the test can send what real daemons rarely do on
//! demand: enhanced route refresh markers (RFC 7313) and a malformed MP_REACH_NLRI that
//! calls for "AFI/SAFI disable" (RFC 7606, RFC 4760 section 7).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use migroute_bgp::codec::{
    decode, encode_into, next_message_len, AsSegment, Attribute, Capability, Family, Message,
    MpNextHop, MpReach, Nlri, Open, Origin, RouteRefresh, RouteRefreshSubtype, SessionContext,
    Update,
};
use migroute_bgp::{PeerConfig, ReceivedRoute, Speaker, SpeakerConfig, SpeakerEvent};

const PEER_AS: u32 = 65100;

/// The scripted peer's end of the session.
struct RawPeer {
    s: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    fn send(&mut self, m: &Message) {
        let mut out = Vec::new();
        encode_into(m, &SessionContext::default(), &mut out).unwrap();
        self.s.write_all(&out).unwrap();
    }

    fn read(&mut self) -> Message {
        let ctx = SessionContext::default();
        loop {
            if let Ok(Some(n)) = next_message_len(&self.buf, &ctx) {
                let m = decode(&self.buf[..n], &ctx).expect("decodable").message;
                self.buf.drain(..n);
                return m;
            }
            let mut tmp = [0u8; 4096];
            let r = self.s.read(&mut tmp).expect("read");
            assert!(r > 0, "speaker closed the session");
            self.buf.extend_from_slice(&tmp[..r]);
        }
    }

    /// Connects, exchanges OPENs (IPv4 and IPv6 unicast, route refresh, enhanced route
    /// refresh) and KEEPALIVEs.
    fn establish(addr: SocketAddr) -> RawPeer {
        let s = TcpStream::connect(addr).expect("connect to the speaker");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut p = RawPeer { s, buf: Vec::new() };
        p.send(&Message::Open(Open {
            my_as: PEER_AS as u16,
            hold_time: 240,
            bgp_id: Ipv4Addr::new(192, 0, 2, 2),
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: Family::Ipv4Unicast.afi(),
                    safi: Family::Ipv4Unicast.safi(),
                },
                Capability::Multiprotocol {
                    afi: Family::Ipv6Unicast.afi(),
                    safi: Family::Ipv6Unicast.safi(),
                },
                Capability::RouteRefresh,
                Capability::EnhancedRouteRefresh,
                Capability::FourOctetAs(PEER_AS),
            ],
        }));
        assert!(matches!(p.read(), Message::Open(_)));
        p.send(&Message::Keepalive);
        loop {
            match p.read() {
                Message::Keepalive => return p,
                Message::Notification(n) => panic!("speaker refused the session: {n:?}"),
                _ => {}
            }
        }
    }

    fn refresh_marker(&mut self, family: Family, subtype: RouteRefreshSubtype) {
        self.send(&Message::RouteRefresh(RouteRefresh {
            afi: family.afi(),
            safi: family.safi(),
            subtype,
        }));
    }
}

fn nlri(s: &str) -> Nlri {
    Nlri::new(s.parse().unwrap())
}

fn base_attrs() -> Vec<Attribute> {
    vec![
        Attribute::Origin(Origin::Igp),
        Attribute::AsPath(vec![AsSegment::Sequence(vec![PEER_AS])]),
    ]
}

fn v4(prefixes: &[&str]) -> Message {
    let mut attributes = base_attrs();
    attributes.push(Attribute::NextHop(Ipv4Addr::new(127, 0, 0, 1)));
    Message::Update(Update {
        withdrawn: vec![],
        attributes,
        nlri: prefixes.iter().map(|p| nlri(p)).collect(),
    })
}

fn v6(prefixes: &[&str]) -> Message {
    let mut attributes = base_attrs();
    attributes.push(Attribute::MpReach(MpReach {
        family: Family::Ipv6Unicast,
        next_hop: MpNextHop {
            global: "2001:db8::2".parse().unwrap(),
            link_local: None,
        },
        nlri: prefixes.iter().map(|p| nlri(p)).collect(),
    }));
    Message::Update(Update {
        withdrawn: vec![],
        attributes,
        nlri: vec![],
    })
}

/// A speaker with one passive peer at 127.0.0.1 (both families), and its address.
async fn speaker() -> (Speaker, SocketAddr) {
    let lo = Ipv4Addr::LOCALHOST;
    let port = std::net::TcpListener::bind((lo, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::new(IpAddr::V4(lo), port);
    let mut c = SpeakerConfig::new(65001, Ipv4Addr::new(192, 0, 2, 1));
    c.listen = Some(addr);
    c.hold_time = 240;
    let mut p = PeerConfig::new(IpAddr::V4(lo), PEER_AS);
    p.passive = true;
    p.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    c.peers.push(p);
    let (sp, _join) = Speaker::start(c).await.expect("speaker starts");
    (sp, addr)
}

/// Polls the peer's Adj-RIB-In until `pred` holds (generous deadline).
async fn rib_until(
    sp: &Speaker,
    what: &str,
    pred: impl Fn(&[ReceivedRoute]) -> bool,
) -> Vec<ReceivedRoute> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = sp.received(IpAddr::V4(Ipv4Addr::LOCALHOST)).await.unwrap();
        if pred(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn summary(r: &[ReceivedRoute]) -> Vec<(String, bool)> {
    r.iter().map(|r| (r.prefix.to_string(), r.stale)).collect()
}

fn own(v: &[(&str, bool)]) -> Vec<(String, bool)> {
    v.iter().map(|(p, s)| (p.to_string(), *s)).collect()
}

/// Drives a blocking peer on its own thread.
async fn peer<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_route_refresh_marks_stale_at_borr_and_sweeps_at_eorr() {
    let (sp, addr) = speaker().await;
    let mut events = sp.subscribe();
    let mut p = peer(move || {
        let mut p = RawPeer::establish(addr);
        p.send(&v4(&["10.0.0.0/24", "10.0.1.0/24"]));
        p.send(&v6(&["2001:db8:1::/48"]));
        p
    })
    .await;
    rib_until(&sp, "three routes", |r| r.len() == 3).await;

    // BoRR for IPv4: its routes are stale, IPv6 is untouched, nothing is withdrawn.
    p = peer(move || {
        p.refresh_marker(Family::Ipv4Unicast, RouteRefreshSubtype::Borr);
        p
    })
    .await;
    let r = rib_until(&sp, "IPv4 stale after BoRR", |r| {
        r.iter().filter(|r| r.stale).count() == 2
    })
    .await;
    assert_eq!(
        summary(&r),
        own(&[
            ("10.0.0.0/24", true),
            ("10.0.1.0/24", true),
            ("2001:db8:1::/48", false)
        ])
    );

    // The refresh re-sends one of them; EoRR sweeps the other.
    let _p = peer(move || {
        p.send(&v4(&["10.0.0.0/24"]));
        p.refresh_marker(Family::Ipv4Unicast, RouteRefreshSubtype::Eorr);
        p
    })
    .await;
    let r = rib_until(&sp, "sweep at EoRR", |r| r.len() == 2).await;
    assert_eq!(
        summary(&r),
        own(&[("10.0.0.0/24", false), ("2001:db8:1::/48", false)])
    );
    let swept = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(SpeakerEvent::RoutesWithdrawn { nlri, stale, .. }) = events.recv().await {
                return (nlri, stale);
            }
        }
    })
    .await
    .expect("a withdrawal event");
    assert_eq!(swept, (vec![nlri("10.0.1.0/24")], true));
    assert_eq!(sp.peers()[0].prefixes_stale, 0);
}

/// An UPDATE whose MP_REACH_NLRI has a 5-byte IPv6 next hop: RFC 7606 section 7.11
/// calls for AFI/SAFI disable.
fn malformed_v6_update() -> Vec<u8> {
    let mut mp = vec![0x00, 0x02, 0x01, 5, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00];
    mp.extend_from_slice(&[48, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x05]);
    let mut attrs = vec![0x40, 0x01, 0x01, 0x00]; // ORIGIN IGP
    attrs.extend_from_slice(&[0x40, 0x02, 0x06, 0x02, 0x01]); // AS_PATH, one ASN
    attrs.extend_from_slice(&PEER_AS.to_be_bytes());
    attrs.extend_from_slice(&[0x80, 0x0e, mp.len() as u8]);
    attrs.extend_from_slice(&mp);
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    let mut msg = vec![0xff; 16];
    msg.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    msg.push(2);
    msg.extend_from_slice(&body);
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn afi_safi_disable_drops_the_family_for_the_rest_of_the_session() {
    let (sp, addr) = speaker().await;
    let mut p = peer(move || {
        let mut p = RawPeer::establish(addr);
        p.send(&v4(&["10.0.0.0/24"]));
        p.send(&v6(&["2001:db8:1::/48", "2001:db8:2::/48"]));
        p
    })
    .await;
    rib_until(&sp, "three routes", |r| r.len() == 3).await;

    let _p = peer(move || {
        p.s.write_all(&malformed_v6_update()).unwrap();
        // Later IPv6 routes are ignored; IPv4 carries on.
        p.send(&v6(&["2001:db8:9::/48"]));
        p.send(&v4(&["10.0.5.0/24"]));
        p
    })
    .await;
    let r = rib_until(&sp, "IPv4 route after the malformed UPDATE", |r| {
        r.iter().any(|r| r.prefix.to_string() == "10.0.5.0/24")
    })
    .await;
    assert_eq!(
        summary(&r),
        own(&[("10.0.0.0/24", false), ("10.0.5.0/24", false)])
    );
    let st = &sp.peers()[0];
    assert_eq!(st.state, migroute_bgp::fsm::State::Established);
    assert_eq!(st.families_disabled, vec![Family::Ipv6Unicast]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_route_without_a_next_hop_for_an_ipv4_session_is_refused_by_name() {
    let (sp, addr) = speaker().await;
    let _p = peer(move || RawPeer::establish(addr)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sp.peers()[0].state != migroute_bgp::fsm::State::Established {
        assert!(tokio::time::Instant::now() < deadline, "session not up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The session runs over 127.0.0.1 with IPv6 unicast negotiated; loopback has no
    // global IPv6 address to stand in as next hop.
    let prefix: migroute_bgp::codec::Prefix = "2001:db8:5::/48".parse().unwrap();
    let err = sp
        .announce(prefix, migroute_bgp::RouteAttrs::default())
        .await
        .expect_err("no IPv6 next hop for this peer");
    match &err {
        migroute_bgp::SpeakerError::NoIpv6NextHop { prefix: p, peer } => {
            assert_eq!(*p, prefix);
            assert_eq!(*peer, IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("2001:db8:5::/48"), "{err}");
    assert!(sp.routes().is_empty(), "nothing was announced");
    // With a next hop of its own the route goes out, and IPv4 routes never needed one.
    let attrs = migroute_bgp::RouteAttrs {
        next_hop: Some("2001:db8::1".parse().unwrap()),
        ..Default::default()
    };
    sp.announce(prefix, attrs).await.expect("explicit next hop");
    sp.announce(
        "203.0.113.0/24".parse().unwrap(),
        migroute_bgp::RouteAttrs::default(),
    )
    .await
    .expect("IPv4 route");
}
