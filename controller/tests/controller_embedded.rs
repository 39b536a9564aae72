//! The controller's end-to-end scenarios (tests/cases) against the embedded store.

mod cases;
mod common;

use common::Env;

/// A cluster on a fresh embedded store (nothing else to keep).
async fn embedded_env() -> ((), Env) {
    ((), Env::embedded().await)
}

cases::every_scenario!(embedded_env);
