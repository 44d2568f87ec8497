//! A tenant's client session: the driver's session behind a lock, and whether a transaction is open.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mongodb::options::TransactionOptions;
use mongodb::ClientSession;

use super::{CoreError, DriverClient};
use crate::core::attempt;
use crate::core::labels::Labelled;
use crate::core::registry::Lease;
use crate::core::runtime;

/// A client session of one tenant (for causal consistency and transactions).
pub struct TenantSession {
    pub tenant: String,
    /// Operations of one session run one at a time, as the driver requires. A caller that is dropped
    /// (a cancelled asyncio task) lets go of the lock with its future.
    pub session: tokio::sync::Mutex<ManuallyDrop<ClientSession>>,
    /// The session's `lsid` document, fixed for its life (read without the lock).
    pub id: mongodb::bson::Document,
    /// Whether a transaction is started and neither committed nor aborted. Changed only under the lock
    /// and in the same poll as the driver's own state, so a dropped caller never leaves it stale.
    pub(super) in_transaction: AtomicBool,
    /// Whether the session is causally consistent: its reads on the generic command are then ordered
    /// after its operation time by the core (see `ops/command.rs`).
    pub(super) causal: bool,
    pub(super) lease: Lease<DriverClient>,
}

impl Drop for TenantSession {
    fn drop(&mut self) {
        // Ending a session with an open transaction spawns its abort: that needs the runtime.
        if let Some(rt) = runtime::live() {
            let _guard = rt.enter();
            // SAFETY: dropped exactly once, here, and never used after.
            unsafe { ManuallyDrop::drop(self.session.get_mut()) }
        }
    }
}

impl TenantSession {
    pub fn in_transaction(&self) -> bool {
        self.in_transaction.load(Ordering::Acquire)
    }

    /// The driver session held under `guard` (this session's lock), as an attempt takes it.
    pub fn in_session<'a>(&self, guard: &'a mut ClientSession) -> attempt::InSession<'a> {
        attempt::InSession { session: guard, in_transaction: self.in_transaction(), causal: self.causal }
    }

    pub(super) async fn start_transaction(&self, options: TransactionOptions) -> Result<(), CoreError> {
        let mut s = self.session.lock().await;
        s.start_transaction().with_options(options).await.map_err(CoreError::Driver)?;
        self.in_transaction.store(true, Ordering::Release);
        Ok(())
    }

    /// The driver marks the transaction committed before it sends `commitTransaction` (a retried commit
    /// is allowed from that state), so the session is out of the transaction once the commit starts.
    pub(super) async fn commit_transaction(&self, limit: Option<Duration>) -> Result<(), Labelled> {
        let mut s = self.session.lock().await;
        self.in_transaction.store(false, Ordering::Release);
        attempt::commit(&mut s, limit).await
    }

    /// Likewise, the driver marks the transaction aborted before it sends `abortTransaction`.
    pub(super) async fn abort_transaction(&self, limit: Option<Duration>) -> Result<(), Labelled> {
        let mut s = self.session.lock().await;
        self.in_transaction.store(false, Ordering::Release);
        attempt::abort(&mut s, limit).await
    }
}
