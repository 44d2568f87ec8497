//! The tenant manager: one driver client per tenant, held in the registry, reaped in the background.

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mongodb::bson::{RawDocument, RawDocumentBuf};
use mongodb::options::{ClientOptions, ServerMonitoringMode};
use mongodb::options::{SessionOptions, TransactionOptions};
use mongodb::Database;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::attempt::{self, Settings};
use super::change_stream::{self, Change, Watched};
use super::credentials::CredentialSource;
use super::credentials::{authentication_failed, check_strategy, is_authentication_failure};
use super::deadline;
pub use super::error::CoreError;
use super::forklock::{self, ForkMutex};
use super::labels::Labelled;
use super::metrics::CloseCause;
use super::monitor::{Monitor, Sink};
use super::naming::{check_db_name, Template};
use super::ops::{self, Op, Opened};
use super::options::{merge_uri_options, redact, scrub};
use super::policy::Strategy;
use super::provision::Provisioner;
use super::registry::{Lease, Limits, Registry};
use super::room::Room;
use super::runtime;

mod driver_client;
mod growth;
mod opening;
mod session;
mod spare;
mod warming;

pub use driver_client::DriverClient;
use driver_client::{shut_down, SharedClient};
pub use session::TenantSession;
pub use spare::SPARES as SPARE_POOLS;

/// Decides a tenant's share (pool size or quota) and its tier label when its pool is created.
pub type Sizer = Box<dyn Fn(&str) -> Result<(u32, String), String> + Send + Sync>;

pub struct Config {
    pub uri: String,
    pub options: Vec<(String, String)>,
    /// Each tenant's share unless `sizer` says otherwise.
    pub pool_size: u32,
    pub idle_timeout: Option<Duration>,
    pub max_pools: Option<usize>,
    pub db_name_template: String,
    pub strategy: Strategy,
    /// maxPoolSize of each shared client (grouped and shared strategies).
    pub shared_pool_size: u32,
    /// How long an operation may wait for a slot in its tenant's quota. None: as long as it takes.
    pub wait_queue_timeout: Option<Duration>,
    pub sizer: Option<Sizer>,
    /// Operations slower than this are counted as slow.
    pub slow_operation: Option<Duration>,
    /// Each tenant's own MongoDB user (per_user only): the server then enforces its isolation.
    pub credentials: Option<CredentialSource>,
    /// How long the provisioning client stays open after its last use.
    pub admin_idle: Duration,
    /// The bound on server connections; None: the default, lowered to the server's figure.
    pub max_server_connections: Option<u32>,
    /// Warm clients kept for new tenants (per_user without per-tenant credentials or a sizer only).
    pub spare_pools: usize,
    /// Receives every command's events (see `monitor`); None: no handler at all.
    pub monitor: Option<Sink>,
}

pub struct Manager {
    me: Weak<Manager>,
    registry: Registry<DriverClient>,
    client_options: ClientOptions,
    template: Template,
    pool_size: u32,
    strategy: Strategy,
    shared_pool_size: u32,
    wait_queue_timeout: Option<Duration>,
    sizer: Option<Sizer>,
    slow_operation: Option<Duration>,
    credentials: Option<CredentialSource>,
    pub(super) provisioner: Provisioner,
    /// socketTimeoutMS (the driver refuses it; see `deadline.rs`), retryWrites and retryReads.
    attempts: Settings,
    /// The strategy's shared clients, created on first use.
    shared: ForkMutex<Vec<Option<SharedClient>>>,
    uri: String,
    reaper_stop: Arc<Notify>,
    /// The fork generation (see `forklock`) that owns the clients; a forked child starts over with
    /// none. Taken while a child forgets the inherited ones.
    owner: ForkMutex<u64>,
    /// `owner`, once the clients are this process's: what every operation compares, without the lock.
    owner_generation: AtomicU64,
    /// The connection budget every client of this manager reserves from.
    room: Room,
    monitor: Option<Arc<Monitor>>,
    /// Warm clients for the next new tenants (see `warming`).
    spares: ForkMutex<spare::Store<warming::Spare>>,
}

