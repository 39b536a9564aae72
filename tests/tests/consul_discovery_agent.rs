//! Consul discovery wired into the agent, end to end on the sim runtime, an embedded store
//! and the fake Consul: a running task is registered with its reported host port, it is
//! deregistered before its container is stopped and when it exits on its own, the node's
//! stale registrations are removed on start, Consul being down never harms a task, and the
//! agent's periodic sync brings back what Consul dropped (a removed registration, one reaped
//! for a failing check, an agent that lost its state) and removes foreign ones.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_agent::runtime::sim::SimRuntime;
use shoal_agent::runtime::{Existing, Exit, Handle, Runtime, RuntimeError, TaskFiles};
use shoal_agent::{Agent, AgentConfig, AgentHandle};
use shoal_core::Keys;
use shoal_core::manifest::{ConsulCheck, ConsulDiscovery, PortSpec, Protocol, RuntimeKind};
use shoal_core::model::{Health, Task, TaskState};
use shoal_core::units::Dur;
use shoal_store::consul::{AgentServiceRegistration, ConsulClient, ConsulConfig};
use shoal_tests::consul_fake::ConsulFake;
use shoal_tests::health::HealthEndpoint;
use shoal_tests::tasks::{self, TestStore, http_check, template};
use shoal_tests::wait::eventually;

/// Address the test node reports for its tasks.
const NODE_ADDRESS: &str = "10.0.0.7";

/// A task of `default/<service>` on `node` publishing target port 80 (dynamic host port)
/// and registered in Consul as `<service>-public`.
fn task(id: &str, service: &str, node: &str, image: &str) -> Task {
    let mut template = template(RuntimeKind::Docker, Some(image), &[]);
    template.ports = vec![PortSpec {
        target: 80,
        published: None,
        protocol: Protocol::Tcp,
        mode: shoal_core::manifest::PortMode::Ingress,
    }];
    template.consul = Some(ConsulDiscovery {
        name: Some(format!("{service}-public")),
        tags: vec!["http".into()],
        meta: [("team".to_string(), "a".to_string())].into(),
        port: None,
        check: Some(http_check()),
    });
    tasks::task(id, service, node, template)
}

fn client(fake: &ConsulFake) -> ConsulClient {
    ConsulClient::new(ConsulConfig::new(fake.http_url())).expect("consul client")
}

fn agent(ts: &TestStore, node: &str, rt: Arc<dyn Runtime>, fake: &ConsulFake) -> AgentHandle {
    let mut cfg = AgentConfig::new(node);
    cfg.lease_ttl = Duration::from_secs(2);
    cfg.address = NODE_ADDRESS.into();
    cfg.consul = Some(ConsulConfig::new(fake.http_url()));
    Agent::new(ts.store.clone(), ts.keys.clone(), cfg, rt).spawn()
}

async fn registered(c: &ConsulClient, id: &str) -> bool {
    c.agent_services().await.is_ok_and(|s| s.contains_key(id))
}

/// The sim runtime, recording for every stop whether Consul still held the task's
/// registration at that moment.
struct RecordingRuntime {
    inner: Arc<SimRuntime>,
    consul: ConsulClient,
    /// (task id, registered when its stop began).
    stops: Mutex<Vec<(String, bool)>>,
    /// Container id → task id.
    started: Mutex<Vec<(String, String)>>,
}

impl RecordingRuntime {
    /// Records stops on the sim runtime, asking `consul` for the registration.
    fn new(consul: &ConsulClient) -> Arc<Self> {
        Arc::new(RecordingRuntime {
            inner: Arc::new(SimRuntime::new()),
            consul: consul.clone(),
            stops: Mutex::new(Vec::new()),
            started: Mutex::new(Vec::new()),
        })
    }

    fn stops(&self) -> Vec<(String, bool)> {
        self.stops.lock().expect("lock").clone()
    }
}

