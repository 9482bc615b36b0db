//! The state every connection of one API server shares: the DHT, the lookup coalescer, who
//! announced what, the settings, and the shutdown signal. Built by `grape::api`, read by
//! `grape::conn` and `grape::handlers`.

use std::sync::Arc;

use tokio::sync::watch;

use super::announcers::Announcers;
use super::coalesce::LookupCoalescer;
use super::config::ApiConfig;
use super::stats::ApiStats;

/// State shared by every connection.
pub(super) struct Shared<D> {
    pub(super) dht: Arc<D>,
    /// Lookups of one name share a traversal.
    pub(super) lookups: LookupCoalescer,
    /// Who announced what through this grape: who may unannounce it.
    pub(super) announcers: Announcers,
    pub(super) config: ApiConfig,
    /// What the operator endpoints report; an `Arc` so that every event loop serving one
    /// grape counts into the same cells.
    pub(super) stats: Arc<ApiStats>,
    /// Flipped once shutdown starts: idle connections close, busy ones answer with
    /// `Connection: close`.
    pub(super) closing: watch::Receiver<bool>,
}
