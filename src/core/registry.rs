//! The registry of live tenant pools: who has a pool, who is using it, and which pools may be closed.
//!
//! It is generic over the pool type so the policies (idle reaping, LRU cap, close-after-drain) are tested
//! without a server. Every decision that could close a pool is taken under one short lock that never
//! spans I/O; closing itself happens outside the lock, and only once the pool's last lease is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::forklock::ForkMutex;
use super::metrics::{CloseCause, Counters};
use super::quota::Quota;

/// What the registry needs from a pool: a way to close it. Closing must not block (spawn the I/O).
pub trait Pool: Send + Sync + 'static {
    fn close(&self);
}

/// What a registry's `make` produces for a new tenant.
pub struct Made<P> {
    pub pool: P,
    /// The tenant's share: its pool size, and its quota of operations in flight.
    pub size: u32,
    /// The tenant's tier or group, for metrics.
    pub label: String,
    /// Units of the connection budget the pool holds (0: it shares a client). Closing it for the budget
    /// frees them.
    pub cost: u32,
    /// Quota slots to start with: `size`, or fewer for a pool that grows (see `Quota::growing`).
    pub slots: u32,
}

/// One tenant's pool and its bookkeeping.
pub struct Entry<P: Pool> {
    pub tenant: String,
    pub pool: P,
    pub pool_size: u32,
    pub label: String,
    /// Budget units the pool holds; grows with its quota (see `manager::growth`).
    cost: AtomicU32,
    pub quota: Quota,
    pub created: Instant,
    epoch: Instant,
    /// Leases outstanding: operations in flight plus live cursors.
    in_use: AtomicU32,
    /// Microseconds since `epoch` of the last lease taken or returned (milliseconds tied pools used
    /// within the same millisecond, and the LRU choice among them was arbitrary).
    last_used_us: AtomicU64,
    pub operations: AtomicU64,
    pub errors: AtomicU64,
    /// Set once the entry has left the map; the pool closes when `in_use` reaches zero.
    retired: AtomicBool,
    closed: AtomicBool,
}

impl<P: Pool> Entry<P> {
    pub fn cost(&self) -> u32 {
        self.cost.load(Ordering::Acquire)
    }

    /// Records units the pool's reservation gained.
    pub fn add_cost(&self, units: u32) {
        self.cost.fetch_add(units, Ordering::AcqRel);
    }

    fn new(tenant: String, made: Made<P>, epoch: Instant) -> Self {
        let now = Instant::now();
        Entry {
            tenant,
            pool: made.pool,
            pool_size: made.size,
            label: made.label,
            cost: AtomicU32::new(made.cost),
            quota: Quota::growing(made.size, made.slots),
            created: now,
            epoch,
            in_use: AtomicU32::new(0),
            last_used_us: AtomicU64::new(now.saturating_duration_since(epoch).as_micros() as u64),
            operations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    pub fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Acquire)
    }

    pub fn idle_for(&self, now: Instant) -> Duration {
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        Duration::from_micros(now_us.saturating_sub(self.last_used_us.load(Ordering::Relaxed)))
    }

