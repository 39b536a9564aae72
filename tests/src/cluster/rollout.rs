//! Views of a service's rollout: tasks per slot and template, the rollout's state, and the
//! fewest slots up while it ran.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::model::{DesiredState, RolloutState, Slot, Task, TaskState, TaskStatus};

use super::Env;
use crate::wait::wait_for;

/// Slots whose wanted task is running on `image`.
pub fn up_on(tasks: &[(Task, Option<TaskStatus>)], image: &str) -> usize {
    tasks
        .iter()
        .filter(|(t, s)| {
            t.desired_state == DesiredState::Running
                && s.as_ref().map(|s| s.state) == Some(TaskState::Running)
                && t.template.image.as_deref() == Some(image)
        })
        .count()
}

/// Slots with a running task of any template.
pub fn slots_up(tasks: &[(Task, Option<TaskStatus>)]) -> usize {
    let mut slots = std::collections::BTreeSet::new();
    for (t, s) in tasks {
        if s.as_ref().map(|s| s.state) == Some(TaskState::Running) {
            slots.insert(t.slot.clone());
        }
    }
    slots.len()
}

/// Tasks per (slot, image) ever created (that still exist).
pub fn per_slot_image(tasks: &[(Task, Option<TaskStatus>)]) -> BTreeMap<(Slot, String), usize> {
    let mut m = BTreeMap::new();
    for (t, _) in tasks {
        *m.entry((t.slot.clone(), t.template.image.clone().unwrap_or_default()))
            .or_default() += 1;
    }
    m
}

/// Waits for the rollout of `name` to reach `state`; returns the status' message.
pub async fn wait_rollout(env: &Env, name: &str, state: RolloutState) -> Option<String> {
    wait_for(&format!("rollout of {name} reaches {state}"), || async {
        let st = env.status(name).await?;
        let r = st.rollout?;
        (r.state == state).then_some(r.message)
    })
    .await
}

/// Watches tasks in the background, recording the fewest slots up seen after `from_now`.
pub fn watch_min_up(env: &Env) -> (Arc<std::sync::Mutex<usize>>, tokio::task::JoinHandle<()>) {
    let min = Arc::new(std::sync::Mutex::new(usize::MAX));
    let m = min.clone();
    let store = env.store.clone();
    let env2 = Env::over(store);
    let h = tokio::spawn(async move {
        loop {
            let tasks = env2.tasks().await;
            let up = slots_up(&tasks);
            {
                let mut g = m.lock().unwrap();
                *g = (*g).min(up);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (min, h)
}
