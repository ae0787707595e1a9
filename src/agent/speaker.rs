//! [`RouteAnnouncer`] over `migroute-bgp`'s [`Speaker`], and the bridge from its
//! session events to the machines (`BgpSession { up }`: while no session is
//! established, an announced route is not being held).

use std::path::Path;

use futures_util::future::BoxFuture;
use ipnetwork::IpNetwork;
use migroute_bgp::codec::{Community as BgpCommunity, Prefix as BgpPrefix};
use migroute_bgp::{PeerConfig, Speaker, SpeakerConfig, SpeakerEvent};
use migroute_orchestration::pe::{Community, Route, RouteAttrs};

use super::announcer::{AnnounceError, PeerInfo, RouteAnnouncer, UpdateStats};
use super::runtime::AgentHandle;
use crate::config::{AgentConfig, ConfigError};
use migroute_tunnel::Netns;

/// The embedded speaker.
#[derive(Debug, Clone)]
pub struct BgpAnnouncer {
    speaker: Speaker,
}

/// Builds the speaker's configuration from `agent.toml`. The graceful-restart store
/// lives next to the journal unless `bgp.state_dir` says otherwise, so a restarted
/// agent finds its Adj-RIB-Out again.
pub fn speaker_config(cfg: &AgentConfig) -> Result<SpeakerConfig, ConfigError> {
    let asn = cfg.bgp.asn.ok_or_else(|| ConfigError::Invalid {
        path: "agent.toml".into(),
        field: "bgp.asn",
        reason: "required when peers are set".into(),
    })?;
    let mut sc = SpeakerConfig::new(asn, cfg.pe.router_id);
    sc.listen = cfg.bgp.listen;
    sc.state_dir = Some(cfg.bgp.state_dir.clone().unwrap_or_else(|| {
        cfg.journal
            .parent()
            .unwrap_or(Path::new("."))
            .join("bgp-state")
    }));
    for p in &cfg.bgp.peers {
        let mut pc = PeerConfig::new(p.address, p.remote_as);
        pc.port = p.port;
        pc.local_address = p.local_address;
        pc.passive = p.passive;
        if let Some(f) = &p.md5_password_file {
            let pw = std::fs::read_to_string(f).map_err(|e| ConfigError::Invalid {
                path: f.clone(),
                field: "bgp.peers.md5_password_file",
                reason: e.to_string(),
            })?;
            pc.md5_password = Some(pw.trim().to_owned());
        }
        sc.peers.push(pc);
    }
    Ok(sc)
}

impl BgpAnnouncer {
    /// Starts the speaker (sessions come up in the background).
    pub async fn start(cfg: SpeakerConfig) -> Result<Self, AnnounceError> {
        let (speaker, _join) = Speaker::start(cfg)
            .await
            .map_err(|e| AnnounceError(e.to_string()))?;
        Ok(BgpAnnouncer { speaker })
    }

