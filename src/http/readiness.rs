//! The readiness check's cache: what `/readyz` answers, shared by every
//! request within its freshness.

use crate::bus::Bus;
use crate::presence::Presence;
use crate::store::Store;

/// Readiness answers, shared: `/readyz` is public and free of any budget
/// (a load balancer must always get its answer), so each check's result
/// serves every request for [`READINESS_FRESH`] and concurrent requests
/// wait for one check, instead of each costing a round trip to storage,
/// the bus and presence.
#[derive(Default)]
pub struct ReadinessProbe {
    /// The last check: when, and whether each part answered.
    last: tokio::sync::Mutex<Option<(std::time::Instant, Answered)>>,
}

/// Whether storage, the bus and presence answered.
pub type Answered = (bool, bool, bool);

/// How long a readiness check's result is reused.
const READINESS_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

impl ReadinessProbe {
    /// Whether storage, the bus and presence answer.
    pub async fn check(
        &self,
        store: &dyn Store,
        bus: &dyn Bus,
        presence: &dyn Presence,
    ) -> Answered {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = *last
            && at.elapsed() < READINESS_FRESH
        {
            return result;
        }
        let (database, bus, presence) = tokio::join!(store.ping(), bus.ping(), presence.ping());
        if let Err(e) = &database {
            tracing::warn!(check = "database", error = %e, "not ready");
        }
        if let Err(e) = &bus {
            tracing::warn!(check = "bus", error = %e, "not ready");
        }
        if let Err(e) = &presence {
            tracing::warn!(check = "presence", error = %e, "not ready");
        }
        let result = (database.is_ok(), bus.is_ok(), presence.is_ok());
        *last = Some((std::time::Instant::now(), result));
        result
    }
}
