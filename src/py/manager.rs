//! `_core.Manager`: the Python handle on the Rust tenant manager. The public `UserConnectionManager`
//! (Python) wraps it; this class only moves bytes and releases the GIL.

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::RawDocumentBuf;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use pyo3::exceptions::PyValueError;

use super::aio;
use super::blocking::{block_on, detached};
use super::change_stream::PyRawChangeStream;
use super::credentials::python_credentials;
use super::cursor::PyRawCursor;
use super::errors::core_error;
use super::monitor::{python_sink, scope};
use super::reservation::PyReservation;
use super::session::PySession;
use crate::core::credentials::scrub_secret;
use crate::core::exposition;
use crate::core::manager::{Config, CoreError, Manager, Sizer, SPARE_POOLS};
use crate::core::monitor::scoped;
use crate::core::ops::{cursor, Op};
use crate::core::policy::Strategy;
use crate::core::provision::{Provisioned, TenantUser};

#[pyclass(module = "tenantpool._core", name = "Manager", frozen)]
pub struct PyManager {
    inner: Arc<Manager>,
}

fn raw(bytes: &[u8]) -> PyResult<RawDocumentBuf> {
    RawDocumentBuf::from_bytes(bytes.to_vec())
        .map_err(|e| PyValueError::new_err(format!("malformed BSON: {e}")))
}

fn raw_docs(docs: Option<Vec<Vec<u8>>>) -> PyResult<Vec<RawDocumentBuf>> {
    docs.unwrap_or_default()
        .into_iter()
        .map(|d| {
            RawDocumentBuf::from_bytes(d).map_err(|e| PyValueError::new_err(format!("malformed BSON: {e}")))
        })
        .collect()
}

fn parse_op(op: &str) -> PyResult<Op> {
    Op::parse(op).ok_or_else(|| PyValueError::new_err(format!("unknown op {op}")))
}

/// Cursors are opened by their command (`ops/cursor.rs`): "command" is the only cursor op.
fn check_cursor_op(op: &str) -> PyResult<()> {
    match op {
        "command" => Ok(()),
        _ => Err(PyValueError::new_err(format!("unknown cursor op {op}: a cursor is opened by its command"))),
    }
}

/// A core error as the pymongo exception, with the connection string's password scrubbed.
pub fn error(py: Python<'_>, manager: &Arc<Manager>, e: CoreError) -> PyErr {
    let m = Arc::clone(manager);
    core_error(py, e, &move |s: &str| m.scrub(s))
}

/// A provisioning error, with the connection string's password and the tenant's new one scrubbed.
fn provisioning_error(py: Python<'_>, manager: &Arc<Manager>, e: CoreError, password: &str) -> PyErr {
    let m = Arc::clone(manager);
    core_error(py, e, &|s: &str| scrub_secret(&m.scrub(s), password))
}

impl PyManager {
    fn err(&self, py: Python<'_>, e: CoreError) -> PyErr {
        error(py, &self.inner, e)
    }
}

