//! The `docker` runtime: runs tasks as Docker containers through the Engine API (bollard).
//!
//! A task's secrets and configs are bind-mounted read-only, one file each, from the node's
//! in-memory filesystem (see [`crate::secrets`]).
//!
//! Containers are named `shoal-<task>` and carry the labels `io.shoal.task`,
//! `io.shoal.service` and `io.shoal.node`; Docker's restart policy is `no` (restarts are new
//! tasks, decided by the controller). Images are pulled only when absent. One event stream,
//! filtered by this node's label, notices a container dying at once; after the stream breaks
//! it is re-opened and every waiter re-inspects its container so no exit is missed.

mod spec;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use shoal_core::manifest::RuntimeKind;
use shoal_core::model::{Health, Task};
use tokio::sync::watch;

pub use spec::container_name;

use super::{
    Existing, Exit, Handle, LABEL_CLUSTER, LABEL_NODE, LABEL_SERVICE, LABEL_TASK, Runtime,
    RuntimeError, TaskFiles,
};
use crate::network::Network;
use spec::classify;

type Exits = Arc<Mutex<HashMap<String, watch::Sender<Option<Exit>>>>>;

/// Runs tasks as Docker containers.
pub struct DockerRuntime {
    docker: Docker,
    node: String,
    /// Labelled on every container created (`io.shoal.cluster`).
    cluster: std::sync::OnceLock<String>,
    exits: Exits,
    resync: watch::Receiver<u64>,
    events: tokio::task::JoinHandle<()>,
    wiring: OnceLock<spec::Wiring>,
    network: OnceLock<(Network, tokio::task::AbortHandle)>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime").finish_non_exhaustive()
    }
}

impl Drop for DockerRuntime {
    fn drop(&mut self) {
        self.events.abort();
        if let Some((_, follow)) = self.network.get() {
            follow.abort();
        }
    }
}

/// The sandbox (network namespace path) and namespace of a running container.
fn sandbox_of(i: &bollard::models::ContainerInspectResponse) -> Option<(PathBuf, String)> {
    let key = i.network_settings.as_ref()?.sandbox_key.clone()?;
    if key.is_empty() || i.state.as_ref()?.running != Some(true) {
        return None;
    }
    let service = i.config.as_ref()?.labels.as_ref()?.get(LABEL_SERVICE)?;
    let (ns, _) = service.split_once('/')?;
    Some((PathBuf::from(key), ns.to_string()))
}

/// Every second: opens the sockets of running containers that lack them (adopted after an
/// agent restart, or restarted by hand) and closes those of containers that are gone.
async fn follow_sandboxes(docker: Docker, node: String, network: Network) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let filters = HashMap::from([
            ("label", vec![format!("{LABEL_NODE}={node}")]),
            ("status", vec!["running".to_string()]),
        ]);
        let opts = ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        let Ok(list) = docker.list_containers(Some(opts)).await else {
            continue;
        };
        let running: BTreeSet<String> = list.into_iter().filter_map(|c| c.id).collect();
        let attached = network.attached();
        for gone in attached.difference(&running) {
            network.detach(gone);
        }
        for id in running.difference(&attached) {
            let Ok(i) = docker.inspect_container(id, None).await else {
                continue;
            };
            if let Some((path, ns)) = sandbox_of(&i)
                && let Err(e) = network.attach(id, &path, &ns).await
            {
                network.metrics().error("attach");
                tracing::warn!(container = %id, error = %e, "cannot open service networking in the container");
            }
        }
    }
}

fn exit_sender(exits: &Exits, id: &str) -> watch::Sender<Option<Exit>> {
    let mut map = exits.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(id.to_string())
        .or_insert_with(|| watch::channel(None).0)
        .clone()
}

/// Follows Docker's `die` events for `node`'s containers until the runtime is dropped.
async fn follow_events(docker: Docker, node: String, exits: Exits, resync: watch::Sender<u64>) {
    let retry = shoal_store::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut delays = retry.delays();
    loop {
        let filters = HashMap::from([
            ("type", vec!["container".to_string()]),
            ("event", vec!["die".to_string()]),
            ("label", vec![format!("{LABEL_NODE}={node}")]),
        ]);
        let opts = EventsOptionsBuilder::default().filters(&filters).build();
        let mut stream = docker.events(Some(opts));
        // Waiters re-inspect: anything that died while the stream was down is noticed.
        resync.send_modify(|n| *n += 1);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(msg) => {
                    delays.reset();
                    let Some(actor) = msg.actor else { continue };
                    let Some(id) = actor.id else { continue };
                    let attrs = actor.attributes.unwrap_or_default();
                    let code = attrs
                        .get("exitCode")
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(-1);
                    tracing::debug!(container = %id, code, "container died");
                    exit_sender(&exits, &id).send_if_modified(|x| {
                        if x.is_some() {
                            return false;
                        }
                        *x = Some(Exit {
                            code,
                            message: None,
                        });
                        true
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "docker event stream failed");
                    break;
                }
            }
        }
        tokio::time::sleep(delays.next_delay()).await;
    }
}