impl Manager {
    pub fn new(config: Config) -> Result<Arc<Manager>, CoreError> {
        if config.pool_size == 0 || config.shared_pool_size == 0 {
            return Err(CoreError::Configuration("pool sizes must be at least 1".into()));
        }
        let template = Template::parse(&config.db_name_template).map_err(CoreError::Configuration)?;
        if config.credentials.is_some() {
            check_strategy(config.strategy).map_err(CoreError::Configuration)?;
        }
        let (uri, socket_timeout) =
            deadline::take_socket_timeout(&merge_uri_options(&config.uri, &config.options))
                .map_err(CoreError::Configuration)?;
        // Parsing may resolve SRV records: a network round trip, so it runs without the GIL (the caller
        // makes sure) and once per manager, not once per tenant.
        let mut client_options = runtime::live()
            .ok_or(CoreError::Stopped)?
            .block_on(async { ClientOptions::parse(&uri).await })
            .map_err(|e| CoreError::Configuration(scrub(&config_error(&e), &config.uri)))?;
        // Polling unless the URI asks otherwise (serverMonitoringMode). Streaming costs each client a
        // second monitoring socket (its RTT monitor) and a server thread parked in an awaitable hello per
        // server, which adds up with a client per tenant. And with streaming, a server marked unknown by
        // an operation's error (ShutdownInProgress, say) stayed unselectable here for longer than a 5 s
        // serverSelectionTimeoutMS, where a polling monitor checked it again within milliseconds and the
        // retried write went through, as under pymongo.
        client_options.server_monitoring_mode.get_or_insert(ServerMonitoringMode::Poll);
        let monitor = config.monitor.map(|sink| Monitor::new(sink, template.clone()));
        let mut provisioner_options = client_options.clone();
        provisioner_options.command_event_handler = monitor.as_ref().map(|m| m.handler(None));
        if config.max_server_connections == Some(0) {
            return Err(CoreError::Configuration("max_server_connections must be at least 1".into()));
        }
        let room = Room::new(config.max_server_connections, &client_options, config.wait_queue_timeout);
        let pool_size = if config.sizer.is_some() { 1 } else { config.pool_size };
        room.check(config.strategy.shared_clients(), pool_size).map_err(CoreError::Configuration)?;
        let attempts = Settings::new(socket_timeout, &client_options);
        let spares = warming::spares_for(
            config.spare_pools,
            config.strategy,
            config.credentials.is_some(),
            config.sizer.is_some(),
        );
        let manager = Arc::new_cyclic(|me| Manager {
            me: me.clone(),
            registry: Registry::new(Limits {
                idle_timeout: config.idle_timeout,
                max_pools: config.max_pools,
            }),
            client_options,
            template,
            pool_size: config.pool_size,
            strategy: config.strategy,
            shared_pool_size: config.shared_pool_size,
            wait_queue_timeout: config.wait_queue_timeout,
            sizer: config.sizer,
            slow_operation: config.slow_operation,
            credentials: config.credentials,
            provisioner: Provisioner::new(provisioner_options, config.admin_idle),
            attempts,
            shared: ForkMutex::new((0..config.strategy.shared_clients()).map(|_| None).collect()),
            uri: config.uri,
            reaper_stop: Arc::new(Notify::new()),
            owner: ForkMutex::new(forklock::generation()),
            owner_generation: AtomicU64::new(forklock::generation()),
            room,
            monitor,
            spares: ForkMutex::new(spare::Store::new(spares)),
        });
        let me = Arc::downgrade(&manager);
        manager.room.set_on_wait(move || {
            if let Some(manager) = me.upgrade() {
                manager.close_spares(false);
            }
        });
        manager.spawn_reaper(Arc::clone(&manager.reaper_stop));
        // Asked now, so the bound is known by the time the first tenant needs a pool.
        manager.spawn_first_contact();
        MANAGERS.lock().push(Arc::downgrade(&manager));
        Ok(manager)
    }

    /// Whether command events are delivered (operations then run in a `monitor::Scope`).
    pub fn monitored(&self) -> bool {
        self.monitor.is_some()
    }

    pub fn redacted_uri(&self) -> String {
        redact(&self.uri)
    }

    /// Removes the connection string's password from a message.
    pub fn scrub(&self, message: &str) -> String {
        scrub(message, &self.uri)
    }

    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn shared_pool_size(&self) -> u32 {
        self.shared_pool_size
    }

    /// Shared clients opened so far (grouped and shared strategies).
    pub fn shared_clients_open(&self) -> usize {
        self.shared.lock().iter().filter(|c| c.is_some()).count()
    }

    /// The registry, as seen from this process (a forked child first forgets the parent's pools).
    pub fn registry(&self) -> &Registry<DriverClient> {
        self.check_fork();
        &self.registry
    }

