//! shoal-agent: the per-node agent. It registers its node, watches the tasks assigned to it,
//! runs them through a runtime (docker, process, or sim for hollow nodes) and reports their
//! state.

pub mod runtime;
