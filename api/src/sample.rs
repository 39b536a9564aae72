//! A synthetic cluster written straight into a store: services in a few namespaces, their
//! statuses (with events, one unschedulable service and one paused rollout), tasks spread
//! over nodes, and the agents' task statuses and node records. The dashboard's benchmark
//! (`shoal-ui-bench`, 500 services and 5,000 tasks) and its rendering tests read it through
//! the API exactly like a real cluster.

use shoal_core::model::{
    Capacity, Event, Health, NodeInfo, RolloutState, RolloutStatus, Task, TaskState, TaskStatus,
    TaskTemplate,
};
use shoal_core::{Keys, ServiceRef, ServiceStatus, Timestamp};
use shoal_store::{Store, StoreError, Txn, TxnOp};

/// How big a sample cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleSize {
    /// Services (spread over the namespaces `default`, `shop` and `ops`).
    pub services: usize,
    /// Replicas (and tasks) per service.
    pub replicas: usize,
    /// Nodes; tasks go round-robin over them.
    pub nodes: usize,
}

/// What was written, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleCluster {
    /// Every service, in writing order.
    pub services: Vec<ServiceRef>,
    /// The service whose status says it is unschedulable.
    pub unschedulable: Option<ServiceRef>,
    /// The service whose rollout is paused.
    pub paused: Option<ServiceRef>,
    /// Tasks written (one per replica; every third task of the paused service failed).
    pub tasks: usize,
    /// Tasks whose status is `running`.
    pub running: usize,
}

const NAMESPACES: [&str; 3] = ["default", "shop", "ops"];

/// The manifest of sample service `r` (naming its namespace, as a stored manifest must).
pub fn sample_manifest(r: &ServiceRef, replicas: usize) -> String {
    let (ns, name) = (&r.namespace, &r.name);
    format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{app: {name}, tier: web}}\nspec:\n  replicas: {replicas}\n  image: nginx:1.27\n  ports:\n    - target: 80\n  resources: {{reservations: {{cpus: 0.1, memory: 64Mi}}}}\n"
    )
}

async fn flush(store: &dyn Store, ops: &mut Vec<TxnOp>, force: bool) -> Result<(), StoreError> {
    if ops.is_empty() || (!force && ops.len() < store.max_txn_ops()) {
        return Ok(());
    }
    let batch = std::mem::take(ops);
    store
        .txn(Txn {
            compares: Vec::new(),
            ops: batch,
        })
        .await?;
    Ok(())
}

async fn push(
    store: &dyn Store,
    ops: &mut Vec<TxnOp>,
    key: String,
    value: Vec<u8>,
) -> Result<(), StoreError> {
    ops.push(TxnOp::Put {
        key,
        value,
        lease: None,
    });
    flush(store, ops, false).await
}

fn node_info(id: &str, now: Timestamp) -> NodeInfo {
    NodeInfo {
        id: id.to_string(),
        hostname: format!("{id}.example"),
        address: "10.0.0.1".into(),
        labels: [("zone".to_string(), "a".to_string())].into(),
        runtimes: vec![shoal_core::manifest::RuntimeKind::Docker],
        capacity: Capacity {
            cpus: 8.0,
            memory: "16Gi".parse().unwrap_or_default(),
        },
        role: "worker".into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        network_unavailable: None,
        agent_url: None,
        started_at: now,
        instance: format!("sample-{id}"),
    }
}

fn status_of(
    r: &ServiceRef,
    replicas: usize,
    running: usize,
    now: Timestamp,
    i: usize,
) -> ServiceStatus {
    let mut st = ServiceStatus {
        observed_generation: i64::MAX,
        desired: replicas as u64,
        running: running as u64,
        updated: running as u64,
        updated_at: now,
        ..ServiceStatus::default()
    };
    st.events.push(Event {
        time: now,
        kind: "Normal".into(),
        reason: "Scaled".into(),
        message: format!("{r} has {replicas} replicas"),
    });
    if i % 50 == 7 {
        st.events.push(Event {
            time: now,
            kind: "Warning".into(),
            reason: "TaskFailed".into(),
            message: format!("a task of {r} exited with code 1"),
        });
    }
    st
}

