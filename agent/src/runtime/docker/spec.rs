//! Translation of a task into Docker's container configuration, and of Docker's answers
//! (inspect, errors) back into Shoal's terms.

use std::collections::HashMap;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HealthConfig, HealthStatusEnum, HostConfig,
    Mount, MountType, PortBinding as DockerPortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use shoal_core::manifest::{MountType as ShoalMountType, PortSpec};
use shoal_core::model::{Health, PortBinding, Task};

use super::super::{
    Exit, LABEL_NODE, LABEL_SERVICE, LABEL_TASK, RuntimeError, TaskFiles, service_label,
};

/// Container name of a task.
pub fn container_name(task_id: &str) -> String {
    format!("shoal-{task_id}")
}

/// Docker's `port/proto` key of a port.
fn port_key(p: &PortSpec) -> String {
    format!("{}/{}", p.target, p.protocol)
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The labels every Shoal container carries.
pub fn labels(task: &Task) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_TASK.to_string(), task.id.clone()),
        (LABEL_SERVICE.to_string(), service_label(task)),
        (LABEL_NODE.to_string(), task.node_id.clone()),
    ])
}

/// How the node wires a container: the address published ports bind (`None`: every
/// address) and whether the node's resolver serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wiring {
    /// Address published ports bind.
    pub host_ip: Option<String>,
    /// Whether the container's resolver is the node's (service names).
    pub names: bool,
}

