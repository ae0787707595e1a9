//! `migroute libvirt-watch`: runs beside libvirtd on a hypervisor host (see
//! [`crate::libvirt_hook::watch`]). Same configuration file as the hook.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use migroute_orchestration::drivers::libvirt::{HostWatch, Lifecycle, LifecycleEvent};
use tokio::sync::mpsc;

use crate::libvirt_hook::config::{HookConfig, DEFAULT_PATH};
use crate::libvirt_hook::run::Hook;
use crate::libvirt_hook::watch::{Quiesced, Step, Tracker};
use crate::libvirt_hook::Domain;

/// How long the watch waits before reconnecting to a libvirtd that went away.
const RECONNECT: Duration = Duration::from_secs(1);

/// Arguments of `migroute libvirt-watch`.
#[derive(Debug, Args)]
pub struct LibvirtWatchArgs {
    /// The hook's configuration (this host's agent and the peer's).
    #[arg(long, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// The local libvirtd.
    #[arg(long, default_value = "qemu:///system")]
    pub uri: String,
}

/// One event with, for a pause, the domain's XML read while it still exists here.
type Heard = (LifecycleEvent, Option<String>);

pub fn run(args: LibvirtWatchArgs) -> anyhow::Result<ExitCode> {
    let config = HookConfig::load(&args.config)?;
    let hook = Hook::new(config).context("agent clients")?;
    let (tx, rx) = mpsc::unbounded_channel();
    let uri = args.uri.clone();
    std::thread::Builder::new()
        .name("libvirt-watch".into())
        .spawn(move || listen(&uri, &tx))
        .context("starting the libvirt thread")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(hook, rx))?;
    Ok(ExitCode::SUCCESS)
}

/// The blocking side: libvirt's events, reconnecting whenever libvirtd goes away, until
/// the async side is gone.
fn listen(uri: &str, tx: &mpsc::UnboundedSender<Heard>) {
    while !tx.is_closed() {
        let watch = match HostWatch::open(uri) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch libvirt; retrying");
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        tracing::info!(uri, "watching libvirt domains");
        loop {
            match watch.next(RECONNECT) {
                Ok(Some(event)) => {
                    // The XML is read at once: the domain still exists here while paused.
                    let xml = (event.change == Lifecycle::SuspendedForMigration)
                        .then(|| watch.domain_xml(&event.domain))
                        .transpose()
                        .unwrap_or_else(|e| {
                            tracing::warn!(domain = %event.domain, error = %e, "no domain XML");
                            None
                        })
                        .flatten();
                    if tx.send((event, xml)).is_err() {
                        return;
                    }
                }
                Ok(None) if tx.is_closed() => return,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "libvirt watch lost; reconnecting");
                    break;
                }
            }
        }
        std::thread::sleep(RECONNECT);
    }
}

/// The async side: one event at a time, in order, until SIGINT or SIGTERM.
async fn serve(hook: Hook, mut rx: mpsc::UnboundedReceiver<Heard>) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tracker = Tracker::default();
    loop {
        tokio::select! {
            heard = rx.recv() => match heard {
                Some((event, xml)) => handle(&hook, &mut tracker, event, xml).await,
                None => anyhow::bail!("the libvirt thread ended"),
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    tracing::info!("libvirt watch stopped");
    Ok(())
}

async fn handle(hook: &Hook, tracker: &mut Tracker, event: LifecycleEvent, xml: Option<String>) {
    let name = event.domain.clone();
    match tracker.step(&event) {
        Step::Quiesce => {
            let Some(xml) = xml else { return };
            let domain = match Domain::parse(&xml) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(domain = %name, error = %e, "unreadable domain XML");
                    return;
                }
            };
            match hook.quiesced(&domain).await {
                Ok(Quiesced::SwitchedOver { id }) => {
                    tracing::info!(domain = %name, %id, "paused for migration: both PEs switched over");
                    tracker.switched(&name, &id);
                }
                Ok(Quiesced::Failed { id, error }) => {
                    tracing::warn!(domain = %name, %id, %error, "paused for migration: switchover failed; the destination switches over when it hears the VM");
                    tracker.switched(&name, &id);
                }
                Ok(Quiesced::NotPrepared) => {
                    tracing::warn!(domain = %name, "paused for migration, but no migration of it is prepared here (is the hook installed at the destination?)");
                }
                Ok(Quiesced::NotOurs) => {}
                Err(e) => tracing::warn!(domain = %name, error = %e, "paused for migration"),
            }
        }
        Step::Undo { id } => {
            match hook.resumed_at_source(&id).await {
                Ok(()) => {
                    tracing::warn!(domain = %name, %id, "running again at the source: migration aborted on both PEs")
                }
                Err(e) => {
                    tracing::error!(domain = %name, %id, error = %e, "running again at the source")
                }
            }
            tracker.forget(&name);
        }
        Step::Forget => {
            tracing::info!(domain = %name, "left this host");
            tracker.forget(&name);
        }
        Step::Nothing => {}
    }
}