    pub fn db_name(&self, tenant: &str) -> Result<String, CoreError> {
        self.template.db_name(tenant).map_err(CoreError::InvalidName)
    }

    /// `lease(tenant).map(drop)` if it can be done without waiting on a lock or creating a pool; None
    /// otherwise. Lets a caller that holds the GIL mark a tenant used without letting go of the GIL
    /// (with many threads, every release of the GIL is a chance for a thread switch).
    pub fn try_touch(&self, tenant: &str) -> Option<Result<(), CoreError>> {
        if let Err(e) = self.template.check_tenant(tenant) {
            return Some(Err(CoreError::InvalidName(e)));
        }
        if self.owner_generation.load(Ordering::Acquire) != forklock::generation() {
            return None;
        }
        Some(self.registry.try_lease_existing(tenant)?.map(drop).map_err(CoreError::from))
    }

    /// A driver error of the tenant's operation. A failed authentication names the tenant and, when
    /// the tenant has its own credentials, retires its pool: the next operation opens a pool with the
    /// credentials looked up afresh (a fixed or rotated password) instead of failing on this one.
    fn failed(&self, lease: &Lease<DriverClient>, e: impl Into<Labelled>) -> CoreError {
        let e: Labelled = e.into();
        if !is_authentication_failure(&e.error) {
            return CoreError::from(e);
        }
        let identity = lease.pool().identity.as_ref();
        if identity.is_some() {
            self.registry.discard(lease.entry());
        }
        CoreError::Authentication(self.scrub(&authentication_failed(
            &lease.entry().tenant,
            identity,
            &e.error,
        )))
    }

    /// Counts the operation as slow if it took longer than the threshold.
    fn finished(&self, started: Instant) {
        if let Some(threshold) = self.slow_operation {
            if started.elapsed() >= threshold {
                self.registry.counters.slow_operation();
            }
        }
    }

    /// Waits for a slot in the tenant's quota; the slot is held until the permit drops.
    pub async fn permit(&self, lease: &Lease<DriverClient>) -> Result<OwnedSemaphorePermit, CoreError> {
        let started = Instant::now();
        let r = self.slot(lease).await;
        let waited = started.elapsed();
        if waited > Duration::from_micros(50) || r.is_err() {
            self.registry.counters.waited(waited.as_micros() as u64, r.is_err());
        }
        r.map_err(|t| {
            self.registry.counters.operation_error();
            CoreError::WaitQueueTimeout {
                tenant: lease.entry().tenant.clone(),
                quota: t.size,
                waited: t.waited,
            }
        })
    }

    /// The tenant's database handle, with its lease. `db_name` overrides the template.
    pub async fn database(
        &self,
        tenant: &str,
        db_name: Option<&str>,
    ) -> Result<(Lease<DriverClient>, Database), CoreError> {
        let name = match db_name {
            Some(n) => {
                check_db_name(n).map_err(CoreError::InvalidName)?;
                n.to_owned()
            }
            None => self.db_name(tenant)?,
        };
        let lease = self.lease(tenant).await?;
        let db = lease.pool().client().database(&name);
        Ok((lease, db))
    }

    /// The lease and database for an operation: the session's own lease when there is a session (a
    /// session belongs to one client), else a new one.
    async fn target(
        &self,
        tenant: &str,
        db_name: &str,
        session: Option<&TenantSession>,
    ) -> Result<(Lease<DriverClient>, Database), CoreError> {
        match session {
            None => self.database(tenant, Some(db_name)).await,
            Some(s) if s.tenant != tenant => Err(CoreError::Misuse(format!(
                "this session belongs to tenant {:?}, not {tenant:?}; start a session from the tenant's own client",
                s.tenant
            ))),
            Some(s) => {
                check_db_name(db_name).map_err(CoreError::InvalidName)?;
                let lease = self.lease(tenant).await?;
                let db = s.lease.pool().client().database(db_name);
                Ok((lease, db))
            }
        }
    }

