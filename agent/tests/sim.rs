//! The agent on the sim runtime: state walk, shutdown, failure injection, hollow nodes and
//! adoption across an agent restart.

use std::sync::Arc;
use std::time::Duration;

use shoal_agent::runtime::Runtime;
use shoal_agent::runtime::sim::SimRuntime;
use shoal_agent::{Agent, AgentConfig};
use shoal_core::manifest::{Healthcheck, PortSpec, Protocol, RuntimeKind};
use shoal_core::model::{self, NodeInfo, TaskState};
use shoal_core::units::Dur;
use shoal_tests::tasks::{TestStore, docker_task, task, template};
use shoal_tests::wait::eventually;

fn agent(ts: &TestStore, node: &str, rt: Arc<SimRuntime>) -> shoal_agent::AgentHandle {
    let mut cfg = AgentConfig::new(node);
    cfg.lease_ttl = Duration::from_secs(2);
    Agent::new(ts.store.clone(), ts.keys.clone(), cfg, rt).spawn()
}

#[tokio::test]
async fn task_walks_to_running_then_shutdown_when_desired() {
    let ts = TestStore::open().await;
    let rt = Arc::new(SimRuntime::new());
    let a = agent(&ts, "n1", rt.clone());
    let mut tpl = template(RuntimeKind::Docker, Some("nginx:1.27"), &[]);
    tpl.ports = vec![PortSpec {
        target: 80,
        published: None,
        protocol: Protocol::Tcp,
        mode: shoal_core::manifest::PortMode::Ingress,
    }];
    let t = task("web.1.a", "web", "n1", tpl);
    ts.assign(&t).await;
    let s = ts.wait_state(&t, TaskState::Running).await;
    assert!(
        s.container_id.is_some(),
        "running task reports its container id"
    );
    assert_eq!(s.host_ports.len(), 1, "the dynamic port is reported");
    assert!(s.host_ports[0].published > 0);
    assert!(s.started_at.is_some());

    ts.shut_down(&t).await;
    let s = ts.wait_state(&t, TaskState::Shutdown).await;
    assert!(s.finished_at.is_some());
    // Stopped, it stays (its output is there for `shoal logs`) as long as its assignment.
    assert!(!rt.is_empty(), "the stopped container stays while assigned");
    ts.unassign(&t).await;
    eventually("the container is removed with its assignment", || async {
        rt.is_empty()
    })
    .await;
    a.stop().await.expect("agent stops");
}

#[tokio::test]
async fn injected_failures_end_tasks_with_a_message() {
    let ts = TestStore::open().await;
    let rt = Arc::new(SimRuntime::new());
    let a = agent(&ts, "n1", rt.clone());
    let missing = docker_task("a.1.x", "a", "n1", "missing/img");
    let fail = docker_task("b.1.x", "b", "n1", "fail/img");
    let crash = docker_task("c.1.x", "c", "n1", "crash/img");
    let mut unhealthy_tpl = template(RuntimeKind::Docker, Some("unhealthy/img"), &[]);
    unhealthy_tpl.healthcheck = Some(Healthcheck {
        test: vec!["CMD".into(), "true".into()],
        interval: Dur::secs(1),
        timeout: Dur::secs(1),
        retries: 1,
        start_period: Dur::secs(0),
    });
    let unhealthy = task("d.1.x", "d", "n1", unhealthy_tpl.clone());
    let mut healthy_tpl = unhealthy_tpl;
    healthy_tpl.image = Some("ok/img".into());
    let healthy = task("e.1.x", "e", "n1", healthy_tpl);
    for t in [&missing, &fail, &crash, &unhealthy, &healthy] {
        ts.assign(t).await;
    }
    let s = ts.wait_state(&missing, TaskState::Rejected).await;
    assert!(s.message.unwrap_or_default().contains("No such image"));
    let s = ts.wait_state(&fail, TaskState::Failed).await;
    assert!(s.message.unwrap_or_default().contains("start failure"));
    let s = ts.wait_state(&crash, TaskState::Failed).await;
    assert_eq!(s.exit_code, Some(1));
    ts.wait_failed_unhealthy(&unhealthy).await;
    ts.wait_healthy(&healthy).await;
    a.stop().await.expect("agent stops");
}

