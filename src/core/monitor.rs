//! Command monitoring: the driver's command events, each told which tenant's operation sent it.
//!
//! The binding layer runs each operation inside a `Scope` (a tokio task-local) naming the tenant and
//! carrying an opaque context of its own (the caller's `contextvars` context). The driver calls its
//! command event handler inline, in the future of the operation that sends the command, so the handler
//! sees that scope. Commands sent from a task of the driver's own (killCursors of a dropped cursor, an
//! abort when a session with an open transaction ends) have no scope: they are told the client's tenant
//! (its own client) or the tenant whose database the command names, and no context.
//!
//! No monitor, no cost: without one the manager installs no handler, and the driver builds no event.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::event::command::{CommandEvent, ConnectionInfo};
use mongodb::event::EventHandler;
use mongodb::options::ServerAddress;
use parking_lot::Mutex;

use super::labels::is_network;
use super::naming::Template;

/// Whatever the binding layer keeps with an operation for its events (Python's context).
pub type Context = Arc<dyn Any + Send + Sync>;

/// One operation of one tenant, as its command events see it.
pub struct Scope {
    pub tenant: String,
    pub context: Option<Context>,
    /// pymongo's operation id: the same for every command of the operation (its retries too).
    pub operation_id: i64,
}

static OPERATIONS: AtomicI64 = AtomicI64::new(1);

impl Scope {
    pub fn new(tenant: &str, context: Option<Context>) -> Arc<Scope> {
        let operation_id = OPERATIONS.fetch_add(1, Ordering::Relaxed);
        Arc::new(Scope { tenant: tenant.to_owned(), context, operation_id })
    }
}

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// Runs `fut` in `scope` (if any): the command events it causes are told the scope's tenant.
pub async fn scoped<F: Future>(scope: Option<Arc<Scope>>, fut: F) -> F::Output {
    match scope {
        Some(scope) => SCOPE.scope(scope, fut).await,
        None => fut.await,
    }
}

/// What happened to a command.
pub enum Outcome<'a> {
    Started { command: &'a Document },
    Succeeded { duration: Duration, reply: &'a Document },
    Failed { duration: Duration, failure: Document },
}

/// A command event as the monitor's sink receives it.
pub struct Delivered<'a> {
    pub outcome: Outcome<'a>,
    pub command_name: &'a str,
    pub db: &'a str,
    pub request_id: i32,
    pub operation_id: i64,
    pub host: String,
    pub port: u16,
    pub server_connection_id: Option<i64>,
    pub tenant: Option<&'a str>,
    pub context: Option<&'a Context>,
}