#[async_trait::async_trait]
impl Runtime for RecordingRuntime {
    fn name(&self) -> &'static str {
        "sim"
    }
    fn offers(&self) -> Vec<RuntimeKind> {
        self.inner.offers()
    }
    fn tasks_outlive_agent(&self) -> bool {
        self.inner.tasks_outlive_agent()
    }
    async fn prepare(&self, task: &Task) -> Result<(), RuntimeError> {
        self.inner.prepare(task).await
    }
    async fn start(&self, task: &Task, files: &TaskFiles) -> Result<Handle, RuntimeError> {
        let h = self.inner.start(task, files).await?;
        self.started
            .lock()
            .expect("lock")
            .push((h.id.clone(), task.id.clone()));
        Ok(h)
    }
    async fn wait(&self, handle: &Handle) -> Result<Exit, RuntimeError> {
        self.inner.wait(handle).await
    }
    async fn health(&self, handle: &Handle) -> Result<Option<Health>, RuntimeError> {
        self.inner.health(handle).await
    }
    async fn stop(
        &self,
        handle: &Handle,
        signal: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let task = self
            .started
            .lock()
            .expect("lock")
            .iter()
            .find(|(c, _)| *c == handle.id)
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        let still = registered(&self.consul, &task).await;
        self.stops.lock().expect("lock").push((task, still));
        self.inner.stop(handle, signal, grace).await
    }
    async fn remove(&self, handle: &Handle) -> Result<(), RuntimeError> {
        self.inner.remove(handle).await
    }
    async fn list(&self, nodes: &BTreeSet<String>) -> Result<Vec<Existing>, RuntimeError> {
        self.inner.list(nodes).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_task_is_registered_and_deregistered_before_it_stops() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let ts = TestStore::open().await;
    let rt = RecordingRuntime::new(&c);
    let a = agent(&ts, "n1", rt.clone(), &fake);
    let t = task("web.1.abc", "web", "n1", "nginx:1.27");
    ts.assign(&t).await;
    let status = ts.wait_state(&t, TaskState::Running).await;
    let host_port = status
        .host_ports
        .first()
        .expect("a host port is reported")
        .published;
    eventually("the task is registered in consul", || registered(&c, &t.id)).await;

    let services = c.agent_services().await.expect("services");
    let svc = &services[&t.id];
    assert_eq!(svc.id, t.id, "registration ID is the task id");
    assert_eq!(svc.service, "web-public", "consul.name is the service name");
    assert_eq!(svc.port, host_port, "Port is the reported host port");
    assert_eq!(svc.address, NODE_ADDRESS, "Address is the node's address");
    assert_eq!(svc.tags.as_deref(), Some(&["http".to_string()][..]));
    let meta = svc.meta.clone().unwrap_or_default();
    assert_eq!(meta["shoal-service"], "default/web");
    assert_eq!(meta["shoal-node"], "n1");
    assert_eq!(meta["shoal-task"], t.id);
    assert_eq!(meta["team"], "a");
    let checks = c.agent_checks().await.expect("checks");
    let check = &checks[&format!("service:{}", t.id)];
    assert_eq!(check.check_type, "http");
    assert_eq!(check.service_id, t.id);

    ts.shut_down(&t).await;
    ts.wait_state(&t, TaskState::Shutdown).await;
    // The moment the status says shutdown, the registration is already gone …
    assert!(
        !registered(&c, &t.id).await,
        "the registration is gone once the task is shut down"
    );
    // … and it was gone before the container was stopped.
    assert_eq!(
        rt.stops(),
        vec![(t.id.clone(), false)],
        "the task was deregistered before its container was stopped"
    );
    a.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_assignment_is_deregistered_before_its_container_stops() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let ts = TestStore::open().await;
    let rt = RecordingRuntime::new(&c);
    let a = agent(&ts, "n1", rt.clone(), &fake);
    let t = task("api.1.abc", "api", "n1", "nginx:1.27");
    ts.assign(&t).await;
    eventually("the task is registered in consul", || registered(&c, &t.id)).await;
    ts.store
        .delete(&ts.keys.task(&t.node_id, &t.id))
        .await
        .expect("delete");
    eventually("the container is stopped", || async {
        !rt.stops().is_empty()
    })
    .await;
    assert_eq!(rt.stops(), vec![(t.id.clone(), false)]);
    assert!(!registered(&c, &t.id).await);
    a.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_that_exits_on_its_own_is_deregistered() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let ts = TestStore::open().await;
    let sim = Arc::new(SimRuntime::new());
    let a = agent(&ts, "n1", sim.clone(), &fake);
    let t = task("job.1.abc", "job", "n1", "nginx:1.27");
    ts.assign(&t).await;
    let status = ts.wait_state(&t, TaskState::Running).await;
    eventually("the task is registered in consul", || registered(&c, &t.id)).await;
    sim.exit(status.container_id.as_deref().expect("container id"), 1);
    ts.wait_state(&t, TaskState::Failed).await;
    eventually("the exited task is deregistered", || async {
        !registered(&c, &t.id).await
    })
    .await;
    a.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_registrations_of_this_node_are_removed_on_start() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let ts = TestStore::open().await;
    let reg = |id: &str, node: Option<&str>| AgentServiceRegistration {
        id: id.into(),
        name: "web-public".into(),
        address: NODE_ADDRESS.into(),
        port: 31000,
        meta: node
            .map(|n| [("shoal-node".to_string(), n.to_string())].into())
            .unwrap_or_default(),
        ..AgentServiceRegistration::default()
    };
    // Left over by this node's previous run (its task is gone), another node's, one not made
    // by Shoal, and one of a task this node still runs.
    for (id, node) in [
        ("web.1.gone", Some("n1")),
        ("web.2.other", Some("n2")),
        ("legacy", None),
        ("web.3.live", Some("n1")),
    ] {
        c.agent_service_register(&reg(id, node))
            .await
            .expect("registered");
    }
    let live = task("web.3.live", "web", "n1", "nginx:1.27");
    ts.assign(&live).await;

    let a = agent(&ts, "n1", Arc::new(SimRuntime::new()), &fake);
    eventually("the stale registration is removed", || async {
        !registered(&c, "web.1.gone").await
    })
    .await;
    let services = c.agent_services().await.expect("services");
    assert!(
        services.contains_key("web.2.other"),
        "another node's registration is kept"
    );
    assert!(
        services.contains_key("legacy"),
        "a registration Shoal did not make is kept"
    );
    let status = ts.wait_state(&live, TaskState::Running).await;
    let host_port = status.host_ports[0].published;
    eventually("the live task is registered with its new port", || async {
        c.agent_services()
            .await
            .is_ok_and(|s| s.get("web.3.live").is_some_and(|r| r.port == host_port))
    })
    .await;
    a.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_down_never_harms_a_task_and_registration_catches_up() {
    let mut fake = ConsulFake::start().await;
    let c = client(&fake);
    fake.stop();
    let ts = TestStore::open().await;
    let a = agent(&ts, "n1", Arc::new(SimRuntime::new()), &fake);
    let t = task("web.1.down", "web", "n1", "nginx:1.27");
    ts.assign(&t).await;
    let first = ts.wait_state(&t, TaskState::Running).await;
    // Consul stays down for a while: the task keeps running, untouched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = ts.status(&t).await.expect("status");
    assert_eq!(
        later.state,
        TaskState::Running,
        "the task stays running: {later:?}"
    );
    assert_eq!(later.container_id, first.container_id);

    // Consul comes back: the registration is retried until it lands.
    fake.restart().await;
    eventually("the task is registered once consul is back", || {
        registered(&c, &t.id)
    })
    .await;

    // Consul goes down again: shutting the task down still works.
    fake.stop();
    ts.shut_down(&t).await;
    ts.wait_state(&t, TaskState::Shutdown).await;
    // And the deregistration goes on in the background until Consul answers.
    fake.restart().await;
    eventually("the task is deregistered once consul is back", || async {
        !registered(&c, &t.id).await
    })
    .await;
    a.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_carries_deregister_critical_service_after() {
    // Consul's timers run 100 times faster: the 1 m DeregisterCriticalServiceAfter is 0.6 s.
    let fake = ConsulFake::start_scaled(0.01).await;
    let c = client(&fake);
    let ts = TestStore::open().await;
    let a = agent(&ts, "n1", Arc::new(SimRuntime::new()), &fake);
    let t = task("web.1.crit", "web", "n1", "nginx:1.27");
    ts.assign(&t).await;
    eventually("the task is registered in consul", || registered(&c, &t.id)).await;
    assert!(fake.set_check_status(&format!("service:{}", t.id), "critical"));
    eventually("consul reaps the critical registration", || async {
        !registered(&c, &t.id).await
    })
    .await;
    let s = ts.status(&t).await.expect("status");
    assert_eq!(
        s.state,
        TaskState::Running,
        "reaping in consul does not touch the task"
    );
    a.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_task_keeps_its_registration_across_an_agent_restart() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let ts = TestStore::open().await;
    let sim = Arc::new(SimRuntime::new());
    let a = agent(&ts, "n1", sim.clone(), &fake);
    let t = task("web.1.adopt", "web", "n1", "nginx:1.27");
    let gone = task("web.2.gone", "web", "n1", "nginx:1.27");
    ts.assign(&t).await;
    ts.assign(&gone).await;
    let status = ts.wait_state(&t, TaskState::Running).await;
    eventually("both tasks are registered", || async {
        registered(&c, &t.id).await && registered(&c, &gone.id).await
    })
    .await;
    // The agent stops; its tasks and their registrations outlive it.
    a.stop().await.expect("agent stops");
    assert!(
        registered(&c, &t.id).await,
        "the registration outlives the agent"
    );
    // While it is down, one assignment is removed (its container is an orphan on restart).
    ts.store
        .delete(&ts.keys.task(&gone.node_id, &gone.id))
        .await
        .expect("delete");

    let a = agent(&ts, "n1", sim.clone(), &fake);
    eventually("the unassigned task's registration is removed", || async {
        !registered(&c, &gone.id).await
    })
    .await;
    let services = c.agent_services().await.expect("services");
    let svc = services
        .get(&t.id)
        .expect("the adopted task stays registered");
    assert_eq!(svc.port, status.host_ports[0].published);
    let after = ts.status(&t).await.expect("status");
    assert_eq!(
        after.container_id, status.container_id,
        "the task was adopted"
    );
    a.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_consul_dropped_come_back_and_foreign_ones_go() {
    // Consul's timers run 100 times faster: the 1 m DeregisterCriticalServiceAfter is 0.6 s.
    let fake = ConsulFake::start_scaled(0.01).await;
    let c = client(&fake);
    let ts = TestStore::open().await;
    let endpoint = HealthEndpoint::start().await;
    let mut cfg = AgentConfig::new("n1");
    cfg.lease_ttl = Duration::from_secs(2);
    cfg.address = "127.0.0.1".into();
    cfg.consul = Some(ConsulConfig::new(fake.http_url()));
    cfg.consul_sync_interval = Duration::from_millis(300);
    let a = Agent::new(
        ts.store.clone(),
        ts.keys.clone(),
        cfg,
        Arc::new(SimRuntime::new()),
    )
    .spawn();

    // The task publishes the port the health endpoint listens on, so Consul's HTTP check
    // reaches a real server.
    let mut t = task("web.1.sync", "web", "n1", "nginx:1.27");
    let template = std::sync::Arc::make_mut(&mut t.template);
    template.ports[0].published = Some(endpoint.port);
    template.ports[0].mode = shoal_core::manifest::PortMode::Host;
    if let Some(consul) = template.consul.as_mut() {
        consul.check = Some(ConsulCheck {
            interval: Dur::millis(200),
            timeout: Dur::secs(1),
            ..http_check()
        });
    }
    t.template_hash = t.template.hash();
    ts.assign(&t).await;
    let first = ts.wait_state(&t, TaskState::Running).await;
    let check_id = format!("service:{}", t.id);
    eventually(
        "the task is registered and its real check passes",
        || async {
            registered(&c, &t.id).await
                && fake.check_status(&check_id).as_deref() == Some("passing")
        },
    )
    .await;

    // 1. Removed behind Shoal's back: it comes back.
    let removed = Instant::now();
    assert!(fake.remove_service(&t.id));
    eventually("the removed registration comes back", || {
        registered(&c, &t.id)
    })
    .await;
    println!(
        "a registration removed behind Shoal's back was back after {:?}",
        removed.elapsed()
    );

    // 2. The task stops answering its check: Consul reaps the registration while the task
    //    runs; once the check passes again the registration is back and stays.
    endpoint.set(false);
    eventually(
        "consul reaps the registration of the failing task",
        || async { fake.reaped_services().contains(&t.id) },
    )
    .await;
    endpoint.set(true);
    let healed = Instant::now();
    eventually("the registration is back with a passing check", || async {
        registered(&c, &t.id).await && fake.check_status(&check_id).as_deref() == Some("passing")
    })
    .await;
    println!(
        "after the check passed again, the reaped registration was back and passing after {:?}",
        healed.elapsed()
    );
    let reaped = fake.reaped_services().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fake.reaped_services().len(),
        reaped,
        "a passing registration is not reaped again"
    );
    assert!(registered(&c, &t.id).await, "and it stays registered");

    // 3. The Consul agent loses its state: everything comes back.
    assert_eq!(fake.lose_agent_state(), 1);
    eventually(
        "the registration comes back after consul lost its state",
        || registered(&c, &t.id),
    )
    .await;

    // 4. A registration under this node's name that is no task of this agent goes; another
    //    node's and one Shoal did not make stay.
    fake.add_service(
        "web.9.foreign",
        "web-public",
        31999,
        &[("shoal-node", "n1"), ("shoal-task", "web.9.foreign")],
    );
    fake.add_service("web.8.other", "web-public", 31998, &[("shoal-node", "n2")]);
    fake.add_service("legacy", "legacy", 31997, &[]);
    eventually("the foreign registration is removed", || async {
        !registered(&c, "web.9.foreign").await
    })
    .await;
    let services = c.agent_services().await.expect("services");
    assert!(
        services.contains_key("web.8.other"),
        "another node's is kept"
    );
    assert!(
        services.contains_key("legacy"),
        "one Shoal did not make is kept"
    );
    assert!(services.contains_key(&t.id), "the task's own is kept");

    // Through all of it the task kept running, untouched.
    let last = ts.status(&t).await.expect("status");
    assert_eq!(last.state, TaskState::Running);
    assert_eq!(last.container_id, first.container_id, "never restarted");
    a.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_record_lost_with_its_consul_session_comes_back_at_once() {
    // The agent's store is the fake Consul; its lease (a session) renews every 10 s.
    let fake = ConsulFake::start().await;
    let store = shoal_store::open_store(&fake.store_url())
        .await
        .expect("consul store");
    let keys = Keys::default();
    let mut cfg = AgentConfig::new("n1");
    cfg.lease_ttl = Duration::from_secs(30);
    let a = Agent::new(
        store.clone(),
        keys.clone(),
        cfg,
        Arc::new(SimRuntime::new()),
    )
    .spawn();
    let record = || async { store.get(&keys.node("n1")).await.ok().flatten() };
    eventually("the node is registered", || async {
        record().await.is_some()
    })
    .await;
    let before = record().await.expect("record").lease;

    // The Consul agent leaves (a routine restart): its node's sessions, and with them the
    // node record, are gone.
    let left = Instant::now();
    assert!(fake.leave() >= 1, "the agent's session went");
    eventually("the record is back under a new session", || async {
        record()
            .await
            .is_some_and(|kv| kv.lease.is_some() && kv.lease != before)
    })
    .await;
    println!(
        "node record back {:?} after the Consul agent left (renewals every 10 s)",
        left.elapsed()
    );
    assert_eq!(
        fake.renewals_of_missing_sessions(),
        0,
        "the agent registered again on seeing its record go, not after a failed renewal"
    );
    a.stop().await.expect("agent stops");
}
