//! Room in the connection budget for the manager's driver clients: what a client costs, waiting for
//! room (closing idle pools to make it), and lowering the default bound to what the server can hold.
//! The accounting itself is `budget`; this is where it meets the registry and the driver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, ServerMonitoringMode};
use mongodb::Client;
use tokio::sync::Notify;

use super::budget::{client_cost, fit_pool_size, server_bound, Budget, BudgetSnapshot, Reservation};
use super::forklock::ForkMutex;
use super::manager::{CoreError, DriverClient};
use super::registry::Registry;
use super::runtime;

/// The bound when `max_server_connections` is not given: see the README ("Connection budget").
pub const DEFAULT_MAX_SERVER_CONNECTIONS: u32 = 256;

/// How soon a failed first-contact `serverStatus` is tried again (at the next pool creation).
const PROBE_RETRY: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// Not read yet (or the last attempt failed: the server was unreachable).
    Pending,
    /// Read: the bound is the lower of the default and two fifths of the server's figure.
    Done,
    /// `serverStatus` was refused (no clusterMonitor role): the default bound stays.
    Refused,
    /// `max_server_connections` was given: the server is not asked.
    Skipped,
}

struct ProbeState {
    probe: Probe,
    failed_at: Option<Instant>,
    /// `connections.current + available` at first contact.
    capacity: Option<u64>,
    /// One first contact at a time: the others wait for `done`, so one `serverStatus` is sent, not one
    /// per waiting operation. Both are replaced in a forked child (the parent's prober is not there).
    running: bool,
    done: Arc<Notify>,
}

/// Marks the first contact over when dropped, also when its future is (a cancelled task).
struct Running<'a>(&'a Room);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut p = self.0.probe.lock();
        p.running = false;
        p.done.notify_waiters();
    }
}

pub struct Room {
    pub budget: Arc<Budget>,
    configured: u32,
    monitors: u32,
    servers: u32,
    /// How long an operation waits for room: waitQueueTimeoutMS, else serverSelectionTimeoutMS.
    timeout: Duration,
    timeout_option: &'static str,
    /// Serialises "how much is missing, close that much": two waiters must not both close pools for
    /// the same shortfall.
    evict_lock: ForkMutex<()>,
    probe: ForkMutex<ProbeState>,
    probed: AtomicBool,
    /// Tenants whose pool is being opened, and what wakes the operations waiting for that: one opener
    /// per tenant, so a burst of a new tenant's first requests reserves one pool, not one each.
    opening: ForkMutex<HashMap<String, Arc<Notify>>>,
    /// maxPoolSize of the shared clients once the first one is made (0: none made yet).
    shared_size: AtomicU32,
    /// Called when someone starts waiting for room: the manager's spare clients give theirs back
    /// first, before any tenant's idle pool is closed for it (see `manager::spare`).
    on_wait: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

/// Monitoring sockets a client keeps per server: none behind a load balancer, one when polling, two
/// when streaming (the awaitable hello and the round-trip-time monitor).
fn monitors_of(options: &ClientOptions) -> u32 {
    if options.load_balanced == Some(true) {
        return 0;
    }
    match options.server_monitoring_mode {
        Some(ServerMonitoringMode::Poll) => 1,
        _ => 2,
    }
}

impl Room {
    pub fn new(max: Option<u32>, options: &ClientOptions, wait_queue_timeout: Option<Duration>) -> Room {
        let servers = match options.direct_connection {
            Some(true) => 1,
            _ => options.hosts.len().max(1) as u32,
        };
        const UNSET: &str = "serverSelectionTimeoutMS, as waitQueueTimeoutMS is not set";
        let (timeout, timeout_option) = match (wait_queue_timeout, options.server_selection_timeout) {
            (Some(t), _) => (t, "waitQueueTimeoutMS"),
            (None, Some(t)) => (t, UNSET),
            (None, None) => (Duration::from_secs(30), UNSET),
        };
        let probe = if max.is_some() { Probe::Skipped } else { Probe::Pending };
        Room {
            budget: Budget::new(max.unwrap_or(DEFAULT_MAX_SERVER_CONNECTIONS)),
            configured: max.unwrap_or(DEFAULT_MAX_SERVER_CONNECTIONS),
            monitors: monitors_of(options),
            servers,
            timeout,
            timeout_option,
            evict_lock: ForkMutex::new(()),
            probe: ForkMutex::new(ProbeState {
                probe,
                failed_at: None,
                capacity: None,
                running: false,
                done: Arc::new(Notify::new()),
            }),
            probed: AtomicBool::new(max.is_some()),
            opening: ForkMutex::new(HashMap::new()),
            shared_size: AtomicU32::new(0),
            on_wait: OnceLock::new(),
        }
    }

