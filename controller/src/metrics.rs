//! Controller metrics, registered into a `prometheus_client` registry the API server can
//! serve: reconciles, errors, reconcile latency, tasks per state, leadership and how it was
//! won, relists.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The controller's metrics. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed (store errors, fenced writes).
    pub errors: Counter,
    /// Reconcile duration in seconds, commit included.
    pub latency: Histogram,
    /// Tasks per observed state.
    pub tasks: Family<Vec<(String, String)>, Gauge>,
    /// 1 while this controller leads.
    pub leader: Gauge,
    /// Elections won, by how the record of the leader before went (`vacated`: `absent` —
    /// there was none or it was deleted; `lease_run_out` — its lease was proven run out and
    /// revoked by this controller).
    pub elections: Family<Vec<(String, String)>, Counter>,
    /// Full lists of the store loaded into the cache (the first one, then one after each
    /// watch that fell behind compaction or broke): taking over as leader adds none.
    pub relists: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Counter::default(),
            errors: Counter::default(),
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            tasks: Family::default(),
            leader: Gauge::default(),
            elections: Family::default(),
            relists: Counter::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under `shoal_controller_*`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("shoal_controller");
        sub.register("reconciles", "Reconciles run", self.reconciles.clone());
        sub.register(
            "reconcile_errors",
            "Reconciles that failed",
            self.errors.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Reconcile duration, commit included",
            self.latency.clone(),
        );
        sub.register("tasks", "Tasks per observed state", self.tasks.clone());
        sub.register(
            "leader",
            "1 while this controller is the leader",
            self.leader.clone(),
        );
        sub.register(
            "elections_won",
            "Elections won, by how the record of the leader before went",
            self.elections.clone(),
        );
        sub.register(
            "relists",
            "Full lists of the store loaded into the cache",
            self.relists.clone(),
        );
    }

    /// Sets the tasks-per-state gauges.
    pub fn set_tasks(&self, by_state: &std::collections::BTreeMap<&'static str, u64>) {
        self.tasks.clear();
        for (state, n) in by_state {
            self.tasks
                .get_or_create(&vec![("state".to_string(), state.to_string())])
                .set(*n as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_prometheus_text() {
        let m = Metrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.reconciles.inc();
        m.elections
            .get_or_create(&vec![("vacated".into(), "lease_run_out".into())])
            .inc();
        m.set_tasks(&[("running", 3u64)].into_iter().collect());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("shoal_controller_reconciles_total 1"), "{out}");
        assert!(
            out.contains("shoal_controller_tasks{state=\"running\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("shoal_controller_elections_won_total{vacated=\"lease_run_out\"} 1"),
            "{out}"
        );
    }
}
