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

on_embedded!(
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
    task_statuses_are_left_to_their_agent_which_deletes_them_when_it_returns,
    a_node_down_past_node_gone_after_loses_its_tasks_statuses_and_settings,
    scaling_by_a_hundred_replicas_at_once_commits_in_batches,
);
