//! The controller's end-to-end scenarios (tests/cases) against the embedded store.

mod cases;
mod common;

use common::Env;

macro_rules! on_embedded {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                cases::$name(Env::embedded().await).await;
            }
        )*
    };
}

cases::every_scenario!(on_embedded);
