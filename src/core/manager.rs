//! The tenant manager: one driver client per tenant, held in the registry, reaped in the background.

use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::naming::{check_db_name, Template};
use super::options::{merge_uri_options, redact, scrub};
use super::registry::{Lease, Limits, Pool, Registry, RegistryError};
use super::runtime;

/// One tenant's driver client. Closing shuts it down in the background: the caller never waits on I/O.
pub struct TenantPool {
    client: ManuallyDrop<Client>,
}

impl TenantPool {
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for TenantPool {
    fn drop(&mut self) {
        // The driver's Drop may spawn cleanup, which needs a runtime context on whatever thread the
        // last reference happens to go away.
        let rt = runtime::get();
        let _guard = rt.enter();
        // SAFETY: dropped exactly once, here, and never used after.
        unsafe { ManuallyDrop::drop(&mut self.client) }
    }
}

impl Pool for TenantPool {
    fn close(&self) {
        let client = Client::clone(&self.client);
        runtime::get().spawn(async move { client.shutdown().await });
    }
}

#[derive(Debug)]
pub enum CoreError {
    /// The manager was closed.
    Closed,
    InvalidName(String),
    Configuration(String),
    Driver(mongodb::error::Error),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Closed => write!(f, "the UserConnectionManager is closed; create a new one"),
            CoreError::InvalidName(m) | CoreError::Configuration(m) => f.write_str(m),
            CoreError::Driver(e) => write!(f, "{e}"),
        }
    }
}

impl From<RegistryError> for CoreError {
    fn from(_: RegistryError) -> Self {
        CoreError::Closed
    }
}

pub struct Config {
    pub uri: String,
    pub options: Vec<(String, String)>,
    pub pool_size: u32,
    pub idle_timeout: Option<Duration>,
    pub max_pools: Option<usize>,
    pub db_name_template: String,
}

pub struct Manager {
    me: Weak<Manager>,
    registry: Registry<TenantPool>,
    client_options: ClientOptions,
    template: Template,
    pool_size: u32,
    uri: String,
    reaper_stop: Arc<Notify>,
    /// The process that owns the clients; a forked child starts over with none.
    owner_pid: Mutex<u32>,
}

impl Manager {
    pub fn new(config: Config) -> Result<Arc<Manager>, CoreError> {
        if config.pool_size == 0 {
            return Err(CoreError::Configuration("user_pool_size must be at least 1".into()));
        }
        let template = Template::parse(&config.db_name_template).map_err(CoreError::Configuration)?;
        let uri = merge_uri_options(&config.uri, &config.options);
        // Parsing may resolve SRV records: a network round trip, so it runs without the GIL (the caller
        // makes sure) and once per manager, not once per tenant.
        let client_options = runtime::get()
            .block_on(async { ClientOptions::parse(&uri).await })
            .map_err(|e| CoreError::Configuration(scrub(&config_error(&e), &config.uri)))?;
        let manager = Arc::new_cyclic(|me| Manager {
            me: me.clone(),
            registry: Registry::new(Limits { idle_timeout: config.idle_timeout, max_pools: config.max_pools }),
            client_options,
            template,
            pool_size: config.pool_size,
            uri: config.uri,
            reaper_stop: Arc::new(Notify::new()),
            owner_pid: Mutex::new(std::process::id()),
        });
        manager.spawn_reaper(Arc::clone(&manager.reaper_stop));
        Ok(manager)
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

    pub fn registry(&self) -> &Registry<TenantPool> {
        &self.registry
    }

    pub fn db_name(&self, tenant: &str) -> Result<String, CoreError> {
        self.template.db_name(tenant).map_err(CoreError::InvalidName)
    }

    /// A lease on the tenant's pool, creating the pool if needed. No network I/O happens here: the
    /// driver connects lazily and its monitor, not a ping per call, tracks the server's health.
    pub fn lease(&self, tenant: &str) -> Result<Lease<TenantPool>, CoreError> {
        self.template.check_tenant(tenant).map_err(CoreError::InvalidName)?;
        self.check_fork();
        let lease = self.registry.lease(tenant, || {
            let mut options = self.client_options.clone();
            options.max_pool_size = Some(self.pool_size);
            // The driver spawns its monitors on the ambient runtime.
            let _rt = runtime::get();
            let _guard = _rt.enter();
            let client = Client::with_options(options).expect("options were validated at construction");
            (TenantPool { client: ManuallyDrop::new(client) }, self.pool_size)
        })?;
        Ok(lease)
    }

    /// The tenant's database handle, with its lease. `db_name` overrides the template.
    pub fn database(&self, tenant: &str, db_name: Option<&str>) -> Result<(Lease<TenantPool>, Database), CoreError> {
        let name = match db_name {
            Some(n) => {
                check_db_name(n).map_err(CoreError::InvalidName)?;
                n.to_owned()
            }
            None => self.db_name(tenant)?,
        };
        let lease = self.lease(tenant)?;
        let db = lease.pool().client().database(&name);
        Ok((lease, db))
    }

    pub fn close_tenant(&self, tenant: &str) -> bool {
        self.registry.remove(tenant)
    }

    pub fn close(&self) -> usize {
        self.reaper_stop.notify_one();
        self.registry.close()
    }

    pub fn is_closed(&self) -> bool {
        self.registry.is_closed()
    }

    /// In a forked child the inherited clients' sockets are shared with the parent and their tasks
    /// are gone: forget them (never close them, that would disturb the parent) and start afresh.
    fn check_fork(&self) {
        let pid = std::process::id();
        let mut owner = self.owner_pid.lock();
        if *owner != pid {
            *owner = pid;
            for entry in self.registry.abandon() {
                std::mem::forget(entry);
            }
            self.spawn_reaper(Arc::clone(&self.reaper_stop));
        }
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
                let Some(manager) = weak.upgrade() else { return };
                if manager.is_closed() {
                    return;
                }
                manager.registry.reap(Instant::now());
            }
        });
    }
}

fn config_error(e: &mongodb::error::Error) -> String {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::InvalidArgument { message, .. } => message.clone(),
        _ => e.to_string(),
    }
}
