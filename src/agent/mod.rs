//! The PE agent: one owner task holding the migration machines and the journal, the
//! kernel through the tunnel crate, routes through a [`RouteAnnouncer`], and the REST
//! API in front (mini-redis shape: listener and shutdown injected, the owner ends when
//! the last handle is dropped).

pub mod announcer;
pub mod effector;
pub mod metrics;
pub mod recovery;
pub mod runtime;
pub mod speaker;
pub mod sysctl;
pub mod vm_seen;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use migroute_orchestration::journal::{Journal, JournalError};
use migroute_orchestration::Time;
use migroute_tunnel::Netns;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

use crate::api::migrations::RequestRules;
use crate::api::{self, ApiState};
use crate::config::{AgentConfig, ConfigError};
use announcer::{LocalRib, RouteAnnouncer};
use effector::{Dataplane, DataplaneError, KernelDataplane, Naming, PeerNotifier};
use metrics::Metrics;
use recovery::RecoveryError;
use runtime::{Owner, OwnerParts, Request};

/// Wall-clock milliseconds since the epoch: the machines' `Time`. Wall clock, not
/// monotonic, because transition times are journaled and must mean something after a
/// restart.
pub fn now() -> Time {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Time::from_millis(ms)
}

/// Why the agent did not start or stopped abnormally.
#[derive(Debug, Error)]
pub enum AgentError {
    /// Configuration or token.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The BGP speaker did not start.
    #[error("BGP speaker: {0}")]
    Speaker(#[from] announcer::AnnounceError),
    /// TLS certificate, key or peer CA unusable.
    #[error(transparent)]
    Tls(#[from] api::tls::TlsError),
    /// The client for peer agents could not be built.
    #[error("peer API client: {0}")]
    PeerClient(#[from] reqwest::Error),
    /// Journal.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Kernel handle.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// Recovery.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    /// Listener or journal directory.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The journal failed while running; restart to replay it.
    #[error("journal failed while running: {0}")]
    Fatal(String),
}

/// Serves the API on `listener` until `state.shutdown` flips, then lets the owner
/// finish: in-flight requests complete, SSE streams end, then the owner stops.
/// Returns the owner (tests inspect it).
pub async fn serve<D: Dataplane, L>(
    owner: Owner<D>,
    rx: mpsc::Receiver<Request>,
    state: ApiState,
    listener: L,
) -> std::io::Result<Owner<D>>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let mut stop = state.shutdown.clone();
    let app = api::router(state);
    // The owner stops once the server has drained (every in-flight request answered),
    // not when the signal arrives: handles held elsewhere (the BGP session bridge)
    // must not keep it alive, and no request may be cut off.
    let (drained, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let owner_task = tokio::spawn(owner.run(rx, async move {
        let _ = drained_rx.await;
    }));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    let _ = drained.send(());
    let owner = owner_task.await.map_err(std::io::Error::other)?;
    served.map(|()| owner)
}

/// `migroute agent`: recover, listen, serve until SIGTERM/ctrl-c.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let token = cfg.token()?;
    let peer_token = cfg.peer_token()?;
    // Certificates are checked before anything else starts: a bad file stops the agent
    // with its name instead of leaving it half up.
    let tls =
        api::tls::optional_server_config(cfg.api.tls_cert.as_deref(), cfg.api.tls_key.as_deref())?;
    let notifier = match &cfg.api.peer_ca_file {
        None => PeerNotifier::new(peer_token),
        Some(ca) => PeerNotifier::with_client(peer_token, peer_client(ca)?),
    };
    if cfg.pe.vm_interface.is_none() {
        tracing::warn!(
            "no pe.vm_interface: as a destination this PE delivers by its FIB, which a host \
             route of an earlier move may point back at the source"
        );
    }
    let netns = Netns::from_option(cfg.netns.as_deref());
    // No peers: record routes without sending them (labs, dry runs).
    let speaker = if cfg.bgp.peers.is_empty() {
        tracing::warn!("no [[bgp.peers]]: routes are recorded, not announced");
        None
    } else {
        // In the configured namespace, like the tunnels: the peers are reached there.
        Some(speaker::BgpAnnouncer::start_in(&netns, speaker::speaker_config(&cfg)?).await?)
    };
    let announcer: Arc<dyn RouteAnnouncer> = match &speaker {
        Some(s) => Arc::new(s.clone()),
        None => Arc::new(LocalRib::new()),
    };
    if let Some(dir) = cfg.journal.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| AgentError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
    }
    let journal = Journal::open(&cfg.journal)?;
    let registry = journal.load_registry(now())?;
    let metrics = Arc::new(Metrics::new());
    let dataplane =
        KernelDataplane::open(netns.clone(), Naming::from_config(&cfg.pe), metrics.clone()).await?;
    let (events, _) = broadcast::channel(1024);
    let mut owner = Owner::new(OwnerParts {
        registry,
        journal,
        dataplane,
        announcer: announcer.clone(),
        notifier,
        events: events.clone(),
        metrics: metrics.clone(),
        counter_poll: Duration::from_millis(cfg.convergence.counter_poll_ms),
    });
    let report = recovery::recover(&mut owner).await?;
    tracing::info!(
        netns = %netns,
        router_id = %cfg.pe.router_id,
        loopback = %cfg.pe.loopback,
        journal = %cfg.journal.display(),
        migrations = report.migrations,
        resumed = report.resumed,
        created = ?report.kernel.created,
        deleted = ?report.kernel.deleted,
        adopted = ?report.kernel.adopted,
        overrides = report.kernel.overrides,
        announced = report.announced,
        withdrawn = report.withdrawn,
        "recovered"
    );
    // Opened before serving, so a missing interface or capability stops the agent.
    let vm_socket = match (cfg.pe.detect_vm, &cfg.pe.vm_interface) {
        (true, Some(ifname)) => Some(vm_seen::PacketSocket::open(&netns, ifname).await.map_err(
            |source| AgentError::Io {
                what: format!("listen for the VM on {ifname} (AF_PACKET, needs CAP_NET_RAW)"),
                source,
            },
        )?),
        _ => None,
    };
    let (handle, rx) = Owner::<KernelDataplane>::channel();
    if let Some(socket) = vm_socket {
        tracing::info!(interface = ?cfg.pe.vm_interface, "listening for VM announcements");
        tokio::spawn(vm_seen::listen(socket, handle.clone()));
    }
    if let Some(s) = &speaker {
        s.bridge_sessions(handle.clone());
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let default_policy = cfg
        .default_policy()
        .map_err(|reason| ConfigError::Invalid {
            path: "agent.toml".into(),
            field: "policy",
            reason,
        })?;
    let state = ApiState {
        agent: handle,
        token: token.into(),
        events,
        metrics,
        announcer,
        rules: Arc::new(RequestRules {
            max_prefixes: cfg.api.max_prefixes,
            tunnel_source: cfg.pe.tunnel_source,
            default_policy,
            default_timers: cfg.convergence.timers(),
        }),
        max_body_bytes: cfg.api.max_body_bytes,
        shutdown: stop_rx,
    };
    let listener = TcpListener::bind(cfg.api.listen)
        .await
        .map_err(|source| AgentError::Io {
            what: format!("listen on {}", cfg.api.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| AgentError::Io {
        what: "local address".into(),
        source,
    })?;
    tracing::info!(%addr, tls = tls.is_some(), "API listening");
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "shutting down: finishing in-flight requests; kernel state stays (journaled)"
        );
        let _ = stop_tx.send(true);
    });
    let served = match tls {
        Some(config) => {
            serve(
                owner,
                rx,
                state,
                api::tls::TlsListener::new(listener, config),
            )
            .await
        }
        None => serve(owner, rx, state, listener).await,
    };
    let owner = served.map_err(|source| AgentError::Io {
        what: "serve".into(),
        source,
    })?;
    if let Some(f) = owner.fatal() {
        return Err(AgentError::Fatal(f.to_owned()));
    }
    drop(owner);
    tracing::info!("stopped");
    Ok(())
}

/// The client for peer agents' APIs when they carry a private CA's certificates: as
/// [`PeerNotifier::new`]'s (a peer that does not answer must not hold up this PE's
/// migrations), trusting `ca` too.
fn peer_client(ca: &std::path::Path) -> Result<reqwest::Client, AgentError> {
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(2));
    Ok(api::tls::trust_ca(builder, ca)?.build()?)
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
