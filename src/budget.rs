//! Request budgets. Every client frame and REST request of a signed-in user
//! is charged to that user, one budget shared by all their sockets on this
//! node (a limit per socket would multiply by the sockets a user opens);
//! every request without a valid token is charged to the address it came
//! from. Both are GCRA token buckets (`governor`), keyed by user or address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use uuid::Uuid;

use crate::config::Limits;

pub struct Budgets {
    users: DefaultKeyedRateLimiter<Uuid>,
    /// Searches for people, on top of `users`: a budget low enough that
    /// nobody lists the whole directory quickly.
    searches: DefaultKeyedRateLimiter<Uuid>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

/// Refused: the budget allows the next request after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget(pub Duration);

impl OverBudget {
    /// Whole seconds for `Retry-After`, at least one.
    pub fn retry_after_secs(self) -> u64 {
        (self.0.as_secs_f64().ceil() as u64).max(1)
    }
}

fn quota(per_sec: f64, burst: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / per_sec).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

impl Budgets {
    pub fn new(limits: &Limits) -> Self {
        Self {
            users: DefaultKeyedRateLimiter::keyed(quota(limits.rate_per_sec, limits.rate_burst)),
            searches: DefaultKeyedRateLimiter::keyed(quota(
                limits.search_rate_per_sec,
                limits.search_burst,
            )),
            addresses: DefaultKeyedRateLimiter::keyed(quota(
                limits.anonymous_rate_per_sec,
                limits.anonymous_rate_burst,
            )),
            clock: DefaultClock::default(),
        }
    }

    /// Charges one to `key`'s budget in `limiter`.
    fn charge<K: Clone + Eq + std::hash::Hash>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), OverBudget> {
        limiter
            .check_key(key)
            .map_err(|not_until| OverBudget(not_until.wait_time_from(self.clock.now())))
    }

    /// Charges one frame or request to `user`.
    pub fn charge_user(&self, user: Uuid) -> Result<(), OverBudget> {
        self.charge(&self.users, &user)
    }

    /// Charges one search for people to `user`.
    pub fn charge_search(&self, user: Uuid) -> Result<(), OverBudget> {
        self.charge(&self.searches, &user)
    }

    /// Charges one request without a valid token to `address` (an IPv6
    /// address by its /64: one host is usually given a whole /64).
    pub fn charge_address(&self, address: IpAddr) -> Result<(), OverBudget> {
        self.charge(&self.addresses, &address_key(address))
    }

    /// Forgets users and addresses whose budget is full again, so the
    /// maps hold only the recently active ones.
    pub fn prune(&self) {
        self.users.retain_recent();
        self.users.shrink_to_fit();
        self.searches.retain_recent();
        self.searches.shrink_to_fit();
        self.addresses.retain_recent();
        self.addresses.shrink_to_fit();
    }

    /// Users and addresses with a budget in use.
    pub fn tracked(&self) -> usize {
        self.users.len() + self.searches.len() + self.addresses.len()
    }
}

fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_sec: f64, burst: u32) -> Limits {
        Limits {
            rate_per_sec: per_sec,
            rate_burst: burst,
            anonymous_rate_per_sec: per_sec,
            anonymous_rate_burst: burst,
            ..Limits::default()
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let budgets = Budgets::new(&limits(1.0, 3));
        let user = Uuid::now_v7();
        for _ in 0..3 {
            budgets.charge_user(user).unwrap();
        }
        let refused = budgets.charge_user(user).unwrap_err();
        assert!(refused.0 <= Duration::from_secs(1), "{refused:?}");
        assert_eq!(refused.retry_after_secs(), 1);
        budgets
            .charge_user(Uuid::now_v7())
            .expect("another user's budget");
    }

    #[test]
    fn an_ipv6_host_is_charged_by_its_64() {
        let budgets = Budgets::new(&limits(1.0, 1));
        budgets
            .charge_address("2001:db8::1".parse().unwrap())
            .unwrap();
        assert!(
            budgets
                .charge_address("2001:db8::ffff:1234".parse().unwrap())
                .is_err()
        );
        budgets
            .charge_address("2001:db8:0:1::1".parse().unwrap())
            .expect("another /64");
        budgets
            .charge_address("192.0.2.1".parse().unwrap())
            .unwrap();
        assert!(
            budgets
                .charge_address("::ffff:192.0.2.1".parse().unwrap())
                .is_err(),
            "a v4-mapped address is the v4 address"
        );
    }

    #[test]
    fn pruning_forgets_full_budgets() {
        let budgets = Budgets::new(&limits(1000.0, 1));
        budgets.charge_user(Uuid::now_v7()).unwrap();
        budgets
            .charge_address("192.0.2.1".parse().unwrap())
            .unwrap();
        assert_eq!(budgets.tracked(), 2);
        std::thread::sleep(Duration::from_millis(5));
        budgets.prune();
        assert_eq!(budgets.tracked(), 0);
    }
}
