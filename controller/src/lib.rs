//! shoal-controller: turns services into task placements.
//!
//! - [`reconcile`]: the pure decision `(service, tasks, nodes, now) → Plan`.
//! - [`placement`]: filters that explain themselves (which nodes may take, or keep, a
//!   service's tasks), spread/binpack ranking.
//! - [`runner`]: campaigns for leadership, watches the store, queues services, reconciles
//!   and commits plans in fenced transactions.
//!
//! Running one in-process:
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn shoal_store::Store>) {
//! use shoal_controller::{Controller, ControllerConfig};
//! let controller = Controller::new(store, shoal_core::Keys::default(), ControllerConfig::default());
//! let (tx, rx) = tokio::sync::oneshot::channel::<()>();
//! let handle = tokio::spawn(controller.run(async move { let _ = rx.await; }));
//! // ... later:
//! let _ = tx.send(());
//! let _ = handle.await;
//! # }
//! ```

pub mod metrics;
pub mod placement;
pub mod reconcile;
pub mod runner;

pub use metrics::Metrics;
pub use runner::{Controller, ControllerConfig, ControllerError};

#[cfg(test)]
mod testutil;
