//! A feature's load: its requests in flight, and the hedge bound — hedges racing at once may be
//! at most a share of those requests.
//!
//! Hedging is not a retry: it runs while the first attempt is still alive, so a slow primary with
//! unbounded hedging doubles the feature's upstream load at the moment it is slowest. The retry
//! budget bounds something else (load on *failing* endpoints); hedges get their own bound, per
//! feature, so one feature's brownout cannot spend another's allowance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One feature's requests in flight and hedges racing. Kept across config reloads.
#[derive(Default)]
pub struct Load {
    in_flight: AtomicU64,
    racing: AtomicU64,
}

/// A request in flight; counted until dropped.
pub struct InFlight(Arc<Load>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A hedge racing; counted until dropped (when the race is decided).
pub struct Racing(Arc<Load>);

impl Drop for Racing {
    fn drop(&mut self) {
        self.0.racing.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Load {
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A hedge, if fewer than `max(1, max_share × in flight)` are racing.
    pub fn try_hedge(self: &Arc<Self>, max_share: f64) -> Option<Racing> {
        let allowed = ((max_share * self.in_flight.load(Ordering::Relaxed) as f64).floor() as u64).max(1);
        self.racing
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| (r < allowed).then_some(r + 1))
            .ok()
            .map(|_| Racing(self.clone()))
    }

    /// `(requests in flight, hedges racing)`.
    pub fn figures(&self) -> (u64, u64) {
        (self.in_flight.load(Ordering::Relaxed), self.racing.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hedges_are_a_share_of_requests_in_flight_and_at_least_one() {
        let load = Arc::new(Load::default());
        let requests: Vec<InFlight> = (0..5).map(|_| load.enter()).collect();
        let first = load.try_hedge(0.1);
        assert!(first.is_some(), "one hedge is always allowed");
        assert!(load.try_hedge(0.1).is_none(), "10 % of 5 requests is less than two");
        let more: Vec<InFlight> = (0..25).map(|_| load.enter()).collect();
        let (second, third) = (load.try_hedge(0.1), load.try_hedge(0.1));
        assert!(second.is_some() && third.is_some(), "30 requests allow three");
        assert!(load.try_hedge(0.1).is_none());
        drop((first, second));
        assert_eq!(load.figures(), (30, 1), "decided races give their place back");
        drop((requests, more));
        assert_eq!(load.figures().0, 0);
    }
}
