//! The driver client serving one tenant, and how it is shut down without anyone waiting on I/O.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mongodb::Client;

use crate::core::budget::Reservation;
use crate::core::credentials::Identity;
use crate::core::registry::Pool;
use crate::core::retry::RetrySessions;
use crate::core::runtime;

/// The driver client serving one tenant: its own (per_user), or a handle on a shared one. Closing an
/// owned client shuts it down in the background; the caller never waits on I/O.
pub struct DriverClient {
    pub(super) client: ManuallyDrop<Client>,
    /// The client's sessions for retryable generic writes; shared with the client's other tenants.
    pub(super) retry_sessions: Arc<RetrySessions>,
    pub(super) owned: bool,
    /// The MongoDB user the client authenticates as when the tenant has its own (`credentials`).
    pub(super) identity: Option<Identity>,
    /// An owned client's share of the connection budget, given back once it has shut down.
    pub(super) reservation: parking_lot::Mutex<Option<Reservation>>,
    /// An owned client's open pooled connections (its CMAP events count them), and the units of its
    /// reservation that stay taken whatever that count (monitors, minPoolSize): on close, the units
    /// of connections it never opened go back at once rather than after its shutdown.
    pub(super) open: Option<(Arc<AtomicU32>, u32)>,
}

impl DriverClient {
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn retry_sessions(&self) -> &RetrySessions {
        &self.retry_sessions
    }
}

impl Pool for DriverClient {
    fn close(&self) {
        let mut reservation = self.reservation.lock().take();
        if let (Some(r), Some((open, fixed))) = (&mut reservation, &self.open) {
            // Drained (no lease, hence no operation) before it is closed: only a connection already
            // being opened can still appear, and it is counted from the start of its handshake.
            r.shrink_to(fixed.saturating_add(open.load(Ordering::Acquire)));
        }
        if let (true, Some(rt)) = (self.owned, runtime::live()) {
            shut_down(rt, Client::clone(&self.client), &self.retry_sessions, reservation);
        }
    }
}

/// A client of the grouped and shared strategies, with the sessions it keeps for retryable writes and
/// its share of the connection budget.
pub(super) type SharedClient = (Client, Arc<RetrySessions>, Reservation);

/// Shuts a client down in the background, after handing back its retry sessions (the driver's
/// `shutdown` waits until every session is dropped). Its reservation is given back only once
/// `shutdown` has returned and the server has had `RELEASE_GRACE` to notice: sockets that are still
/// closing count against the budget.
pub(super) fn shut_down(
    rt: &tokio::runtime::Handle,
    client: Client,
    retry_sessions: &RetrySessions,
    reservation: Option<Reservation>,
) {
    let sessions = retry_sessions.close();
    if let Some(r) = &reservation {
        r.closing();
    }
    rt.spawn(async move {
        drop(sessions);
        client.shutdown().await;
        if reservation.is_some() {
            tokio::time::sleep(RELEASE_GRACE).await;
        }
        drop(reservation);
    });
}

/// How long a closed client's share of the budget stays taken after its sockets are closed. mongod
/// counts (and holds the descriptors of) a connection until its session thread has read the close,
/// which on a loaded machine lags by milliseconds: given back at once, the units let new sockets in
/// while the server still holds the old ones, and its `connections.current` overshot the bound by a
/// few (87 for a bound of 80 + 4, in the 10,000-tenant test on 2 cores).
const RELEASE_GRACE: Duration = Duration::from_millis(25);

impl Drop for DriverClient {
    fn drop(&mut self) {
        // The driver's Drop may spawn cleanup, which needs a runtime context on whatever thread the
        // last reference happens to go away. At process exit there is none: leave it to the OS.
        if let Some(rt) = runtime::live() {
            let _guard = rt.enter();
            // SAFETY: dropped exactly once, here, and never used after.
            unsafe { ManuallyDrop::drop(&mut self.client) }
        }
    }
}
