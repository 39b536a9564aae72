//! Tests of the task and node views.

use super::*;
use crate::model::TaskTemplate;

const WEB: &str =
    "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx\n";

fn task(id: &str, node: &str, slot: u64) -> Task {
    let service = crate::parse(WEB, "web.yaml").unwrap().remove(0).service;
    let template = TaskTemplate::from_spec(&service.spec);
    Task::replica(id, service.id(), slot, node, template, Timestamp(0))
}

fn status(id: &str, state: TaskState) -> TaskStatus {
    serde_json::from_value(serde_json::json!({
        "taskId": id, "state": state, "hostPorts": [], "updatedAt": Timestamp(0)
    }))
    .unwrap()
}

struct Store(Vec<(String, Vec<u8>, i64)>);

impl Store {
    fn records(&self) -> impl Iterator<Item = Record<'_>> {
        self.0.iter().map(|(k, v, r)| Record {
            key: k,
            value: v,
            revision: *r,
        })
    }
}

#[test]
fn tasks_get_the_status_of_their_own_node_and_id() {
    let keys = Keys::default();
    let tasks = Store(vec![
        (
            keys.task("n2", "t2"),
            model::encode(&task("t2", "n2", 2)),
            1,
        ),
        (
            keys.task("n1", "t1"),
            model::encode(&task("t1", "n1", 1)),
            1,
        ),
        (keys.task("n1", "bad"), b"{".to_vec(), 1),
    ]);
    let statuses = Store(vec![
        (
            keys.task_status("n1", "t1"),
            model::encode(&status("t1", TaskState::Running)),
            1,
        ),
        // Same task id on another node: not t2's status.
        (
            keys.task_status("n9", "t2"),
            model::encode(&status("t2", TaskState::Failed)),
            1,
        ),
    ]);
    let joined = join_tasks(&keys, tasks.records(), statuses.records());
    let got: Vec<(&str, TaskState)> = joined
        .view
        .iter()
        .map(|e| (e.task.id.as_str(), e.state()))
        .collect();
    assert_eq!(
        got,
        vec![("t1", TaskState::Running), ("t2", TaskState::Assigned)]
    );
    assert_eq!(joined.unreadable.len(), 1);
    assert!(
        joined.unreadable[0].to_string().contains("tasks/n1/bad"),
        "{}",
        joined.unreadable[0]
    );
}

#[test]
fn a_node_is_ready_while_its_record_lives_unless_removed() {
    let keys = Keys::default();
    let info = |id: &str| model::encode(&placeholder_info(id));
    let removed = NodeConfig {
        removed: true,
        ..NodeConfig::default()
    };
    let infos = Store(vec![
        (keys.node("up"), info("up"), 3),
        (keys.node("gone"), info("gone"), 4),
    ]);
    let configs = Store(vec![
        (keys.node_config("gone"), model::encode(&removed), 7),
        (
            keys.node_config("idle"),
            model::encode(&NodeConfig::default()),
            8,
        ),
    ]);
    let task_key = keys.task("lost", "t1");
    let joined = join_nodes(
        &keys,
        infos.records(),
        configs.records(),
        [task_key.as_str()],
    );
    let ready: Vec<(&str, bool)> = joined
        .view
        .values()
        .map(|n| (n.id.as_str(), n.ready))
        .collect();
    assert_eq!(
        ready,
        vec![
            ("gone", false),
            ("idle", false),
            ("lost", false),
            ("up", true)
        ]
    );
    assert_eq!(joined.view["gone"].config_revision, 7);
    assert!(joined.view["lost"].info.is_none());
    let node = joined.view["lost"].to_node();
    assert_eq!((node.info.hostname.as_str(), node.ready), ("lost", false));
    assert!(is_ready(true, &NodeConfig::default()));
    assert!(!is_ready(true, &removed));
    assert!(!is_ready(false, &NodeConfig::default()));
}

#[test]
fn each_slot_shows_its_current_task_then_its_history_newest_first() {
    let entry = |id: &str, slot: u64, created: u64, state: Option<TaskState>| {
        let mut task = task(id, "n1", slot);
        task.created_at = Timestamp(created);
        TaskEntry::new(task, state.map(|s| status(id, s)))
    };
    let list = vec![
        entry("a1", 1, 1, Some(TaskState::Failed)),
        entry("b1", 2, 5, Some(TaskState::Running)),
        entry("a3", 1, 3, Some(TaskState::Running)),
        entry("a2", 1, 2, Some(TaskState::Failed)),
        // Replaced, still stopping: current until it finished.
        entry("b0", 2, 4, Some(TaskState::Running)),
        entry("c1", 3, 1, Some(TaskState::Complete)),
    ];
    let ids = |v: &[&TaskEntry]| v.iter().map(|e| e.task.id.clone()).collect::<Vec<_>>();
    let slots = slot_tasks(&list);
    assert_eq!(slots.len(), 3);
    assert_eq!(ids(&slots[0].current), ["a3"]);
    assert_eq!(ids(&slots[0].earlier), ["a2", "a1"]);
    assert_eq!(ids(&slots[1].current), ["b1", "b0"]);
    assert!(slots[1].earlier.is_empty());
    // A slot left empty: its newest finished task is its current one.
    assert_eq!(ids(&slots[2].current), ["c1"]);
}

#[test]
fn history_is_marked_and_listed_after_each_slot_current_tasks() {
    let entry = |id: &str, slot: u64, created: u64, state: TaskState| {
        let mut task = task(id, "n1", slot);
        task.created_at = Timestamp(created);
        TaskEntry::new(task, Some(status(id, state)))
    };
    let mut list = vec![
        entry("a1", 1, 1, TaskState::Failed),
        entry("a2", 1, 2, TaskState::Failed),
        entry("a3", 1, 3, TaskState::Running),
        entry("b1", 2, 1, TaskState::Complete),
    ];
    mark_history(&mut list);
    let marked: Vec<(&str, bool)> = list
        .iter()
        .map(|e| (e.task.id.as_str(), e.history))
        .collect();
    assert_eq!(
        marked,
        [("a1", true), ("a2", true), ("a3", false), ("b1", false)]
    );
    let ids = |v: Vec<&TaskEntry>| v.into_iter().map(|e| e.task.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(in_slot_order(&list, false)), ["a3", "b1"]);
    assert_eq!(ids(in_slot_order(&list, true)), ["a3", "a2", "a1", "b1"]);
    // The mark is what clients read: it is in the JSON only when set.
    let json = serde_json::to_value(&list[0]).unwrap();
    assert_eq!(json["history"], true);
    let json = serde_json::to_value(&list[2]).unwrap();
    assert!(json.get("history").is_none());
}