/// The binding layer's receiver of command events; called on the runtime's threads.
pub type Sink = Arc<dyn Fn(Delivered<'_>) + Send + Sync>;

/// Requests started and not yet finished kept for their database name (the driver's succeeded and
/// failed events have none). An operation dropped mid-command never finishes its request: past this
/// many the oldest are forgotten rather than kept forever.
const MAX_IN_FLIGHT: usize = 10_000;

pub struct Monitor {
    sink: Sink,
    template: Template,
    in_flight: Mutex<HashMap<i32, String>>,
}

impl Monitor {
    pub fn new(sink: Sink, template: Template) -> Arc<Monitor> {
        Arc::new(Monitor { sink, template, in_flight: Mutex::default() })
    }

    /// The driver handler of one client; `tenant`: the client's own tenant (per_user), if any.
    pub fn handler(self: &Arc<Self>, tenant: Option<String>) -> EventHandler<CommandEvent> {
        let me = Arc::clone(self);
        EventHandler::callback(move |event| me.handle(event, tenant.as_deref()))
    }

    /// The handler of a spare client (see `manager::spare`), whose tenant is known only once it is handed
    /// out: until then its events are its own warm-up's, nobody's operation, and are not reported.
    pub fn handler_later(self: &Arc<Self>, tenant: Arc<OnceLock<String>>) -> EventHandler<CommandEvent> {
        let me = Arc::clone(self);
        EventHandler::callback(move |event| {
            if let Some(tenant) = tenant.get() {
                me.handle(event, Some(tenant));
            }
        })
    }

    fn handle(&self, event: CommandEvent, client_tenant: Option<&str>) {
        let scope = SCOPE.try_with(Arc::clone).ok();
        let (name, request_id, connection, db, outcome) = match &event {
            CommandEvent::Started(e) => {
                let mut in_flight = self.in_flight.lock();
                if in_flight.len() >= MAX_IN_FLIGHT {
                    in_flight.clear();
                }
                in_flight.insert(e.request_id, e.db.clone());
                (
                    &e.command_name,
                    e.request_id,
                    &e.connection,
                    e.db.clone(),
                    Outcome::Started { command: &e.command },
                )
            }
            CommandEvent::Succeeded(e) => {
                let db = self.in_flight.lock().remove(&e.request_id).unwrap_or_default();
                let outcome = Outcome::Succeeded { duration: e.duration, reply: &e.reply };
                (&e.command_name, e.request_id, &e.connection, db, outcome)
            }
            CommandEvent::Failed(e) => {
                let db = self.in_flight.lock().remove(&e.request_id).unwrap_or_default();
                let outcome = Outcome::Failed { duration: e.duration, failure: failure_document(&e.failure) };
                (&e.command_name, e.request_id, &e.connection, db, outcome)
            }
            _ => return,
        };
        let inferred = match (&scope, client_tenant) {
            (None, None) => self.template.tenant_of(&db),
            _ => None,
        };
        let tenant = scope.as_ref().map(|s| s.tenant.as_str()).or(client_tenant).or(inferred);
        let (host, port) = address(connection);
        (self.sink)(Delivered {
            outcome,
            command_name: name,
            db: &db,
            request_id,
            operation_id: scope.as_ref().map_or(i64::from(request_id), |s| s.operation_id),
            host,
            port,
            server_connection_id: connection.server_id,
            tenant,
            context: scope.as_ref().and_then(|s| s.context.as_ref()),
        });
    }
}

/// pymongo's `(host, port)` of a connection.
fn address(connection: &ConnectionInfo) -> (String, u16) {
    match &connection.address {
        ServerAddress::Tcp { host, port } => (host.clone(), port.unwrap_or(27017)),
        other => (other.to_string(), 0),
    }
}

/// pymongo's failure document: the server's reply when it answered with an error, else the error's
/// message and kind (a network error, a timeout).
pub fn failure_document(error: &mongodb::error::Error) -> Document {
    if let Some(reply) = error.server_response().and_then(|r| Document::try_from(r.as_ref()).ok()) {
        return reply;
    }
    let kind = if is_network(error) { "AutoReconnect" } else { "PyMongoError" };
    doc! { "errmsg": error.to_string(), "errtype": kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Template {
        Template::parse("user_{user_id}_db").unwrap()
    }

    #[test]
    fn tenant_of_inverts_the_template() {
        let t = template();
        assert_eq!(t.tenant_of("user_acme_db"), Some("acme"));
        assert_eq!(t.tenant_of("admin"), None);
        assert_eq!(t.tenant_of("user__db"), None);
    }

    #[test]
    fn scopes_number_their_operations() {
        let (a, b) = (Scope::new("a", None), Scope::new("b", None));
        assert!(b.operation_id > a.operation_id);
        assert_eq!(a.tenant, "a");
    }

    #[test]
    fn a_failure_without_a_reply_says_what_went_wrong() {
        let e = mongodb::error::Error::custom("boom".to_owned());
        let d = failure_document(&e);
        assert!(d.get_str("errmsg").unwrap().contains("boom"));
        assert_eq!(d.get_str("errtype").unwrap(), "PyMongoError");
    }

    #[test]
    fn the_scope_is_seen_inside_its_future_only() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let seen =
                scoped(Some(Scope::new("t1", None)), async { SCOPE.try_with(|s| s.tenant.clone()).ok() })
                    .await;
            assert_eq!(seen.as_deref(), Some("t1"));
            assert!(scoped(None, async { SCOPE.try_with(|_| ()).is_err() }).await);
        });
    }
}
