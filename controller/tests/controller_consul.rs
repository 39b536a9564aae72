//! The controller's end-to-end scenarios (tests/cases) against the Consul store, on the Consul
//! fake with Consul's own limits (64 entries per transaction, 10 s minimum session TTL) and
//! its timers at a tenth of real time.

mod cases;
mod common;

use std::sync::Arc;

use common::Env;
use shoal_store::Store;
use shoal_store::consul::{ConsulClient, ConsulConfig, ConsulStore, ConsulStoreOptions};
use shoal_tests::consul_fake::{ConsulFake, FakeOptions};

async fn consul_env() -> (ConsulFake, Env) {
    let fake = ConsulFake::start_with(FakeOptions {
        time_scale: 0.1,
        ..FakeOptions::default()
    })
    .await;
    let client = ConsulClient::new(ConsulConfig::new(fake.http_url())).expect("client");
    let store: Arc<dyn Store> = Arc::new(ConsulStore::new(client, ConsulStoreOptions::default()));
    (fake, Env::over(store))
}

macro_rules! on_consul {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (_fake, env) = consul_env().await;
                cases::$name(env).await;
            }
        )*
    };
}

on_consul!(
    three_replicas_spread_one_per_node_then_scale,
    failed_tasks_restart_after_the_delay_unless_condition_is_none,
    lost_node_tasks_are_orphaned_replaced_and_stopped_when_it_returns,
    drain_moves_tasks_off_the_node,
    unschedulable_service_explains_why,
    invalid_manifest_sets_status_error_and_leaves_tasks_alone,
    deleted_service_loses_its_tasks_and_status,
    global_service_runs_on_every_eligible_node,
    template_change_replaces_tasks_and_keeps_the_previous_spec,
    services_sharing_a_host_port_never_share_a_node,
    swarm_constraint_walkthrough,
    scaling_by_a_hundred_replicas_at_once_commits_in_batches,
);