#[tokio::test]
async fn hollow_nodes_register_and_run_their_tasks() {
    let ts = TestStore::open().await;
    let rt = Arc::new(SimRuntime::new());
    let mut cfg = AgentConfig::new("hollow");
    cfg.hollow_nodes = 300;
    let a = Agent::new(ts.store.clone(), ts.keys.clone(), cfg, rt.clone()).spawn();
    let keys = ts.keys.clone();
    let store = ts.store.clone();
    eventually("300 nodes registered", || {
        let (store, keys) = (store.clone(), keys.clone());
        async move {
            store
                .list(&keys.nodes_prefix())
                .await
                .map(|l| l.kvs.len() == 300)
                .unwrap_or(false)
        }
    })
    .await;
    let list = ts.store.list(&ts.keys.nodes_prefix()).await.unwrap();
    let first: NodeInfo = model::decode("node", &list.kvs[0].value).unwrap();
    assert_eq!(first.id, "hollow-0000");
    assert_eq!(
        first.runtimes,
        vec![RuntimeKind::Docker, RuntimeKind::Process]
    );
    assert_eq!(first.role, "worker");
    assert_eq!(
        first.network_unavailable, None,
        "no networking problem without networking"
    );
    let last: NodeInfo = model::decode("node", &list.kvs[299].value).unwrap();
    assert_eq!(last.id, "hollow-0299");
    assert!(
        list.kvs.iter().all(|kv| kv.lease.is_some()),
        "node records are leased"
    );

    // One task per tenth node, all reported running.
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let node = format!("hollow-{:04}", i * 10);
            task(
                &format!("s.{i}.x"),
                "s",
                &node,
                template(RuntimeKind::Process, None, &["sleep", "1"]),
            )
        })
        .collect();
    for t in &tasks {
        ts.assign(t).await;
    }
    for t in &tasks {
        ts.wait_state(t, TaskState::Running).await;
    }
    assert_eq!(rt.len(), 30);
    // A task for a node this process does not host is left alone.
    let stranger = docker_task("x.1.x", "x", "elsewhere", "i");
    ts.assign(&stranger).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ts.status(&stranger).await.is_none());
    a.stop().await.expect("agent stops");
}

#[tokio::test]
async fn restarted_agent_adopts_running_tasks_and_removes_unassigned_ones() {
    let ts = TestStore::open().await;
    let rt = Arc::new(SimRuntime::new());
    let a = agent(&ts, "n1", rt.clone());
    let keep = docker_task("k.1.x", "k", "n1", "img");
    let drop = docker_task("d.1.x", "d", "n1", "img");
    ts.assign(&keep).await;
    ts.assign(&drop).await;
    let before = ts.wait_state(&keep, TaskState::Running).await;
    ts.wait_state(&drop, TaskState::Running).await;
    a.stop().await.expect("agent stops");
    assert_eq!(rt.len(), 2, "tasks outlive the agent");

    // While the agent is away, one task is unassigned.
    ts.unassign(&drop).await;
    let a = agent(&ts, "n1", rt.clone());
    eventually("the unassigned task's container is removed", || async {
        rt.len() == 1
    })
    .await;
    let nodes: std::collections::BTreeSet<String> = ["n1".to_string()].into();
    let left = rt.list(&nodes).await.unwrap();
    assert_eq!(left[0].task_id, "k.1.x");
    assert_eq!(
        Some(left[0].handle.id.clone()),
        before.container_id,
        "the same container, not restarted"
    );
    let after = ts.status(&keep).await.unwrap();
    assert_eq!(after.state, TaskState::Running);
    assert_eq!(after.container_id, before.container_id);

    // Adopted tasks are still watched: a crash is reported.
    rt.exit(left[0].handle.id.as_str(), 2);
    let s = ts.wait_state(&keep, TaskState::Failed).await;
    assert_eq!(s.exit_code, Some(2));
    a.stop().await.expect("agent stops");
}

