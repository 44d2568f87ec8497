//! Pure policy: how tenants map to clients (strategy and stable grouping) and how big their share is.

/// How tenants are mapped onto driver clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// One client and pool per tenant: the strongest isolation, two monitoring sockets per tenant.
    PerUser,
    /// `n` shared clients; a tenant always lands in the same one. Quotas keep tenants apart.
    Grouped(u32),
    /// One client for every tenant; quotas keep tenants apart.
    Shared,
}

impl Strategy {
    pub fn parse(name: &str, groups: u32) -> Result<Strategy, String> {
        match name {
            "per_user" => Ok(Strategy::PerUser),
            "grouped" if groups >= 1 => Ok(Strategy::Grouped(groups)),
            "grouped" => Err("groups must be at least 1 for strategy='grouped'".into()),
            "shared" => Ok(Strategy::Shared),
            other => Err(format!("strategy must be 'per_user', 'grouped' or 'shared', got {other:?}")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::PerUser => "per_user",
            Strategy::Grouped(_) => "grouped",
            Strategy::Shared => "shared",
        }
    }

    /// Which shared client serves the tenant; None when the tenant has its own.
    pub fn client_slot(self, tenant: &str) -> Option<usize> {
        match self {
            Strategy::PerUser => None,
            Strategy::Grouped(n) => Some(group_of(tenant, n) as usize),
            Strategy::Shared => Some(0),
        }
    }

    /// How many shared clients the strategy uses.
    pub fn shared_clients(self) -> usize {
        match self {
            Strategy::PerUser => 0,
            Strategy::Grouped(n) => n as usize,
            Strategy::Shared => 1,
        }
    }
}

/// The tenant's group: FNV-1a of the id, so it is the same in every process, on every machine and after
/// every restart (Python's `hash()` of a str is randomised per process).
pub fn group_of(tenant: &str, groups: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(groups.max(1))) as u32
}

/// The design document's pool sizing: `(user_pool_size, max_users)` for a number of concurrent users
/// that each make `requests_per_user` concurrent requests, within the server's connection limit.
pub fn calculate_pool_size(
    concurrent_users: u64,
    requests_per_user: u64,
    available_connections: u64,
) -> (u64, u64) {
    let ideal = requests_per_user.max(1);
    if available_connections / ideal >= concurrent_users {
        (ideal, concurrent_users)
    } else {
        (available_connections / concurrent_users.max(1), concurrent_users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_stable_and_spread() {
        // Fixed values: a change here would move every tenant to another group.
        assert_eq!(group_of("user_a", 10), group_of("user_a", 10));
        assert_eq!(group_of("", 7), (0xcbf2_9ce4_8422_2325_u64 % 7) as u32);
        let mut counts = [0u32; 10];
        for i in 0..10_000 {
            counts[group_of(&format!("tenant{i}"), 10) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn strategies() {
        assert_eq!(Strategy::parse("grouped", 4).unwrap().shared_clients(), 4);
        assert!(Strategy::parse("grouped", 0).is_err());
        assert!(Strategy::parse("nope", 1).is_err());
        assert_eq!(Strategy::PerUser.client_slot("x"), None);
        assert_eq!(Strategy::Shared.client_slot("x"), Some(0));
        assert!(Strategy::Grouped(3).client_slot("x").unwrap() < 3);
    }

    #[test]
    fn pool_sizing_matches_the_design_document() {
        assert_eq!(calculate_pool_size(1000, 5, 10_000), (5, 1000));
        assert_eq!(calculate_pool_size(5000, 5, 10_000), (2, 5000));
        assert_eq!(calculate_pool_size(10, 10, 50), (5, 10));
    }
}
