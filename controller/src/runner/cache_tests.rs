//! Tests of the controller cache.
use super::*;
use crate::reconcile::Plan;
use crate::testutil::{node, service};
use shoal_core::model::{DesiredState, Task, TaskState, TaskTemplate};

fn task(svc: &Service, node: &str, id: &str) -> Task {
    let template = TaskTemplate::from_spec(&svc.spec);
    Task::replica(id, svc.id(), 1, node, template, Timestamp(0))
}

#[test]
fn older_events_never_undo_newer_writes() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    let svc = service("web", "");
    let t = task(&svc, "n1", "web.1.a");
    let k = keys.task("n1", "web.1.a");
    c.apply(&k, Some(&model::encode(&t)), 5);
    c.apply(&k, None, 7);
    // A late watch event for revision 5 arrives after the delete at 7.
    assert!(c.apply(&k, Some(&model::encode(&t)), 5).services.is_empty());
    assert!(
        c.input(&svc.id(), Timestamp(0), &NodeGrace::none(), 0)
            .tasks
            .is_empty()
    );
    c.prune(7);
    assert!(
        c.revs.is_empty(),
        "tombstones are forgotten once the watch passed them"
    );
}

#[test]
fn task_changes_touch_their_service_and_node_changes_touch_the_node_tasks() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    let svc = service("web", "  resources: {reservations: {memory: 1Gi}}\n");
    let t = task(&svc, "n1", "web.1.a");
    let touched = c.apply(&keys.task("n1", "web.1.a"), Some(&model::encode(&t)), 2);
    assert!(touched.services.contains(&svc.id()));
    let n1 = node("n1", &[]);
    let touched = c.apply(&keys.node("n1"), Some(&model::encode(&n1.info)), 3);
    assert!(touched.nodes_changed && touched.services.contains(&svc.id()));
    assert!(c.nodes()["n1"].ready);
    // Reservations are held until the task finishes.
    assert_eq!(c.usage["n1"].memory, 1 << 30);
    let running = TaskStatus::new(t.id.clone(), TaskState::Running, Timestamp(0));
    for rev in [4, 5] {
        let at = keys.task_status("n1", "web.1.a");
        c.apply(&at, Some(&model::encode(&running)), rev);
        assert_eq!(c.usage["n1"].memory, 1 << 30, "counted once while it runs");
    }
    let st = TaskStatus {
        exit_code: Some(1),
        ..TaskStatus::new(t.id.clone(), TaskState::Failed, Timestamp(0))
    };
    c.apply(
        &keys.task_status("n1", "web.1.a"),
        Some(&model::encode(&st)),
        6,
    );
    assert_eq!(c.usage["n1"].memory, 0);
    // A node whose lease expired is kept, not ready.
    c.apply(&keys.node("n1"), None, 7);
    assert!(!c.nodes()["n1"].ready);
}

