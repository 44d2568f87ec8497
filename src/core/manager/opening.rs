//! Opening tenants' pools: a lease on the tenant's pool, or a new driver client that first gets its
//! room in the connection budget (waiting for it if need be), and the budget's figures.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mongodb::event::{cmap::CmapEvent, EventHandler};
use mongodb::options::Credential;
use mongodb::Client;

use super::warming::Spare;
use super::{CoreError, DriverClient, Manager};
use crate::core::budget::{Held, Reservation};
use crate::core::credentials::tenant_credential;
use crate::core::policy::Strategy;
use crate::core::registry::{Lease, Made};
use crate::core::room::{RoomSnapshot, Turn};
use crate::core::runtime;

/// How a tenant's own pool gets its room in the budget.
pub(super) enum Opening {
    /// Reserved for a new client.
    Reserved(Reservation),
    /// A spare's, already warm (see `manager::warming`).
    Spare(Spare),
}

/// Whose operations a client's command events are counted for.
pub(super) enum Label<'a> {
    /// A shared client's: the operation's scope says.
    Shared,
    Tenant(&'a str),
    /// A spare's: the tenant it is handed to, once it is.
    Later(Arc<OnceLock<String>>),
}

/// Quota slots a tenant's own pool starts with; it gains more as its concurrency needs them.
pub(super) const FIRST_SLOTS: u32 = 1;

impl Manager {
    /// A lease on the tenant's pool, creating the pool if needed: a new client first gets room in the
    /// connection budget, waiting for it if need be (see `Room::reserve`). The driver connects lazily
    /// and its monitor, not a ping per call, tracks the server's health.
    pub async fn lease(&self, tenant: &str) -> Result<Lease<DriverClient>, CoreError> {
        self.template.check_tenant(tenant).map_err(CoreError::InvalidName)?;
        self.check_fork();
        if let Some(lease) = self.registry.lease_existing(tenant)? {
            return Ok(lease);
        }
        let started = Instant::now();
        self.room.first_contact(&self.registry, &self.client_options).await;
        if self.strategy.client_slot(tenant).is_some() {
            // A handle on a shared client: nothing to reserve per tenant.
            let (size, label) = self.share_of(tenant)?;
            return self.lease_new(tenant, size, label, None);
        }
        loop {
            match self.room.turn(tenant) {
                Turn::Wait(done) => {
                    if self.room.wait_turn(tenant, &done, started).await.is_err() {
                        let (size, _) = self.share_of(tenant)?;
                        let first = self.pool_connections(size, FIRST_SLOTS);
                        return Err(self.room.timed_out(&self.registry, tenant, first, started));
                    }
                    if let Some(lease) = self.registry.lease_existing(tenant)? {
                        return Ok(lease);
                    }
                }
                Turn::Open(_opener) => {
                    if let Some(lease) = self.registry.lease_existing(tenant)? {
                        return Ok(lease);
                    }
                    let (size, label) = self.share_of(tenant)?;
                    let opening = match self.take_spare() {
                        Some(spare) => Opening::Spare(spare),
                        None => {
                            let first = self.pool_connections(size, FIRST_SLOTS);
                            Opening::Reserved(
                                self.room.reserve(&self.registry, tenant, first, started).await?,
                            )
                        }
                    };
                    return self.lease_new(tenant, size, label, Some(opening));
                }
            }
        }
    }

    /// A lease on the tenant's pool if that needs no waiting: its existing pool, or a new one if the
    /// budget has room right now. None otherwise (the tenant's next operation takes the waiting path).
    /// `wait_for_probe`: whether the caller may wait up to a second for the first contact's answer (an
    /// event loop's thread may not).
    pub fn lease_now(
        &self,
        tenant: &str,
        wait_for_probe: bool,
    ) -> Result<Option<Lease<DriverClient>>, CoreError> {
        self.template.check_tenant(tenant).map_err(CoreError::InvalidName)?;
        self.check_fork();
        if let Some(lease) = self.registry.lease_existing(tenant)? {
            return Ok(Some(lease));
        }
        if !self.room.is_probed() {
            // The bound may still be lowered: no new client until the server has been asked. Wait a
            // little for an answer under way (a reachable server answers in milliseconds), never long:
            // this is `get_database`, which makes no round trip of its own.
            if let (Some(done), true) = (self.spawn_first_contact(), wait_for_probe) {
                let _ = done.recv_timeout(Duration::from_secs(1));
            }
            if !self.room.is_probed() {
                return Ok(None);
            }
        }
        let (size, label) = self.share_of(tenant)?;
        let opening = match self.strategy.client_slot(tenant) {
            Some(_) => None,
            None => match self.take_spare() {
                Some(spare) => Some(Opening::Spare(spare)),
                None => match self.room.try_reserve(self.pool_cost(size, FIRST_SLOTS)) {
                    Some(r) => Some(Opening::Reserved(r)),
                    None => return Ok(None),
                },
            },
        };
        self.lease_new(tenant, size, label, opening).map(Some)
    }

