//! shoal-chaos: a reproducible nemesis over a real multi-host Shoal cluster, with invariants
//! checked.
//!
//! [`run`] builds hosts in network namespaces of its own ([`netns`]), starts a 3-member etcd
//! cluster, two controllers, three `process`-runtime agents and an API in them ([`cluster`]),
//! drives a seeded workload through the API ([`workload`]) while a seeded nemesis kills,
//! pauses, partitions, degrades (latency through an NFQUEUE delay line, [`delay`]) and
//! replaces ([`nemesis`]), checks invariants from a store watch as it goes ([`checker`]),
//! explains every task move against the faults' timeline ([`timeline`]), checks the final
//! state at the end ([`verify`]), and returns the figures written to
//! `chaos/results/*.jsonl` ([`report`]).

pub mod checker;
pub mod cluster;
pub mod delay;
pub mod nemesis;
pub mod netns;
pub mod report;
pub mod runner;
pub mod timeline;
pub mod verify;
pub mod workload;

pub use report::RunResult;
pub use runner::{ChaosError, Config, run};
