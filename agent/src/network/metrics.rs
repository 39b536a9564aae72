//! Networking metrics (`shoal_agent_network_*`): proxied connections and bytes per service,
//! errors per reason.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use shoal_core::manifest::ServiceRef;

type Labels = Vec<(String, String)>;

/// The counters. Cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct NetMetrics {
    /// Connections proxied to a task, per service.
    pub connections: Family<Labels, Counter>,
    /// Bytes proxied (both directions), per service.
    pub bytes: Family<Labels, Counter>,
    /// Errors per reason (`no_backend`, `connect_refused`, `connect_timeout`, `dns_upstream`, ...).
    pub errors: Family<Labels, Counter>,
}

impl NetMetrics {
    /// Registers every metric under `shoal_agent_network_*`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("shoal_agent_network");
        sub.register(
            "proxied_connections",
            "Connections proxied to a task, per service",
            self.connections.clone(),
        );
        sub.register(
            "proxied_bytes",
            "Bytes proxied in both directions, per service",
            self.bytes.clone(),
        );
        sub.register(
            "errors",
            "Networking errors per reason",
            self.errors.clone(),
        );
    }

    /// Counts one error.
    pub fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// Counts one proxied connection of `service` and its bytes.
    pub fn proxied(&self, service: &ServiceRef, bytes: u64) {
        let l = vec![("service".to_string(), service.to_string())];
        self.connections.get_or_create(&l).inc();
        self.bytes.get_or_create(&l).inc_by(bytes);
    }
}
