//! Process-wide counters of pool lifecycle events, cheap enough to bump on every event.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a pool left the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCause {
    Idle,
    Lru,
    Manual,
    Error,
    Shutdown,
    /// To make room in the connection budget.
    Budget,
}

#[derive(Default)]
pub struct Counters {
    created: AtomicU64,
    closed: AtomicU64,
    retired_idle: AtomicU64,
    retired_lru: AtomicU64,
    retired_manual: AtomicU64,
    retired_error: AtomicU64,
    retired_shutdown: AtomicU64,
    retired_budget: AtomicU64,
    operation_errors: AtomicU64,
    operations: AtomicU64,
    waits: AtomicU64,
    wait_micros: AtomicU64,
    wait_timeouts: AtomicU64,
    reuses: AtomicU64,
    slow_operations: AtomicU64,
}

/// A consistent-enough copy of the counters for reporting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub created: u64,
    /// Pools actually closed (after their last lease was returned).
    pub closed: u64,
    pub closed_idle: u64,
    pub closed_lru: u64,
    pub closed_manual: u64,
    pub closed_error: u64,
    pub closed_shutdown: u64,
    /// Idle pools closed to make room in the connection budget.
    pub closed_budget: u64,
    pub operation_errors: u64,
    pub operations: u64,
    pub waits: u64,
    pub wait_micros: u64,
    pub wait_timeouts: u64,
    /// Leases served by an existing pool (the design document's "reuse").
    pub reuses: u64,
    /// Operations slower than the manager's slow-operation threshold.
    pub slow_operations: u64,
}

impl Counters {
    pub fn created(&self) {
        self.created.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn operation_error(&self) {
        self.operation_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reused(&self) {
        self.reuses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn slow_operation(&self) {
        self.slow_operations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn operation(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    /// An operation waited for its tenant's quota; `timed_out` if it gave up.
    pub fn waited(&self, micros: u64, timed_out: bool) {
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.wait_micros.fetch_add(micros, Ordering::Relaxed);
        if timed_out {
            self.wait_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn retired(&self, cause: CloseCause) {
        let c = match cause {
            CloseCause::Idle => &self.retired_idle,
            CloseCause::Lru => &self.retired_lru,
            CloseCause::Manual => &self.retired_manual,
            CloseCause::Error => &self.retired_error,
            CloseCause::Shutdown => &self.retired_shutdown,
            CloseCause::Budget => &self.retired_budget,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            created: l(&self.created),
            closed: l(&self.closed),
            closed_idle: l(&self.retired_idle),
            closed_lru: l(&self.retired_lru),
            closed_manual: l(&self.retired_manual),
            closed_error: l(&self.retired_error),
            closed_shutdown: l(&self.retired_shutdown),
            closed_budget: l(&self.retired_budget),
            operation_errors: l(&self.operation_errors),
            operations: l(&self.operations),
            waits: l(&self.waits),
            wait_micros: l(&self.wait_micros),
            wait_timeouts: l(&self.wait_timeouts),
            reuses: l(&self.reuses),
            slow_operations: l(&self.slow_operations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_cause() {
        let c = Counters::default();
        c.created();
        c.created();
        c.retired(CloseCause::Idle);
        c.retired(CloseCause::Lru);
        c.retired(CloseCause::Lru);
        c.closed();
        c.operation_error();
        let s = c.snapshot();
        assert_eq!((s.created, s.closed, s.closed_idle, s.closed_lru), (2, 1, 1, 2));
        assert_eq!((s.closed_manual, s.closed_error, s.operation_errors), (0, 0, 1));
    }
}
