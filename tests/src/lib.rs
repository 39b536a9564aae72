//! shoal-tests: Shoal's test kit — the store conformance suite, a real etcd launcher
//! (shared with the benchmarks), waiting for a condition, a store that intercepts calls to
//! inject faults, the Docker CLI as tests read it, finding a value in files, a
//! switchable health endpoint, sums from a `/metrics` body, and end-to-end test support.

pub mod api;
pub mod cluster;
pub mod conformance;
pub mod consul_fake;
pub mod docker;
pub mod etcd;
pub mod health;
pub mod intercept;
pub mod leaks;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod tasks;
pub mod wait;
