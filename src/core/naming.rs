//! Tenant id -> database name. The mapping must be injective and its output a valid MongoDB database
//! name, because a collision would hand one tenant another tenant's data.

/// MongoDB database names must be shorter than 64 bytes.
pub const MAX_DB_NAME_BYTES: usize = 63;
const FORBIDDEN_IN_DB_NAME: &[char] = &['/', '\\', '.', ' ', '"', '$', '\0', '*', '<', '>', ':', '|', '?'];

/// A database name template with one `{user_id}` placeholder.
#[derive(Clone, Debug)]
pub struct Template {
    prefix: String,
    suffix: String,
}

impl Template {
    pub fn parse(template: &str) -> Result<Self, String> {
        let parts: Vec<&str> = template.split("{user_id}").collect();
        if parts.len() != 2 {
            return Err(format!(
                "db_name_template must contain '{{user_id}}' exactly once, got {template:?}"
            ));
        }
        let t = Template { prefix: parts[0].to_owned(), suffix: parts[1].to_owned() };
        // The fixed parts must be valid on their own, so a valid tenant id always yields a valid name.
        check_db_name(&format!("{}x{}", t.prefix, t.suffix))
            .map_err(|e| format!("db_name_template {template:?} is not usable: {e}"))?;
        Ok(t)
    }

    /// The database name of a tenant. A fixed prefix and suffix around the id make this injective;
    /// ids are validated, never rewritten, so no two ids can meet.
    pub fn db_name(&self, tenant: &str) -> Result<String, String> {
        self.check_tenant(tenant)?;
        Ok(format!("{}{}{}", self.prefix, tenant, self.suffix))
    }

    /// The tenant whose database this is, if the name is one the template makes.
    pub fn tenant_of<'a>(&self, db_name: &'a str) -> Option<&'a str> {
        let id = db_name.strip_prefix(self.prefix.as_str())?.strip_suffix(self.suffix.as_str())?;
        check_tenant_id(id).ok().map(|()| id)
    }

    /// Checks that the tenant id is valid and short enough for its database name, without building it.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), String> {
        check_tenant_id(tenant)?;
        let max = MAX_DB_NAME_BYTES - self.prefix.len() - self.suffix.len();
        if tenant.len() > max {
            return Err(format!(
                "tenant id {tenant:?} is too long: with the template its database name would be {} \
                 bytes, MongoDB allows {MAX_DB_NAME_BYTES}; use ids of at most {max} characters",
                tenant.len() + self.prefix.len() + self.suffix.len(),
            ));
        }
        // A tenant must never land in a system database (a template like "{user_id}" would allow it).
        let len = tenant.len() + self.prefix.len() + self.suffix.len();
        if (5..=6).contains(&len) {
            let name = format!("{}{}{}", self.prefix, tenant, self.suffix);
            if SYSTEM_DATABASES.iter().any(|s| s.eq_ignore_ascii_case(&name)) {
                return Err(format!(
                    "tenant id {tenant:?} would map to the system database {name:?}; choose another id or \
                     a db_name_template with a prefix"
                ));
            }
        }
        Ok(())
    }
}

const SYSTEM_DATABASES: [&str; 3] = ["admin", "local", "config"];

/// Tenant ids are restricted to ASCII letters, digits, `_` and `-`: everything else is either invalid
/// in a database name or has look-alikes (Unicode normalisation) that would let two ids name one tenant.
pub fn check_tenant_id(tenant: &str) -> Result<(), String> {
    if tenant.is_empty() {
        return Err("tenant id must not be empty".into());
    }
    if let Some(c) = tenant.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!(
            "tenant id {tenant:?} contains {c:?}; tenant ids may contain only ASCII letters, digits, \
             '_' and '-' (map other ids, e.g. emails, to such a key first)"
        ));
    }
    Ok(())
}

/// Checks an explicit database name the way the server would, so the error comes before any I/O.
pub fn check_db_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("database name must not be empty".into());
    }
    if name.len() > MAX_DB_NAME_BYTES {
        return Err(format!(
            "database name {name:?} is {} bytes; MongoDB allows {MAX_DB_NAME_BYTES}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN_IN_DB_NAME.contains(c)) {
        return Err(format!("database name {name:?} must not contain {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template() {
        let t = Template::parse("user_{user_id}_db").unwrap();
        assert_eq!(t.db_name("a").unwrap(), "user_a_db");
        assert_eq!(t.db_name("Zz-9_x").unwrap(), "user_Zz-9_x_db");
    }

    #[test]
    fn rejects_bad_ids() {
        let t = Template::parse("user_{user_id}_db").unwrap();
        for bad in
            ["", "a.b", "a/b", "a b", "a$b", "a\0b", "é", "a\u{301}", "../admin", "x".repeat(60).as_str()]
        {
            assert!(t.db_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(t.db_name(&"x".repeat(55)).is_ok());
        assert!(t.db_name(&"x".repeat(56)).is_err());
    }

    #[test]
    fn distinct_ids_give_distinct_names() {
        let t = Template::parse("{user_id}").unwrap();
        let ids = ["a", "A", "a_", "_a", "a-", "ab"];
        let names: std::collections::HashSet<_> = ids.iter().map(|i| t.db_name(i).unwrap()).collect();
        assert_eq!(names.len(), ids.len());
    }

    #[test]
    fn never_maps_to_a_system_database() {
        let bare = Template::parse("{user_id}").unwrap();
        for id in ["admin", "ADMIN", "local", "config"] {
            assert!(bare.db_name(id).is_err(), "{id}");
        }
        assert!(Template::parse("a{user_id}").unwrap().db_name("dmin").is_err());
        assert!(bare.db_name("admins").is_ok());
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(Template::parse("nouser").is_err());
        assert!(Template::parse("{user_id}{user_id}").is_err());
        assert!(Template::parse("a.{user_id}").is_err());
    }

    #[test]
    fn db_names() {
        assert!(check_db_name("ok_db").is_ok());
        assert!(check_db_name("bad.db").is_err());
        assert!(check_db_name(&"d".repeat(64)).is_err());
    }
}