#[tokio::test]
async fn lost_lease_is_replaced_and_the_node_registered_again() {
    let ts = TestStore::open().await;
    let a = agent(&ts, "n1", Arc::new(SimRuntime::new()));
    let key = ts.keys.node("n1");
    let store = ts.store.clone();
    eventually("node registered", || {
        let (store, key) = (store.clone(), key.clone());
        async move { store.get(&key).await.ok().flatten().is_some() }
    })
    .await;
    let old = ts
        .store
        .get(&key)
        .await
        .unwrap()
        .unwrap()
        .lease
        .expect("leased");
    // The lease vanishes (as when it expires while the store is away): the record goes too.
    ts.store.revoke_lease(old).await.unwrap();
    eventually("node registered again under a new lease", || {
        let (store, key) = (store.clone(), key.clone());
        async move {
            matches!(store.get(&key).await, Ok(Some(kv)) if kv.lease.is_some() && kv.lease != Some(old))
        }
    })
    .await;
    a.stop().await.expect("agent stops");
}

#[tokio::test]
async fn running_sim_tasks_park_without_a_runner_and_resume_when_needed() {
    use shoal_agent::task_runner::TaskRunnerContext;
    use shoal_agent::worker::Worker;

    let ts = TestStore::open().await;
    let rt = Arc::new(SimRuntime::new());
    let (sink, _writer) = shoal_agent::status::spawn(ts.store.clone(), ts.keys.clone());
    let ctx = TaskRunnerContext::new(rt.clone(), sink, ts.keys.clone());
    let nodes = shoal_agent::node::hollow_ids("h", 10).into_iter().collect();
    let worker = Worker::new(ts.store.clone(), ts.keys.clone(), nodes, ctx);
    let stats = worker.stats();
    let stop = tokio_util::sync::CancellationToken::new();
    let join = tokio::spawn(worker.run(stop.clone()));

    let tasks: Vec<_> = (0..200)
        .map(|i| docker_task(&format!("p.{i}.x"), "p", &format!("h-{:04}", i % 10), "img"))
        .collect();
    for t in &tasks {
        ts.assign(t).await;
    }
    for t in &tasks {
        ts.wait_state(t, TaskState::Running).await;
    }
    // Running tasks keep a parked record each and no runner at all.
    eventually("every running task parked", || async {
        stats.parked() == 200 && stats.live_runners() == 0
    })
    .await;

    // A parked task still follows the controller and the runtime.
    ts.shut_down(&tasks[0]).await;
    ts.wait_state(&tasks[0], TaskState::Shutdown).await;
    let s = ts.status(&tasks[1]).await.expect("status");
    rt.exit(s.container_id.as_deref().expect("container"), 3);
    let s = ts.wait_state(&tasks[1], TaskState::Failed).await;
    assert_eq!(s.exit_code, Some(3));
    let before = rt.len();
    ts.unassign(&tasks[2]).await;
    eventually("the deleted task's container is removed", || async {
        rt.len() == before - 1
    })
    .await;
    // Ended tasks whose assignments stay (a service's task history) park too: the shut
    // down and the failed one cost a record each, not a runner waiting for the deletion.
    eventually("the others stay parked, ended ones included", || async {
        stats.parked() == 199 && stats.live_runners() == 0
    })
    .await;
    // The deletion of an ended task's assignment still removes its container and status.
    let before = rt.len();
    ts.unassign(&tasks[0]).await;
    eventually("the shut down task's container is removed", || async {
        rt.len() == before - 1 && stats.parked() == 198 && stats.live_runners() == 0
    })
    .await;
    eventually("its status is deleted", || async {
        ts.status(&tasks[0]).await.is_none()
    })
    .await;
    stop.cancel();
    join.await.expect("worker ends");
}

