//! Per-tenant credentials (the per_user strategy): the MongoDB user a tenant's own driver client
//! authenticates as, looked up once per pool, so that the server, not only tenantpool, keeps a tenant
//! inside its own database. Nothing here ever prints a password.

use std::fmt;

use mongodb::error::{Error, ErrorKind};
use mongodb::options::{AuthMechanism, Credential};

use super::naming::{check_db_name, Template};
use super::policy::Strategy;

/// The mechanisms a tenant's credential may name (None: negotiated with the server). Both take a
/// username and a password, which is all a tenant credential carries.
pub const MECHANISMS: [&str; 2] = ["SCRAM-SHA-256", "SCRAM-SHA-1"];

/// A tenant's MongoDB user, as the application's credentials callback gave it.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantCredential {
    pub username: String,
    pub password: String,
    /// The database the user is defined in; None: the tenant's own database, where
    /// `provision_tenant` creates it.
    pub source: Option<String>,
    pub mechanism: Option<String>,
}

impl fmt::Debug for TenantCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCredential")
            .field("username", &self.username)
            .field("password", &"***")
            .field("source", &self.source)
            .field("mechanism", &self.mechanism)
            .finish()
    }
}

/// Looks a tenant's credential up when its pool is created (once per pool, like the tier `Sizer`).
pub type CredentialSource = Box<dyn Fn(&str) -> Result<TenantCredential, String> + Send + Sync>;

/// Who a tenant's client authenticates as, for messages: never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub source: String,
}

impl TenantCredential {
    /// The driver's credential for the tenant's client; `own_db` (the tenant's database) is the source
    /// when the credential names none. Errors name the tenant and the field, never the password.
    pub fn to_driver(&self, tenant: &str, own_db: &str) -> Result<(Credential, Identity), String> {
        let what = |m: &str| format!("the credentials of tenant {tenant:?}: {m}");
        if self.username.is_empty() {
            return Err(what("the username is empty"));
        }
        if self.password.is_empty() {
            return Err(what("the password is empty"));
        }
        if self.username.contains('\0') || self.password.contains('\0') {
            return Err(what("the username or password contains a NUL character"));
        }
        let source = self.source.clone().unwrap_or_else(|| own_db.to_owned());
        check_db_name(&source).map_err(|e| what(&format!("source: {e}")))?;
        let mechanism = match self.mechanism.as_deref() {
            None => None,
            Some(m @ "SCRAM-SHA-256") | Some(m @ "SCRAM-SHA-1") => {
                Some(m.parse::<AuthMechanism>().map_err(|e| what(&e.to_string()))?)
            }
            Some(other) => {
                return Err(what(&format!(
                    "mechanism {other:?} is not supported for tenant credentials; use one of {MECHANISMS:?} \
                     or None to negotiate"
                )))
            }
        };
        let credential = Credential::builder()
            .username(self.username.clone())
            .password(self.password.clone())
            .source(source.clone())
            .mechanism(mechanism)
            .build();
        Ok((credential, Identity { username: self.username.clone(), source }))
    }
}

/// Per-tenant credentials need a client per tenant: refused, with what to do instead, elsewhere.
pub fn check_strategy(strategy: Strategy) -> Result<(), String> {
    if strategy == Strategy::PerUser {
        return Ok(());
    }
    let name = strategy.name();
    Err(format!(
        "credentials= needs strategy='per_user': with strategy={name:?} one connection serves many tenants, \
         so it cannot authenticate as each tenant's own user. Use strategy='per_user' (bounded with \
         max_connections) for server-enforced isolation, or keep {name:?} with tenantpool's client-side \
         isolation and the connection string's credentials"
    ))
}

/// The tenant's own credential, looked up as its pool is created; None without `credentials`.
pub fn tenant_credential(
    lookup: Option<&CredentialSource>,
    template: &Template,
    tenant: &str,
) -> Result<Option<(Credential, Identity)>, String> {
    let Some(lookup) = lookup else {
        return Ok(None);
    };
    let db = template.db_name(tenant)?;
    lookup(tenant)?.to_driver(tenant, &db).map(Some)
}