    /// Sets what gives room back when someone starts waiting for it (once, when the manager is made).
    pub fn set_on_wait(&self, give_back: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_wait.set(Box::new(give_back));
    }

    /// Server sockets a client of this pool size may open.
    pub fn cost(&self, pool_size: u32) -> u32 {
        client_cost(pool_size, self.monitors, self.servers)
    }

    fn explain(&self, pool_size: u32) -> String {
        let m = self.monitors;
        format!(
            "{} server connections: {pool_size} pooled connection{} + {m} monitoring socket{} per server, on {} \
             server{}",
            self.cost(pool_size),
            if pool_size == 1 { "" } else { "s" },
            if m == 1 { "" } else { "s" },
            self.servers,
            if self.servers == 1 { "" } else { "s" }
        )
    }

    /// Refuses a configuration the budget can never serve.
    pub fn check(&self, shared_clients: usize, pool_size: u32) -> Result<(), String> {
        let limit = self.configured;
        if shared_clients > 0 {
            if fit_pool_size(limit, shared_clients as u32, self.monitors, self.servers, 1).is_none() {
                return Err(format!(
                    "max_server_connections={limit} cannot hold {shared_clients} shared clients of even one \
                     connection each ({} each); raise max_server_connections or lower groups",
                    self.explain(1)
                ));
            }
        } else if self.cost(pool_size) > limit {
            return Err(format!(
                "max_server_connections={limit} cannot hold one tenant's pool ({}); raise \
                 max_server_connections or lower user_pool_size",
                self.explain(pool_size)
            ));
        }
        Ok(())
    }

    /// The maxPoolSize of the strategy's shared clients: `wanted`, or less so that every one of them
    /// fits into the budget. Fixed when the first one is made (after the first contact), so they all
    /// get the same, and their reservations never exceed the bound.
    pub fn shared_pool_size(&self, clients: usize, wanted: u32) -> Result<u32, String> {
        let fixed = self.shared_size.load(Ordering::Acquire);
        if fixed > 0 {
            return Ok(fixed);
        }
        let limit = self.budget.limit();
        let size =
            fit_pool_size(limit, clients as u32, self.monitors, self.servers, wanted).ok_or_else(|| {
                format!(
                    "the connection budget ({limit}) cannot hold {clients} shared clients of even one \
                 connection each ({} each); raise max_server_connections or lower groups",
                    self.explain(1)
                )
            })?;
        self.shared_size.store(size, Ordering::Release);
        Ok(size)
    }

    /// The shared clients' maxPoolSize if fixed already, else what it would be now.
    pub fn planned_shared_pool_size(&self, clients: usize, wanted: u32) -> Option<u32> {
        match self.shared_size.load(Ordering::Acquire) {
            0 => fit_pool_size(self.budget.limit(), clients as u32, self.monitors, self.servers, wanted),
            n => Some(n),
        }
    }

    pub fn is_probed(&self) -> bool {
        self.probed.load(Ordering::Acquire)
    }

    /// Units for a new client without waiting; None if that would mean waiting.
    pub fn try_reserve(&self, units: u32) -> Option<Reservation> {
        self.budget.try_reserve(units)
    }

    /// Whether this caller opens the tenant's pool, or waits for the caller that already does.
    pub fn turn(&self, tenant: &str) -> Turn<'_> {
        let mut opening = self.opening.lock();
        match opening.get(tenant) {
            Some(done) => Turn::Wait(Arc::clone(done)),
            None => {
                opening.insert(tenant.to_owned(), Arc::new(Notify::new()));
                Turn::Open(Opener { room: self, tenant: tenant.to_owned() })
            }
        }
    }

    /// Waits until the tenant's opener is done (whatever its outcome), at most until `started` plus the
    /// timeout; Err(()) at the deadline.
    pub async fn wait_turn(&self, tenant: &str, done: &Notify, started: Instant) -> Result<(), ()> {
        let over = done.notified();
        tokio::pin!(over);
        over.as_mut().enable();
        // The opener may have finished between `turn` and `enable`.
        if !self.opening.lock().contains_key(tenant) {
            return Ok(());
        }
        tokio::time::timeout_at(tokio::time::Instant::from_std(started + self.timeout), over)
            .await
            .map_err(|_| ())
    }

