//! Provisioning tenants' MongoDB users (`provision_tenant` / `deprovision_tenant`) with the manager's
//! own credentials, those of its connection string.
//!
//! The commands go out on an admin client that is opened on demand and shut down once no provisioning
//! call has used it for `idle` (default 10 s): provisioning is rare, and an always-open client would
//! cost every manager a monitor and sockets. `Provisioner::open_client` is the one place that client
//! is opened, and only with its room in the connection budget, which goes back once it has shut down.

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{Error, ErrorKind};
use mongodb::options::ClientOptions;
use mongodb::Client;

use super::budget::Reservation;
use super::credentials::is_authentication_failure;
use super::forklock::ForkMutex;
use super::manager::{CoreError, Manager};
use super::runtime;

/// The roles a tenant's user may get, always on the tenant's own database only. `dbOwner` and
/// `userAdmin` are left out: they would let a tenant create users and grant itself more.
pub const ROLES: [&str; 3] = ["read", "readWrite", "dbAdmin"];

/// At most this many connections for provisioning calls made at the same time.
pub const ADMIN_POOL_SIZE: u32 = 2;

/// The server's codes for "the user already exists" (createUser) and "no such user" (dropUser).
const USER_EXISTS: i32 = 51003;
const USER_NOT_FOUND: i32 = 11;

/// The tenant's user to create or update.
pub struct TenantUser<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub roles: &'a [String],
    /// The database the user is defined in (the tenant's own unless given).
    pub source: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioned {
    Created,
    /// The user existed: its password and roles were replaced.
    Updated,
}

pub fn check_roles(roles: &[String]) -> Result<(), String> {
    if roles.is_empty() {
        return Err(format!("roles must name at least one of {ROLES:?}"));
    }
    match roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
        Some(bad) => Err(format!(
            "role {bad:?} cannot be given to a tenant's user; tenant users may have {ROLES:?}, on their \
             own database only"
        )),
        None => Ok(()),
    }
}

/// `createUser` or `updateUser` for the tenant's user: the given roles on `db` (the tenant's database)
/// and nothing else. Majority write concern, so a secondary the tenant later reads from knows the user.
pub fn user_command(verb: &str, user: &TenantUser<'_>, db: &str) -> Document {
    let roles: Vec<Bson> = user.roles.iter().map(|r| Bson::Document(doc! { "role": r, "db": db })).collect();
    doc! {
        verb: user.username,
        "pwd": user.password,
        "roles": roles,
        "writeConcern": { "w": "majority" },
    }
}

/// A provisioning command's error; a failed authentication is the connection string's user's, and
/// says so (the driver's own message would not say whose).
fn admin_error(e: Error) -> CoreError {
    if !is_authentication_failure(&e) {
        return CoreError::Driver(e);
    }
    CoreError::Authentication(format!(
        "provisioning could not authenticate with the connection string's credentials ({e}); \
         provision_tenant and deprovision_tenant use the manager's own user, which needs userAdmin on \
         the tenants' databases (e.g. userAdminAnyDatabase)"
    ))
}

