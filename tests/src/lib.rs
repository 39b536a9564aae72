//! shoal-tests: Shoal's test harness — the store conformance suite, a real etcd fixture,
//! and (from other modules) end-to-end test support.

pub mod conformance;
pub mod consul_fake;
pub mod etcd;
pub mod pki;