    /// Starts the speaker so that every socket it opens (listener, each connection
    /// attempt) lives in `netns`: it runs on its own single-threaded runtime, on a
    /// thread that entered the namespace before the runtime existed. Sockets keep the
    /// namespace they were created in, while the handle is used from anywhere. For the
    /// agent's own namespace this is [`BgpAnnouncer::start`].
    pub async fn start_in(netns: &Netns, cfg: SpeakerConfig) -> Result<Self, AnnounceError> {
        let Some(path) = netns.path() else {
            return Self::start(cfg).await;
        };
        let err = |what: &str, e: &dyn std::fmt::Display| {
            AnnounceError(format!("BGP speaker in netns {netns}: {what}: {e}"))
        };
        let file = std::fs::File::open(&path).map_err(|e| err("open", &e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("migroute-bgp".into())
            .spawn(move || {
                let started = (|| {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("setns: {e}"))?;
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("runtime: {e}"))
                })();
                let rt = match started {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Speaker::start(cfg).await {
                        Ok((speaker, join)) => {
                            let _ = tx.send(Ok(speaker));
                            let _ = join.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                });
            })
            .map_err(|e| err("thread", &e))?;
        match rx.await {
            Ok(Ok(speaker)) => Ok(BgpAnnouncer { speaker }),
            Ok(Err(e)) => Err(err("start", &e)),
            Err(_) => Err(err("start", &"thread ended")),
        }
    }

    /// Forwards "any session established?" changes to the owner task.
    pub fn bridge_sessions(&self, agent: AgentHandle) {
        let speaker = self.speaker.clone();
        let mut events = speaker.subscribe();
        tokio::spawn(async move {
            let mut last = None;
            // A session may have come up before we subscribed: look once before waiting,
            // then again on every session event.
            let mut check = true;
            loop {
                if check {
                    let up = speaker
                        .peers()
                        .iter()
                        .any(|p| p.state == migroute_bgp::fsm::State::Established);
                    if last != Some(up) {
                        last = Some(up);
                        if agent.bgp_session(up).await.is_err() {
                            return;
                        }
                    }
                }
                check = match events.recv().await {
                    Ok(SpeakerEvent::SessionUp { .. } | SpeakerEvent::SessionDown { .. })
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Ok(_) => false,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
            }
        });
    }
}

fn to_bgp(p: IpNetwork) -> BgpPrefix {
    BgpPrefix::new(p.ip(), p.prefix()).expect("IpNetwork lengths are valid")
}

fn from_bgp(p: &BgpPrefix) -> Option<IpNetwork> {
    IpNetwork::new(p.addr(), p.prefix_len()).ok()
}

fn attrs(a: &RouteAttrs) -> migroute_bgp::RouteAttrs {
    migroute_bgp::RouteAttrs {
        local_pref: a.local_pref,
        med: a.med,
        communities: a.communities.iter().map(|c| BgpCommunity(c.0)).collect(),
        ..Default::default()
    }
}

fn state_name(s: migroute_bgp::fsm::State) -> String {
    use migroute_bgp::fsm::State::*;
    match s {
        Idle => "idle",
        Connect => "connect",
        Active => "active",
        OpenSent => "open-sent",
        OpenConfirm => "open-confirm",
        Established => "established",
    }
    .to_owned()
}

impl RouteAnnouncer for BgpAnnouncer {
    fn announce<'a>(&'a self, routes: &'a [Route]) -> BoxFuture<'a, Result<(), AnnounceError>> {
        Box::pin(async move {
            let batch = routes
                .iter()
                .map(|r| (to_bgp(r.prefix), attrs(&r.attrs)))
                .collect();
            self.speaker
                .announce_batch(batch)
                .await
                .map_err(|e| AnnounceError(e.to_string()))
        })
    }

    fn withdraw<'a>(
        &'a self,
        prefixes: &'a [IpNetwork],
    ) -> BoxFuture<'a, Result<(), AnnounceError>> {
        Box::pin(async move {
            self.speaker
                .withdraw_batch(prefixes.iter().map(|p| to_bgp(*p)).collect())
                .await
                .map_err(|e| AnnounceError(e.to_string()))
        })
    }

    fn peers(&self) -> Vec<PeerInfo> {
        self.speaker
            .peers()
            .into_iter()
            .map(|p| PeerInfo {
                address: p.address.to_string(),
                remote_as: p.remote_as,
                state: state_name(p.state),
                updates_in: p.updates_received,
                updates_out: p.updates_sent,
            })
            .collect()
    }

    fn routes(&self) -> Vec<Route> {
        self.speaker
            .routes()
            .iter()
            .filter_map(|(p, a)| {
                Some(Route {
                    prefix: from_bgp(p)?,
                    attrs: RouteAttrs {
                        local_pref: a.local_pref,
                        med: a.med,
                        communities: a.communities.iter().map(|c| Community(c.0)).collect(),
                    },
                })
            })
            .collect()
    }

    fn stats(&self) -> UpdateStats {
        self.speaker
            .peers()
            .iter()
            .fold(UpdateStats::default(), |s, p| UpdateStats {
                updates_in: s.updates_in + p.updates_received,
                updates_out: s.updates_out + p.updates_sent,
            })
    }
}