    /// A lease on the tenant's pool, made from `opening` unless another thread made it first; a new
    /// pool of the tenant's own starts the refill of the spares (see `manager::warming`).
    fn lease_new(
        &self,
        tenant: &str,
        size: u32,
        label: String,
        opening: Option<Opening>,
    ) -> Result<Lease<DriverClient>, CoreError> {
        let own = opening.is_some();
        let lease = self.registry.lease(tenant, || self.make(tenant, size, label, opening))?;
        if own {
            self.refill_spares(true);
        }
        Ok(lease)
    }

    /// Reads the server's figures for the budget in the background (see `Room::first_contact`); the
    /// receiver hears when that is over. None if the runtime has stopped.
    pub(super) fn spawn_first_contact(&self) -> Option<std::sync::mpsc::Receiver<()>> {
        let me = self.me.upgrade()?;
        let rt = runtime::live()?;
        let (done, over) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            me.room.first_contact(&me.registry, &me.client_options).await;
            let _ = done.send(());
        });
        Some(over)
    }

    /// The tenant's share (its pool size, or its quota on a shared client) and its tier or group label.
    fn share_of(&self, tenant: &str) -> Result<(u32, String), CoreError> {
        let slot = self.strategy.client_slot(tenant);
        let (size, label) = match &self.sizer {
            Some(sizer) => sizer(tenant).map_err(CoreError::Configuration)?,
            None => (
                self.pool_size,
                slot.filter(|_| self.strategy != Strategy::Shared)
                    .map_or_else(|| "default".to_owned(), |g| format!("group_{g}")),
            ),
        };
        if size == 0 {
            return Err(CoreError::Configuration(format!(
                "the pool size of tenant {tenant:?} must be at least 1"
            )));
        }
        Ok((size, label))
    }

    /// The tenant's pool: a spare, or a new client holding its reservation (per_user); or a handle on
    /// its shared client, which is made (and takes its room in the budget) on first use.
    fn make(
        &self,
        tenant: &str,
        size: u32,
        label: String,
        opening: Option<Opening>,
    ) -> Result<Made<DriverClient>, String> {
        let pool = match self.strategy.client_slot(tenant) {
            None => {
                let reservation = match opening {
                    Some(Opening::Spare(spare)) => {
                        let pool = spare.hand_to(tenant);
                        let cost = pool.reservation.lock().as_ref().map_or(0, Reservation::units);
                        return Ok(Made { pool, size, label, cost, slots: FIRST_SLOTS });
                    }
                    Some(Opening::Reserved(r)) => Some(r),
                    None => None,
                };
                let cost = reservation.as_ref().map_or(0, Reservation::units);
                let credential = tenant_credential(self.credentials.as_ref(), &self.template, tenant)?;
                let identity = credential.as_ref().map(|(_, who)| who.clone());
                let mut pool =
                    self.own_client(Label::Tenant(tenant), size, credential.map(|(c, _)| c), reservation);
                pool.identity = identity;
                return Ok(Made { pool, size, label, cost, slots: FIRST_SLOTS });
            }
            Some(slot) => {
                let mut shared = self.shared.lock();
                if shared[slot].is_none() {
                    let clients = self.strategy.shared_clients();
                    let max_pool_size = self.room.shared_pool_size(clients, self.shared_pool_size)?;
                    // Every shared client gets the same size, fitted so that all of them fit: taking
                    // the reservation cannot exceed the bound.
                    let reservation = self.room.budget.force_reserve(self.room.cost(max_pool_size));
                    shared[slot] = Some((
                        self.new_client(Label::Shared, max_pool_size, None, None),
                        Arc::default(),
                        reservation,
                    ));
                }
                let (client, retry_sessions, _) = shared[slot].as_ref().expect("just made");
                DriverClient {
                    client: ManuallyDrop::new(client.clone()),
                    retry_sessions: Arc::clone(retry_sessions),
                    owned: false,
                    identity: None,
                    reservation: parking_lot::Mutex::new(None),
                    open: None,
                }
            }
        };
        Ok(Made { pool, size, label, cost: 0, slots: size })
    }

    /// A client of a tenant's own (or a spare's) holding `reservation`, with the count of its open
    /// connections the budget needs when it closes.
    pub(super) fn own_client(
        &self,
        label: Label,
        size: u32,
        credential: Option<Credential>,
        reservation: Option<Reservation>,
    ) -> DriverClient {
        let open = Arc::new(AtomicU32::new(0));
        // Monitors, and the minPoolSize the driver keeps open, on every server.
        let servers = self.room.cost(1) - self.room.cost(0);
        let min_pool = self.client_options.min_pool_size.unwrap_or(0).min(size);
        let fixed = self.room.cost(0) + min_pool * servers;
        DriverClient {
            client: ManuallyDrop::new(self.new_client(label, size, credential, Some(Arc::clone(&open)))),
            retry_sessions: Arc::default(),
            owned: true,
            identity: None,
            reservation: parking_lot::Mutex::new(reservation),
            open: Some((open, fixed)),
        }
    }

    /// A driver client; `credential`, the tenant's own, replaces the connection string's; `open` counts its
    /// pooled connections (so a closed pool gives back at once the room of those it never opened).
    fn new_client(
        &self,
        label: Label,
        max_pool_size: u32,
        credential: Option<Credential>,
        open: Option<Arc<AtomicU32>>,
    ) -> Client {
        let mut options = self.client_options.clone();
        options.command_event_handler = self.monitor.as_ref().map(|m| match label {
            Label::Shared => m.handler(None),
            Label::Tenant(tenant) => m.handler(Some(tenant.to_owned())),
            Label::Later(cell) => m.handler_later(cell),
        });
        options.max_pool_size = Some(max_pool_size);
        if credential.is_some() {
            options.credential = credential;
        }
        if let Some(open) = open {
            options.cmap_event_handler = Some(EventHandler::callback(move |event| match event {
                CmapEvent::ConnectionCreated(_) => drop(open.fetch_add(1, Ordering::AcqRel)),
                CmapEvent::ConnectionClosed(_) => drop(open.fetch_sub(1, Ordering::AcqRel)),
                _ => {}
            }));
        }
        // The driver spawns its monitors on the ambient runtime.
        let rt = runtime::get();
        let _guard = rt.enter();
        Client::with_options(options).expect("options were validated at construction")
    }

    /// Budget units of a tenant's own pool of `size` that has `slots` quota slots: room for one
    /// connection more than its slots, for the commands the driver sends outside any operation (a
    /// dropped cursor's killCursors, a session's endSessions) while every slot is busy; and for the
    /// minPoolSize it keeps open; never more than a full pool. See `manager::growth`.
    pub(super) fn pool_cost(&self, size: u32, slots: u32) -> u32 {
        self.room.cost(self.pool_connections(size, slots))
    }

    /// The pooled connections per server `pool_cost` makes room for.
    fn pool_connections(&self, size: u32, slots: u32) -> u32 {
        let min_pool = self.client_options.min_pool_size.unwrap_or(0);
        size.min(slots.saturating_add(1).max(min_pool))
    }

    /// Room in the budget for a client of the manager's own (provisioning), as a tenant's pool gets it.
    pub(crate) async fn reserve_room(&self, what: &str, pool_size: u32) -> Result<Reservation, CoreError> {
        self.room.reserve(&self.registry, what, pool_size, std::time::Instant::now()).await
    }

    /// Room for a client opened outside the core (the tenant catalog's and a move's pymongo clients):
    /// counted as a tenant's pool of `pool_size` is (its pool plus the monitoring sockets, per server),
    /// waited for in the same FIFO queue for at most the same timeout, listed in the budget's figures
    /// as `what`, and held until released. After the first contact, like a pool: the bound may drop then.
    pub async fn hold_room(&self, what: &str, pool_size: u32) -> Result<Held, CoreError> {
        self.check_fork();
        if self.is_closed() {
            return Err(CoreError::Closed);
        }
        if pool_size == 0 {
            return Err(CoreError::Configuration(format!(
                "{what}: a client needs a pool size of at least 1"
            )));
        }
        self.room.first_contact(&self.registry, &self.client_options).await;
        Ok(self.reserve_room(what, pool_size).await?.named(what))
    }

    /// Server connections a client of this pool size reserves.
    pub fn room_cost(&self, pool_size: u32) -> u32 {
        self.room.cost(pool_size)
    }

    /// The connection budget's figures.
    pub fn room(&self) -> RoomSnapshot {
        self.room.snapshot(&self.registry)
    }

    /// The shared clients' maxPoolSize: the configured one, or less if the budget cannot hold them all.
    pub fn effective_shared_pool_size(&self) -> Option<u32> {
        match self.strategy.shared_clients() {
            0 => None,
            n => self.room.planned_shared_pool_size(n, self.shared_pool_size),
        }
    }
}