fn server_code(e: &Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// The admin client, if open, and who is using it.
struct Slot {
    client: Option<Client>,
    /// The client's room in the connection budget: taken before it opens, given back after it shut down.
    room: Option<Reservation>,
    /// The process that opened it: a forked child forgets the parent's.
    pid: u32,
    users: usize,
    /// Bumped at every use, so a scheduled close knows whether the client was used since.
    generation: u64,
    closed: bool,
}

pub struct Provisioner {
    options: ClientOptions,
    slot: Arc<ForkMutex<Slot>>,
    idle: Duration,
}

/// A provisioning call's use of the admin client; the last one out schedules the idle close.
struct Use {
    client: Option<Client>,
    slot: Arc<ForkMutex<Slot>>,
    idle: Duration,
}

impl Drop for Use {
    fn drop(&mut self) {
        runtime::drop_in_runtime(self.client.take());
        let generation = {
            let mut slot = self.slot.lock();
            slot.users = slot.users.saturating_sub(1);
            slot.generation += 1;
            if slot.users > 0 {
                return;
            }
            slot.generation
        };
        let Some(rt) = runtime::live() else {
            return;
        };
        let (slot, idle) = (Arc::clone(&self.slot), self.idle);
        rt.spawn(async move {
            tokio::time::sleep(idle).await;
            let (idle_client, room) = {
                let mut s = slot.lock();
                match s.generation == generation && s.users == 0 {
                    true => (s.client.take(), s.room.take()),
                    false => (None, None),
                }
            };
            if let Some(client) = idle_client {
                shut_down(client, room).await;
            }
        });
    }
}

impl Provisioner {
    /// `options` are the manager's (its connection string's credentials included).
    pub fn new(mut options: ClientOptions, idle: Duration) -> Self {
        options.max_pool_size = Some(ADMIN_POOL_SIZE);
        options.min_pool_size = Some(0);
        Provisioner {
            options,
            slot: Arc::new(ForkMutex::new(Slot {
                client: None,
                room: None,
                pid: std::process::id(),
                users: 0,
                generation: 0,
                closed: false,
            })),
            idle,
        }
    }

    /// Opens the admin client: the one place provisioning opens a driver client (at most
    /// `ADMIN_POOL_SIZE` pooled connections plus its monitor), for a connection budget to count.
    fn open_client(&self) -> Client {
        let rt = runtime::get();
        let _guard = rt.enter();
        Client::with_options(self.options.clone()).expect("options were validated at construction")
    }

    /// Whether the admin client is open (for stats).
    pub fn is_open(&self) -> bool {
        let slot = self.slot.lock();
        slot.client.is_some() && slot.pid == std::process::id()
    }

    /// Whether a provisioning call must first get the admin client's room in the budget: the client is
    /// not open, and no room is held for it.
    pub fn needs_room(&self) -> bool {
        let slot = self.slot.lock();
        (slot.client.is_none() || slot.pid != std::process::id()) && slot.room.is_none()
    }

    /// A use of the admin client, opening it if it is not open. `room`: its place in the budget, if the
    /// caller got one (one not needed goes back at once). None if the client would have to open without
    /// room (its idle close took the room after the caller looked): the caller gets room and asks again.
    fn checkout(&self, room: Option<Reservation>) -> Result<Option<Use>, CoreError> {
        let mut slot = self.slot.lock();
        if slot.closed {
            return Err(CoreError::Closed);
        }
        let pid = std::process::id();
        if slot.pid != pid {
            // Inherited from the parent across a fork: its sockets are the parent's; never close them,
            // and its room is in the parent's budget.
            std::mem::forget(slot.client.take());
            std::mem::forget(slot.room.take());
            slot.pid = pid;
            slot.users = 0;
        }
        if slot.room.is_none() {
            slot.room = room;
        }
        if slot.client.is_none() {
            if slot.room.is_none() {
                return Ok(None);
            }
            slot.client = Some(self.open_client());
        }
        let client = slot.client.clone();
        slot.users += 1;
        slot.generation += 1;
        Ok(Some(Use { client, slot: Arc::clone(&self.slot), idle: self.idle }))
    }

    /// Creates the user in its source database with `roles` on `db`, or, if it exists, sets its
    /// password and roles.
    pub async fn provision(
        &self,
        db: &str,
        user: &TenantUser<'_>,
        room: Option<Reservation>,
    ) -> Result<Option<Provisioned>, CoreError> {
        let Some(admin) = self.checkout(room)? else {
            return Ok(None);
        };
        let client = admin.client.as_ref().expect("a use holds its client until dropped");
        let source = client.database(user.source.unwrap_or(db));
        match source.run_command(user_command("createUser", user, db)).await {
            Ok(_) => Ok(Some(Provisioned::Created)),
            Err(e) if server_code(&e) == Some(USER_EXISTS) => {
                source.run_command(user_command("updateUser", user, db)).await.map_err(admin_error)?;
                Ok(Some(Provisioned::Updated))
            }
            Err(e) => Err(admin_error(e)),
        }
    }

    /// Drops the user; false if there was none. None: as `provision`.
    pub async fn deprovision(
        &self,
        source: &str,
        username: &str,
        room: Option<Reservation>,
    ) -> Result<Option<bool>, CoreError> {
        let Some(admin) = self.checkout(room)? else {
            return Ok(None);
        };
        let client = admin.client.as_ref().expect("a use holds its client until dropped");
        let command = doc! { "dropUser": username, "writeConcern": { "w": "majority" } };
        match client.database(source).run_command(command).await {
            Ok(_) => Ok(Some(true)),
            Err(e) if server_code(&e) == Some(USER_NOT_FOUND) => Ok(Some(false)),
            Err(e) => Err(admin_error(e)),
        }
    }

    /// Shuts the admin client down (in the background) and refuses further use.
    pub fn close(&self) {
        let (client, room) = {
            let mut slot = self.slot.lock();
            slot.closed = true;
            match slot.pid == std::process::id() {
                true => (slot.client.take(), slot.room.take()),
                false => {
                    std::mem::forget(slot.client.take());
                    std::mem::forget(slot.room.take());
                    (None, None)
                }
            }
        };
        match (client, runtime::live()) {
            (Some(client), Some(rt)) => drop(rt.spawn(shut_down(client, room))),
            (client, _) => std::mem::forget((client, room)),
        }
    }

    /// The slot's lock, for `fork()` to hold (see `manager::prepare_fork`).
    pub fn lock_for_fork(&self) -> impl Sized + '_ {
        self.slot.lock()
    }
}