/// The create body of a task's container; `files` are bind-mounted read-only.
pub fn create_body(task: &Task, files: &TaskFiles, wiring: &Wiring) -> ContainerCreateBody {
    let t = &task.template;
    let port_bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = t
        .ports
        .iter()
        .map(|p| {
            let binding = DockerPortBinding {
                host_ip: wiring.host_ip.clone(),
                host_port: Some(p.host_port().map(|n| n.to_string()).unwrap_or_default()),
            };
            (port_key(p), Some(vec![binding]))
        })
        .collect();
    let mounts: Vec<Mount> = t
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: m.source.clone(),
            typ: Some(match m.kind {
                ShoalMountType::Volume => MountType::VOLUME,
                ShoalMountType::Bind => MountType::BIND,
                ShoalMountType::Tmpfs => MountType::TMPFS,
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .chain(files.files.iter().map(|f| Mount {
            target: Some(f.container_path.clone()),
            source: Some(f.host_path.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        }))
        .collect();
    let healthcheck = t.healthcheck.as_ref().map(|hc| HealthConfig {
        test: Some(hc.test.clone()),
        interval: Some(nanos(hc.interval.get())),
        timeout: Some(nanos(hc.timeout.get())),
        retries: Some(i64::from(hc.retries)),
        start_period: Some(nanos(hc.start_period.get())),
        start_interval: None,
    });
    let host_config = HostConfig {
        nano_cpus: t.limits.cpus.map(|c| (c * 1e9).round() as i64),
        memory: t
            .limits
            .memory
            .map(|m| i64::try_from(m.bytes()).unwrap_or(i64::MAX)),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        mounts: (!mounts.is_empty()).then_some(mounts),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        dns: wiring
            .names
            .then(|| vec![shoal_core::endpoints::RESOLVER_ADDRESS.to_string()]),
        dns_search: wiring.names.then(|| {
            vec![
                format!("{}.shoal", task.service.namespace),
                "shoal".to_string(),
            ]
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: t.image.clone(),
        cmd: (!t.command.is_empty()).then(|| t.command.clone()),
        env: (!t.env.is_empty()).then(|| t.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        exposed_ports: (!t.ports.is_empty()).then(|| t.ports.iter().map(port_key).collect()),
        labels: Some(labels(task)),
        stop_signal: Some(t.stop_signal.clone()),
        stop_timeout: Some(i64::try_from(t.stop_grace_period.get().as_secs()).unwrap_or(i64::MAX)),
        healthcheck,
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Host ports bound for the task's ports, read from an inspect.
pub fn host_ports(task_ports: &[PortSpec], inspect: &ContainerInspectResponse) -> Vec<PortBinding> {
    let map = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref());
    task_ports
        .iter()
        .filter_map(|p| {
            let bindings = map?.get(&port_key(p))?.as_ref()?;
            let pick = bindings
                .iter()
                .find(|b| b.host_ip.as_deref() == Some("0.0.0.0"))
                .or_else(|| bindings.first())?;
            let published = pick.host_port.as_deref()?.parse().ok()?;
            Some(PortBinding {
                target: p.target,
                published,
                protocol: p.protocol,
            })
        })
        .collect()
}

/// Host ports of a container found by listing (for adoption): every published port.
pub fn all_host_ports(inspect: &ContainerInspectResponse) -> Vec<PortBinding> {
    let Some(map) = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
    else {
        return Vec::new();
    };
    let mut out: Vec<PortBinding> = map
        .iter()
        .filter_map(|(key, bindings)| {
            let (port, proto) = key.split_once('/')?;
            let target: u16 = port.parse().ok()?;
            let protocol = match proto {
                "udp" => shoal_core::manifest::Protocol::Udp,
                _ => shoal_core::manifest::Protocol::Tcp,
            };
            let b = bindings.as_ref()?;
            let pick = b
                .iter()
                .find(|b| b.host_ip.as_deref() == Some("0.0.0.0"))
                .or_else(|| b.first())?;
            let published = pick.host_port.as_deref()?.parse().ok()?;
            Some(PortBinding {
                target,
                published,
                protocol,
            })
        })
        .collect();
    out.sort_by_key(|p| (p.target, p.published));
    out
}

/// How the container ended, if it has.
pub fn exit_of(inspect: &ContainerInspectResponse) -> Option<Exit> {
    let state = inspect.state.as_ref()?;
    if state.running == Some(true) || state.restarting == Some(true) || state.paused == Some(true) {
        return None;
    }
    let code = state.exit_code.unwrap_or(0);
    let message = if state.oom_killed == Some(true) {
        Some("the container ran out of memory (OOM killed)".to_string())
    } else {
        state.error.clone().filter(|e| !e.is_empty())
    };
    Some(Exit { code, message })
}

/// The container's health, `None` without a healthcheck.
pub fn health_of(inspect: &ContainerInspectResponse) -> Option<Health> {
    let status = inspect.state.as_ref()?.health.as_ref()?.status?;
    match status {
        HealthStatusEnum::STARTING => Some(Health::Starting),
        HealthStatusEnum::HEALTHY => Some(Health::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    }
}

/// Status code of a Docker error answered by the daemon.
pub fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Docker's own message for an error.
pub fn message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// Classifies a Docker error: answers from the daemon are permanent (except gateway and
/// unavailable answers); failures to reach it are temporary.
pub fn classify(e: DockerError) -> RuntimeError {
    match &e {
        DockerError::DockerResponseServerError { status_code, .. }
            if !matches!(status_code, 502..=504) =>
        {
            RuntimeError::Permanent(message(&e))
        }
        DockerError::DockerStreamError { .. } | DockerError::JsonDataError { .. } => {
            RuntimeError::Permanent(message(&e))
        }
        _ => RuntimeError::Temporary(format!("cannot reach Docker: {}", message(&e))),
    }
}

/// Splits `repo[:tag]` into the pull's image and tag (`latest` when absent; digests kept).
pub fn image_and_tag(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_string(), String::new());
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_into_repo_and_tag() {
        assert_eq!(
            image_and_tag("busybox"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(image_and_tag("a/b:1.2"), ("a/b".into(), "1.2".into()));
        assert_eq!(
            image_and_tag("host:5000/b"),
            ("host:5000/b".into(), "latest".into())
        );
        assert_eq!(
            image_and_tag("x@sha256:ab"),
            ("x@sha256:ab".into(), String::new())
        );
    }
}