/// `--role manager` reaches the node record, so `node.role == manager` constraints can match.
#[tokio::test]
async fn the_node_record_carries_the_configured_role() {
    let ts = TestStore::open().await;
    let rt = Arc::new(SimRuntime::new());
    let mut cfg = AgentConfig::new("boss-1");
    cfg.role = "manager".to_string();
    let agent = Agent::new(ts.store.clone(), ts.keys.clone(), cfg, rt);
    assert_eq!(agent.node_infos()[0].role, "manager");
    assert_eq!(
        AgentConfig::new("n").role,
        "worker",
        "a node is a worker unless told"
    );
}
#[tokio::test]
async fn adoption_keeps_the_running_duplicate_not_the_exited_one() {
    let ts = TestStore::open().await;
    let rt = Arc::new(SimRuntime::new());
    let t = docker_task("dup.1.x", "dup", "n1", "img");
    // Two containers for one task, left by an earlier agent of this cluster: the first runs,
    // the second (whose id sorts last) has exited.
    let cluster = shoal_store::cluster::ensure_cluster_id(ts.store.as_ref(), &ts.keys, None)
        .await
        .unwrap();
    rt.set_cluster(&cluster);
    let files = shoal_agent::runtime::TaskFiles::default();
    let running = rt.start(&t, &files).await.expect("first container");
    let exited = rt.start(&t, &files).await.expect("second container");
    assert!(exited.id > running.id, "the exited one sorts last");
    rt.exit(&exited.id, 1);
    ts.assign(&t).await;

    let a = agent(&ts, "n1", rt.clone());
    let s = ts.wait_state(&t, TaskState::Running).await;
    assert_eq!(
        s.container_id.as_deref(),
        Some(running.id.as_str()),
        "the running container is adopted"
    );
    eventually("the exited duplicate is removed", || async {
        rt.len() == 1
    })
    .await;
    let nodes: std::collections::BTreeSet<String> = ["n1".to_string()].into();
    let left = rt.list(&nodes).await.unwrap();
    assert_eq!(left[0].handle.id, running.id);
    assert_eq!(left[0].exit, None, "and it still runs");
    a.stop().await.expect("agent stops");
}

#[tokio::test]
async fn the_agent_deletes_the_status_of_a_deleted_assignment_and_never_recreates_it() {
    let ts = TestStore::open().await;
    let rt = Arc::new(SimRuntime::new());
    let a = agent(&ts, "n1", rt.clone());
    let t = docker_task("s.1.x", "s", "n1", "img");
    ts.assign(&t).await;
    ts.wait_state(&t, TaskState::Running).await;
    // The controller deletes the assignment only: its status is the agent's to delete.
    ts.unassign(&t).await;
    eventually("the agent deletes the task's status", || async {
        ts.status(&t).await.is_none()
    })
    .await;
    eventually("and its container", || async { rt.is_empty() }).await;
    a.stop().await.expect("agent stops");

    // A status write that arrives after the assignment is gone does not recreate the key.
    let (sink, _writer) = shoal_agent::status::spawn(ts.store.clone(), ts.keys.clone());
    sink.put(
        ts.keys.task_status("n1", "s.1.x"),
        model::encode(&ts_status("s.1.x")),
    );
    sink.flush().await;
    assert!(
        ts.status(&t).await.is_none(),
        "a late status write resurrected a deleted task's status"
    );
}

#[tokio::test]
async fn statuses_left_without_an_assignment_are_collected_when_the_agent_starts() {
    let ts = TestStore::open().await;
    let orphan = ts.keys.task_status("n1", "gone.1.x");
    ts.store
        .put(&orphan, model::encode(&ts_status("gone.1.x")), None)
        .await
        .unwrap();
    let other = ts.keys.task_status("n2", "other.1.x");
    ts.store
        .put(&other, model::encode(&ts_status("other.1.x")), None)
        .await
        .unwrap();
    let a = agent(&ts, "n1", Arc::new(SimRuntime::new()));
    let store = ts.store.clone();
    eventually("the orphaned status is deleted", || {
        let (store, orphan) = (store.clone(), orphan.clone());
        async move { store.get(&orphan).await.unwrap().is_none() }
    })
    .await;
    assert!(
        ts.store.get(&other).await.unwrap().is_some(),
        "another node's statuses are not this agent's"
    );
    a.stop().await.expect("agent stops");
}

fn ts_status(id: &str) -> model::TaskStatus {
    model::TaskStatus::new(id, TaskState::Running, model::Timestamp::now())
}

fn agent_as(ts: &TestStore, node: &str, instance: &str, ttl: Duration) -> Agent {
    let mut cfg = AgentConfig::new(node);
    cfg.lease_ttl = ttl;
    cfg.instance_id = instance.to_string();
    Agent::new(
        ts.store.clone(),
        ts.keys.clone(),
        cfg,
        Arc::new(SimRuntime::new()),
    )
}

