//! Spare clients for new per_user tenants: made and warmed in the background, handed to the next new
//! tenants, closed when idle, when someone waits for room and on close, forgotten after a fork. Why
//! spares, and the bookkeeping, are in `spare`.
//!
//! Only for per_user managers without per-tenant credentials or a sizer: a spare is made before its
//! tenant is known, so it must be the client any new tenant would get (the same options, user and pool
//! size). Its command events count for the tenant it is handed to, and not before (`Label::Later`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mongodb::bson::doc;

use super::opening::{Label, FIRST_SLOTS};
use super::{DriverClient, Manager};
use crate::core::budget::Reservation;
use crate::core::policy::Strategy;
use crate::core::registry::Pool;
use crate::core::runtime;

/// How long a warm-up's `ping` may take; past it the spare is closed (and `spare::RETRY_AFTER` applies).
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// A warm client no tenant has yet.
pub(in crate::core) struct Spare {
    pool: DriverClient,
    tenant: Arc<OnceLock<String>>,
}

impl Spare {
    /// The spare, now `tenant`'s pool: its command events count for it from here on.
    pub(super) fn hand_to(self, tenant: &str) -> DriverClient {
        let _ = self.tenant.set(tenant.to_owned());
        self.pool
    }

    fn close(self) {
        self.pool.close();
    }
}

/// How many spares a manager of this configuration keeps: `asked`, where a spare can stand for any new
/// tenant's pool; none otherwise.
pub(super) fn spares_for(
    asked: usize,
    strategy: Strategy,
    per_tenant_credentials: bool,
    sized: bool,
) -> usize {
    match (strategy, per_tenant_credentials, sized) {
        (Strategy::PerUser, false, false) => asked,
        _ => 0,
    }
}

impl Manager {
    /// A warm spare for a new tenant, if one is ready; its replacement starts warming.
    pub(super) fn take_spare(&self) -> Option<Spare> {
        let spare = self.spares.lock().take()?;
        self.refill_spares(false);
        Some(spare)
    }

    /// Starts warm-ups until the spares reach their number, each with room the budget can spare now
    /// (`Budget::try_reserve_spare`): a spare never waits for room, and gives its room back to whoever
    /// does (`Room::set_on_wait`). `new_pool`: a tenant's own pool was just made (an idle manager, or
    /// one whose spares were drained, starts none before that).
    pub(super) fn refill_spares(&self, new_pool: bool) {
        let (Some(me), Some(rt)) = (self.me.upgrade(), runtime::live()) else {
            return;
        };
        let units = self.pool_cost(self.pool_size, FIRST_SLOTS);
        loop {
            let epoch = {
                let mut store = self.spares.lock();
                if new_pool {
                    store.demand_seen();
                }
                match store.begin(Instant::now()) {
                    Some(epoch) => epoch,
                    None => return,
                }
            };
            let Some(reservation) = self.room.budget.try_reserve_spare(units) else {
                self.spares.lock().abandon();
                return;
            };
            rt.spawn(Arc::clone(&me).warm(epoch, reservation));
        }
    }

    /// Makes a spare and opens its connections (the monitor's, then a pooled one for the `ping`): what
    /// a new tenant's first operation would otherwise wait for.
    async fn warm(self: Arc<Self>, epoch: u64, reservation: Reservation) {
        let tenant = Arc::new(OnceLock::new());
        let pool =
            self.own_client(Label::Later(Arc::clone(&tenant)), self.pool_size, None, Some(reservation));
        let admin = pool.client().database("admin");
        let ping = admin.run_command(doc! {"ping": 1});
        let warmed = matches!(tokio::time::timeout(WARM_UP_TIMEOUT, ping).await, Ok(Ok(_)));
        let spare = Spare { pool, tenant };
        let (late, pressed) = {
            let mut store = self.spares.lock();
            let late = store.finish(epoch, if warmed { Ok(spare) } else { Err(spare) }, Instant::now());
            // Someone started waiting for room while this one warmed: the spares give their room back
            // rather than have a tenant's pool closed for it (no more are made until a new pool is).
            let pressed = if self.room.budget.is_pressed() { store.drain() } else { Vec::new() };
            (late, pressed)
        };
        late.into_iter().chain(pressed).for_each(Spare::close);
    }

    /// Closes the ready spares (warm-ups under way close theirs when they finish); `for_good`: the
    /// manager is closing and makes no more.
    pub(super) fn close_spares(&self, for_good: bool) {
        let spares = {
            let mut store = self.spares.lock();
            if for_good {
                store.close()
            } else {
                store.drain()
            }
        };
        spares.into_iter().for_each(Spare::close);
    }

    /// Closes the spares nobody took within the idle timeout (the reaper's sweep).
    pub(super) fn reap_spares(&self, now: Instant) {
        if let Some(idle) = self.registry.limits().idle_timeout {
            let idle_ones = self.spares.lock().reap(now, idle);
            idle_ones.into_iter().for_each(Spare::close);
        }
    }

    /// In a forked child: the inherited spares are the parent's sockets, forgotten, never closed.
    pub(super) fn forget_spares(&self) {
        for spare in self.spares.lock().after_fork() {
            std::mem::forget(spare);
        }
    }

    /// Spares (ready, warming, handed to tenants so far), for the statistics.
    pub fn spare_counts(&self) -> (usize, usize, u64) {
        self.spares.lock().counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_per_user_without_credentials_or_sizer_keeps_spares() {
        assert_eq!(spares_for(2, Strategy::PerUser, false, false), 2);
        assert_eq!(spares_for(2, Strategy::PerUser, true, false), 0, "a spare has no tenant's user");
        assert_eq!(spares_for(2, Strategy::PerUser, false, true), 0, "nor a tier's size");
        assert_eq!(spares_for(2, Strategy::Shared, false, false), 0, "shared clients need none");
    }
}
