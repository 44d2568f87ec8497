//! Pre-opened spare clients for new per_user tenants (issue #15, "make a new tenant cheap").
//!
//! A new tenant's first operation pays two handshakes: the driver's monitor discovers the server, then
//! the operation opens a pooled connection. The driver cannot be seeded with a known topology, so the
//! only way to take both off the tenant's path is to have them done before the tenant arrives: a few
//! clients made with the options a new tenant's pool gets, warmed by a `ping`, handed to the next new
//! tenants and refilled in the background.
//!
//! This module keeps the bookkeeping (how many are ready or warming, when to refill, which warm-ups are
//! stale after a close), generic over the client so it is tested without a server.
//!
//! The manager's side (making, warming, handing out and closing spares) is in `manager::warming`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Spare clients kept by default. Two, because new tenants tend to arrive in small bursts (a sign-up,
/// a batch job touching a few tenants) and one refill is a handshake away, while each spare holds
/// budget room (its monitor plus one pooled connection per server) that nobody uses until handed out:
/// more would cost more sockets than the bursts they hide, fewer would leave the second of two close
/// arrivals on the cold path.
pub const SPARES: usize = 2;

/// After a warm-up failed (the server unreachable), no new one for this long: no retry storm.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The spares of one manager: ready ones (oldest first) and how many are being warmed.
pub struct Store<S> {
    target: usize,
    ready: VecDeque<(S, Instant)>,
    warming: usize,
    /// A per_user tenant pool has been created: an idle manager opens nothing.
    demand: bool,
    closed: bool,
    /// Bumped by every drain: a warm-up started before it is closed when it finishes.
    epoch: u64,
    failed_at: Option<Instant>,
    /// Spares handed to tenants so far.
    used: u64,
}

impl<S> Store<S> {
    /// `target`: how many spares to keep (0: off).
    pub fn new(target: usize) -> Self {
        Store {
            target,
            ready: VecDeque::new(),
            warming: 0,
            demand: false,
            closed: false,
            epoch: 0,
            failed_at: None,
            used: 0,
        }
    }

    pub fn is_on(&self) -> bool {
        self.target > 0 && !self.closed
    }

    /// A per_user pool was created: spares may be made from now on.
    pub fn demand_seen(&mut self) {
        self.demand = true;
    }

    /// Whether one more warm-up may start now; if so it is counted as warming, under the returned
    /// epoch (the caller reserves its room, and calls `abandon` if there is none).
    pub fn begin(&mut self, now: Instant) -> Option<u64> {
        let backing_off = self.failed_at.is_some_and(|t| now.saturating_duration_since(t) < RETRY_AFTER);
        if !self.is_on() || !self.demand || backing_off || self.ready.len() + self.warming >= self.target {
            return None;
        }
        self.warming += 1;
        Some(self.epoch)
    }

    /// A started warm-up found no room in the budget: it never began.
    pub fn abandon(&mut self) {
        self.warming = self.warming.saturating_sub(1);
    }

    /// A warm-up of `epoch` is over: `Ok(spare)` warmed, `Err(spare)` failed. Returns the spare if the
    /// caller must close it (it failed, or the store was drained or closed meanwhile).
    pub fn finish(&mut self, epoch: u64, outcome: Result<S, S>, now: Instant) -> Option<S> {
        self.warming = self.warming.saturating_sub(1);
        match outcome {
            Err(spare) => {
                self.failed_at = Some(now);
                Some(spare)
            }
            Ok(spare) if self.closed || epoch != self.epoch => Some(spare),
            Ok(spare) => {
                self.failed_at = None;
                self.ready.push_back((spare, now));
                None
            }
        }
    }

    /// A warm spare for a new tenant, if there is one.
    pub fn take(&mut self) -> Option<S> {
        let (spare, _) = self.ready.pop_front()?;
        self.used += 1;
        Some(spare)
    }

    /// Every ready spare, for the caller to close (a tenant waits for room, `close_all`); warm-ups under
    /// way are closed when they finish. Demand is forgotten: the next pool creation starts them again.
    pub fn drain(&mut self) -> Vec<S> {
        self.epoch += 1;
        self.demand = false;
        self.ready.drain(..).map(|(s, _)| s).collect()
    }

    /// Drains, and makes no more (the manager is closed).
    pub fn close(&mut self) -> Vec<S> {
        self.closed = true;
        self.drain()
    }

