//! A tenant's bulkhead: at most `size` operations in flight, the rest waiting in FIFO order up to a
//! timeout. It is what keeps one tenant from taking a shared pool's every connection.
//!
//! A tenant's own pool (per_user) starts with fewer slots than its size and gains them one at a time
//! as its concurrency asks for them and the connection budget has room (see `manager::growth`): the
//! driver opens a connection only for an operation that finds none idle, so a pool never has more
//! connections than the slots it was given, and the budget reserves room for those instead of for a
//! full pool most tenants never use.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Quota {
    permits: Arc<Semaphore>,
    size: u32,
    /// Slots given so far (`size` unless the quota grows).
    granted: AtomicU32,
    waiting: AtomicU32,
    /// Start times of the waits in progress, to report the longest current wait.
    wait_starts: Mutex<Vec<(u64, Instant)>>,
    next_wait_id: AtomicU64,
    pub waits: AtomicU64,
    pub wait_micros: AtomicU64,
    pub timeouts: AtomicU64,
}

/// The wait for a slot outlasted the timeout.
#[derive(Debug, PartialEq, Eq)]
pub struct QuotaTimeout {
    pub size: u32,
    pub waited: Duration,
}

impl Quota {
    pub fn new(size: u32) -> Self {
        Quota::growing(size, size)
    }

    /// A quota of `size` that starts with `slots` of them (at least one); `add_slot` gives the rest.
    pub fn growing(size: u32, slots: u32) -> Self {
        let slots = slots.clamp(1.min(size), size);
        Quota {
            permits: Arc::new(Semaphore::new(slots as usize)),
            size,
            granted: AtomicU32::new(slots),
            waiting: AtomicU32::new(0),
            wait_starts: Mutex::new(Vec::new()),
            next_wait_id: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn in_flight(&self) -> u32 {
        // Read in this order, a slot added in between shows as one more in flight, never one less.
        let available = self.permits.available_permits() as u32;
        self.granted().saturating_sub(available)
    }

    /// Slots given so far.
    pub fn granted(&self) -> u32 {
        self.granted.load(Ordering::Acquire)
    }

    /// Whether every slot is taken and another may still be given.
    pub fn wants_slot(&self) -> bool {
        self.granted() < self.size && self.permits.available_permits() == 0
    }

    /// Gives one more slot (to the first waiter, if any); false if the quota is already full size.
    pub fn add_slot(&self) -> bool {
        let added = self
            .granted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| (g < self.size).then_some(g + 1))
            .is_ok();
        if added {
            self.permits.add_permits(1);
        }
        added
    }

    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn longest_wait(&self, now: Instant) -> Duration {
        self.wait_starts
            .lock()
            .iter()
            .map(|(_, t)| now.saturating_duration_since(*t))
            .max()
            .unwrap_or_default()
    }

    /// A slot for one operation, released when the permit drops (also when the awaiting task is
    /// cancelled: a cancelled wait never consumes a slot).
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<OwnedSemaphorePermit, QuotaTimeout> {
        if let Ok(p) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(p);
        }
        let started = Instant::now();
        let id = self.next_wait_id.fetch_add(1, Ordering::Relaxed);
        let _waiting = WaitGuard::enter(self, id, started);
        let acquire = Arc::clone(&self.permits).acquire_owned();
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, acquire).await.ok(),
            None => Some(acquire.await),
        };
        let waited = started.elapsed();
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.wait_micros.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        match result {
            // The semaphore is never closed, so acquire cannot fail.
            Some(Ok(p)) => Ok(p),
            _ => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(QuotaTimeout { size: self.size, waited })
            }
        }
    }
}

struct WaitGuard<'a> {
    quota: &'a Quota,
    id: u64,
}

impl<'a> WaitGuard<'a> {
    fn enter(quota: &'a Quota, id: u64, started: Instant) -> Self {
        quota.waiting.fetch_add(1, Ordering::Relaxed);
        quota.wait_starts.lock().push((id, started));
        WaitGuard { quota, id }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.quota.waiting.fetch_sub(1, Ordering::Relaxed);
        self.quota.wait_starts.lock().retain(|(i, _)| *i != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn limits_in_flight_and_times_out() {
        rt().block_on(async {
            let q = Quota::new(2);
            let a = q.acquire(None).await.unwrap();
            let _b = q.acquire(None).await.unwrap();
            assert_eq!(q.in_flight(), 2);
            let err = q.acquire(Some(Duration::from_millis(20))).await.unwrap_err();
            assert_eq!(err.size, 2);
            assert!(err.waited >= Duration::from_millis(20));
            assert_eq!(q.timeouts.load(Ordering::Relaxed), 1);
            assert_eq!(q.waiting(), 0);
            drop(a);
            assert!(q.acquire(Some(Duration::from_millis(20))).await.is_ok());
        });
    }

    #[test]
    fn a_growing_quota_gains_slots_up_to_its_size() {
        rt().block_on(async {
            let q = Quota::growing(3, 1);
            let a = q.acquire(None).await.unwrap();
            assert!(q.wants_slot());
            assert!(q.acquire(Some(Duration::from_millis(5))).await.is_err());
            assert!(q.add_slot());
            let b = q.acquire(None).await.unwrap();
            assert!(q.add_slot());
            assert!(!q.add_slot(), "never more slots than the size");
            let _c = q.acquire(None).await.unwrap();
            assert_eq!((q.in_flight(), q.granted()), (3, 3));
            assert!(!q.wants_slot());
            drop((a, b));
            assert_eq!(q.in_flight(), 1);
            assert_eq!(Quota::growing(4, 0).granted(), 1, "at least one slot");
        });
    }

    #[test]
    fn waiters_are_served_in_order_and_cancelled_waits_free_nothing() {
        rt().block_on(async {
            let q = Arc::new(Quota::new(1));
            let held = q.acquire(None).await.unwrap();
            // A waiter that gives up (its future is dropped) must not take the slot later.
            {
                let fut = q.acquire(None);
                let _ = tokio::time::timeout(Duration::from_millis(5), fut).await;
            }
            assert_eq!(q.waiting(), 0);
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for i in 0..3 {
                let (q, order) = (Arc::clone(&q), Arc::clone(&order));
                tasks.push(tokio::spawn(async move {
                    let _p = q.acquire(None).await.unwrap();
                    order.lock().push(i);
                }));
                tokio::task::yield_now().await;
            }
            assert_eq!(q.waiting(), 3);
            assert!(q.longest_wait(Instant::now()) > Duration::ZERO);
            drop(held);
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(*order.lock(), vec![0, 1, 2]);
            assert_eq!(q.in_flight(), 0);
        });
    }
}