#[test]
fn a_service_naming_a_missing_secret_is_invalid_until_it_exists() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    let svc = service(
        "web",
        "  secrets: [{source: db-password}]\n  configs: [{source: app}]\n",
    );
    let sref = svc.id();
    let text = serde_json::to_string(&svc).unwrap();
    c.apply(&keys.service(&sref), Some(text.as_bytes()), 3);
    match c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service {
        ServiceInput::Invalid { error, generation } => {
            assert_eq!(generation, 3);
            assert!(
                error.contains("secret \"db-password\" does not exist")
                    && error.contains("config \"app\" does not exist"),
                "{error}"
            );
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    let touched = c.apply(&keys.secret("default", "db-password"), Some(b"{}"), 4);
    assert!(
        touched.services.contains(&sref),
        "the secret's users are requeued"
    );
    c.apply(&keys.config("other", "app"), Some(b"{}"), 5);
    assert!(
        matches!(c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service, ServiceInput::Invalid { error, .. } if !error.contains("secret")),
        "a config in another namespace does not count"
    );
    c.apply(&keys.config("default", "app"), Some(b"{}"), 6);
    assert!(matches!(
        c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service,
        ServiceInput::Present { .. }
    ));
    let touched = c.apply(&keys.secret("default", "db-password"), None, 7);
    assert!(touched.services.contains(&sref));
    assert!(matches!(
        c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service,
        ServiceInput::Invalid { .. }
    ));
}

#[test]
fn invalid_manifests_are_kept_as_errors_with_their_location() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    let sref = ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
    };
    let text =
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  replicas: lots\n";
    c.apply(&keys.service(&sref), Some(text.as_bytes()), 9);
    match c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service {
        ServiceInput::Invalid { error, generation } => {
            assert_eq!(generation, 9);
            assert!(error.contains(":6:"), "{error}");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    let other = "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  image: x\n";
    c.apply(&keys.service(&sref), Some(other.as_bytes()), 10);
    assert!(matches!(
        c.input(&sref, Timestamp(0), &NodeGrace::none(), 0).service,
        ServiceInput::Invalid { .. }
    ));
}

#[test]
fn revisions_of_tasks_and_statuses_live_in_their_records_and_still_order_changes() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    let svc = service("web", "  resources: {reservations: {memory: 1Gi}}\n");
    let t = task(&svc, "n1", "web.1.a");
    let (a, sa) = (
        keys.task("n1", "web.1.a"),
        keys.task_status("n1", "web.1.a"),
    );
    let status = |state| model::encode(&TaskStatus::new(t.id.clone(), state, Timestamp(0)));
    c.apply(&a, Some(&model::encode(&t)), 5);
    c.apply(&sa, Some(&status(TaskState::Running)), 6);
    assert!(
        c.revs.is_empty(),
        "no copy of a held task's keys: {:?}",
        c.revs
    );
    assert_eq!((c.revision(&a), c.revision(&sa)), (5, 6));
    // Late events are still ignored.
    c.apply(&sa, Some(&status(TaskState::Failed)), 4);
    assert_eq!(c.tasks_by_state().get("running"), Some(&1));
    // A staged stop keeps the store's revision; the watch moves it on, a failed commit
    // shows the store's value at its revision.
    let mut stop = t.clone();
    stop.desired_state = DesiredState::Shutdown;
    let ops = vec![TxnOp::Delete { key: a.clone() }];
    c.stage(&ops, &Written::default());
    assert_eq!(
        c.revision(&a),
        5,
        "a staged delete keeps the truth's revision"
    );
    c.apply(&a, Some(&model::encode(&stop)), 8);
    assert_eq!(c.revision(&a), 8);
    c.unstage(&ops);
    assert_eq!(c.revision(&a), 8);
    assert!(c.revs.is_empty(), "{:?}", c.revs);
    c.apply(&a, Some(&model::encode(&t)), 7);
    let shown = c.input(&svc.id(), Timestamp(0), &NodeGrace::none(), 0);
    assert_eq!(shown.tasks[0].task.desired_state, DesiredState::Shutdown);
    // Deleted keys are remembered until the watch passes them, then forgotten.
    c.apply(&a, None, 9);
    c.apply(&sa, None, 10);
    assert_eq!((c.revision(&a), c.revision(&sa)), (9, 10));
    c.apply(&a, Some(&model::encode(&t)), 8);
    assert!(
        c.tasks.iter().next().is_none(),
        "a late put does not bring it back"
    );
    c.prune(10);
    assert!(c.revs.is_empty(), "{:?}", c.revs);
}