/// Writes a sample cluster of `size` under `keys` (the services as manifests, everything else
/// as the controller and agents would write it).
pub async fn write_sample(
    store: &dyn Store,
    keys: &Keys,
    size: SampleSize,
) -> Result<SampleCluster, StoreError> {
    let now = Timestamp::now();
    let mut ops = Vec::new();
    let mut out = SampleCluster::default();
    let nodes: Vec<String> = (0..size.nodes.max(1))
        .map(|i| format!("node-{i:03}"))
        .collect();
    for n in &nodes {
        let info = serde_json::to_vec(&node_info(n, now)).unwrap_or_default();
        push(store, &mut ops, keys.node(n), info).await?;
    }
    let mut next_node = 0;
    for i in 0..size.services {
        let r = ServiceRef {
            namespace: NAMESPACES[i % NAMESPACES.len()].to_string(),
            name: format!("svc-{i:04}"),
        };
        let text = sample_manifest(&r, size.replicas);
        let service = shoal_core::parse(&text, "sample")
            .ok()
            .and_then(|mut v| v.pop())
            .map(|p| p.service);
        let template = service.as_ref().map(|s| TaskTemplate::from_spec(&s.spec));
        push(store, &mut ops, keys.service(&r), text.into_bytes()).await?;
        let paused = i == 3;
        let mut running = 0;
        for slot in 1..=size.replicas {
            let node = &nodes[next_node % nodes.len()];
            next_node += 1;
            let id = format!("{}.{slot}.s{i}", r.name);
            let Some(template) = template.clone() else {
                continue;
            };
            let task = Task::replica(
                id.clone(),
                r.clone(),
                slot as u64,
                node.clone(),
                template,
                now,
            );
            let failed = paused && slot % 3 == 0;
            let status = TaskStatus {
                task_id: id.clone(),
                state: if failed {
                    TaskState::Failed
                } else {
                    TaskState::Running
                },
                container_id: Some(format!("c{i:04}{slot:04}")),
                host_ports: Vec::new(),
                health: Some(Health::Healthy),
                exit_code: failed.then_some(1),
                message: failed.then(|| "exited with code 1".to_string()),
                updated_at: now,
                started_at: Some(now),
                finished_at: None,
            };
            running += usize::from(!failed);
            out.tasks += 1;
            let t = serde_json::to_vec(&task).unwrap_or_default();
            push(store, &mut ops, keys.task(node, &id), t).await?;
            let s = serde_json::to_vec(&status).unwrap_or_default();
            push(store, &mut ops, keys.task_status(node, &id), s).await?;
        }
        out.running += running;
        let mut st = status_of(&r, size.replicas, running, now, i);
        if paused {
            st.rollout = Some(RolloutStatus {
                state: RolloutState::Paused,
                target_hash: "sample".into(),
                updated: (size.replicas / 2) as u64,
                total: size.replicas as u64,
                message: Some("1 of 3 updated tasks failed".into()),
                started_at: now,
                completed_at: None,
                image: Some("nginx:1.27".into()),
                previous_hash: None,
                previous_image: None,
                failed_tasks: Vec::new(),
                rollback_started_at: None,
            });
            out.paused = Some(r.clone());
        }
        if i == 5 {
            st.unschedulable = Some("no node has 64 CPUs free (8 nodes have 8)".into());
            out.unschedulable = Some(r.clone());
        }
        let s = serde_json::to_vec(&st).unwrap_or_default();
        push(store, &mut ops, keys.service_status(&r), s).await?;
        out.services.push(r);
    }
    flush(store, &mut ops, true).await?;
    Ok(out)
}