    /// The error of an operation that found no room before its deadline.
    pub fn timed_out(
        &self,
        registry: &Registry<DriverClient>,
        tenant: &str,
        pool_size: u32,
        started: Instant,
    ) -> CoreError {
        let s = self.budget.snapshot();
        CoreError::BudgetTimeout {
            tenant: tenant.to_owned(),
            need: self.explain(pool_size),
            limit: s.limit,
            reserved: s.reserved,
            in_use: registry.cost_in_use(),
            waited: started.elapsed(),
            timeout_option: self.timeout_option,
        }
    }

    /// Units for a new client of `pool_size`: at once if they fit, else in the FIFO queue while idle
    /// pools are closed to make room, until `started` plus the timeout. Never holds the registry's lock
    /// while waiting; a dropped future (a cancelled task) leaves the queue.
    pub async fn reserve(
        &self,
        registry: &Registry<DriverClient>,
        tenant: &str,
        pool_size: u32,
        started: Instant,
    ) -> Result<Reservation, CoreError> {
        let units = self.cost(pool_size);
        let limit = self.budget.limit();
        if units > limit && tenant.starts_with('(') {
            return Err(CoreError::Configuration(format!(
                "tenantpool's own client {tenant} needs {} but the connection budget is {limit}: raise \
                 max_server_connections",
                self.explain(pool_size)
            )));
        }
        if units > limit {
            return Err(CoreError::Configuration(format!(
                "tenant {tenant:?} needs a pool of {} but the connection budget is {limit}{}; lower its \
                 pool size (user_pool_size or its tier's) or raise max_server_connections",
                self.explain(pool_size),
                if limit < self.configured {
                    " (two fifths of what the server said it can hold)"
                } else {
                    ""
                },
            )));
        }
        if let Some(r) = self.budget.try_reserve(units) {
            return Ok(r);
        }
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        let result = match tokio::time::timeout_at(deadline, self.queued(registry, units)).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(CoreError::Closed),
            Err(_) => Err(self.timed_out(registry, tenant, pool_size, started)),
        };
        let timed_out = matches!(result, Err(CoreError::BudgetTimeout { .. }));
        self.budget.waited(started.elapsed(), timed_out);
        if timed_out {
            registry.counters.operation_error();
        }
        result
    }

    /// `units` more for a pool that grows: in the same FIFO queue as new pools (see `queued`), with no
    /// deadline of its own (the caller races it against the tenant's own slots coming free, which
    /// bounds the wait). Pending for ever once the manager is closed.
    pub async fn more_room(&self, registry: &Registry<DriverClient>, units: u32) -> Reservation {
        match self.queued(registry, units).await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    /// Waits in the FIFO queue for `units` while idle pools are closed to make room; None once the
    /// manager is closed. Dropped (a deadline, a cancelled task), it leaves the queue.
    async fn queued(&self, registry: &Registry<DriverClient>, units: u32) -> Option<Reservation> {
        let signal = registry.idle_signal();
        let _wanted = signal.want();
        let mut ticket = self.budget.enqueue(units);
        // Before make_room counts the shortfall: the spares' room, moved to releasing, is not taken
        // from a tenant's idle pool as well.
        if let Some(give_back) = self.on_wait.get() {
            give_back();
        }
        loop {
            // Enabled before looking for idle pools: a pool that becomes idle after the look still
            // wakes this loop.
            let idle = signal.notify.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if registry.is_closed() {
                return None;
            }
            self.make_room(registry);
            tokio::select! {
                biased;
                r = ticket.granted() => return Some(r),
                _ = idle => {}
            }
        }
    }

    /// Closes as many least recently used idle pools as the waiters' shortfall needs.
    fn make_room(&self, registry: &Registry<DriverClient>) {
        let _one_at_a_time = self.evict_lock.lock();
        let missing = self.budget.deficit();
        if missing > 0 {
            registry.evict_for_budget(missing);
        }
    }

    /// At the first pool creation of a manager with the default bound: reads `serverStatus` (with a
    /// client of its own, inside the budget) and lowers the bound to two fifths of what the server
    /// says it can hold (`connections.current + available`), if that is lower. A refusal (no
    /// clusterMonitor role) keeps the default; an unreachable server is asked again later.
    pub async fn first_contact(&self, registry: &Registry<DriverClient>, options: &ClientOptions) {
        loop {
            if self.is_probed() {
                return;
            }
            let running = {
                let mut p = self.probe.lock();
                if p.running {
                    Some(Arc::clone(&p.done))
                } else if p.failed_at.is_some_and(|t| t.elapsed() < PROBE_RETRY) {
                    return;
                } else {
                    p.running = true;
                    None
                }
            };
            let Some(done) = running else { break };
            let over = done.notified();
            tokio::pin!(over);
            over.as_mut().enable();
            // It may have ended between the look and `enable`.
            if self.probe.lock().running {
                over.await;
            }
        }
        let _running = Running(self);
        let outcome = match self.reserve(registry, "(serverStatus at first contact)", 1, Instant::now()).await
        {
            Ok(reservation) => read_capacity(options, reservation).await,
            Err(_) => Err(false),
        };
        let mut p = self.probe.lock();
        match outcome {
            Ok(capacity) => {
                let bound = server_bound(capacity, 0).max(1);
                if bound < self.configured {
                    self.budget.set_limit(bound);
                }
                (p.probe, p.capacity) = (Probe::Done, Some(capacity));
            }
            Err(true) => p.probe = Probe::Refused,
            Err(false) => {
                p.failed_at = Some(Instant::now());
                return;
            }
        }
        self.probed.store(true, Ordering::Release);
    }

    /// A forked child starts with nothing reserved (its inherited clients belong to the parent).
    pub fn after_fork(&self) {
        self.budget.reset();
        // The parent's openers are not in the child.
        self.opening.lock().clear();
        let mut p = self.probe.lock();
        p.running = false;
        p.done = Arc::new(Notify::new());
    }

    /// Locks for `fork()` to hold, in the order the other paths take them.
    pub fn locks_for_fork(&self) -> (impl Sized + '_, impl Sized + '_, impl Sized + '_) {
        (self.evict_lock.lock(), self.probe.lock(), self.opening.lock())
    }

    pub fn snapshot(&self, registry: &Registry<DriverClient>) -> RoomSnapshot {
        let (probe, capacity) = {
            let p = self.probe.lock();
            (p.probe, p.capacity)
        };
        let budget = self.budget.snapshot();
        RoomSnapshot {
            source: match probe {
                Probe::Skipped => "max_server_connections",
                Probe::Done if budget.limit < self.configured => "server",
                Probe::Refused => "default (serverStatus refused)",
                _ => "default",
            },
            configured: self.configured,
            server_capacity: capacity,
            in_use: registry.cost_in_use(),
            closed_for_budget: registry.counters.snapshot().closed_budget,
            per_server_monitors: self.monitors,
            servers: self.servers,
            shared_pool_size: self.shared_size.load(Ordering::Acquire),
            budget,
        }
    }
}