#[test]
fn staged_writes_count_once_and_a_failed_commit_shows_the_store_again() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    let svc = service("web", "  resources: {reservations: {memory: 1Gi}}\n");
    let a = keys.task("n1", "web.1.a");
    let b = keys.task("n1", "web.2.b");
    let put = |key: &str, t: &Task| TxnOp::Put {
        key: key.to_string(),
        value: model::encode(t),
        lease: None,
    };
    let created = [task(&svc, "n1", "web.1.a"), task(&svc, "n1", "web.2.b")];
    let ops = vec![put(&a, &created[0]), put(&b, &created[1])];
    let plan = Plan {
        creates: created.to_vec(),
        ..Plan::default()
    };
    let sref = svc.id();
    let written = Written::of(&sref, &plan);
    // Staged: counted at once, before any answer.
    c.stage(&ops, &written);
    assert_eq!(c.usage["n1"].memory, 2 << 30);
    // The first key commits; the watch brings it again: still counted once.
    c.committed(&ops[..1], 10, &written);
    c.apply(&a, Some(&model::encode(&task(&svc, "n1", "web.1.a"))), 10);
    assert_eq!(c.usage["n1"].memory, 2 << 30);
    // The rest fails: the second task goes, the committed one stays.
    c.unstage(&ops);
    assert_eq!(c.usage["n1"].memory, 1 << 30);
    assert_eq!(c.staged_len(), 0);
    let fresh = {
        let mut f = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
        f.apply(&a, Some(&model::encode(&task(&svc, "n1", "web.1.a"))), 10);
        f
    };
    assert_eq!(c.fingerprint(), fresh.fingerprint());
}

#[test]
fn a_change_seen_while_a_key_is_staged_is_what_a_failed_commit_goes_back_to() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    let svc = service("web", "  resources: {reservations: {memory: 1Gi}}\n");
    let a = keys.task("n1", "web.1.a");
    let t = task(&svc, "n1", "web.1.a");
    let ops = vec![TxnOp::Put {
        key: a.clone(),
        value: model::encode(&t),
        lease: None,
    }];
    c.stage(&ops, &Written::default());
    // Someone else's write of the key lands first (the staged one still shows), and a list
    // of the store comes meanwhile: the staged write stays shown over it.
    let mut other = t.clone();
    other.orphaned = true;
    c.apply(&a, Some(&model::encode(&other)), 7);
    assert_eq!(c.usage["n1"].memory, 1 << 30);
    c.relist(&[(a.clone(), model::encode(&other), 7)]);
    assert_eq!(c.usage["n1"].memory, 1 << 30);
    assert_eq!(c.staged_len(), 1);
    // The commit fails: the store's value (orphaned, holding nothing) shows.
    c.unstage(&ops);
    assert!(c.usage.get("n1").is_none_or(|u| u.memory == 0));
}

#[test]
fn tasks_of_one_template_share_it_until_the_last_goes() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    let svc = service("web", "");
    for (node, id) in [("n1", "web.1.a"), ("n2", "web.2.a")] {
        let t = task(&svc, node, id);
        c.apply(&keys.task(node, id), Some(&model::encode(&t)), 2);
    }
    assert_eq!(c.templates.len(), 1, "one template for both tasks");
    let input = c.input(&svc.id(), Timestamp(0), &NodeGrace::none(), 0);
    let mut ids: Vec<(String, String)> = input
        .tasks
        .iter()
        .map(|e| (e.task.node_id.clone(), e.task.id.clone()))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("n1".into(), "web.1.a".into()),
            ("n2".into(), "web.2.a".into())
        ]
    );
    assert_eq!(input.tasks[0].task, task(&svc, "n1", "web.1.a"));
    c.apply(&keys.task("n1", "web.1.a"), None, 3);
    assert_eq!(c.templates.len(), 1, "still used by the other task");
    c.apply(&keys.task("n2", "web.2.a"), None, 4);
    assert_eq!(c.templates.len(), 0, "forgotten with its last task");
}