    /// In a forked child: the ready spares (inherited, for the caller to forget, never to close) and
    /// no warm-up under way (their tasks stayed in the parent).
    pub fn after_fork(&mut self) -> Vec<S> {
        self.warming = 0;
        self.drain()
    }

    /// Ready spares unused for `idle` or longer, for the idle reaper to close.
    pub fn reap(&mut self, now: Instant, idle: Duration) -> Vec<S> {
        let mut out = Vec::new();
        while self.ready.front().is_some_and(|(_, at)| now.saturating_duration_since(*at) >= idle) {
            out.extend(self.ready.pop_front().map(|(s, _)| s));
        }
        out
    }

    /// (ready, warming, handed to tenants so far), for the budget's figures.
    pub fn counts(&self) -> (usize, usize, u64) {
        (self.ready.len(), self.warming, self.used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warmed(store: &mut Store<u32>, id: u32, now: Instant) {
        let epoch = store.begin(now).expect("room for one more");
        assert!(store.finish(epoch, Ok(id), now).is_none());
    }

    #[test]
    fn nothing_before_demand_and_never_more_than_the_target() {
        let now = Instant::now();
        let mut s = Store::<u32>::new(SPARES);
        assert_eq!(s.begin(now), None, "an idle manager opens nothing");
        s.demand_seen();
        let a = s.begin(now).unwrap();
        let _b = s.begin(now).unwrap();
        assert_eq!(s.begin(now), None, "warming ones count");
        assert!(s.finish(a, Ok(1), now).is_none());
        assert_eq!(s.counts(), (1, 1, 0));
        assert_eq!(s.begin(now), None);
        assert_eq!(s.take(), Some(1));
        assert_eq!(s.counts(), (0, 1, 1));
        assert!(s.begin(now).is_some(), "refilled after a take");
    }

    #[test]
    fn off_makes_none() {
        let mut s = Store::<u32>::new(0);
        s.demand_seen();
        assert_eq!(s.begin(Instant::now()), None);
    }

    #[test]
    fn a_failed_warm_up_is_closed_and_backs_off() {
        let now = Instant::now();
        let mut s = Store::<u32>::new(SPARES);
        s.demand_seen();
        let e = s.begin(now).unwrap();
        assert_eq!(s.finish(e, Err(7), now), Some(7), "never handed out");
        assert_eq!(s.take(), None);
        assert_eq!(s.begin(now + Duration::from_secs(1)), None, "no retry storm");
        assert!(s.begin(now + RETRY_AFTER).is_some());
    }

    #[test]
    fn drained_and_closed_stores_close_late_warm_ups() {
        let now = Instant::now();
        let mut s = Store::<u32>::new(SPARES);
        s.demand_seen();
        warmed(&mut s, 1, now);
        let late = s.begin(now).unwrap();
        assert_eq!(s.drain(), vec![1]);
        assert_eq!(s.finish(late, Ok(2), now), Some(2), "started before the drain");
        assert_eq!(s.begin(now), None, "demand forgotten");
        s.demand_seen();
        warmed(&mut s, 3, now);
        assert_eq!(s.close(), vec![3]);
        s.demand_seen();
        assert_eq!(s.begin(now), None, "a closed manager makes none");
    }

    #[test]
    fn a_forked_child_forgets_warm_ups_under_way() {
        let now = Instant::now();
        let mut s = Store::<u32>::new(SPARES);
        s.demand_seen();
        warmed(&mut s, 1, now);
        s.begin(now).unwrap();
        assert_eq!(s.after_fork(), vec![1]);
        assert_eq!(s.counts(), (0, 0, 0), "the parent's warm-up never finishes here");
        s.demand_seen();
        assert!(s.begin(now).is_some() && s.begin(now).is_some(), "both refilled in the child");
    }

    #[test]
    fn the_reaper_closes_spares_idle_too_long() {
        let now = Instant::now();
        let mut s = Store::<u32>::new(SPARES);
        s.demand_seen();
        warmed(&mut s, 1, now);
        warmed(&mut s, 2, now + Duration::from_secs(5));
        assert_eq!(s.reap(now + Duration::from_secs(6), Duration::from_secs(3)), vec![1]);
        assert_eq!(s.counts(), (1, 0, 0));
    }

    #[test]
    fn a_tenant_takes_the_oldest_spare() {
        let now = Instant::now();
        let mut s = Store::<u32>::new(SPARES);
        s.demand_seen();
        warmed(&mut s, 1, now);
        warmed(&mut s, 2, now);
        assert_eq!((s.take(), s.take(), s.take()), (Some(1), Some(2), None));
    }
}