    pub fn last_used(&self) -> Instant {
        self.epoch + Duration::from_micros(self.last_used_us.load(Ordering::Relaxed))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn touch(&self) {
        let us = Instant::now().saturating_duration_since(self.epoch).as_micros() as u64;
        self.last_used_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Closes the pool if it has left the map and nobody holds a lease. Safe to call from any thread,
    /// any number of times: exactly one caller closes.
    fn close_if_drained(&self) -> bool {
        if self.retired.load(Ordering::Acquire)
            && self.in_use.load(Ordering::Acquire) == 0
            && self.closed.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            self.pool.close();
            return true;
        }
        false
    }
}

/// Proof that a tenant's pool is in use; the pool cannot be closed while one exists.
pub struct Lease<P: Pool> {
    entry: Arc<Entry<P>>,
    counters: Arc<Counters>,
    idle: Arc<IdleSignal>,
}

/// Wakes whoever waits for a pool to become idle (operations waiting for room in the connection
/// budget), when the last lease on a pool is returned. Free when nobody waits.
#[derive(Default)]
pub struct IdleSignal {
    pub notify: tokio::sync::Notify,
    wanted: AtomicU32,
}

impl IdleSignal {
    /// Asks for wake-ups until the guard drops.
    pub fn want(self: &Arc<Self>) -> IdleWanted {
        self.wanted.fetch_add(1, Ordering::AcqRel);
        IdleWanted(Arc::clone(self))
    }
}

pub struct IdleWanted(Arc<IdleSignal>);

impl Drop for IdleWanted {
    fn drop(&mut self) {
        self.0.wanted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<P: Pool> Lease<P> {
    pub fn pool(&self) -> &P {
        &self.entry.pool
    }

    pub fn entry(&self) -> &Arc<Entry<P>> {
        &self.entry
    }

    pub fn record_error(&self) {
        self.entry.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl<P: Pool> Drop for Lease<P> {
    fn drop(&mut self) {
        self.entry.touch();
        let was = self.entry.in_use.fetch_sub(1, Ordering::AcqRel);
        if self.entry.close_if_drained() {
            self.counters.closed();
        } else if was == 1 && self.entry.cost() > 0 && self.idle.wanted.load(Ordering::Acquire) > 0 {
            self.idle.notify.notify_waiters();
        }
    }
}

/// Limits the registry enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Pools unused this long are closed by `reap`. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// At most this many live pools; creating one more evicts the least recently used idle pool.
    pub max_pools: Option<usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RegistryError {
    Closed,
    /// Making the tenant's pool failed (e.g. the tier callback raised).
    Make(String),
}

pub struct Registry<P: Pool> {
    /// Held across `fork()` by the fork hooks: hence not parking_lot's (see `forklock`).
    inner: ForkMutex<Inner<P>>,
    limits: Limits,
    epoch: Instant,
    pub counters: Arc<Counters>,
}

struct Inner<P: Pool> {
    entries: HashMap<String, Arc<Entry<P>>>,
    closed: bool,
    /// Under the lock (which the fork hooks hold) so that a forked child can start with a fresh one:
    /// the parent's may be mid-notification at the instant of the fork.
    idle: Arc<IdleSignal>,
}

/// A snapshot of one tenant's pool, for stats.
#[derive(Clone, Debug)]
pub struct EntryInfo {
    pub tenant: String,
    pub label: String,
    pub pool_size: u32,
    /// Leases: operations in flight plus live cursors.
    pub in_use: u32,
    /// Operations holding a quota slot right now.
    pub in_flight: u32,
    /// Quota slots given so far: `pool_size` unless the pool grows (per_user), and then the most
    /// connections it can have open.
    pub slots: u32,
    pub waiting: u32,
    pub longest_wait: Duration,
    pub waits: u64,
    pub wait_time: Duration,
    pub wait_timeouts: u64,
    pub operations: u64,
    pub errors: u64,
    pub age: Duration,
    pub idle: Duration,
}

impl<P: Pool> Registry<P> {
    pub fn new(limits: Limits) -> Self {
        Registry {
            inner: ForkMutex::new(Inner { entries: HashMap::new(), closed: false, idle: Arc::default() }),
            limits,
            epoch: Instant::now(),
            counters: Arc::new(Counters::default()),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// What wakes waiters when a pool becomes idle (see `IdleSignal`).
    pub fn idle_signal(&self) -> Arc<IdleSignal> {
        Arc::clone(&self.inner.lock().idle)
    }

    /// Takes a lease on the tenant's pool, creating the pool with `make` if there is none.
    ///
    /// `make` runs without the lock held; if two threads race to create the same tenant's pool, one
    /// wins and the other's pool is closed unused.
    pub fn lease<F>(&self, tenant: &str, make: F) -> Result<Lease<P>, RegistryError>
    where
        F: FnOnce() -> Result<Made<P>, String>,
    {
        if let Some(lease) = self.lease_existing(tenant)? {
            return Ok(lease);
        }
        let made = make().map_err(RegistryError::Make)?;
        let fresh = Arc::new(Entry::new(tenant.to_owned(), made, self.epoch));
        let (lease, evicted, lost_race) = {
            let mut inner = self.inner.lock();
            if inner.closed {
                drop(inner);
                fresh.pool.close();
                return Err(RegistryError::Closed);
            }
            match inner.entries.get(tenant) {
                Some(existing) => (self.take(existing, &inner.idle), Vec::new(), Some(fresh)),
                None => {
                    let lease = self.take(&fresh, &inner.idle);
                    inner.entries.insert(tenant.to_owned(), fresh);
                    let evicted = self.evict_over_cap(&mut inner);
                    (lease, evicted, None)
                }
            }
        };
        match lost_race {
            Some(unused) => unused.pool.close(),
            None => self.counters.created(),
        }
        self.retire_all(evicted, CloseCause::Lru);
        Ok(lease)
    }

    /// A lease on the tenant's existing pool without waiting for anything: None if there is no such
    /// pool or the lock is busy (the caller then takes the waiting path, `lease`). For callers that
    /// must not block where they are (a thread holding the GIL).
    pub fn try_lease_existing(&self, tenant: &str) -> Option<Result<Lease<P>, RegistryError>> {
        let inner = self.inner.try_lock()?;
        if inner.closed {
            return Some(Err(RegistryError::Closed));
        }
        inner.entries.get(tenant).map(|e| {
            self.counters.reused();
            Ok(self.take(e, &inner.idle))
        })
    }

    /// A lease on the tenant's existing pool; None if it has none.
    pub fn lease_existing(&self, tenant: &str) -> Result<Option<Lease<P>>, RegistryError> {
        let inner = self.inner.lock();
        if inner.closed {
            return Err(RegistryError::Closed);
        }
        Ok(inner.entries.get(tenant).map(|e| {
            self.counters.reused();
            self.take(e, &inner.idle)
        }))
    }

    /// Must be called with the lock held, so that `reap` and `evict` never see a pool as idle while a
    /// lease on it is being handed out.
    fn take(&self, entry: &Arc<Entry<P>>, idle: &Arc<IdleSignal>) -> Lease<P> {
        entry.in_use.fetch_add(1, Ordering::AcqRel);
        entry.operations.fetch_add(1, Ordering::Relaxed);
        self.counters.operation();
        entry.touch();
        Lease { entry: Arc::clone(entry), counters: Arc::clone(&self.counters), idle: Arc::clone(idle) }
    }

    /// Over the cap, removes least recently used idle entries. Pools in use are never evicted: when all
    /// are busy the registry stays over the cap until some become idle (see README, "LRU cap").
    fn evict_over_cap(&self, inner: &mut Inner<P>) -> Vec<Arc<Entry<P>>> {
        let Some(max) = self.limits.max_pools else {
            return Vec::new();
        };
        let mut evicted = Vec::new();
        while inner.entries.len() > max {
            let victim = inner
                .entries
                .values()
                .filter(|e| e.in_use() == 0)
                .min_by_key(|e| e.last_used_us.load(Ordering::Relaxed))
                .map(|e| e.tenant.clone());
            match victim.and_then(|t| inner.entries.remove(&t)) {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        evicted
    }

    /// Closes least recently used idle pools that hold budget until they free at least `units` (fewer
    /// if there are not enough idle ones). Pools with a lease are never chosen. Returns the units freed.
    pub fn evict_for_budget(&self, units: u32) -> u32 {
        if units == 0 {
            return 0;
        }
        let victims = {
            let mut inner = self.inner.lock();
            let mut idle: Vec<(u64, &Arc<Entry<P>>)> = inner
                .entries
                .values()
                .filter(|e| e.cost() > 0 && e.in_use() == 0)
                .map(|e| (e.last_used_us.load(Ordering::Relaxed), e))
                .collect();
            idle.sort_unstable_by_key(|(t, _)| *t);
            let mut freed = 0;
            let chosen: Vec<String> = idle
                .into_iter()
                .take_while(|(_, e)| {
                    let more = freed < units;
                    freed += e.cost();
                    more
                })
                .map(|(_, e)| e.tenant.clone())
                .collect();
            chosen.iter().filter_map(|t| inner.entries.remove(t)).collect::<Vec<_>>()
        };
        let freed = victims.iter().map(|e| e.cost()).sum();
        self.retire_all(victims, CloseCause::Budget);
        freed
    }

    /// Budget units held by pools with a lease: the part of the budget no eviction can free now.
    pub fn cost_in_use(&self) -> u32 {
        self.inner.lock().entries.values().filter(|e| e.in_use() > 0).map(|e| e.cost()).sum()
    }

    fn retire_all(&self, entries: Vec<Arc<Entry<P>>>, cause: CloseCause) {
        for entry in entries {
            entry.retired.store(true, Ordering::Release);
            self.counters.retired(cause);
            if entry.close_if_drained() {
                self.counters.closed();
            }
        }
    }

    /// Closes pools idle for longer than the idle timeout, and trims pools over the cap that have become
    /// idle since. Returns how many pools were retired.
    pub fn reap(&self, now: Instant) -> usize {
        let (idle, over_cap) = {
            let mut inner = self.inner.lock();
            let idle = match self.limits.idle_timeout {
                Some(timeout) => {
                    let expired: Vec<String> = inner
                        .entries
                        .values()
                        .filter(|e| e.in_use() == 0 && e.idle_for(now) >= timeout)
                        .map(|e| e.tenant.clone())
                        .collect();
                    expired.iter().filter_map(|t| inner.entries.remove(t)).collect()
                }
                None => Vec::new(),
            };
            let over_cap = self.evict_over_cap(&mut inner);
            (idle, over_cap)
        };
        let n = idle.len() + over_cap.len();
        self.retire_all(idle, CloseCause::Idle);
        self.retire_all(over_cap, CloseCause::Lru);
        n
    }

    /// Removes the tenant's pool; it closes once its in-flight operations and cursors are done.
    pub fn remove(&self, tenant: &str) -> bool {
        let removed = self.inner.lock().entries.remove(tenant);
        match removed {
            Some(e) => {
                self.retire_all(vec![e], CloseCause::Manual);
                true
            }
            None => false,
        }
    }

    /// Removes the tenant's pool after an error that makes it unusable.
    pub fn discard(&self, entry: &Arc<Entry<P>>) {
        let removed = {
            let mut inner = self.inner.lock();
            match inner.entries.get(&entry.tenant) {
                Some(current) if Arc::ptr_eq(current, entry) => inner.entries.remove(&entry.tenant),
                _ => None,
            }
        };
        if let Some(e) = removed {
            self.retire_all(vec![e], CloseCause::Error);
        }
    }

    /// Refuses all further leases and retires every pool. Idempotent.
    pub fn close(&self) -> usize {
        self.inner.lock().closed = true;
        self.clear(CloseCause::Shutdown)
    }

    /// Retires every pool (each closes after its last lease) and stays open: the next lease of a
    /// tenant opens a pool again.
    pub fn clear(&self, cause: CloseCause) -> usize {
        let all: Vec<_> = self.inner.lock().entries.drain().map(|(_, e)| e).collect();
        let n = all.len();
        self.retire_all(all, cause);
        n
    }

    /// The registry's lock, for `fork()` to hold (see `manager::prepare_fork`), so that no other thread
    /// is inside it at the instant of the fork. Dropping it, in the parent and in the child, releases it.
    pub fn lock_for_fork(&self) -> impl Sized + '_ {
        self.inner.lock()
    }

    /// Empties the registry without closing anything: for a forked child, whose inherited pools belong
    /// to the parent.
    pub fn abandon(&self) -> Vec<Arc<Entry<P>>> {
        let mut inner = self.inner.lock();
        inner.idle = Arc::default();
        inner.entries.drain().map(|(_, e)| e).collect()
    }

    /// Tenants with a live pool, oldest first.
    pub fn tenants(&self) -> Vec<String> {
        let inner = self.inner.lock();
        let mut v: Vec<_> = inner.entries.values().map(|e| (e.created, e.tenant.clone())).collect();
        v.sort();
        v.into_iter().map(|(_, t)| t).collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn info(&self, tenant: &str) -> Option<EntryInfo> {
        let e = self.inner.lock().entries.get(tenant).cloned()?;
        Some(Self::describe(&e, Instant::now()))
    }

    pub fn snapshot(&self) -> Vec<EntryInfo> {
        let entries: Vec<_> = self.inner.lock().entries.values().cloned().collect();
        let now = Instant::now();
        let mut v: Vec<_> = entries.iter().map(|e| Self::describe(e, now)).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.age));
        v
    }

    fn describe(e: &Entry<P>, now: Instant) -> EntryInfo {
        EntryInfo {
            tenant: e.tenant.clone(),
            label: e.label.clone(),
            pool_size: e.pool_size,
            in_use: e.in_use(),
            in_flight: e.quota.in_flight(),
            slots: e.quota.granted(),
            waiting: e.quota.waiting(),
            longest_wait: e.quota.longest_wait(now),
            waits: e.quota.waits.load(Ordering::Relaxed),
            wait_time: Duration::from_micros(e.quota.wait_micros.load(Ordering::Relaxed)),
            wait_timeouts: e.quota.timeouts.load(Ordering::Relaxed),
            operations: e.operations.load(Ordering::Relaxed),
            errors: e.errors.load(Ordering::Relaxed),
            age: now.saturating_duration_since(e.created),
            idle: e.idle_for(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Clone, Default)]
    struct FakePool {
        closes: Arc<AtomicUsize>,
    }
    impl Pool for FakePool {
        fn close(&self) {
            self.closes.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn registry(idle: Option<u64>, max: Option<usize>) -> Registry<FakePool> {
        Registry::new(Limits { idle_timeout: idle.map(Duration::from_millis), max_pools: max })
    }

    fn made(pool: &FakePool) -> Result<Made<FakePool>, String> {
        Ok(Made { pool: pool.clone(), size: 10, label: "free".into(), cost: 11, slots: 10 })
    }

    fn lease(r: &Registry<FakePool>, t: &str, pool: &FakePool) -> Lease<FakePool> {
        r.lease(t, || made(pool)).unwrap()
    }

    #[test]
    fn reuses_the_pool_of_a_tenant() {
        let r = registry(None, None);
        let p = FakePool::default();
        let a = lease(&r, "a", &p);
        let b = lease(&r, "a", &p);
        assert!(Arc::ptr_eq(a.entry(), b.entry()));
        assert_eq!(r.len(), 1);
        assert_eq!(a.entry().in_use(), 2);
        drop((a, b));
        assert_eq!(r.info("a").unwrap().in_use, 0);
        assert_eq!(r.info("a").unwrap().operations, 2);
    }

    #[test]
    fn try_lease_existing_never_waits_and_never_creates() {
        let r = registry(None, None);
        let p = FakePool::default();
        assert!(r.try_lease_existing("a").is_none(), "no pool yet: the caller must take the waiting path");
        drop(lease(&r, "a", &p));
        let held = r.lock_for_fork();
        assert!(r.try_lease_existing("a").is_none(), "the lock is held: it must not wait for it");
        drop(held);
        let l = r.try_lease_existing("a").unwrap().unwrap();
        assert_eq!(l.entry().in_use(), 1);
        drop(l);
        r.close();
        assert!(matches!(r.try_lease_existing("a"), Some(Err(RegistryError::Closed))));
    }

    #[test]
    fn reaps_idle_pools_only() {
        let r = registry(Some(100), None);
        let p = FakePool::default();
        drop(lease(&r, "idle", &p));
        let busy = lease(&r, "busy", &p);
        let later = Instant::now() + Duration::from_secs(1);
        assert_eq!(r.reap(later), 1);
        assert_eq!(r.tenants(), vec!["busy".to_string()]);
        assert_eq!(p.closes.load(Ordering::SeqCst), 1);
        drop(busy);
        // Used just now: not idle yet.
        assert_eq!(r.reap(Instant::now()), 0);
        assert_eq!(r.counters.snapshot().closed_idle, 1);
    }

    #[test]
    fn lru_cap_evicts_least_recently_used_idle_pool() {
        let r = registry(None, Some(3));
        let closes: Vec<FakePool> = (0..4).map(|_| FakePool::default()).collect();
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            drop(lease(&r, t, &closes[i]));
            std::thread::sleep(Duration::from_millis(3));
        }
        // Touch "a" so "b" is the least recently used.
        drop(lease(&r, "a", &closes[0]));
        drop(lease(&r, "d", &closes[3]));
        let mut t = r.tenants();
        t.sort();
        assert_eq!(t, vec!["a", "c", "d"]);
        assert_eq!(closes[1].closes.load(Ordering::SeqCst), 1);
        assert_eq!(r.counters.snapshot().closed_lru, 1);
    }

    #[test]
    fn lru_cap_never_evicts_a_busy_pool() {
        let r = registry(None, Some(2));
        let p = FakePool::default();
        let a = lease(&r, "a", &p);
        let b = lease(&r, "b", &p);
        let c = lease(&r, "c", &p);
        // All busy: over the cap rather than closing a pool under an operation.
        assert_eq!(r.len(), 3);
        assert_eq!(p.closes.load(Ordering::SeqCst), 0);
        drop(a);
        assert_eq!(r.reap(Instant::now()), 1);
        assert_eq!(r.len(), 2);
        assert_eq!(p.closes.load(Ordering::SeqCst), 1);
        drop((b, c));
    }

    #[test]
    fn removed_pool_closes_after_its_last_lease() {
        let r = registry(None, None);
        let p = FakePool::default();
        let held = lease(&r, "a", &p);
        assert!(r.remove("a"));
        assert!(!r.remove("a"));
        assert_eq!(p.closes.load(Ordering::SeqCst), 0, "closed under an operation");
        // A new request gets a new pool while the old one drains.
        let p2 = FakePool::default();
        let fresh = lease(&r, "a", &p2);
        assert!(!Arc::ptr_eq(held.entry(), fresh.entry()));
        drop(held);
        assert_eq!(p.closes.load(Ordering::SeqCst), 1);
        assert_eq!(p2.closes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn close_refuses_new_leases_and_closes_everything_once() {
        let r = registry(None, None);
        let p = FakePool::default();
        drop(lease(&r, "a", &p));
        let held = lease(&r, "b", &p);
        assert_eq!(r.close(), 2);
        assert_eq!(p.closes.load(Ordering::SeqCst), 1);
        assert!(matches!(r.lease("c", || made(&p)), Err(RegistryError::Closed)));
        drop(held);
        assert_eq!(p.closes.load(Ordering::SeqCst), 2);
        assert_eq!(r.close(), 0);
        assert_eq!(p.closes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn racing_creators_keep_one_pool() {
        let r = Arc::new(registry(None, None));
        let p = FakePool::default();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let r = Arc::clone(&r);
                let p = p.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        drop(r.lease("same", || made(&p)).unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(r.len(), 1);
        assert_eq!(r.counters.snapshot().created, 1);
        assert_eq!(r.info("same").unwrap().operations, 1600);
    }

    #[test]
    fn a_failing_make_leaves_nothing_behind() {
        let r = registry(None, None);
        let err = r.lease("t", || Err::<Made<FakePool>, _>("tier lookup failed".to_string()));
        assert!(matches!(err, Err(RegistryError::Make(m)) if m.contains("tier")));
        assert!(r.is_empty());
    }

    #[test]
    fn reaper_and_leases_race_without_closing_a_pool_in_use() {
        let r = Arc::new(registry(Some(0), None));
        let closes = FakePool::default();
        let stop = Arc::new(AtomicBool::new(false));
        let reaper = {
            let (r, stop) = (Arc::clone(&r), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    r.reap(Instant::now() + Duration::from_secs(1));
                }
            })
        };
        for _ in 0..20_000 {
            let l = r.lease("t", || made(&closes)).unwrap();
            assert!(!l.entry().is_closed(), "pool closed while leased");
        }
        stop.store(true, Ordering::Relaxed);
        reaper.join().unwrap();
        r.close();
        let c = r.counters.snapshot();
        assert_eq!(c.created, c.closed, "every pool created was closed exactly once");
        assert_eq!(closes.closes.load(Ordering::SeqCst) as u64, c.created);
    }

    #[test]
    fn budget_eviction_closes_least_recently_used_idle_pools_only() {
        let r = registry(None, None);
        let pools: Vec<FakePool> = (0..4).map(|_| FakePool::default()).collect();
        for (i, t) in ["a", "b", "c", "d"].iter().enumerate() {
            drop(lease(&r, t, &pools[i]));
            std::thread::sleep(Duration::from_millis(3));
        }
        let busy = lease(&r, "a", &pools[0]); // the oldest, but leased
                                              // 12 units: two pools of 11 (b then c, least recently used first); never a.
        assert_eq!(r.evict_for_budget(12), 22);
        let mut t = r.tenants();
        t.sort();
        assert_eq!(t, vec!["a", "d"]);
        assert_eq!(pools[1].closes.load(Ordering::SeqCst), 1);
        assert_eq!(pools[2].closes.load(Ordering::SeqCst), 1);
        assert_eq!(r.counters.snapshot().closed_budget, 2);
        assert_eq!(r.cost_in_use(), 11);
        // Only busy pools and d left: d goes, a stays however much is asked.
        assert_eq!(r.evict_for_budget(100), 11);
        assert_eq!(r.tenants(), vec!["a".to_string()]);
        assert_eq!(r.evict_for_budget(100), 0);
        assert_eq!(pools[0].closes.load(Ordering::SeqCst), 0, "a leased pool was closed");
        assert_eq!(r.evict_for_budget(0), 0);
        drop(busy);
    }

    #[test]
    fn pools_that_hold_no_budget_are_not_evicted_for_it() {
        let r = registry(None, None);
        let p = FakePool::default();
        drop(
            r.lease("shared", || {
                Ok(Made { pool: p.clone(), size: 10, label: "g".into(), cost: 0, slots: 10 })
            })
            .unwrap(),
        );
        assert_eq!(r.evict_for_budget(5), 0);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn the_last_lease_wakes_budget_waiters_only_when_wanted() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let r = registry(None, None);
            let p = FakePool::default();
            let a = lease(&r, "a", &p);
            let b = lease(&r, "a", &p);
            let signal = r.idle_signal();
            let want = signal.want();
            let idle = signal.notify.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            drop(a);
            assert!(
                tokio::time::timeout(Duration::from_millis(5), idle.as_mut()).await.is_err(),
                "still leased"
            );
            drop(b);
            tokio::time::timeout(Duration::from_secs(1), idle)
                .await
                .expect("woken when the pool became idle");
            drop(want);
        });
    }
}
