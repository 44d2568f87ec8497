//! The connection budget: one bound on the server sockets a manager may open, across every tenant pool
//! and strategy, monitoring sockets included.
//!
//! A driver client reserves its worst case (every pooled connection plus its monitors, per server)
//! before it is created, and gives the reservation back only once its `shutdown()` has completed, so the
//! sockets it is still closing count until they are closed. A reservation that does not fit waits in one
//! FIFO queue (fair across tenants: only the head of the queue is ever granted) while the manager closes
//! idle pools to make room; `deficit` tells it how much room the waiters lack.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::forklock::ForkMutex;

pub struct Budget {
    /// Held across `fork()` by the fork hooks: hence not parking_lot's (see `forklock`).
    state: ForkMutex<State>,
}

struct State {
    limit: u32,
    /// Units held by reservations, including those of clients still shutting down.
    reserved: u32,
    /// The part of `reserved` whose clients are shutting down: room that is on its way.
    releasing: u32,
    queue: VecDeque<Arc<Waiter>>,
    /// The sum of the queued waiters' needs.
    waiting_units: u32,
    /// Bumped by `reset` (a forked child): reservations of an older generation give nothing back.
    generation: u64,
    peak_reserved: u32,
    waits: u64,
    wait_micros: u64,
    wait_timeouts: u64,
    /// Units of the named holds (the platform's own clients), by name: part of `reserved`.
    held: BTreeMap<String, u32>,
}

struct Waiter {
    need: u32,
    granted: AtomicBool,
    wake: Notify,
}

/// The budget's figures, for stats and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BudgetSnapshot {
    pub limit: u32,
    pub reserved: u32,
    pub releasing: u32,
    /// Operations waiting for room (one per waiting pool creation).
    pub waiting: u32,
    pub waiting_units: u32,
    pub peak_reserved: u32,
    pub waits: u64,
    pub wait_micros: u64,
    pub wait_timeouts: u64,
    /// The units of the named holds by name (clients opened outside the core: the tenant catalog's,
    /// a move's), sorted by name.
    pub held: Vec<(String, u32)>,
}

/// Units of the budget held by one driver client (or probe). Dropping it gives them back: so it is
/// moved into the task that shuts the client down and dropped after `shutdown()` returns.
pub struct Reservation {
    budget: Arc<Budget>,
    units: u32,
    generation: u64,
    closing: AtomicBool,
}

impl Reservation {
    pub fn units(&self) -> u32 {
        self.units
    }

    /// Gives back at once the units beyond `keep`: a client about to shut down that never opened all
    /// the connections it reserved room for. Its sockets that do exist keep their units until they are
    /// closed; the rest was never anything but room.
    pub fn shrink_to(&mut self, keep: u32) {
        if keep >= self.units {
            return;
        }
        let freed = self.units - keep;
        self.units = keep;
        let mut s = self.budget.state.lock();
        if s.generation != self.generation {
            return;
        }
        s.reserved -= freed;
        if self.closing.load(Ordering::Acquire) {
            s.releasing -= freed;
        }
        s.grant();
    }

    /// Adds `more`'s units to this reservation (a pool that grew: see `manager::growth`). Units of
    /// another budget, or of a budget reset since (a forked child), stay with `more`.
    pub fn absorb(&mut self, mut more: Reservation) {
        if !Arc::ptr_eq(&self.budget, &more.budget) || self.generation != more.generation {
            return;
        }
        let mut s = self.budget.state.lock();
        if s.generation == self.generation && self.closing.load(Ordering::Acquire) {
            s.releasing += more.units;
        }
        self.units += std::mem::take(&mut more.units);
    }

    /// The reservation under a name the budget's figures list: for a client opened outside the core,
    /// whose owner gives the units back with `Held::release`.
    pub fn named(self, what: &str) -> Held {
        let mut s = self.budget.state.lock();
        if s.generation == self.generation {
            *s.held.entry(what.to_owned()).or_default() += self.units;
        }
        drop(s);
        Held { reservation: Some(self), what: what.to_owned() }
    }