pub enum Turn<'a> {
    /// This caller opens the pool; others wait until the guard drops.
    Open(Opener<'a>),
    /// Another caller is opening it: wait on this, then look again.
    Wait(Arc<Notify>),
}

pub struct Opener<'a> {
    room: &'a Room,
    tenant: String,
}

impl Drop for Opener<'_> {
    fn drop(&mut self) {
        if let Some(done) = self.room.opening.lock().remove(&self.tenant) {
            done.notify_waiters();
        }
    }
}

/// The budget's figures and where its bound came from, for stats and metrics.
#[derive(Clone, Debug)]
pub struct RoomSnapshot {
    pub budget: BudgetSnapshot,
    /// Where the bound comes from: "max_server_connections", "default", "server", or
    /// "default (serverStatus refused)".
    pub source: &'static str,
    pub configured: u32,
    /// `connections.current + available` at first contact.
    pub server_capacity: Option<u64>,
    /// Units held by pools with a lease (operations, cursors, sessions): not closable now.
    pub in_use: u32,
    pub closed_for_budget: u64,
    pub per_server_monitors: u32,
    pub servers: u32,
    /// The shared clients' maxPoolSize (0: none made yet, or per_user).
    pub shared_pool_size: u32,
}

/// `connections.current + available` from serverStatus; Err(true) if refused, Err(false) if the
/// server could not be asked. The client is shut down before its reservation is given back.
async fn read_capacity(options: &ClientOptions, reservation: Reservation) -> Result<u64, bool> {
    let mut options = options.clone();
    options.max_pool_size = Some(1);
    options.app_name.get_or_insert_with(|| "tenantpool".to_owned());
    let client = {
        let rt = runtime::get();
        let _guard = rt.enter();
        Client::with_options(options).map_err(|_| false)?
    };
    let reply = client.database("admin").run_command(doc! {"serverStatus": 1}).await;
    client.shutdown().await;
    drop(reservation);
    let reply = reply.map_err(|e| matches!(*e.kind, ErrorKind::Command(ref c) if c.code == 13))?;
    let connections = reply.get_document("connections").map_err(|_| false)?;
    Ok(number(connections, "current") + number(connections, "available"))
}

