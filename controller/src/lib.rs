//! shoal-controller: turns services into task placements.
//!
//! - [`reconcile`]: the pure decision `(service, tasks, nodes, now) → Plan`.
//! - [`placement`]: filters that explain themselves, spread/binpack ranking.
//! - [`runner`]: watches the store, queues services, reconciles and commits plans as the
//!   fenced leader.

pub mod placement;
pub mod reconcile;

#[cfg(test)]
mod testutil;