#[test]
fn every_service_is_listed_newest_manifest_first_deleted_ones_before() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    for (name, rev) in [("b", 3), ("a", 9), ("c", 5), ("d", 5)] {
        let svc = service(name, "");
        let text = serde_json::to_string(&svc).unwrap();
        c.apply(&keys.service(&svc.id()), Some(text.as_bytes()), rev);
    }
    // A service whose manifest is gone still has a task to stop.
    let gone = service("zz", "");
    let t = task(&gone, "n1", "zz.1.a");
    c.apply(&keys.task("n1", "zz.1.a"), Some(&model::encode(&t)), 10);
    let order: Vec<String> = c.all_services().into_iter().map(|s| s.name).collect();
    assert_eq!(order, ["zz", "a", "c", "d", "b"]);
}

#[test]
fn presence_knows_every_node_named_by_a_task_or_a_status_once() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    let svc = service("web", "");
    for (n, id) in [("n1", "web.1.a"), ("n1", "web.2.a"), ("n2", "web.3.a")] {
        c.apply(
            &keys.task(n, id),
            Some(&model::encode(&task(&svc, n, id))),
            2,
        );
    }
    let st = TaskStatus::new("web.4.a", TaskState::Running, Timestamp(0));
    c.apply(
        &keys.task_status("n3", "web.4.a"),
        Some(&model::encode(&st)),
        3,
    );
    let known: Vec<String> = c.presence().known.into_iter().collect();
    assert_eq!(known, ["n1", "n2", "n3"]);
}

#[test]
fn tasks_by_state_counts_each_task_once_by_its_status() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
    let svc = service("web", "");
    let status = |id: &str, state| TaskStatus::new(id, state, Timestamp(0));
    for (n, id, state) in [
        ("n1", "web.1.a", Some(TaskState::Running)),
        ("n1", "web.2.a", None),
        ("n2", "web.3.a", Some(TaskState::Failed)),
        ("n3", "web.4.a", Some(TaskState::Running)),
    ] {
        c.apply(
            &keys.task(n, id),
            Some(&model::encode(&task(&svc, n, id))),
            2,
        );
        if let Some(state) = state {
            let st = model::encode(&status(id, state));
            c.apply(&keys.task_status(n, id), Some(&st), 3);
        }
    }
    // A status left without its task, before and between the tasks in key order.
    for (n, id) in [("n0", "web.9.a"), ("n1", "web.15.a")] {
        let st = model::encode(&status(id, TaskState::Complete));
        c.apply(&keys.task_status(n, id), Some(&st), 4);
    }
    let counts: Vec<(&str, u64)> = c.tasks_by_state().into_iter().collect();
    assert_eq!(counts, [("assigned", 1), ("failed", 1), ("running", 2)]);
}

#[test]
fn a_task_and_its_status_come_and_go_in_either_order() {
    let keys = Keys::default();
    let svc = service("web", "  resources: {reservations: {memory: 1Gi}}\n");
    let t = model::encode(&task(&svc, "n1", "web.1.a"));
    let running = model::encode(&TaskStatus::new(
        "web.1.a",
        TaskState::Running,
        Timestamp(0),
    ));
    let (tk, sk) = (
        keys.task("n1", "web.1.a"),
        keys.task_status("n1", "web.1.a"),
    );
    let empty = Cache::new(keys.clone(), 5).fingerprint();
    for status_first in [false, true] {
        let mut c = Cache::new(keys.clone(), 5);
        let (first, second) = if status_first {
            ((&sk, &running), (&tk, &t))
        } else {
            ((&tk, &t), (&sk, &running))
        };
        c.apply(first.0, Some(first.1), 2);
        c.apply(second.0, Some(second.1), 3);
        assert_eq!(
            c.usage["n1"].memory,
            1 << 30,
            "status first: {status_first}"
        );
        let input = c.input(&svc.id(), Timestamp(0), &NodeGrace::none(), 0);
        assert_eq!(input.tasks.len(), 1);
        assert_eq!(input.tasks[0].state(), TaskState::Running);
        assert_eq!(c.node_keys("n1"), [tk.clone(), sk.clone()]);
        // The assignment goes first (the controller's delete), then the agent's status.
        c.apply(&tk, None, 4);
        assert!(c.usage.get("n1").is_none_or(|u| u.memory == 0));
        assert_eq!(c.node_keys("n1"), std::slice::from_ref(&sk));
        assert_eq!(c.tasks_by_state().values().sum::<u64>(), 0);
        c.apply(&sk, None, 5);
        assert_eq!(c.fingerprint(), empty, "nothing is left of the task");
        assert!(c.presence().known.is_empty());
    }
}

