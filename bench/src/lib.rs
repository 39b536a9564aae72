//! shoal-bench: measures Shoal on a hollow-node cluster against a real etcd, and reports every
//! figure both absolute and as a ratio to etcd's own throughput measured in the same run.
//!
//! The benchmark starts its own etcd (fresh data dir, loopback; the test kit's launcher), a release `shoal controller`
//! and hollow agents (`shoal agent --runtime sim --hollow-nodes N`) as child processes, and
//! observes the cluster only through etcd, as an operator would.

pub mod agent_memory;
pub mod calibrate;
pub mod cluster;
pub mod decide;
pub mod proxy;
pub mod report;
pub mod scenarios;
pub mod ui;