    /// Runs one operation on the tenant's pool with the bookkeeping every operation shares: a slot of the
    /// tenant's quota held while it runs, the slow-operation count (`timed`; not for a getMore or a change
    /// stream round, which wait on the server by design), and on failure the lease's error count, the
    /// operation error counter and the check for a failed authentication (`failed`).
    async fn accounted<T, E: Into<Labelled>>(
        &self,
        lease: &Lease<DriverClient>,
        timed: bool,
        op: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, CoreError> {
        let _slot = self.permit(lease).await?;
        let started = Instant::now();
        let r = op.await;
        if timed {
            self.finished(started);
        }
        r.map_err(|e| {
            lease.record_error();
            self.registry.counters.operation_error();
            self.failed(lease, e)
        })
    }

    /// Runs a one-reply operation for the tenant.
    pub async fn execute(
        &self,
        tenant: &str,
        db_name: &str,
        op: Op,
        spec: &RawDocument,
        docs: Vec<RawDocumentBuf>,
        session: Option<&TenantSession>,
    ) -> Result<Option<RawDocumentBuf>, CoreError> {
        let (lease, db) = self.target(tenant, db_name, session).await?;
        let (retry_sessions, settings) = (lease.pool().retry_sessions(), self.attempts);
        self.accounted(&lease, true, async {
            match session {
                Some(s) => {
                    let mut guard = s.session.lock().await;
                    let in_session = Some(s.in_session(&mut guard));
                    attempt::execute(&db, retry_sessions, op, spec, docs, in_session, settings).await
                }
                None => attempt::execute(&db, retry_sessions, op, spec, docs, None, settings).await,
            }
        })
        .await
    }

    /// Opens a cursor for the tenant (a cursor command, see `ops/cursor.rs`). The lease returned with
    /// it keeps the tenant's pool open for as long as the cursor lives, so the reaper never closes a
    /// pool under a live cursor.
    pub async fn open_cursor(
        &self,
        tenant: &str,
        db_name: &str,
        spec: &RawDocument,
        session: Option<&TenantSession>,
    ) -> Result<(Opened, Lease<DriverClient>), CoreError> {
        let (lease, db) = self.target(tenant, db_name, session).await?;
        let opened = self
            .accounted(&lease, true, async {
                match session {
                    Some(s) => {
                        let mut guard = s.session.lock().await;
                        attempt::open_cursor(&db, spec, Some(s.in_session(&mut guard)), self.attempts).await
                    }
                    None => attempt::open_cursor(&db, spec, None, self.attempts).await,
                }
            })
            .await?;
        Ok((opened, lease))
    }

    /// The next server batch of a cursor; a getMore takes a slot of the tenant's quota like any operation
    /// (a tailable-await getMore holds it while the server waits, as it holds a connection).
    pub async fn next_batch(
        &self,
        cursor: &mut Opened,
        tailable: bool,
        lease: &Lease<DriverClient>,
        session: Option<&TenantSession>,
    ) -> Result<Option<ops::Batch>, CoreError> {
        let limit = self.attempts.socket_timeout;
        if let (Opened::InSession(_), None) = (&cursor, session) {
            return Err(CoreError::Misuse("a cursor opened in a session needs that session".into()));
        }
        self.accounted(lease, false, async {
            match (cursor, session) {
                (Opened::InSession(c), Some(s)) => {
                    let mut guard = s.session.lock().await;
                    let mut batches = c.stream(&mut guard);
                    attempt::next_batch(&mut batches, tailable, s.in_transaction(), limit).await
                }
                (Opened::Plain(c), _) => attempt::next_batch(c, tailable, false, limit).await,
                (Opened::InSession(_), None) => unreachable!("refused above"),
            }
        })
        .await
    }

    /// Opens a change stream for the tenant (on `spec.collection`, or on the database). Like a cursor's,
    /// the lease returned with it keeps the tenant's pool open for as long as the stream lives.
    pub async fn watch(
        &self,
        tenant: &str,
        db_name: &str,
        spec: &RawDocument,
        session: Option<&TenantSession>,
    ) -> Result<(Watched, Lease<DriverClient>), CoreError> {
        let (lease, db) = self.target(tenant, db_name, session).await?;
        let (limit, retry) = (self.attempts.socket_timeout, self.attempts.retry_reads);
        let stream = self
            .accounted(&lease, true, async {
                match session {
                    Some(s) => {
                        change_stream::watch(&db, spec, Some(&mut **s.session.lock().await), limit, retry)
                            .await
                    }
                    None => change_stream::watch(&db, spec, None, limit, retry).await,
                }
            })
            .await?;
        Ok((stream, lease))
    }

    /// One round of a change stream: a buffered event, or one getMore (which waits on the server up to
    /// maxAwaitTimeMS, holding a slot of the tenant's quota as any operation on a connection does).
    pub async fn next_change(
        &self,
        stream: &mut Watched,
        lease: &Lease<DriverClient>,
        session: Option<&TenantSession>,
    ) -> Result<Change, CoreError> {
        let limit = self.attempts.socket_timeout;
        self.accounted(lease, false, async {
            match session {
                Some(s) => stream.next_change(Some(&mut **s.session.lock().await), limit).await,
                None => stream.next_change(None, limit).await,
            }
        })
        .await
    }

    /// Starts a transaction in the session. No slot of the quota: no command is sent (the driver may
    /// wait for server selection).
    pub async fn start_transaction(
        &self,
        session: &TenantSession,
        options: TransactionOptions,
    ) -> Result<(), CoreError> {
        session.start_transaction(options).await
    }

    /// Commits the session's transaction: a command on a connection, so it takes a slot of the
    /// tenant's quota like any operation (before the session's lock, as operations do).
    pub async fn commit_transaction(&self, session: &TenantSession) -> Result<(), CoreError> {
        self.end_transaction(session, true).await
    }

    /// Aborts the session's transaction (the driver ignores the server's errors, as the spec says).
    pub async fn abort_transaction(&self, session: &TenantSession) -> Result<(), CoreError> {
        self.end_transaction(session, false).await
    }

    async fn end_transaction(&self, session: &TenantSession, commit: bool) -> Result<(), CoreError> {
        let limit = self.attempts.socket_timeout;
        self.accounted(&session.lease, true, async {
            match commit {
                true => session.commit_transaction(limit).await,
                false => session.abort_transaction(limit).await,
            }
        })
        .await
    }

    /// Starts a session on the tenant's client; it keeps the tenant's pool open until it ends. No
    /// network I/O: the driver takes a server session from its pool (as pymongo's `start_session`).
    pub async fn start_session(
        &self,
        tenant: &str,
        causal_consistency: Option<bool>,
        snapshot: bool,
    ) -> Result<TenantSession, CoreError> {
        let lease = self.lease(tenant).await?;
        // A snapshot session's reads carry `readConcern: {level: snapshot, atClusterTime}` (the time
        // its first read got from the server), as pymongo's do.
        let options = SessionOptions::builder()
            .causal_consistency(causal_consistency)
            .snapshot(snapshot.then_some(true))
            .build();
        let session =
            lease.pool().client().start_session().with_options(options).await.map_err(CoreError::Driver)?;
        let id = session.id().clone();
        Ok(TenantSession {
            tenant: tenant.to_owned(),
            session: tokio::sync::Mutex::new(ManuallyDrop::new(session)),
            id,
            in_transaction: AtomicBool::new(false),
            // The driver's default, which it keeps to itself: causal unless a snapshot session.
            causal: causal_consistency.unwrap_or(!snapshot),
            lease,
        })
    }

    pub fn close_tenant(&self, tenant: &str) -> Result<bool, CoreError> {
        self.template.check_tenant(tenant).map_err(CoreError::InvalidName)?;
        self.check_fork();
        Ok(self.registry.remove(tenant))
    }

    pub fn close(&self) -> usize {
        // In a forked child, closing must not retire (and shut down) the parent's inherited pools.
        self.check_fork();
        self.reaper_stop.notify_one();
        self.provisioner.close();
        let n = self.registry.close();
        self.close_spares(true);
        // Operations waiting for room in the budget give up now, rather than at their timeout.
        self.registry.idle_signal().notify.notify_waiters();
        self.close_shared_clients();
        n
    }

    /// Closes every pool and shared client, as `close` does, but stays open: the next operation of a
    /// tenant opens its pool again (the design document's `close_all`).
    pub fn close_pools(&self) -> usize {
        self.check_fork();
        let n = self.registry.clear(CloseCause::Manual);
        self.close_spares(false);
        self.close_shared_clients();
        n
    }

    /// Shuts the strategy's shared clients down (each after its outstanding operations), giving back
    /// their room in the budget; the next tenant of a group opens its client again.
    fn close_shared_clients(&self) {
        let shared: Vec<SharedClient> = self.shared.lock().iter_mut().filter_map(Option::take).collect();
        match runtime::live() {
            Some(rt) => {
                for (client, retry_sessions, reservation) in shared {
                    shut_down(rt, client, &retry_sessions, Some(reservation));
                }
            }
            None => std::mem::forget(shared),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.registry.is_closed()
    }

    /// In a forked child the inherited clients' sockets are shared with the parent and their tasks
    /// are gone: forget them (never close them, that would disturb the parent) and start afresh.
    fn check_fork(&self) {
        let generation = forklock::generation();
        if self.owner_generation.load(Ordering::Acquire) == generation {
            return;
        }
        let mut owner = self.owner.lock();
        if *owner != generation {
            *owner = generation;
            for entry in self.registry.abandon() {
                std::mem::forget(entry);
            }
            for client in self.shared.lock().iter_mut().filter_map(Option::take) {
                std::mem::forget(client);
            }
            self.forget_spares();
            self.room.after_fork();
            self.spawn_reaper(Arc::clone(&self.reaper_stop));
        }
        // Only once the inherited clients are forgotten: other threads skip the lock on seeing it.
        self.owner_generation.store(generation, Ordering::Release);
    }

    fn spawn_reaper(&self, stop: Arc<Notify>) {
        let Some(timeout) = self.registry.limits().idle_timeout else {
            if self.registry.limits().max_pools.is_none() {
                return;
            }
            return self.spawn_sweeper(stop, Duration::from_millis(250));
        };
        // Sweep often enough that a pool outlives its timeout by at most a quarter of it, and, under a
        // cap, that pools kept over it while all were busy are trimmed soon after they become idle.
        let mut every = (timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(30));
        if self.registry.limits().max_pools.is_some() {
            every = every.min(Duration::from_millis(250));
        }
        self.spawn_sweeper(stop, every);
    }

    fn spawn_sweeper(&self, stop: Arc<Notify>, every: Duration) {
        let weak: Weak<Manager> = self.me.clone();
        runtime::get().spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.notified() => return,
                }
                let Some(manager) = weak.upgrade() else {
                    return;
                };
                if manager.is_closed() {
                    return;
                }
                manager.registry.reap(Instant::now());
                manager.reap_spares(Instant::now());
            }
        });
    }
}