/// Shuts the admin client down, then gives its room in the budget back.
async fn shut_down(client: Client, room: Option<Reservation>) {
    if let Some(room) = &room {
        room.closing();
    }
    client.shutdown().await;
    drop(room);
}

impl Manager {
    /// The admin client's room in the connection budget, if it needs one: as a tenant's pool gets it
    /// (at once if it fits, else FIFO while idle pools close, for at most the wait timeout).
    async fn admin_room(&self) -> Result<Option<Reservation>, CoreError> {
        match self.provisioner.needs_room() {
            true => Ok(Some(self.reserve_room("(provisioning)", ADMIN_POOL_SIZE).await?)),
            false => Ok(None),
        }
    }

    /// Whether the provisioning client is open (it closes when idle).
    pub fn admin_client_open(&self) -> bool {
        self.provisioner.is_open()
    }

    /// Creates or updates the tenant's MongoDB user (see `Provisioner::provision`). An update closes the
    /// tenant's live pool, so that its next operation authenticates afresh (a new password) rather than
    /// reusing connections authenticated with the old one.
    pub async fn provision(&self, tenant: &str, user: &TenantUser<'_>) -> Result<Provisioned, CoreError> {
        let db = self.db_name(tenant)?;
        check_roles(user.roles).map_err(CoreError::Configuration)?;
        if let Some(source) = user.source {
            super::naming::check_db_name(source).map_err(CoreError::InvalidName)?;
        }
        if self.is_closed() {
            return Err(CoreError::Closed);
        }
        // Twice at most: the idle close may take the client and its room between the look and the use.
        let mut outcome = self.provisioner.provision(&db, user, self.admin_room().await?).await?;
        if outcome.is_none() {
            outcome = self.provisioner.provision(&db, user, self.admin_room().await?).await?;
        }
        let outcome = outcome.ok_or_else(|| CoreError::Misuse("provisioning found no room".into()))?;
        if outcome == Provisioned::Updated {
            self.close_tenant(tenant)?;
        }
        Ok(outcome)
    }

    /// Drops the tenant's MongoDB user and closes its live pool; false if there was no such user. The
    /// tenant's data stays.
    pub async fn deprovision(
        &self,
        tenant: &str,
        username: &str,
        source: Option<&str>,
    ) -> Result<bool, CoreError> {
        let db = self.db_name(tenant)?;
        let source = source.unwrap_or(&db);
        super::naming::check_db_name(source).map_err(CoreError::InvalidName)?;
        if self.is_closed() {
            return Err(CoreError::Closed);
        }
        let mut existed = self.provisioner.deprovision(source, username, self.admin_room().await?).await?;
        if existed.is_none() {
            existed = self.provisioner.deprovision(source, username, self.admin_room().await?).await?;
        }
        let existed = existed.ok_or_else(|| CoreError::Misuse("provisioning found no room".into()))?;
        self.close_tenant(tenant)?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_database_roles_on_the_tenants_own_database() {
        assert!(check_roles(&roles(&["readWrite"])).is_ok());
        assert!(check_roles(&roles(&["readWrite", "dbAdmin"])).is_ok());
        for bad in [&["root"][..], &["dbOwner"], &["userAdmin"], &["readWriteAnyDatabase"], &[]] {
            let e = check_roles(&roles(bad)).unwrap_err();
            assert!(e.contains("readWrite"), "{e}");
        }
        let r = roles(&["readWrite", "dbAdmin"]);
        let user = TenantUser { username: "a", password: "pw", roles: &r, source: None };
        let cmd = user_command("createUser", &user, "user_a_db");
        assert_eq!(cmd.get_str("createUser").unwrap(), "a");
        assert_eq!(
            cmd.get_array("roles").unwrap(),
            &vec![
                Bson::Document(doc! { "role": "readWrite", "db": "user_a_db" }),
                Bson::Document(doc! { "role": "dbAdmin", "db": "user_a_db" }),
            ]
        );
    }
}