/// Whether the driver error is a failed authentication (the handshake's, or the server's code 18).
pub fn is_authentication_failure(e: &Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Authentication { .. } => true,
        ErrorKind::Command(c) => c.code == 18,
        _ => false,
    }
}

/// The message of a tenant's failed authentication: the tenant and the user, never the password.
pub fn authentication_failed(tenant: &str, who: Option<&Identity>, driver: &Error) -> String {
    let reason = match driver.kind.as_ref() {
        ErrorKind::Authentication { message, .. } => message.clone(),
        ErrorKind::Command(c) => c.message.clone(),
        _ => driver.to_string(),
    };
    let reason = reason.trim_end_matches('.');
    match who {
        Some(id) => format!(
            "tenant {tenant:?} could not authenticate as MongoDB user {:?} (defined in database {:?}): \
             {reason}. Check what the credentials callback returns for this tenant, and that the user \
             exists with that password (provision_tenant creates or updates it)",
            id.username, id.source
        ),
        None => format!(
            "tenant {tenant:?} could not authenticate with the connection string's credentials: {reason}"
        ),
    }
}

/// Replaces every occurrence of `secret` in `text` (for messages built from driver or server text).
pub fn scrub_secret(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "***")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(mechanism: Option<&str>, source: Option<&str>) -> TenantCredential {
        TenantCredential {
            username: "alice".into(),
            password: "s3cret-pw".into(),
            source: source.map(str::to_owned),
            mechanism: mechanism.map(str::to_owned),
        }
    }

    #[test]
    fn only_per_user_takes_credentials() {
        assert!(check_strategy(Strategy::PerUser).is_ok());
        for s in [Strategy::Shared, Strategy::Grouped(4)] {
            let e = check_strategy(s).unwrap_err();
            assert!(e.contains("per_user") && e.contains(s.name()), "{e}");
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let text = format!("{:?}", cred(None, None));
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(text.contains("alice"));
    }

    #[test]
    fn the_tenants_own_database_is_the_default_source() {
        let (c, who) = cred(None, None).to_driver("a", "user_a_db").unwrap();
        assert_eq!(c.source.as_deref(), Some("user_a_db"));
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.mechanism, None);
        assert_eq!(who, Identity { username: "alice".into(), source: "user_a_db".into() });
        let (c, _) = cred(Some("SCRAM-SHA-1"), Some("admin")).to_driver("a", "user_a_db").unwrap();
        assert_eq!(c.source.as_deref(), Some("admin"));
        assert_eq!(c.mechanism, Some(AuthMechanism::ScramSha1));
    }

    #[test]
    fn bad_credentials_are_refused_without_the_password() {
        for (c, expected) in [
            (TenantCredential { password: String::new(), ..cred(None, None) }, "password is empty"),
            (TenantCredential { username: String::new(), ..cred(None, None) }, "username is empty"),
            (cred(Some("MONGODB-X509"), None), "not supported"),
            (cred(None, Some("bad.name")), "source"),
        ] {
            let e = c.to_driver("t1", "user_t1_db").unwrap_err();
            assert!(e.contains(expected) && e.contains("\"t1\""), "{e}");
            assert!(!e.contains("s3cret-pw"), "{e}");
        }
    }

    #[test]
    fn authentication_messages_name_the_tenant_and_user() {
        let reply = mongodb::bson::doc! { "code": 18, "codeName": "AuthenticationFailed", "errmsg": "Authentication failed." };
        let e: Error = ErrorKind::Command(mongodb::bson::from_document(reply).unwrap()).into();
        assert!(is_authentication_failure(&e));
        let who = Identity { username: "alice".into(), source: "user_a_db".into() };
        let m = authentication_failed("a", Some(&who), &e);
        assert!(m.contains("\"a\"") && m.contains("alice") && m.contains("Authentication failed"), "{m}");
        assert!(authentication_failed("a", None, &e).contains("connection string"));
        assert_eq!(scrub_secret("x s3cret y", "s3cret"), "x *** y");
    }
}
