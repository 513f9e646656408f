//! The node's shared state, as handlers and sessions see it. It sits below
//! the areas that use it (`http`, `ws`, `auth`) and imports none of them
//! back: `app` builds it, they read it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::budget::Budgets;
use crate::bus::SharedBus;
use crate::chat::Chat;
use crate::config::Config;
use crate::http::readiness::ReadinessProbe;
use crate::presence::SharedPresence;
use crate::store::Store;
use crate::ws::hub::Hub;

/// Everything a handler may need, behind one pointer: axum clones the
/// state for every request (and middleware), so a clone is one reference
/// count, not one per part. Handlers take parts through `FromRef`.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for Arc<Config> {
    fn from_ref(state: &AppState) -> Self {
        state.config.clone()
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<AppState> for Arc<Chat> {
    fn from_ref(state: &AppState) -> Self {
        state.chat.clone()
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub chat: Arc<Chat>,
    pub auth: Arc<Authenticator>,
    pub store: Arc<dyn Store>,
    pub bus: SharedBus,
    pub presence: SharedPresence,
    pub hub: Arc<Hub>,
    /// Request budgets per user and per address.
    pub budgets: Arc<Budgets>,
    /// Readiness checks, shared by concurrent probes.
    pub readiness: Arc<ReadinessProbe>,
    /// Set on SIGTERM: readiness fails at once.
    pub draining: Arc<AtomicBool>,
    /// Cancelled when the node stops; every background task watches it.
    pub shutdown: CancellationToken,
    /// Owns every task the node spawns, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Cancelled once `tasks` are done: the bus publisher then flushes what
    /// sessions and writers queued last, and stops.
    pub flush: CancellationToken,
    /// Owns the tasks that outlive `tasks` (the bus publisher).
    pub late_tasks: TaskTracker,
}
