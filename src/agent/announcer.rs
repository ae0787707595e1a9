//! The agent's view of its BGP speaker: a small trait the effector calls for
//! `Announce`/`Withdraw`, so the runtime does not depend on how routes leave the box.
//!
//! [`LocalRib`] is the announcer of an agent without BGP peers: it records what would
//! be announced (so `GET /v1/bgp/routes` and recovery behave the same) and sends
//! nothing. The real speaker implements the same trait once `migroute-bgp` offers one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use ipnetwork::IpNetwork;
use migroute_orchestration::pe::{Route, RouteAttrs};
use serde::Serialize;
use thiserror::Error;
use utoipa::ToSchema;

/// Why the speaker refused an announce or withdraw.
#[derive(Debug, Clone, Error)]
#[error("bgp: {0}")]
pub struct AnnounceError(pub String);

/// One BGP peer as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PeerInfo {
    /// Peer address.
    pub address: String,
    /// Peer AS.
    pub remote_as: u32,
    /// RFC 4271 state name (`idle`, `connect`, `active`, `open-sent`, `open-confirm`,
    /// `established`).
    pub state: String,
    /// UPDATEs received from this peer.
    pub updates_in: u64,
    /// UPDATEs sent to this peer.
    pub updates_out: u64,
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// UPDATE messages received.
    pub updates_in: u64,
    /// UPDATE messages sent.
    pub updates_out: u64,
}

/// What the executor's effector needs from a BGP speaker. Object-safe so the API can
/// hold one behind an `Arc` whatever the build wires in.
pub trait RouteAnnouncer: Send + Sync + 'static {
    /// Announces (or re-announces with new attributes) these routes.
    fn announce<'a>(&'a self, routes: &'a [Route]) -> BoxFuture<'a, Result<(), AnnounceError>>;
    /// Withdraws these prefixes; withdrawing what is not announced succeeds.
    fn withdraw<'a>(
        &'a self,
        prefixes: &'a [IpNetwork],
    ) -> BoxFuture<'a, Result<(), AnnounceError>>;
    /// Peers and their sessions.
    fn peers(&self) -> Vec<PeerInfo>;
    /// What is announced now (Adj-RIB-Out, as one table for every peer).
    fn routes(&self) -> Vec<Route>;
    /// UPDATE counters.
    fn stats(&self) -> UpdateStats;
}

/// Announcer of an agent without BGP peers: a table, no wire.
#[derive(Debug, Default)]
pub struct LocalRib {
    table: Mutex<BTreeMap<IpNetwork, RouteAttrs>>,
    updates_out: AtomicU64,
}

impl LocalRib {
    /// An empty table.
    pub fn new() -> Self {
        LocalRib::default()
    }
}

impl RouteAnnouncer for LocalRib {
    fn announce<'a>(&'a self, routes: &'a [Route]) -> BoxFuture<'a, Result<(), AnnounceError>> {
        Box::pin(async move {
            let mut t = self.table.lock().expect("rib lock");
            for r in routes {
                t.insert(r.prefix, r.attrs.clone());
            }
            self.updates_out.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }

    fn withdraw<'a>(
        &'a self,
        prefixes: &'a [IpNetwork],
    ) -> BoxFuture<'a, Result<(), AnnounceError>> {
        Box::pin(async move {
            let mut t = self.table.lock().expect("rib lock");
            for p in prefixes {
                t.remove(p);
            }
            self.updates_out.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }

    fn peers(&self) -> Vec<PeerInfo> {
        Vec::new()
    }

    fn routes(&self) -> Vec<Route> {
        self.table
            .lock()
            .expect("rib lock")
            .iter()
            .map(|(p, a)| Route {
                prefix: *p,
                attrs: a.clone(),
            })
            .collect()
    }

    fn stats(&self) -> UpdateStats {
        UpdateStats {
            updates_in: 0,
            updates_out: self.updates_out.load(Ordering::Relaxed),
        }
    }
}