async fn holder(ts: &TestStore, node: &str) -> NodeInfo {
    let kv = ts
        .store
        .get(&ts.keys.node(node))
        .await
        .unwrap()
        .expect("node record");
    serde_json::from_slice(&kv.value).unwrap()
}

/// Two agents started with one node id would run every task twice: the second waits about
/// one TTL for the first's registration to go, then stops with an error naming the holder.
#[tokio::test]
async fn a_second_agent_with_the_same_node_id_gives_up_naming_the_holder() {
    let ts = TestStore::open().await;
    let ttl = Duration::from_secs(2);
    let first = agent_as(&ts, "n1", "instance-a", ttl).spawn();
    let mut reg = first.registered();
    reg.wait_for(|r| *r).await.unwrap();
    let started = std::time::Instant::now();
    let second = agent_as(&ts, "n1", "instance-b", ttl);
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        second.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("the second agent gives up");
    println!("second agent gave up after {:?}", started.elapsed());
    let err = result
        .expect_err("the second agent must not run")
        .to_string();
    assert!(
        err.contains("instance-a") && err.contains("--node-id"),
        "{err}"
    );
    assert!(started.elapsed() >= ttl, "it waited one TTL first");
    assert_eq!(holder(&ts, "n1").await.instance, "instance-a");
    first.stop().await.unwrap();
}

/// A restarted agent (same instance id from its data dir) takes its registration back at
/// once, without waiting for its previous lease to expire.
#[tokio::test]
async fn a_restarted_agent_takes_its_registration_back_at_once() {
    let ts = TestStore::open().await;
    let ttl = Duration::from_secs(30);
    let first = agent_as(&ts, "n1", "instance-a", ttl).spawn();
    first.registered().wait_for(|r| *r).await.unwrap();
    let before = ts.store.get(&ts.keys.node("n1")).await.unwrap().unwrap();
    first.stop().await.unwrap();
    let started = std::time::Instant::now();
    let again = agent_as(&ts, "n1", "instance-a", ttl).spawn();
    again.registered().wait_for(|r| *r).await.unwrap();
    println!("registration taken back after {:?}", started.elapsed());
    assert!(
        started.elapsed() < ttl,
        "taken back before the old lease could expire"
    );
    let after = ts.store.get(&ts.keys.node("n1")).await.unwrap().unwrap();
    assert!(after.mod_revision > before.mod_revision);
    assert_eq!(holder(&ts, "n1").await.instance, "instance-a");
    again.stop().await.unwrap();
}

#[tokio::test]
async fn a_node_id_that_is_not_a_dns_label_is_refused() {
    let ts = TestStore::open().await;
    let err = agent_as(&ts, "a/b", "i", Duration::from_secs(2))
        .run(tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("not a DNS label"), "{err}");
}