#[test]
fn the_addresses_taken_follow_the_endpoints_records() {
    use shoal_core::endpoints::Endpoints;
    use std::net::Ipv4Addr;
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), 5);
    let record = |name: &str, last: u8| {
        let svc = service(name, "");
        let e = Endpoints {
            service: svc.id(),
            address: Ipv4Addr::new(127, 64, 0, last),
            ports: Vec::new(),
            tasks: Vec::new(),
        };
        (keys.endpoints(&svc.id()), model::encode(&e))
    };
    let web = service("web", "");
    let (k1, v1) = record("db", 7);
    c.apply(&k1, Some(&v1), 2);
    let (k2, v2) = record("cache", 9);
    c.apply(&k2, Some(&v2), 3);
    let input = c.input(&web.id(), Timestamp(0), &NodeGrace::none(), 0);
    let want = |v: &[u8]| v.iter().map(|l| Ipv4Addr::new(127, 64, 0, *l)).collect();
    assert_eq!(*input.taken_addresses, want(&[7, 9]));
    // A record rewritten with the same address (its tasks changed) keeps the set.
    c.apply(&k1, Some(&v1), 4);
    let again = c.input(&web.id(), Timestamp(0), &NodeGrace::none(), 0);
    assert!(Arc::ptr_eq(&input.taken_addresses, &again.taken_addresses));
    // One goes: its address is free again.
    c.apply(&k2, None, 5);
    let after = c.input(&web.id(), Timestamp(0), &NodeGrace::none(), 0);
    assert_eq!(*after.taken_addresses, want(&[7]));
}

#[test]
fn the_graces_of_nodes_gone_follow_their_records_and_are_shared_by_the_inputs() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), 5);
    let web = service("web", "");
    let grace = NodeGrace {
        term_until: Timestamp(0),
        after_record_gone: Duration::from_secs(30),
    };
    for (rev, id) in [(2, "n1"), (3, "n2")] {
        let info = node(id, &[]).info;
        c.apply(&keys.node(id), Some(&model::encode(&info)), rev);
        // A task on each: a node no key names is forgotten when its record goes.
        let t = task(&web, id, &format!("web.1.{id}"));
        c.apply(&keys.task(id, &t.id), Some(&model::encode(&t)), rev);
    }
    let before = Timestamp::now();
    c.apply(&keys.node("n1"), None, 4);
    let input = c.input(&web.id(), Timestamp(0), &grace, 0);
    let ends: Vec<&String> = input.node_lost_after.keys().collect();
    assert_eq!(ends, ["n1"]);
    assert!(input.node_lost_after["n1"] >= before.plus(grace.after_record_gone));
    // Nothing changed: the next input shares the same map.
    let again = c.input(&web.id(), Timestamp(0), &grace, 0);
    assert!(Arc::ptr_eq(&input.node_lost_after, &again.node_lost_after));
    // n1 comes back, then n2 goes.
    let info = node("n1", &[]).info;
    c.apply(&keys.node("n1"), Some(&model::encode(&info)), 5);
    let back = c.input(&web.id(), Timestamp(0), &grace, 0);
    assert!(back.node_lost_after.is_empty());
    c.apply(&keys.node("n2"), None, 6);
    let after = c.input(&web.id(), Timestamp(0), &grace, 0);
    let ends: Vec<&String> = after.node_lost_after.keys().collect();
    assert_eq!(ends, ["n2"]);
    // Another grace (a new term) gives other ends.
    let none = c.input(&web.id(), Timestamp(0), &NodeGrace::none(), 0);
    assert!(none.node_lost_after["n2"] < after.node_lost_after["n2"]);
}