/// Every live manager of the process, for the fork hooks.
static MANAGERS: ForkMutex<Vec<Weak<Manager>>> = ForkMutex::new(Vec::new());

/// The locks `prepare_fork` took, held by the forking thread until `finish_fork` drops them.
struct ForkHold {
    /// Dropped before `_managers` (fields drop in declaration order): they borrow from it.
    _guards: Vec<Box<dyn Held>>,
    _managers: Vec<Arc<Manager>>,
}

/// Any lock guard: `ForkHold` keeps guards of different types.
trait Held {}
impl<T> Held for T {}

thread_local! {
    /// `fork()` calls its before and after hooks on the forking thread, and in the child that thread is
    /// the only one, with a copy of this.
    static FORK_HOLD: RefCell<Option<ForkHold>> = const { RefCell::new(None) };
}

/// Called just before `fork()` (Python's `os.register_at_fork`): takes every lock a forked child could
/// otherwise inherit held by a thread that does not exist in the child. In the order the other paths
/// take them (budget eviction and probe, owner, registry, shared clients, spares, budget, runtime), so this cannot deadlock with them. These
/// locks are `ForkMutex`es, not parking_lot's: see `forklock` for why that matters to the child.
pub fn prepare_fork() {
    let mut all = MANAGERS.lock();
    all.retain(|m| m.strong_count() > 0);
    let managers: Vec<Arc<Manager>> = all.iter().filter_map(Weak::upgrade).collect();
    let mut guards: Vec<Box<dyn Held>> = vec![Box::new(all)];
    for m in &managers {
        // SAFETY: `ForkHold` keeps the Arc, hence the manager, alive for longer than these guards.
        let m: &'static Manager = unsafe { &*Arc::as_ptr(m) };
        guards.push(Box::new(m.room.locks_for_fork()));
        guards.push(Box::new(m.owner.lock()));
        guards.push(Box::new(m.registry.lock_for_fork()));
        guards.push(Box::new(m.shared.lock()));
        guards.push(Box::new(m.spares.lock()));
        guards.push(Box::new(m.provisioner.lock_for_fork()));
        guards.push(Box::new(m.room.budget.lock_for_fork()));
    }
    guards.push(Box::new(runtime::lock_for_fork()));
    let hold = ForkHold { _guards: guards, _managers: managers };
    FORK_HOLD.with(|h| *h.borrow_mut() = Some(hold));
}

/// Called after `fork()` in the parent and in the child: releases what `prepare_fork` took, if it ran.
pub fn finish_fork() {
    drop(FORK_HOLD.with(|h| h.borrow_mut().take()));
}

fn config_error(e: &mongodb::error::Error) -> String {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::InvalidArgument { message, .. } => message.clone(),
        _ => e.to_string(),
    }
}
