//! A tenant's own pool (per_user) grows with its concurrency instead of reserving a full pool's room.
//!
//! The connection budget must count every socket before it is opened, but a tenant's pool of 10 is
//! mostly a pool of one or two: reserving all 10 at once let the default budget hold 23 tenants' pools
//! where their sockets would have held a hundred, and every other tenant waited for one to be closed.
//! So a pool starts with one quota slot (and the room for it, see `Manager::pool_cost`), and an
//! operation that finds every slot taken asks the budget for one more connection's room: at once if
//! there is room, else in the budget's FIFO queue (closing idle pools to make room) while it also
//! waits for one of its tenant's slots to come free, whichever comes first. The driver opens a
//! connection only for an operation that finds none idle, and the slots bound the tenant's operations
//! in flight, so its sockets never outgrow the room it holds.

use std::pin::Pin;

use futures_util::future::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use super::{DriverClient, Manager};
use crate::core::budget::Reservation;
use crate::core::quota::QuotaTimeout;
use crate::core::registry::Lease;

impl Manager {
    /// Waits for a slot in the tenant's quota, growing its pool's share of the budget if every slot is
    /// taken and the pool may grow.
    pub(super) async fn slot(
        &self,
        lease: &Lease<DriverClient>,
    ) -> Result<OwnedSemaphorePermit, QuotaTimeout> {
        let quota = &lease.entry().quota;
        if quota.wants_slot() {
            if let Some(more) = self.room.try_reserve(self.growth_units(lease)) {
                self.grow(lease, more);
            }
        }
        if !quota.wants_slot() {
            return quota.acquire(self.wait_queue_timeout).await;
        }
        let acquire = quota.acquire(self.wait_queue_timeout);
        tokio::pin!(acquire);
        let mut room: Option<Pin<Box<dyn std::future::Future<Output = Reservation> + Send + '_>>> = None;
        loop {
            if room.is_none() && quota.wants_slot() {
                room = Some(self.room.more_room(&self.registry, self.growth_units(lease)).boxed());
            }
            let grown = async {
                match room.as_mut() {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                permit = &mut acquire => return permit,
                more = grown => {
                    room = None;
                    // The new slot goes to the first waiter: this operation, or one queued before it.
                    self.grow(lease, more);
                }
            }
        }
    }

    /// Budget units one more slot of the tenant's pool needs.
    fn growth_units(&self, lease: &Lease<DriverClient>) -> u32 {
        let entry = lease.entry();
        let slots = entry.quota.granted();
        let size = entry.pool_size;
        self.pool_cost(size, slots + 1).saturating_sub(self.pool_cost(size, slots)).max(1)
    }

    /// Adds `more` to the pool's reservation and one slot to its quota, unless the pool has been closed
    /// or is already full size meanwhile (then `more` goes back to the budget).
    fn grow(&self, lease: &Lease<DriverClient>, more: Reservation) {
        let entry = lease.entry();
        let mut held = lease.pool().reservation.lock();
        let Some(reservation) = held.as_mut() else { return };
        let units = more.units();
        if !entry.quota.add_slot() {
            return;
        }
        reservation.absorb(more);
        entry.add_cost(units);
    }
}