#[pymethods]
impl PyManager {
    #[new]
    #[pyo3(signature = (uri, user_pool_size, idle_timeout, max_connections, db_name_template, options,
                        strategy="per_user", groups=10, shared_pool_size=100, wait_queue_timeout_ms=None,
                        pool_size_of=None, slow_query_ms=None, credentials=None, admin_idle_ms=10_000,
                        max_server_connections=None, publisher=None, spare_pools=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        uri: String,
        user_pool_size: u32,
        idle_timeout: Option<f64>,
        max_connections: Option<usize>,
        db_name_template: String,
        options: Vec<(String, String)>,
        strategy: &str,
        groups: u32,
        shared_pool_size: u32,
        wait_queue_timeout_ms: Option<u64>,
        pool_size_of: Option<Py<PyAny>>,
        slow_query_ms: Option<u64>,
        credentials: Option<Py<PyAny>>,
        admin_idle_ms: u64,
        max_server_connections: Option<u32>,
        publisher: Option<Py<PyAny>>,
        spare_pools: Option<usize>,
    ) -> PyResult<Self> {
        let strategy = Strategy::parse(strategy, groups)
            .map_err(|m| core_error(py, CoreError::Configuration(m), &|s: &str| s.to_owned()))?;
        let config = Config {
            uri,
            options,
            pool_size: user_pool_size,
            idle_timeout: idle_timeout.map(Duration::from_secs_f64),
            max_pools: max_connections,
            db_name_template,
            strategy,
            shared_pool_size,
            wait_queue_timeout: wait_queue_timeout_ms.map(Duration::from_millis),
            sizer: pool_size_of.map(python_sizer),
            slow_operation: slow_query_ms.map(Duration::from_millis),
            credentials: credentials.map(python_credentials),
            admin_idle: Duration::from_millis(admin_idle_ms),
            max_server_connections,
            monitor: publisher.map(python_sink),
            spare_pools: spare_pools.unwrap_or(SPARE_POOLS),
        };
        let scrub_uri = config.uri.clone();
        let inner = detached(py, || Manager::new(config))
            .map_err(|e| core_error(py, e, &|s: &str| crate::core::options::scrub(s, &scrub_uri)))?;
        Ok(PyManager { inner })
    }

    /// The database name the template gives this tenant; raises InvalidName for an invalid id.
    fn db_name(&self, py: Python<'_>, tenant: &str) -> PyResult<String> {
        self.inner.db_name(tenant).map_err(|e| self.err(py, e))
    }

    /// Creates the tenant's pool if it has none and the budget has room now, and marks it used. No
    /// network I/O; `wait`: may wait (up to a second, without the GIL) for the manager's first contact
    /// with the server, which an event loop's thread must not.
    #[pyo3(signature = (tenant, wait=true))]
    fn ensure(&self, py: Python<'_>, tenant: &str, wait: bool) -> PyResult<()> {
        let inner = &self.inner;
        let touched = match inner.try_touch(tenant) {
            Some(done) => done,
            // Creating a pool may call the tier callback, and a lock may be held across a fork by the
            // thread that waits for the GIL: wait without it.
            None => detached(py, || inner.lease_now(tenant, wait).map(drop)),
        };
        touched.map_err(|e| self.err(py, e))
    }

    /// Runs a one-reply operation and returns the reply as BSON bytes (None: no document).
    #[pyo3(signature = (tenant, db_name, op, spec, docs=None, session=None))]
    #[allow(clippy::too_many_arguments)]
    fn execute<'py>(
        &self,
        py: Python<'py>,
        tenant: &str,
        db_name: &str,
        op: &str,
        spec: &[u8],
        docs: Option<Vec<Vec<u8>>>,
        session: Option<PyRef<'_, PySession>>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let (op, spec, docs) = (parse_op(op)?, raw(spec)?, raw_docs(docs)?);
        let inner = &self.inner;
        let session = session.map(|s| s.handle(py)).transpose()?;
        let scope = scope(py, inner, tenant);
        let result =
            block_on(py, scoped(scope, inner.execute(tenant, db_name, op, &spec, docs, session.as_deref())));
        match result {
            Ok(reply) => Ok(reply.map(|r| PyBytes::new(py, r.as_bytes()))),
            Err(e) => Err(self.err(py, e)),
        }
    }

    /// `execute` as an asyncio awaitable; cancelling it releases the tenant's lease and quota slot.
    #[pyo3(signature = (tenant, db_name, op, spec, docs=None, session=None))]
    #[allow(clippy::too_many_arguments)]
    fn execute_async<'py>(
        &self,
        py: Python<'py>,
        tenant: String,
        db_name: String,
        op: &str,
        spec: &[u8],
        docs: Option<Vec<Vec<u8>>>,
        session: Option<PyRef<'_, PySession>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (op, spec, docs) = (parse_op(op)?, raw(spec)?, raw_docs(docs)?);
        let inner = Arc::clone(&self.inner);
        let session = session.map(|s| s.handle(py)).transpose()?;
        let scope = scope(py, &inner, &tenant);
        aio::awaitable(py, move || async move {
            let run = inner.execute(&tenant, &db_name, op, &spec, docs, session.as_deref());
            let result = scoped(scope, run).await;
            aio::deliver(move |py| match result {
                Ok(reply) => Ok(reply.map(|r| PyBytes::new(py, r.as_bytes()).unbind())),
                Err(e) => Err(error(py, &inner, e)),
            })
        })
    }

    /// Opens a cursor; it holds a lease on the tenant's pool until exhausted, closed or dropped.
    #[pyo3(signature = (tenant, db_name, op, spec, session=None))]
    fn open_cursor(
        &self,
        py: Python<'_>,
        tenant: &str,
        db_name: &str,
        op: &str,
        spec: &[u8],
        session: Option<PyRef<'_, PySession>>,
    ) -> PyResult<PyRawCursor> {
        check_cursor_op(op)?;
        let spec = raw(spec)?;
        let inner = &self.inner;
        let session = session.map(|s| s.handle(py)).transpose()?;
        let scope = scope(py, inner, tenant);
        let opened =
            block_on(py, scoped(scope, inner.open_cursor(tenant, db_name, &spec, session.as_deref())));
        let tailable = cursor::is_tailable(&spec);
        match opened {
            Ok((cursor, lease)) => Ok(PyRawCursor::new(Arc::clone(inner), cursor, lease, session, tailable)),
            Err(e) => Err(self.err(py, e)),
        }
    }

    /// `open_cursor` as an asyncio awaitable.
    #[pyo3(signature = (tenant, db_name, op, spec, session=None))]
    fn open_cursor_async<'py>(
        &self,
        py: Python<'py>,
        tenant: String,
        db_name: String,
        op: &str,
        spec: &[u8],
        session: Option<PyRef<'_, PySession>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        check_cursor_op(op)?;
        let spec = raw(spec)?;
        let inner = Arc::clone(&self.inner);
        let session = session.map(|s| s.handle(py)).transpose()?;
        let scope = scope(py, &inner, &tenant);
        aio::awaitable(py, move || async move {
            let result = scoped(scope, inner.open_cursor(&tenant, &db_name, &spec, session.as_deref())).await;
            let tailable = cursor::is_tailable(&spec);
            aio::deliver(move |py| match result {
                Ok((cursor, lease)) => {
                    Py::new(py, PyRawCursor::new(Arc::clone(&inner), cursor, lease, session, tailable))
                }
                Err(e) => Err(error(py, &inner, e)),
            })
        })
    }

    /// Opens a change stream (on `spec.collection`, or on the database); it holds a lease on the
    /// tenant's pool until closed, invalidated or dropped.
    #[pyo3(signature = (tenant, db_name, spec, session=None))]
    fn watch(
        &self,
        py: Python<'_>,
        tenant: &str,
        db_name: &str,
        spec: &[u8],
        session: Option<PyRef<'_, PySession>>,
    ) -> PyResult<PyRawChangeStream> {
        let spec = raw(spec)?;
        let inner = &self.inner;
        let session = session.map(|s| s.handle(py)).transpose()?;
        let scope = scope(py, inner, tenant);
        let opened = block_on(py, scoped(scope, inner.watch(tenant, db_name, &spec, session.as_deref())));
        match opened {
            Ok((stream, lease)) => Ok(PyRawChangeStream::new(Arc::clone(inner), stream, lease, session)),
            Err(e) => Err(self.err(py, e)),
        }
    }

    /// `watch` as an asyncio awaitable.
    #[pyo3(signature = (tenant, db_name, spec, session=None))]
    fn watch_async<'py>(
        &self,
        py: Python<'py>,
        tenant: String,
        db_name: String,
        spec: &[u8],
        session: Option<PyRef<'_, PySession>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec = raw(spec)?;
        let inner = Arc::clone(&self.inner);
        let session = session.map(|s| s.handle(py)).transpose()?;
        let scope = scope(py, &inner, &tenant);
        aio::awaitable(py, move || async move {
            let result = scoped(scope, inner.watch(&tenant, &db_name, &spec, session.as_deref())).await;
            aio::deliver(move |py| match result {
                Ok((stream, lease)) => {
                    Py::new(py, PyRawChangeStream::new(Arc::clone(&inner), stream, lease, session))
                }
                Err(e) => Err(error(py, &inner, e)),
            })
        })
    }

    /// Starts a client session on the tenant's client (no network I/O: sync and async callers alike
    /// call this one).
    #[pyo3(signature = (tenant, causal_consistency=None, snapshot=false))]
    fn start_session(
        &self,
        py: Python<'_>,
        tenant: &str,
        causal_consistency: Option<bool>,
        snapshot: bool,
    ) -> PyResult<PySession> {
        let inner = &self.inner;
        match block_on(py, inner.start_session(tenant, causal_consistency, snapshot)) {
            Ok(s) => Ok(PySession::new(Arc::clone(inner), s)),
            Err(e) => Err(self.err(py, e)),
        }
    }

    /// Creates the tenant's MongoDB user, or updates its password and roles if it exists (then closes
    /// the tenant's pool); True if it was created.
    #[pyo3(signature = (tenant, username, password, roles, source=None))]
    fn provision(
        &self,
        py: Python<'_>,
        tenant: &str,
        username: &str,
        password: &str,
        roles: Vec<String>,
        source: Option<&str>,
    ) -> PyResult<bool> {
        let user = TenantUser { username, password, roles: &roles, source };
        let scope = scope(py, &self.inner, tenant);
        let r = block_on(py, scoped(scope, self.inner.provision(tenant, &user)));
        r.map(|p| p == Provisioned::Created).map_err(|e| provisioning_error(py, &self.inner, e, password))
    }

    /// `provision` as an asyncio awaitable.
    #[pyo3(signature = (tenant, username, password, roles, source=None))]
    #[allow(clippy::too_many_arguments)]
    fn provision_async<'py>(
        &self,
        py: Python<'py>,
        tenant: String,
        username: String,
        password: String,
        roles: Vec<String>,
        source: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = Arc::clone(&self.inner);
        let scope = scope(py, &inner, &tenant);
        aio::awaitable(py, move || async move {
            let user = TenantUser {
                username: &username,
                password: &password,
                roles: &roles,
                source: source.as_deref(),
            };
            let r = scoped(scope, inner.provision(&tenant, &user)).await;
            aio::deliver(move |py| match r {
                Ok(p) => Ok(p == Provisioned::Created),
                Err(e) => Err(provisioning_error(py, &inner, e, &password)),
            })
        })
    }

    /// Drops the tenant's MongoDB user and closes its pool; False if there was no such user.
    #[pyo3(signature = (tenant, username, source=None))]
    fn deprovision(
        &self,
        py: Python<'_>,
        tenant: &str,
        username: &str,
        source: Option<&str>,
    ) -> PyResult<bool> {
        let scope = scope(py, &self.inner, tenant);
        block_on(py, scoped(scope, self.inner.deprovision(tenant, username, source)))
            .map_err(|e| self.err(py, e))
    }

    /// `deprovision` as an asyncio awaitable.
    #[pyo3(signature = (tenant, username, source=None))]
    fn deprovision_async<'py>(
        &self,
        py: Python<'py>,
        tenant: String,
        username: String,
        source: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = Arc::clone(&self.inner);
        let scope = scope(py, &inner, &tenant);
        aio::awaitable(py, move || async move {
            let r = scoped(scope, inner.deprovision(&tenant, &username, source.as_deref())).await;
            aio::deliver(move |py| r.map_err(|e| error(py, &inner, e)))
        })
    }

    /// Room in the connection budget for a client of tenantpool's own opened outside the core (a
    /// pymongo client of `pool_size`, polling its servers): counted, waited for (FIFO, bounded) and
    /// refused as a tenant's pool is, listed as `what` in `budget()["held"]` until released.
    fn hold_room(&self, py: Python<'_>, what: &str, pool_size: u32) -> PyResult<PyReservation> {
        let inner = &self.inner;
        match block_on(py, inner.hold_room(what, pool_size)) {
            Ok(held) => Ok(PyReservation::new(held)),
            Err(e) => Err(self.err(py, e)),
        }
    }

    fn close_tenant(&self, py: Python<'_>, tenant: &str) -> PyResult<bool> {
        self.inner.close_tenant(tenant).map_err(|e| self.err(py, e))
    }

    /// Closes every pool (each once its in-flight operations finish); further use raises.
    fn close(&self) -> usize {
        self.inner.close()
    }

    fn close_pools(&self) -> usize {
        self.inner.close_pools()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    #[getter]
    fn redacted_uri(&self) -> String {
        self.inner.redacted_uri()
    }

    /// Raises InvalidOperation if the manager is closed.
    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.is_closed() {
            return Err(self.err(py, CoreError::Closed));
        }
        Ok(())
    }

    /// Tenants with a live pool, oldest first.
    fn tenants<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.inner.registry().tenants())
    }

    /// Registry-wide counters.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.registry().counters.snapshot();
        let d = PyDict::new(py);
        d.set_item("live_pools", self.inner.registry().len())?;
        d.set_item("pools_created", c.created)?;
        d.set_item("pools_closed", c.closed)?;
        d.set_item("closed_idle", c.closed_idle)?;
        d.set_item("closed_lru", c.closed_lru)?;
        d.set_item("closed_manual", c.closed_manual)?;
        d.set_item("closed_error", c.closed_error)?;
        d.set_item("closed_shutdown", c.closed_shutdown)?;
        d.set_item("closed_budget", c.closed_budget)?;
        d.set_item("operation_errors", c.operation_errors)?;
        d.set_item("operations", c.operations)?;
        d.set_item("waits", c.waits)?;
        d.set_item("wait_seconds", c.wait_micros as f64 / 1e6)?;
        d.set_item("wait_timeouts", c.wait_timeouts)?;
        d.set_item("reuses", c.reuses)?;
        d.set_item("slow_operations", c.slow_operations)?;
        d.set_item("strategy", self.inner.strategy().name())?;
        d.set_item("shared_clients", self.inner.shared_clients_open())?;
        d.set_item("admin_client_open", self.inner.admin_client_open())?;
        Ok(d)
    }

    /// The connection budget: its bound and where it comes from, what is reserved and in use, who
    /// waits, and how many pools were closed to make room.
    fn budget<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = self.inner.room();
        let d = PyDict::new(py);
        d.set_item("max_server_connections", r.budget.limit)?;
        d.set_item("configured", r.configured)?;
        d.set_item("source", r.source)?;
        d.set_item("server_capacity", r.server_capacity)?;
        d.set_item("reserved", r.budget.reserved)?;
        d.set_item("in_use", r.in_use)?;
        d.set_item("releasing", r.budget.releasing)?;
        d.set_item("peak_reserved", r.budget.peak_reserved)?;
        d.set_item("waiting", r.budget.waiting)?;
        d.set_item("waits", r.budget.waits)?;
        d.set_item("wait_seconds", r.budget.wait_micros as f64 / 1e6)?;
        d.set_item("wait_timeouts", r.budget.wait_timeouts)?;
        d.set_item("closed_for_budget", r.closed_for_budget)?;
        d.set_item("per_pool", self.inner.room_cost(self.inner.pool_size()))?;
        d.set_item("servers", r.servers)?;
        d.set_item("monitors_per_server", r.per_server_monitors)?;
        d.set_item("shared_pool_size", self.inner.effective_shared_pool_size())?;
        let (ready, warming, used) = self.inner.spare_counts();
        d.set_item("spare_pools", ready)?;
        d.set_item("spare_pools_warming", warming)?;
        d.set_item("spare_pools_used", used)?;
        let held = PyDict::new(py);
        for (what, units) in &r.budget.held {
            held.set_item(what, units)?;
        }
        d.set_item("held", held)?;
        Ok(d)
    }

    /// Per-tenant figures, or None if the tenant has no live pool.
    fn tenant_info<'py>(&self, py: Python<'py>, tenant: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        match self.inner.registry().info(tenant) {
            None => Ok(None),
            Some(i) => {
                let d = PyDict::new(py);
                d.set_item("user_id", i.tenant)?;
                d.set_item("tier", i.label)?;
                d.set_item("pool_size", i.pool_size)?;
                d.set_item("in_use", i.in_use)?;
                d.set_item("in_flight", i.in_flight)?;
                d.set_item("slots", i.slots)?;
                d.set_item("waiting", i.waiting)?;
                d.set_item("longest_wait_seconds", i.longest_wait.as_secs_f64())?;
                d.set_item("waits", i.waits)?;
                d.set_item("wait_seconds", i.wait_time.as_secs_f64())?;
                d.set_item("wait_timeouts", i.wait_timeouts)?;
                d.set_item("operations", i.operations)?;
                d.set_item("errors", i.errors)?;
                d.set_item("age_seconds", i.age.as_secs_f64())?;
                d.set_item("idle_seconds", i.idle.as_secs_f64())?;
                Ok(Some(d))
            }
        }
    }

    /// The Prometheus text exposition: totals, per tier/group aggregates, and the `top` busiest tenants.
    #[pyo3(signature = (top=10))]
    fn metrics_text(&self, top: usize) -> String {
        let r = self.inner.registry();
        let mut text =
            exposition::render(self.inner.strategy().name(), &r.counters.snapshot(), &r.snapshot(), top);
        text.push_str(&exposition::render_budget(&self.inner.room()));
        text
    }

    /// Per-tenant figures of every live pool, as tenant_info gives them.
    fn all_tenant_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for i in self.inner.registry().snapshot() {
            if let Some(d) = self.tenant_info(py, &i.tenant)? {
                out.append(d)?;
            }
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!("Manager({:?})", self.inner.redacted_uri())
    }
}

impl Drop for PyManager {
    /// A manager dropped without `close_all()` still closes its pools (each after its last operation or
    /// cursor), rather than leaving clients and their sockets behind.
    fn drop(&mut self) {
        self.inner.close();
    }
}

/// The Python tier callback as the core's sizer: called once per pool creation, with the GIL.
fn python_sizer(callback: Py<PyAny>) -> Sizer {
    Box::new(move |tenant: &str| {
        Python::attach(|py| {
            let r = callback.call1(py, (tenant,))?;
            r.extract::<(u32, String)>(py)
        })
        .map_err(|e| format!("the pool size callback failed for tenant {tenant:?}: {e}"))
    })
}