#[test]
fn a_down_node_no_key_names_is_forgotten_as_a_new_controller_would_not_know_it() {
    let keys = Keys::default();
    let mut c = Cache::new(keys.clone(), 5);
    let web = service("web", "");
    for (rev, id) in [(2, "idle"), (3, "busy"), (4, "set")] {
        let info = node(id, &[("zone", "a")]).info;
        c.apply(&keys.node(id), Some(&model::encode(&info)), rev);
    }
    let t = task(&web, "busy", "web.1.x");
    c.apply(&keys.task("busy", &t.id), Some(&model::encode(&t)), 5);
    let cfg = NodeConfig::default();
    c.apply(&keys.node_config("set"), Some(&model::encode(&cfg)), 6);
    for (rev, id) in [(7, "idle"), (8, "busy"), (9, "set")] {
        c.apply(&keys.node(id), None, rev);
    }
    let known = |c: &mut Cache| c.nodes().keys().cloned().collect::<Vec<_>>();
    let lost = |c: &mut Cache| {
        let input = c.input(&web.id(), Timestamp(0), &NodeGrace::none(), 0);
        input.node_lost_after.keys().cloned().collect::<Vec<_>>()
    };
    // Down: the node with a task keeps its last record (labels), and it and the node with
    // settings their graces; the node nothing names is gone.
    assert_eq!(known(&mut c), ["busy", "set"]);
    let nodes = c.nodes();
    assert_eq!(
        shoal_core::constraint::NodeView::from(&nodes["busy"]).label("zone"),
        Some("a")
    );
    assert!(!c.nodes()["busy"].ready);
    assert_eq!(lost(&mut c), ["busy", "set"]);
    // Its last task goes, then the settings of the other.
    let touched = c.apply(&keys.task("busy", &t.id), None, 10);
    assert!(touched.nodes_changed, "a node forgotten changes the nodes");
    c.apply(&keys.node_config("set"), None, 11);
    assert!(known(&mut c).is_empty());
    assert!(lost(&mut c).is_empty());
    // A node that comes back is known again.
    let info = node("idle", &[]).info;
    c.apply(&keys.node("idle"), Some(&model::encode(&info)), 12);
    assert_eq!(known(&mut c), ["idle"]);
    assert!(c.nodes()["idle"].ready);
}

#[test]
fn a_plans_values_shown_as_written_are_what_decoding_its_writes_shows() {
    // A plan's new tasks and its status are shown as they are, the other writes (a stop)
    // from their bytes: the same cache either way, staged or committed without staging,
    // with one template shared.
    let keys = Keys::default();
    let svc = service("web", "  resources: {reservations: {memory: 1Gi}}\n");
    let old = task(&svc, "n1", "web.1.a");
    let mut stop = old.clone();
    stop.desired_state = model::DesiredState::Shutdown;
    let plan = Plan {
        creates: vec![task(&svc, "n2", "web.1.b"), task(&svc, "n1", "web.2.c")],
        status: Some(ServiceStatus {
            desired: 2,
            running: 1,
            ..ServiceStatus::default()
        }),
        ..Plan::default()
    };
    let put = |key: String, value: Vec<u8>| TxnOp::Put {
        key,
        value,
        lease: None,
    };
    let task_put = |t: &Task| put(keys.task(&t.node_id, &t.id), model::encode(t));
    let mut ops = vec![task_put(&stop)];
    ops.extend(plan.creates.iter().map(task_put));
    let status = plan.status.as_ref().map(model::encode);
    ops.push(put(keys.service_status(&svc.id()), status.unwrap()));
    let sref = svc.id();
    let cache = |written: &Written, staged: bool| {
        let mut c = Cache::new(keys.clone(), crate::reconcile::DEFAULT_TASK_HISTORY_LIMIT);
        c.apply(&keys.task("n1", "web.1.a"), Some(&model::encode(&old)), 3);
        if staged {
            c.stage(&ops, written);
        }
        c.committed(&ops, 4, written);
        c
    };
    let written = Written::of(&sref, &plan);
    for staged in [true, false] {
        let (shown, decoded) = (cache(&written, staged), cache(&Written::default(), staged));
        assert_eq!(
            shown.fingerprint(),
            decoded.fingerprint(),
            "staged: {staged}"
        );
        assert_eq!(shown.statuses[&sref].desired, 2);
        assert_eq!(
            shown.templates.len(),
            1,
            "the three tasks share one template"
        );
        assert_eq!(
            shown.usage["n1"].memory,
            2 << 30,
            "the stopped task holds its memory until it ends"
        );
        assert_eq!(shown.usage["n2"].memory, 1 << 30);
        assert_eq!(shown.staged_len(), 0);
    }
    // Another service's status is not taken for this one's.
    let other = service("api", "").id();
    let theirs = Plan {
        status: Some(ServiceStatus {
            desired: 9,
            ..ServiceStatus::default()
        }),
        ..Plan::default()
    };
    let mut c = cache(&Written::default(), false);
    c.committed(&ops[3..], 5, &Written::of(&other, &theirs));
    assert_eq!(c.statuses[&sref].desired, 2);
}