    /// The client is shutting down: its units will come back soon (see `Budget::deficit`).
    pub fn closing(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            let mut s = self.budget.state.lock();
            if s.generation == self.generation {
                s.releasing += self.units;
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut s = self.budget.state.lock();
        if s.generation != self.generation {
            return;
        }
        s.reserved -= self.units;
        if self.closing.load(Ordering::Acquire) {
            s.releasing -= self.units;
        }
        s.grant();
    }
}

/// A named reservation (see `Reservation::named`). Released once: by `release`, else when dropped. One
/// inherited across a fork gives nothing back in the child (its budget was reset).
pub struct Held {
    reservation: Option<Reservation>,
    what: String,
}

impl Held {
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The units held; 0 once released.
    pub fn units(&self) -> u32 {
        self.reservation.as_ref().map_or(0, Reservation::units)
    }

    /// Gives the units back; false if they were given back already.
    pub fn release(&mut self) -> bool {
        let Some(r) = self.reservation.take() else {
            return false;
        };
        {
            let mut s = r.budget.state.lock();
            if s.generation == r.generation {
                if let Some(units) = s.held.get_mut(&self.what) {
                    *units = units.saturating_sub(r.units);
                    if *units == 0 {
                        s.held.remove(&self.what);
                    }
                }
            }
        }
        // Dropped once the lock above is released: it takes the lock itself.
        drop(r);
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

/// A place in the queue. Dropping it (a timeout, a cancelled task) leaves the queue, or gives back
/// the units if they were granted meanwhile, so an abandoned wait never holds any room.
pub struct Ticket {
    budget: Arc<Budget>,
    waiter: Option<Arc<Waiter>>,
    generation: u64,
}

impl Ticket {
    /// Waits until the units are granted. Cancel-safe: call it again after dropping its future.
    pub async fn granted(&mut self) -> Reservation {
        let waiter = Arc::clone(self.waiter.as_ref().expect("a ticket is granted once"));
        loop {
            // The flag is set under the budget's lock before the wake-up, and `notify_one` keeps the
            // wake-up for a future that is not polled yet: checking first loses none.
            if waiter.granted.load(Ordering::Acquire) {
                self.waiter = None;
                return Reservation {
                    budget: Arc::clone(&self.budget),
                    units: waiter.need,
                    generation: self.generation,
                    closing: AtomicBool::new(false),
                };
            }
            waiter.wake.notified().await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        let mut s = self.budget.state.lock();
        if s.generation != self.generation {
            return;
        }
        if waiter.granted.load(Ordering::Acquire) {
            s.reserved -= waiter.need;
        } else {
            s.queue.retain(|w| !Arc::ptr_eq(w, &waiter));
            s.waiting_units -= waiter.need;
        }
        // Leaving the head of the queue may let the next waiter in.
        s.grant();
    }
}

impl State {
    /// Grants waiters in arrival order while the head fits. Never skips the head for a smaller need
    /// behind it: that is what makes the queue fair.
    fn grant(&mut self) {
        while let Some(head) = self.queue.front() {
            if self.reserved + head.need > self.limit {
                break;
            }
            let head = self.queue.pop_front().expect("just seen");
            self.reserved += head.need;
            self.waiting_units -= head.need;
            self.peak_reserved = self.peak_reserved.max(self.reserved);
            head.granted.store(true, Ordering::Release);
            head.wake.notify_one();
        }
    }
}

impl Budget {
    pub fn new(limit: u32) -> Arc<Budget> {
        Arc::new(Budget {
            state: ForkMutex::new(State {
                limit,
                reserved: 0,
                releasing: 0,
                queue: VecDeque::new(),
                waiting_units: 0,
                generation: 0,
                peak_reserved: 0,
                waits: 0,
                wait_micros: 0,
                wait_timeouts: 0,
                held: BTreeMap::new(),
            }),
        })
    }

    pub fn limit(&self) -> u32 {
        self.state.lock().limit
    }

    fn reservation(self: &Arc<Self>, s: &mut State, units: u32) -> Reservation {
        s.reserved += units;
        s.peak_reserved = s.peak_reserved.max(s.reserved);
        Reservation {
            budget: Arc::clone(self),
            units,
            generation: s.generation,
            closing: AtomicBool::new(false),
        }
    }

    /// The units at once if they fit and nobody is queued before us; None otherwise.
    pub fn try_reserve(self: &Arc<Self>, units: u32) -> Option<Reservation> {
        let mut s = self.state.lock();
        (s.queue.is_empty() && s.reserved + units <= s.limit).then(|| self.reservation(&mut s, units))
    }

    /// The units for an optional client (a spare, see `manager::spare`): only while nobody waits for
    /// room and as much again stays free after them (a tenant's pool that grows, or the next new tenant
    /// once the spares are taken, finds its room at once). Whoever starts waiting has the spares' room
    /// given back first (`Room::set_on_wait`).
    pub fn try_reserve_spare(self: &Arc<Self>, units: u32) -> Option<Reservation> {
        let mut s = self.state.lock();
        (s.queue.is_empty() && s.reserved + 2 * units <= s.limit).then(|| self.reservation(&mut s, units))
    }

    /// Whether someone waits for room (or the bound fell below what is reserved): the optional
    /// clients give their room back.
    pub fn is_pressed(&self) -> bool {
        let s = self.state.lock();
        !s.queue.is_empty() || s.reserved > s.limit
    }

    /// The units without checking the limit: for clients whose sizes the caller has already fitted
    /// into it (the grouped and shared strategies' fixed set of clients).
    pub fn force_reserve(self: &Arc<Self>, units: u32) -> Reservation {
        let mut s = self.state.lock();
        self.reservation(&mut s, units)
    }

    /// A place in the queue, granted at once if the units fit and the queue is empty.
    pub fn enqueue(self: &Arc<Self>, units: u32) -> Ticket {
        let waiter = Arc::new(Waiter { need: units, granted: AtomicBool::new(false), wake: Notify::new() });
        let mut s = self.state.lock();
        s.queue.push_back(Arc::clone(&waiter));
        s.waiting_units += units;
        s.grant();
        Ticket { budget: Arc::clone(self), waiter: Some(waiter), generation: s.generation }
    }

    /// How many units the waiters need beyond the free room and the room already on its way back
    /// (clients shutting down): what closing idle pools should free now.
    pub fn deficit(&self) -> u32 {
        let s = self.state.lock();
        (s.reserved + s.waiting_units).saturating_sub(s.limit + s.releasing)
    }

    /// Changes the bound. Lowering it below what is reserved takes nothing back: new reservations wait
    /// until enough is released.
    pub fn set_limit(&self, limit: u32) {
        let mut s = self.state.lock();
        s.limit = limit;
        s.grant();
    }

    /// Records one finished wait (`timed_out`: it gave up).
    pub fn waited(&self, waited: Duration, timed_out: bool) {
        let mut s = self.state.lock();
        s.waits += 1;
        s.wait_micros += waited.as_micros() as u64;
        if timed_out {
            s.wait_timeouts += 1;
        }
    }

    /// Forgets every reservation and waiter: for a forked child, whose inherited clients (and the
    /// threads that waited) belong to the parent. Their reservations give nothing back here.
    pub fn reset(&self) {
        let mut s = self.state.lock();
        s.generation += 1;
        s.reserved = 0;
        s.releasing = 0;
        s.queue.clear();
        s.waiting_units = 0;
        s.held.clear();
    }

    pub fn snapshot(&self) -> BudgetSnapshot {
        let s = self.state.lock();
        BudgetSnapshot {
            limit: s.limit,
            reserved: s.reserved,
            releasing: s.releasing,
            waiting: s.queue.len() as u32,
            waiting_units: s.waiting_units,
            peak_reserved: s.peak_reserved,
            waits: s.waits,
            wait_micros: s.wait_micros,
            wait_timeouts: s.wait_timeouts,
            held: s.held.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    /// The budget's lock, for `fork()` to hold (see `manager::prepare_fork`).
    pub fn lock_for_fork(&self) -> impl Sized + '_ {
        self.state.lock()
    }
}

/// Server sockets one driver client may open: `max_pool_size` pooled connections plus its monitoring
/// sockets, on each server it knows of.
pub fn client_cost(max_pool_size: u32, monitors: u32, servers: u32) -> u32 {
    (max_pool_size + monitors).saturating_mul(servers.max(1))
}

/// The largest maxPoolSize that lets `clients` clients fit into `limit` (None if even one connection
/// each does not fit), capped at `wanted`.
pub fn fit_pool_size(limit: u32, clients: u32, monitors: u32, servers: u32, wanted: u32) -> Option<u32> {
    let per_client = limit / clients.max(1) / servers.max(1);
    let size = per_client.checked_sub(monitors).filter(|s| *s >= 1)?;
    Some(size.min(wanted))
}

/// The bound derived from the server's own figures (`serverStatus().connections`): two fifths of what
/// it says it can hold. mongod 6.0 spends two file descriptors per connection (socket and eventfd) plus
/// about a hundred of its own while it announces 80 % of `ulimit -n` as connections: half of its figure
/// is only safe above `ulimit -n` ≈ 540, two fifths above ≈ 300, and leaves the rest to other processes.
pub fn server_bound(current: u64, available: u64) -> u32 {
    ((current + available) * 2 / 5).min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn spares_leave_as_much_again_free_and_yield_to_waiters() {
        let rt = rt();
        let b = Budget::new(12);
        let tenant = b.try_reserve(3).unwrap();
        let spares = b.try_reserve_spare(3).expect("3 + 3 leaves 6 free");
        let spare = b.try_reserve_spare(3).expect("9 leaves 3 free");
        assert!(b.try_reserve_spare(2).is_none(), "11 would leave less than 2 free");
        assert!(!b.is_pressed());
        let growth = b.try_reserve(3).expect("the room left free");
        assert!(!b.is_pressed(), "full, but nobody waits");
        let mut ticket = b.enqueue(3);
        assert!(b.is_pressed(), "someone waits: the spares give their room back");
        assert!(b.try_reserve_spare(1).is_none(), "no spare while someone waits");
        drop(spare);
        let granted = rt.block_on(ticket.granted());
        assert!(!b.is_pressed());
        drop((tenant, spares, growth, granted));
    }

    #[test]
    fn reservations_never_exceed_the_limit() {
        let b = Budget::new(10);
        let a = b.try_reserve(6).unwrap();
        assert!(b.try_reserve(5).is_none(), "6 + 5 > 10");
        let c = b.try_reserve(4).unwrap();
        assert_eq!(b.snapshot().reserved, 10);
        drop(a);
        assert_eq!(b.snapshot().reserved, 4);
        drop(c);
        assert_eq!(b.snapshot(), BudgetSnapshot { limit: 10, peak_reserved: 10, ..Default::default() });
    }

    #[test]
    fn an_absorbed_reservation_is_given_back_with_its_host() {
        let b = Budget::new(10);
        let mut host = b.try_reserve(3).unwrap();
        host.absorb(b.try_reserve(2).unwrap());
        assert_eq!((host.units(), b.snapshot().reserved), (5, 5));
        host.shrink_to(4);
        assert_eq!(b.snapshot().reserved, 4);
        // A reservation of another budget is not taken: it is given back to its own.
        let other = Budget::new(10);
        host.absorb(other.try_reserve(2).unwrap());
        assert_eq!((host.units(), other.snapshot().reserved), (4, 0));
        drop(host);
        assert_eq!(b.snapshot().reserved, 0);
    }

    #[test]
    fn closing_counts_as_room_on_its_way_until_dropped() {
        let b = Budget::new(4);
        let a = b.try_reserve(4).unwrap();
        let _t = b.enqueue(2);
        assert_eq!(b.deficit(), 2);
        a.closing();
        a.closing();
        assert_eq!(b.snapshot().releasing, 4);
        assert_eq!(b.deficit(), 0, "the closing client's units are on their way");
        assert_eq!(b.snapshot().reserved, 4, "still counted until the client has shut down");
        drop(a);
        let s = b.snapshot();
        assert_eq!((s.reserved, s.releasing, s.waiting), (2, 0, 0), "the waiter got its units");
    }

    #[test]
    fn shrinking_gives_back_the_unused_units_at_once_and_the_rest_on_drop() {
        let b = Budget::new(10);
        let mut a = b.try_reserve(8).unwrap();
        let mut queued = b.enqueue(6);
        a.closing();
        a.shrink_to(3);
        assert_eq!((b.snapshot().reserved, b.snapshot().releasing), (9, 3), "the waiter got its 6 at once");
        let granted = rt().block_on(queued.granted());
        a.shrink_to(5);
        assert_eq!(a.units(), 3, "a reservation never grows back");
        drop(a);
        assert_eq!((b.snapshot().reserved, b.snapshot().releasing), (6, 0));
        drop(granted);
        assert_eq!(b.snapshot().reserved, 0);
    }

    #[test]
    fn waiters_are_granted_in_arrival_order_even_when_a_later_one_would_fit() {
        rt().block_on(async {
            let b = Budget::new(4);
            let held = b.try_reserve(3).unwrap();
            let mut big = b.enqueue(3);
            let mut small = b.enqueue(1);
            assert!(b.try_reserve(1).is_none(), "a newcomer does not pass the queue");
            assert_eq!(b.snapshot().waiting, 2);
            let small_first = tokio::time::timeout(Duration::from_millis(10), small.granted()).await;
            assert!(small_first.is_err(), "the small need waits behind the big one");
            drop(held);
            let r_big = big.granted().await;
            let r_small = small.granted().await;
            assert_eq!((r_big.units(), r_small.units()), (3, 1));
            assert_eq!(b.snapshot().reserved, 4);
        });
    }

    #[test]
    fn an_abandoned_wait_holds_nothing_and_lets_the_next_one_in() {
        rt().block_on(async {
            let b = Budget::new(2);
            let held = b.try_reserve(2).unwrap();
            let first = b.enqueue(2);
            let mut second = b.enqueue(1);
            drop(first); // a timeout or a cancelled task
            assert_eq!(b.snapshot().waiting_units, 1);
            drop(held);
            assert_eq!(second.granted().await.units(), 1);
            // Granted, then abandoned before it was taken: the units come back.
            let held = b.try_reserve(1).unwrap();
            let t = b.enqueue(1);
            drop(held);
            assert_eq!(b.snapshot().reserved, 1, "granted to the ticket");
            drop(t);
            assert_eq!(b.snapshot().reserved, 0);
        });
    }

    #[test]
    fn a_cancelled_granted_future_can_be_awaited_again() {
        rt().block_on(async {
            let b = Budget::new(1);
            let held = b.try_reserve(1).unwrap();
            let mut t = b.enqueue(1);
            assert!(tokio::time::timeout(Duration::from_millis(5), t.granted()).await.is_err());
            drop(held);
            assert_eq!(t.granted().await.units(), 1);
        });
    }

    #[test]
    fn lowering_the_limit_takes_nothing_back_but_stops_new_grants() {
        let b = Budget::new(10);
        let a = b.try_reserve(8).unwrap();
        b.set_limit(5);
        assert!(b.try_reserve(1).is_none());
        let _t = b.enqueue(2);
        assert_eq!(b.deficit(), 5, "8 held + 2 wanted - 5 allowed");
        drop(a);
        assert_eq!(b.snapshot().reserved, 2);
    }

    #[test]
    fn a_reset_forgets_the_parents_reservations() {
        let b = Budget::new(4);
        let inherited = b.try_reserve(4).unwrap();
        let _waiting = b.enqueue(1);
        b.reset();
        assert_eq!(b.snapshot().reserved, 0);
        let mine = b.try_reserve(3).unwrap();
        drop(inherited);
        assert_eq!(b.snapshot().reserved, 3, "an inherited reservation gives nothing back");
        drop(mine);
        assert_eq!(b.snapshot().reserved, 0);
    }

    #[test]
    fn many_tasks_never_hold_more_than_the_limit() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_time().build().unwrap();
        runtime.block_on(async {
            let b = Budget::new(7);
            let peak = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let held = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let tasks: Vec<_> = (0..200u32)
                .map(|i| {
                    let (b, peak, held) = (Arc::clone(&b), Arc::clone(&peak), Arc::clone(&held));
                    tokio::spawn(async move {
                        let need = 1 + i % 3;
                        let mut t = b.enqueue(need);
                        let r = t.granted().await;
                        let now = held.fetch_add(need, Ordering::SeqCst) + need;
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        held.fetch_sub(need, Ordering::SeqCst);
                        drop(r);
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            assert!(peak.load(Ordering::SeqCst) <= 7);
            assert!(b.snapshot().peak_reserved <= 7);
            assert_eq!(b.snapshot().reserved, 0);
        });
    }

    #[test]
    fn named_holds_are_listed_counted_and_released_once() {
        let b = Budget::new(20);
        let mut catalog = b.try_reserve(5).unwrap().named("(catalog)");
        let move_a = b.try_reserve(5).unwrap().named("(move)");
        let move_b = b.try_reserve(5).unwrap().named("(move)");
        let s = b.snapshot();
        assert_eq!(s.reserved, 15, "a named hold is counted as any reservation");
        assert_eq!(s.held, vec![("(catalog)".to_owned(), 5), ("(move)".to_owned(), 10)]);
        assert!(b.try_reserve(6).is_none(), "15 + 6 > 20");
        assert!(catalog.release());
        assert!(!catalog.release(), "a second release gives nothing back");
        assert_eq!((catalog.units(), catalog.what()), (0, "(catalog)"));
        assert_eq!(b.snapshot().reserved, 10);
        drop(catalog);
        assert_eq!(b.snapshot().reserved, 10, "dropping a released hold gives nothing back again");
        drop(move_a);
        let s = b.snapshot();
        assert_eq!((s.reserved, s.held), (5, vec![("(move)".to_owned(), 5)]));
        drop(move_b);
        assert_eq!(b.snapshot().held, vec![]);
        assert_eq!(b.snapshot().reserved, 0);
    }

    #[test]
    fn a_named_hold_waits_its_turn_and_an_inherited_one_gives_nothing_back() {
        rt().block_on(async {
            let b = Budget::new(6);
            let tenant = b.try_reserve(4).unwrap();
            let mut t = b.enqueue(5);
            assert!(tokio::time::timeout(Duration::from_millis(5), t.granted()).await.is_err());
            drop(tenant);
            let mut held = t.granted().await.named("(move)");
            assert_eq!(b.snapshot().held, vec![("(move)".to_owned(), 5)]);
            b.reset(); // a forked child
            assert_eq!(b.snapshot().held, vec![]);
            let mine = b.try_reserve(6).unwrap().named("(catalog)");
            assert!(held.release());
            let s = b.snapshot();
            assert_eq!((s.reserved, s.held), (6, vec![("(catalog)".to_owned(), 6)]));
            drop(mine);
            assert_eq!(b.snapshot().reserved, 0);
        });
    }

    #[test]
    fn sizing() {
        assert_eq!(client_cost(10, 1, 1), 11);
        assert_eq!(client_cost(10, 2, 3), 36);
        // 10 groups in 256 sockets, one monitor, one server: 25 each, 24 pooled.
        assert_eq!(fit_pool_size(256, 10, 1, 1, 50), Some(24));
        assert_eq!(fit_pool_size(256, 10, 1, 1, 5), Some(5));
        assert_eq!(fit_pool_size(15, 10, 1, 1, 50), None);
        assert_eq!(fit_pool_size(60, 10, 2, 3, 50), None, "2 per client and server: monitors only");
        // maxConns 200 -> 80; ulimit 2048 -> mongod announces 1638 -> 655.
        assert_eq!(server_bound(3, 197), 80);
        assert_eq!(server_bound(1, 1637), 655);
    }
}
