//! What the scenarios in `cases` use from the test kit: the in-process cluster and waiting.

pub use shoal_tests::cluster::{Agent, Env};
pub use shoal_tests::wait::wait_for;