#[test]
fn after_most_tasks_go_every_service_still_lists_exactly_its_own() {
    // Enough tasks that removing most of them compacts the table underneath.
    let keys = Keys::default();
    let (web, api) = (service("web", ""), service("api", ""));
    let mut c = Cache::new(keys.clone(), 5);
    let mut items = Vec::new();
    let mut rev = 1;
    for i in 0..3000 {
        let svc = if i % 2 == 0 { &web } else { &api };
        let (node, id) = (
            format!("n{}", i % 40),
            format!("{}.{i}.x", svc.metadata.name),
        );
        let t = model::encode(&task(svc, &node, &id));
        let st = model::encode(&TaskStatus::new(
            id.as_str(),
            TaskState::Running,
            Timestamp(0),
        ));
        for (key, value) in [
            (keys.task(&node, &id), t),
            (keys.task_status(&node, &id), st),
        ] {
            rev += 1;
            c.apply(&key, Some(&value), rev);
            items.push((key, value, rev, i));
        }
    }
    // Delete all but every 97th task, assignment and status.
    let (gone, kept): (Vec<_>, Vec<_>) = items.into_iter().partition(|(.., i)| i % 97 != 0);
    for (key, ..) in gone {
        rev += 1;
        c.apply(&key, None, rev);
    }
    let kept: Vec<(String, Vec<u8>, Revision)> =
        kept.into_iter().map(|(k, v, r, _)| (k, v, r)).collect();
    let mut fresh = Cache::new(keys, 5);
    fresh.relist(&kept);
    assert_eq!(c.fingerprint(), fresh.fingerprint());
    for svc in [&web, &api] {
        let listed = |c: &mut Cache| {
            let mut ids: Vec<String> = c
                .input(&svc.id(), Timestamp(0), &NodeGrace::none(), 0)
                .tasks
                .into_iter()
                .map(|e| {
                    assert_eq!(e.state(), TaskState::Running);
                    e.task.id
                })
                .collect();
            ids.sort();
            ids
        };
        let ids = listed(&mut c);
        assert!(ids.iter().all(|id| id.starts_with(&svc.metadata.name)));
        assert_eq!(ids, listed(&mut fresh), "{}", svc.metadata.name);
    }
    let total: usize = [&web, &api]
        .iter()
        .map(|s| {
            c.input(&s.id(), Timestamp(0), &NodeGrace::none(), 0)
                .tasks
                .len()
        })
        .sum();
    assert_eq!(total, (0..3000).filter(|i| i % 97 == 0).count());
}
