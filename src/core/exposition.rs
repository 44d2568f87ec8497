//! Prometheus text exposition of the registry. Per-tenant series are bounded: every tier or group
//! always gets its aggregate, and only the `top` busiest tenants get series of their own, so ten
//! thousand tenants never make ten thousand series.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::metrics::CountersSnapshot;
use super::registry::EntryInfo;
use super::room::RoomSnapshot;

#[derive(Default)]
struct Aggregate {
    pools: u64,
    in_use: u64,
    in_flight: u64,
    waiting: u64,
    longest_wait: f64,
    operations: u64,
    errors: u64,
    capacity: u64,
}

/// A per-tier series: name, help text, and how to read it off an aggregate.
type Series = (&'static str, &'static str, fn(&Aggregate) -> f64);

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub fn render(strategy: &str, counters: &CountersSnapshot, entries: &[EntryInfo], top: usize) -> String {
    let mut out = String::new();
    header(&mut out, "tenantpool_info", "gauge", "Static information about the manager.");
    let _ = writeln!(out, "tenantpool_info{{strategy=\"{strategy}\"}} 1");

    let totals: [(&str, &str, u64); 4] = [
        ("tenantpool_pools_created_total", "Tenant pools created.", counters.created),
        ("tenantpool_operations_total", "Operations started.", counters.operations),
        ("tenantpool_operation_errors_total", "Operations that failed.", counters.operation_errors),
        (
            "tenantpool_wait_timeouts_total",
            "Operations refused after waiting for their tenant's quota.",
            counters.wait_timeouts,
        ),
    ];
    for (name, help, v) in totals {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    header(
        &mut out,
        "tenantpool_wait_seconds_total",
        "counter",
        "Time operations spent waiting for a quota slot.",
    );
    let _ = writeln!(out, "tenantpool_wait_seconds_total {:.6}", counters.wait_micros as f64 / 1e6);
    header(&mut out, "tenantpool_pools_closed_total", "counter", "Tenant pools retired, by cause.");
    for (cause, v) in [
        ("idle", counters.closed_idle),
        ("lru", counters.closed_lru),
        ("manual", counters.closed_manual),
        ("error", counters.closed_error),
        ("shutdown", counters.closed_shutdown),
        ("budget", counters.closed_budget),
    ] {
        let _ = writeln!(out, "tenantpool_pools_closed_total{{cause=\"{cause}\"}} {v}");
    }

    let mut by_label: BTreeMap<&str, Aggregate> = BTreeMap::new();
    for e in entries {
        let a = by_label.entry(e.label.as_str()).or_default();
        a.pools += 1;
        a.in_use += u64::from(e.in_use);
        a.in_flight += u64::from(e.in_flight);
        a.waiting += u64::from(e.waiting);
        a.longest_wait = a.longest_wait.max(e.longest_wait.as_secs_f64());
        a.operations += e.operations;
        a.errors += e.errors;
        a.capacity += u64::from(e.pool_size);
    }
    let series: [Series; 8] = [
        ("tenantpool_pools", "Live tenant pools.", |a| a.pools as f64),
        (
            "tenantpool_pool_capacity",
            "Sum of the live pools' sizes (their connection or quota limit).",
            |a| a.capacity as f64,
        ),
        ("tenantpool_leases", "Operations in flight plus open cursors.", |a| a.in_use as f64),
        ("tenantpool_in_flight", "Operations holding a quota slot.", |a| a.in_flight as f64),
        ("tenantpool_waiting", "Operations waiting for a quota slot.", |a| a.waiting as f64),
        ("tenantpool_longest_wait_seconds", "Longest current wait for a quota slot.", |a| a.longest_wait),
        ("tenantpool_pool_operations", "Operations run by the live pools since they opened.", |a| {
            a.operations as f64
        }),
        ("tenantpool_pool_errors", "Failed operations of the live pools since they opened.", |a| {
            a.errors as f64
        }),
    ];
    for (name, help, get) in series {
        header(&mut out, name, "gauge", &format!("{help} By tier or group."));
        for (label, a) in &by_label {
            let _ = writeln!(out, "{name}{{tier=\"{}\"}} {}", escape(label), get(a));
        }
    }

    let mut busiest: Vec<&EntryInfo> = entries.iter().collect();
    busiest.sort_by(|a, b| b.operations.cmp(&a.operations).then_with(|| a.tenant.cmp(&b.tenant)));
    busiest.truncate(top);
    header(
        &mut out,
        "tenantpool_tenant_operations",
        "gauge",
        &format!("Operations of the {top} busiest tenants' live pools."),
    );
    for e in &busiest {
        let _ = writeln!(
            out,
            "tenantpool_tenant_operations{{tenant=\"{}\",tier=\"{}\"}} {}",
            escape(&e.tenant),
            escape(&e.label),
            e.operations
        );
    }
    header(&mut out, "tenantpool_tenant_in_flight", "gauge", "Operations in flight of the busiest tenants.");
    for e in &busiest {
        let _ = writeln!(
            out,
            "tenantpool_tenant_in_flight{{tenant=\"{}\",tier=\"{}\"}} {}",
            escape(&e.tenant),
            escape(&e.label),
            e.in_flight
        );
    }
    header(
        &mut out,
        "tenantpool_tenant_waiting",
        "gauge",
        "Operations waiting for a slot, of the busiest tenants.",
    );
    for e in &busiest {
        let _ = writeln!(
            out,
            "tenantpool_tenant_waiting{{tenant=\"{}\",tier=\"{}\"}} {}",
            escape(&e.tenant),
            escape(&e.label),
            e.waiting
        );
    }
    out
}

/// The connection budget's series: a fixed set, whatever the number of tenants.
pub fn render_budget(r: &RoomSnapshot) -> String {
    let mut out = String::new();
    let gauges: [(&str, &str, u64); 5] = [
        (
            "tenantpool_budget_limit",
            "The bound on server connections (max_server_connections).",
            r.budget.limit.into(),
        ),
        (
            "tenantpool_budget_reserved",
            "Server connections reserved by driver clients, including clients still shutting down.",
            r.budget.reserved.into(),
        ),
        (
            "tenantpool_budget_in_use",
            "Server connections reserved by pools with an operation, cursor or session.",
            r.in_use.into(),
        ),
        (
            "tenantpool_budget_releasing",
            "Server connections of clients shutting down, not yet given back.",
            r.budget.releasing.into(),
        ),
        ("tenantpool_budget_waiting", "Operations waiting for room to open a pool.", r.budget.waiting.into()),
    ];
    for (name, help, v) in gauges {
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let counters: [(&str, &str, u64); 3] = [
        ("tenantpool_budget_waits_total", "Operations that waited for room in the budget.", r.budget.waits),
        (
            "tenantpool_budget_wait_timeouts_total",
            "Operations refused after waiting for room in the budget.",
            r.budget.wait_timeouts,
        ),
        (
            "tenantpool_budget_pools_closed_total",
            "Idle pools closed to make room in the budget.",
            r.closed_for_budget,
        ),
    ];
    for (name, help, v) in counters {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(tenant: &str, label: &str, ops: u64) -> EntryInfo {
        EntryInfo {
            tenant: tenant.into(),
            label: label.into(),
            pool_size: 5,
            in_use: 1,
            in_flight: 1,
            slots: 5,
            waiting: 0,
            longest_wait: Duration::ZERO,
            waits: 0,
            wait_time: Duration::ZERO,
            wait_timeouts: 0,
            operations: ops,
            errors: 0,
            age: Duration::from_secs(1),
            idle: Duration::ZERO,
        }
    }

    #[test]
    fn series_stay_bounded_with_many_tenants() {
        let entries: Vec<_> = (0..10_000)
            .map(|i| entry(&format!("t{i}"), if i % 2 == 0 { "free" } else { "premium" }, i))
            .collect();
        let text = render("shared", &CountersSnapshot::default(), &entries, 10);
        let lines = text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(lines < 60, "{lines} series");
        assert!(text.contains("tenantpool_pools{tier=\"free\"} 5000"));
        assert!(text.contains("tenantpool_tenant_operations{tenant=\"t9999\",tier=\"premium\"} 9999"));
        assert!(!text.contains("tenant=\"t0\""));
    }

    #[test]
    fn labels_are_escaped() {
        let text = render("per_user", &CountersSnapshot::default(), &[entry("a", "we\"ird\n", 1)], 5);
        assert!(text.contains("tier=\"we\\\"ird\\n\""));
    }

    #[test]
    fn budget_series_are_a_fixed_set() {
        use crate::core::budget::BudgetSnapshot;
        use crate::core::room::RoomSnapshot;
        let r = RoomSnapshot {
            budget: BudgetSnapshot {
                limit: 80,
                reserved: 78,
                releasing: 2,
                waiting: 3,
                waits: 9,
                ..Default::default()
            },
            source: "server",
            configured: 256,
            server_capacity: Some(200),
            in_use: 60,
            closed_for_budget: 7,
            per_server_monitors: 1,
            servers: 1,
            shared_pool_size: 0,
        };
        let text = render_budget(&r);
        for line in [
            "tenantpool_budget_limit 80",
            "tenantpool_budget_reserved 78",
            "tenantpool_budget_in_use 60",
            "tenantpool_budget_releasing 2",
            "tenantpool_budget_waiting 3",
            "tenantpool_budget_waits_total 9",
            "tenantpool_budget_wait_timeouts_total 0",
            "tenantpool_budget_pools_closed_total 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 8);
    }
}