impl DockerRuntime {
    /// Connects to the local Docker Engine (default socket or `DOCKER_HOST`), negotiates the
    /// API version and starts following the events of `node`'s containers.
    pub async fn connect(node: &str) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| RuntimeError::Temporary(format!("cannot connect to Docker: {e}")))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Temporary(format!("cannot reach Docker: {e}")))?;
        let exits: Exits = Arc::new(Mutex::new(HashMap::new()));
        let (resync_tx, resync) = watch::channel(0);
        let events = tokio::spawn(follow_events(
            docker.clone(),
            node.to_string(),
            exits.clone(),
            resync_tx,
        ));
        Ok(DockerRuntime {
            docker,
            node: node.to_string(),
            cluster: std::sync::OnceLock::new(),
            exits,
            resync,
            events,
            wiring: OnceLock::new(),
            network: OnceLock::new(),
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn inspect(
        &self,
        id: &str,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, RuntimeError> {
        match self.docker.inspect_container(id, None).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if spec::status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn force_remove(&self, id: &str) -> Result<(), RuntimeError> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if spec::status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// The create body, labelled with the cluster id.
    fn body(
        &self,
        task: &Task,
        files: &TaskFiles,
        wiring: &spec::Wiring,
    ) -> bollard::models::ContainerCreateBody {
        let mut body = spec::create_body(task, files, wiring);
        if let Some(c) = self.cluster.get() {
            body.labels
                .get_or_insert_default()
                .insert(LABEL_CLUSTER.to_string(), c.clone());
        }
        body
    }

    async fn create(&self, task: &Task, files: &TaskFiles) -> Result<String, RuntimeError> {
        let name = container_name(&task.id);
        let wiring = self.wiring.get().cloned().unwrap_or_default();
        let opts = || CreateContainerOptionsBuilder::default().name(&name).build();
        match self
            .docker
            .create_container(Some(opts()), self.body(task, files, &wiring))
            .await
        {
            Ok(r) => Ok(r.id),
            Err(e) if spec::status_code(&e) == Some(409) => {
                // Left over from an earlier attempt at this very task: start afresh.
                tracing::info!(task = %task.id, "removing a leftover container of this task");
                self.force_remove(&name).await?;
                self.docker
                    .create_container(Some(opts()), self.body(task, files, &wiring))
                    .await
                    .map(|r| r.id)
                    .map_err(classify)
            }
            Err(e) => Err(classify(e)),
        }
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn offers(&self) -> Vec<RuntimeKind> {
        vec![RuntimeKind::Docker]
    }

    fn tasks_outlive_agent(&self) -> bool {
        true
    }

    fn set_cluster(&self, cluster: &str) {
        let _ = self.cluster.set(cluster.to_string());
    }

    async fn prepare(&self, task: &Task) -> Result<(), RuntimeError> {
        let Some(image) = task.template.image.as_deref() else {
            return Err(RuntimeError::Permanent(
                "the docker runtime needs an image".into(),
            ));
        };
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if spec::status_code(&e) == Some(404) => {}
            Err(e) => return Err(classify(e)),
        }
        tracing::info!(task = %task.id, image, "pulling image");
        let (from, tag) = spec::image_and_tag(image);
        let mut b = CreateImageOptionsBuilder::default().from_image(&from);
        if !tag.is_empty() {
            b = b.tag(&tag);
        }
        let mut pull = self.docker.create_image(Some(b.build()), None, None);
        while let Some(step) = pull.next().await {
            // A daemon that answered but could not pull: the image cannot be had (permanent).
            step.map_err(|e| match classify(e) {
                RuntimeError::Permanent(m) => RuntimeError::Permanent(format!(
                    "image {image} is not present on this node and could not be pulled: {m}"
                )),
                temporary => temporary,
            })?;
        }
        Ok(())
    }

    async fn start(&self, task: &Task, files: &TaskFiles) -> Result<Handle, RuntimeError> {
        let id = self.create(task, files).await?;
        // Subscribe before starting so a container dying at once is not missed.
        exit_sender(&self.exits, &id);
        if let Err(e) = self.docker.start_container(&id, None).await {
            let err = classify(e);
            if !err.is_temporary() {
                let _ = self.force_remove(&id).await;
            }
            return Err(err);
        }
        let inspect = self.inspect(&id).await?;
        let host_ports = match &inspect {
            Some(i) => spec::host_ports(&task.template.ports, i),
            None => Vec::new(),
        };
        // The resolver and service listeners open before the task reports running.
        if let (Some((network, _)), Some((path, ns))) =
            (self.network.get(), inspect.as_ref().and_then(sandbox_of))
            && let Err(e) = network.attach(&id, &path, &ns).await
        {
            network.metrics().error("attach");
            tracing::warn!(task = %task.id, error = %e, "cannot open service networking in the container");
        }
        Ok(Handle { id, host_ports })
    }

    async fn wait(&self, handle: &Handle) -> Result<Exit, RuntimeError> {
        let mut rx = exit_sender(&self.exits, &handle.id).subscribe();
        let mut resync = self.resync.clone();
        loop {
            let seen = rx.borrow().clone();
            if let Some(exit) = seen {
                return Ok(self.enrich(&handle.id, exit).await);
            }
            match self.inspect(&handle.id).await {
                Ok(None) => {
                    return Err(RuntimeError::Permanent(format!(
                        "container {} no longer exists",
                        handle.id
                    )));
                }
                Ok(Some(i)) => {
                    if let Some(exit) = spec::exit_of(&i) {
                        return Ok(exit);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "inspect failed while waiting"),
            }
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                _ = resync.changed() => {}
                // Belt and braces: re-inspect now and then even if events are quiet.
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }

    async fn health(&self, handle: &Handle) -> Result<Option<Health>, RuntimeError> {
        Ok(self
            .inspect(&handle.id)
            .await?
            .as_ref()
            .and_then(spec::health_of))
    }

    async fn stop(
        &self,
        handle: &Handle,
        _signal: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        // The stop signal was set at create; `t` is the grace period before SIGKILL.
        let secs = i32::try_from(grace.as_secs_f64().ceil() as i64).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::default().t(secs).build();
        match self.docker.stop_container(&handle.id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(spec::status_code(&e), Some(304 | 404)) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    fn configure_network(&self, address: Option<IpAddr>, network: Option<Network>) {
        let _ = self.wiring.set(spec::Wiring {
            host_ip: address.map(|a| a.to_string()),
            names: network.is_some(),
        });
        if let Some(n) = network {
            let follow = tokio::spawn(follow_sandboxes(
                self.docker.clone(),
                self.node.clone(),
                n.clone(),
            ));
            if let Err((_, follow)) = self.network.set((n, follow.abort_handle())) {
                follow.abort();
            }
        }
    }

    async fn remove(&self, handle: &Handle) -> Result<(), RuntimeError> {
        if let Some((n, _)) = self.network.get() {
            n.detach(&handle.id);
        }
        self.force_remove(&handle.id).await?;
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&handle.id);
        Ok(())
    }

    async fn logs(
        &self,
        node_id: &str,
        task_id: &str,
        query: &shoal_core::logs::LogQuery,
    ) -> Result<Option<crate::logs::Lines>, RuntimeError> {
        crate::logs::docker::read(&self.docker, node_id, task_id, query).await
    }

    async fn list(&self, nodes: &BTreeSet<String>) -> Result<Vec<Existing>, RuntimeError> {
        let mut out = Vec::new();
        for node in nodes {
            let filters = HashMap::from([("label", vec![format!("{LABEL_NODE}={node}")])]);
            let opts = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            let list = self
                .docker
                .list_containers(Some(opts))
                .await
                .map_err(classify)?;
            for c in list {
                let Some(id) = c.id else { continue };
                let labels = c.labels.unwrap_or_default();
                let Some(task_id) = labels.get(LABEL_TASK).cloned() else {
                    continue;
                };
                let Some(i) = self.inspect(&id).await? else {
                    continue;
                };
                out.push(Existing {
                    task_id,
                    node_id: node.clone(),
                    handle: Handle {
                        id,
                        host_ports: spec::all_host_ports(&i),
                    },
                    exit: spec::exit_of(&i),
                    cluster: labels.get(LABEL_CLUSTER).cloned(),
                });
            }
        }
        out.sort_by(|a, b| {
            a.task_id
                .cmp(&b.task_id)
                .then(a.handle.id.cmp(&b.handle.id))
        });
        Ok(out)
    }
}

impl DockerRuntime {
    /// Adds what inspect knows (OOM kill, Docker's error) to an exit seen in the event stream.
    async fn enrich(&self, id: &str, exit: Exit) -> Exit {
        match self.inspect(id).await {
            Ok(Some(i)) => match spec::exit_of(&i) {
                Some(e) => Exit {
                    code: e.code,
                    message: e.message.or(exit.message),
                },
                None => exit,
            },
            _ => exit,
        }
    }
}
