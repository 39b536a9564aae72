//! Tests of the task table.
use super::*;
use crate::runner::cache::compact::Templates;
use crate::testutil::service;
use shoal_core::model::{Task, TaskState, TaskStatus, TaskTemplate, Timestamp};

fn with_status(table: &mut TaskTable, node: &str, task: &str) -> Pos {
    let pos = table.position(node, task, true).expect("added");
    table.record_mut(pos).status = Some(TaskStatus::new(task, TaskState::Running, Timestamp(1)));
    pos
}

fn assign(table: &mut TaskTable, templates: &mut Templates, pos: Pos, name: &str) {
    let (node, task, _) = table.ids_and_record(pos);
    let (node, task) = (node.to_string(), task.to_string());
    let svc = service(name, "");
    let template = TaskTemplate::from_spec(&svc.spec);
    let t = Task::replica(
        task.clone(),
        svc.id(),
        1,
        node.clone(),
        template,
        Timestamp(1),
    );
    let compact = templates.compact(&t, &node, &task);
    table.replace_task(pos, Some(compact));
}

#[test]
fn a_nodes_records_are_listed_in_task_order_until_the_last_goes() {
    let mut t = TaskTable::default();
    for (n, id) in [("n1", "b"), ("n2", "a"), ("n1", "a")] {
        with_status(&mut t, n, id);
    }
    let ids: Vec<&str> = t.of_node("n1").into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(t.get("n2", "a").is_some());
    assert!(t.get("n2", "b").is_none(), "looked up on its own node");
    let a = t.find("n1", "a").unwrap();
    t.remove(a);
    assert!(t.find("n1", "a").is_none());
    assert_eq!(t.of_node("n1").len(), 1);
    t.remove(t.find("n1", "b").unwrap());
    assert!(t.of_node("n1").is_empty());
    let nodes: Vec<&str> = t.nodes().collect();
    assert_eq!(nodes, ["n2"], "a node without records is no longer named");
    assert_eq!(t.iter().count(), 1);
}

#[test]
fn a_service_lists_the_records_assigned_to_it_and_only_while_they_are() {
    let mut t = TaskTable::default();
    let mut templates = Templates::default();
    let web = "web".parse::<ServiceRef>().unwrap();
    let one = with_status(&mut t, "n1", "web.1.a");
    let two = with_status(&mut t, "n2", "web.2.b");
    assert_eq!(
        t.of_service(&web).count(),
        0,
        "statuses alone belong to no service"
    );
    assign(&mut t, &mut templates, one, "web");
    assign(&mut t, &mut templates, two, "web");
    let mut listed: Vec<(&str, &str)> = t.of_service(&web).map(|(n, id, ..)| (n, id)).collect();
    listed.sort();
    assert_eq!(listed, [("n1", "web.1.a"), ("n2", "web.2.b")]);
    assign(&mut t, &mut templates, two, "api");
    assert_eq!(t.count_of_service(&web), 1, "moved to the other service");
    let old = t.replace_task(one, None);
    assert!(old.is_some());
    assert_eq!(t.count_of_service(&web), 0);
    let services: Vec<&ServiceRef> = t.services().collect();
    assert_eq!(
        services,
        [&"api".parse::<ServiceRef>().unwrap()],
        "an emptied service goes"
    );
}

#[test]
fn a_mass_removal_gives_the_memory_back_and_every_record_stays_reachable() {
    let mut t = TaskTable::default();
    let mut templates = Templates::default();
    let web = "web".parse::<ServiceRef>().unwrap();
    let ids = |i: usize| (format!("n{}", i % 50), format!("web.{i}.x"));
    for i in 0..5000 {
        let (node, id) = ids(i);
        let pos = with_status(&mut t, &node, &id);
        assign(&mut t, &mut templates, pos, "web");
    }
    let peak = t.entries.capacity();
    // Remove all but every hundredth, from the front, so that the survivors sit in high
    // positions and a compaction has to move them (positions are looked up again each time: a
    // compaction moves them).
    for i in (0..5000).filter(|i| i % 100 != 99) {
        let (node, id) = ids(i);
        let pos = t.find(&node, &id).expect("not removed yet");
        t.replace_task(pos, None);
        t.remove(pos);
    }
    assert!(
        t.entries.capacity() * 4 <= peak,
        "{} positions kept of {peak}",
        t.entries.capacity()
    );
    assert_eq!(t.count_of_service(&web), 50);
    for i in (99..5000).step_by(100) {
        let (node, id) = ids(i);
        let pos = t
            .find(&node, &id)
            .expect("found by node and id after compaction");
        assert_eq!(t.ids_and_record(pos).1, id);
        assert!(t.record(pos).task.is_some());
    }
    let mut by_service: Vec<String> = t
        .of_service(&web)
        .map(|(_, id, ..)| id.to_string())
        .collect();
    by_service.sort();
    let mut by_id: Vec<String> = t.iter().map(|(_, id, _)| id.to_string()).collect();
    by_id.sort();
    assert_eq!(
        by_service, by_id,
        "the service index follows the moved records"
    );
}