/// A node's containers belong to the cluster (store) that started them. Pointed at another
/// store — a wrong prefix, a store restored from nothing — the agent never removes them: on an
/// empty store it refuses to start, on another cluster's store it leaves them alone; only
/// `--adopt-orphans` makes the empty store their cluster.
#[tokio::test]
async fn containers_of_another_cluster_are_never_removed() {
    let first = TestStore::open().await;
    let rt = Arc::new(SimRuntime::new());
    let a = agent(&first, "n1", rt.clone());
    let t = docker_task("w.1.x", "w", "n1", "img");
    first.assign(&t).await;
    first.wait_state(&t, TaskState::Running).await;
    a.stop().await.expect("agent stops");
    let nodes: std::collections::BTreeSet<String> = ["n1".to_string()].into();
    let cluster = shoal_store::cluster::cluster_id(first.store.as_ref(), &first.keys)
        .await
        .unwrap()
        .expect("the first store has a cluster id");
    assert_eq!(
        rt.list(&nodes).await.unwrap()[0].cluster,
        Some(cluster.clone())
    );

    // An empty store: the agent refuses to start, the container stays.
    let empty = TestStore::open().await;
    let mut cfg = AgentConfig::new("n1");
    cfg.lease_ttl = Duration::from_secs(2);
    let err = Agent::new(
        empty.store.clone(),
        empty.keys.clone(),
        cfg.clone(),
        rt.clone(),
    )
    .run(tokio_util::sync::CancellationToken::new())
    .await
    .expect_err("refuses an empty store")
    .to_string();
    assert!(
        err.contains(&cluster) && err.contains("--adopt-orphans"),
        "{err}"
    );
    assert_eq!(rt.len(), 1);

    // Another cluster's store: the agent runs, and leaves the container alone.
    let other = TestStore::open().await;
    shoal_store::cluster::ensure_cluster_id(other.store.as_ref(), &other.keys, None)
        .await
        .unwrap();
    let b = agent(&other, "n1", rt.clone());
    b.registered().wait_for(|r| *r).await.unwrap();
    let u = docker_task("v.1.x", "v", "n1", "img");
    other.assign(&u).await;
    other.wait_state(&u, TaskState::Running).await;
    let ids: Vec<String> = rt
        .list(&nodes)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.task_id)
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "the other cluster's container is still there: {ids:?}"
    );
    assert!(ids.contains(&"w.1.x".to_string()));
    other.unassign(&u).await;
    eventually("its own unassigned container is removed", || async {
        rt.len() == 1
    })
    .await;
    b.stop().await.unwrap();

    // --adopt-orphans on an empty store: it becomes the containers' cluster, and what it does
    // not assign is removed as usual.
    let adopting = TestStore::open().await;
    let mut cfg = AgentConfig::new("n1");
    cfg.lease_ttl = Duration::from_secs(2);
    cfg.adopt_orphans = true;
    let c = Agent::new(
        adopting.store.clone(),
        adopting.keys.clone(),
        cfg,
        rt.clone(),
    )
    .spawn();
    eventually(
        "the adopted cluster's unassigned container is removed",
        || async {
            rt.list(&nodes)
                .await
                .unwrap()
                .iter()
                .all(|e| e.task_id != "w.1.x")
        },
    )
    .await;
    assert_eq!(
        shoal_store::cluster::cluster_id(adopting.store.as_ref(), &adopting.keys)
            .await
            .unwrap(),
        Some(cluster)
    );
    c.stop().await.unwrap();
}

/// Whether the test runs as root (it can enter network namespaces, so the iptables check is
/// the one that fails).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

/// An agent whose `iptables` cannot read the nat table (as for an agent without
/// CAP_NET_ADMIN) keeps running tasks and publishes why names are unavailable in its node
/// record, for `shoal describe`.
#[tokio::test]
async fn an_agent_lacking_a_network_privilege_publishes_why_in_its_node_record() {
    let ts = TestStore::open().await;
    let dir = tempfile::tempdir().unwrap();
    // What iptables says to a process without CAP_NET_ADMIN.
    let iptables = dir.path().join("iptables");
    std::fs::write(
        &iptables,
        "#!/bin/sh\necho 'iptables v1.8.9 (legacy): can'\\''t initialize iptables table `nat'\\'': \
         Permission denied (you must be root)' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &iptables,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut cfg = AgentConfig::new("n2");
    cfg.lease_ttl = Duration::from_secs(2);
    let mut net = shoal_agent::network::NetworkConfig::new(
        "127.0.0.1".parse().unwrap(),
        vec!["127.0.0.1:53".parse().unwrap()],
    );
    net.iptables = iptables;
    cfg.network = Some(net);
    let agent = Agent::new(
        ts.store.clone(),
        ts.keys.clone(),
        cfg,
        Arc::new(SimRuntime::new()),
    );
    assert!(agent.network().is_none(), "networking is off");
    let a = agent.spawn();
    let t = docker_task("web.1.a", "web", "n2", "nginx:1.27");
    ts.assign(&t).await;
    ts.wait_state(&t, TaskState::Running).await;
    let why = holder(&ts, "n2")
        .await
        .network_unavailable
        .expect("the node record says why names are unavailable");
    println!("published: {why}");
    if running_as_root() {
        assert!(why.contains("lacks CAP_NET_ADMIN"), "{why}");
        assert!(
            why.contains("Permission denied"),
            "iptables' own words: {why}"
        );
    } else {
        assert!(why.contains("lacks CAP_SYS_ADMIN"), "{why}");
    }
    a.stop().await.expect("agent stops");
}
