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
    /// TLS configured but not available.
    #[error("api.tls_cert/tls_key: TLS is not available in this build; terminate TLS in front of the agent or leave them out")]
    NoTls,
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
pub async fn serve<D: Dataplane>(
    owner: Owner<D>,
    rx: mpsc::Receiver<Request>,
    state: ApiState,
    listener: TcpListener,
) -> std::io::Result<Owner<D>> {
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
    if cfg.api.tls_cert.is_some() {
        return Err(AgentError::NoTls);
    }
    if cfg.pe.vm_interface.is_none() {
        tracing::warn!(
            "no pe.vm_interface: as a destination this PE delivers by its FIB, which a host \
             route of an earlier move may point back at the source"
        );
    }
    // No peers: record routes without sending them (labs, dry runs).
    let speaker = if cfg.bgp.peers.is_empty() {
        tracing::warn!("no [[bgp.peers]]: routes are recorded, not announced");
        None
    } else {
        Some(speaker::BgpAnnouncer::start(speaker::speaker_config(&cfg)?).await?)
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
    let netns = Netns::from_option(cfg.netns.as_deref());
    let dataplane =
        KernelDataplane::open(netns.clone(), Naming::from_config(&cfg.pe), metrics.clone()).await?;
    let (events, _) = broadcast::channel(1024);
    let mut owner = Owner::new(OwnerParts {
        registry,
        journal,
        dataplane,
        announcer: announcer.clone(),
        notifier: PeerNotifier::new(peer_token),
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
    let (handle, rx) = Owner::<KernelDataplane>::channel();
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
    tracing::info!(%addr, "API listening");
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "shutting down: finishing in-flight requests; kernel state stays (journaled)"
        );
        let _ = stop_tx.send(true);
    });
    let owner = serve(owner, rx, state, listener)
        .await
        .map_err(|source| AgentError::Io {
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