fn number(doc: &Document, key: &str) -> u64 {
    match doc.get(key) {
        Some(Bson::Int32(n)) => (*n).max(0) as u64,
        Some(Bson::Int64(n)) => (*n).max(0) as u64,
        Some(Bson::Double(n)) => n.max(0.0) as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::options::ServerAddress;

    fn options(hosts: usize, mode: ServerMonitoringMode) -> ClientOptions {
        let mut o = ClientOptions::default();
        o.hosts = (0..hosts).map(|i| ServerAddress::Tcp { host: format!("h{i}"), port: None }).collect();
        o.server_monitoring_mode = Some(mode);
        o
    }

    #[test]
    fn a_client_costs_its_pool_and_monitors_on_every_seed_host() {
        let polling = Room::new(None, &options(1, ServerMonitoringMode::Poll), None);
        assert_eq!(polling.cost(10), 11);
        let streaming = Room::new(None, &options(3, ServerMonitoringMode::Stream), None);
        assert_eq!(streaming.cost(10), 36);
        let mut direct = options(3, ServerMonitoringMode::Poll);
        direct.direct_connection = Some(true);
        assert_eq!(Room::new(None, &direct, None).cost(5), 6);
        let mut balanced = options(1, ServerMonitoringMode::Poll);
        balanced.load_balanced = Some(true);
        assert_eq!(Room::new(None, &balanced, None).cost(5), 5);
    }

    #[test]
    fn configurations_that_can_never_fit_are_refused() {
        let room = Room::new(Some(20), &options(1, ServerMonitoringMode::Poll), None);
        assert!(room.check(0, 19).is_ok());
        let err = room.check(0, 20).unwrap_err();
        assert!(err.contains("max_server_connections=20") && err.contains("lower user_pool_size"), "{err}");
        assert!(room.check(10, 50).is_ok(), "10 clients of 1 + 1 fit into 20");
        assert!(room.check(11, 50).unwrap_err().contains("lower groups"));
    }

    #[test]
    fn shared_clients_are_fitted_once_and_keep_their_size() {
        let room = Room::new(None, &options(1, ServerMonitoringMode::Poll), None);
        assert_eq!(room.planned_shared_pool_size(10, 50), Some(24));
        assert_eq!(room.shared_pool_size(10, 50), Ok(24));
        // A bound lowered later (first contact) does not resize the clients already sized.
        room.budget.set_limit(40);
        assert_eq!(room.shared_pool_size(10, 50), Ok(24));
        let fresh = Room::new(None, &options(1, ServerMonitoringMode::Poll), None);
        fresh.budget.set_limit(40);
        assert_eq!(fresh.shared_pool_size(10, 50), Ok(3));
        let other = Room::new(Some(15), &options(1, ServerMonitoringMode::Poll), None);
        assert!(other.shared_pool_size(10, 50).unwrap_err().contains("cannot hold 10 shared clients"));
    }

    #[test]
    fn the_wait_is_bounded_by_the_wait_queue_timeout_else_server_selection() {
        let mut o = options(1, ServerMonitoringMode::Poll);
        o.server_selection_timeout = Some(Duration::from_secs(5));
        let room = Room::new(None, &o, Some(Duration::from_millis(300)));
        assert_eq!((room.timeout, room.timeout_option), (Duration::from_millis(300), "waitQueueTimeoutMS"));
        let room = Room::new(None, &o, None);
        assert_eq!(room.timeout, Duration::from_secs(5));
        assert!(room.timeout_option.starts_with("serverSelectionTimeoutMS"));
    }
}
