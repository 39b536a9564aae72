//! The Service manifest: the Rust types behind the YAML users write, with Swarm's defaults.
//!
//! Every struct denies unknown fields and uses camelCase, so a typo is an error with a
//! location rather than a silently ignored setting. The JSON Schema served to editors is
//! generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secret::FileRef;
use crate::units::{ByteSize, Dur};

/// The only `apiVersion` Shoal understands today.
pub const API_VERSION: &str = "shoal/v1";
/// The only `kind` a manifest may have today.
pub const KIND_SERVICE: &str = "Service";
/// Namespace used when `metadata.namespace` is omitted.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A whole manifest document: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Shoal Service")]
pub struct Service {
    /// Must be `shoal/v1`.
    pub api_version: String,
    /// Must be `Service`.
    pub kind: String,
    /// Name, namespace and labels.
    pub metadata: Metadata,
    /// Desired state of the service.
    pub spec: ServiceSpec,
}

impl Service {
    /// `namespace/name`, the service's identity in messages and keys.
    pub fn id(&self) -> ServiceRef {
        ServiceRef {
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
        }
    }
}

/// Identifies a service: namespace and name.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRef {
    /// Namespace.
    pub namespace: String,
    /// Name within the namespace.
    pub name: String,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a string does not name a service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a service is named `namespace/name` or `name` (in namespace `default`), got {0:?}")]
pub struct ServiceRefError(pub String);

impl std::str::FromStr for ServiceRef {
    type Err = ServiceRefError;

    /// `namespace/name`, or `name` in namespace `default`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = s.split_once('/').unwrap_or((DEFAULT_NAMESPACE, s));
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(ServiceRefError(s.to_string()));
        }
        Ok(ServiceRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

/// Name, namespace and labels of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// DNS label (lowercase letters, digits, `-`; at most 63 characters), unique in its namespace.
    pub name: String,
    /// Namespace; `default` when omitted.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Free-form labels, used by label selectors (`apply --prune -l`, `get -l`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

/// How many tasks a service runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `replicas` tasks in slots 1..N, placed by the scheduler.
    #[default]
    Replicated,
    /// One task on every eligible node.
    Global,
    /// A job: one run to `job.completions` successes, at most `job.parallelism` tasks at once.
    ReplicatedJob,
    /// A job: one run to completion on every eligible node, including nodes that join while
    /// the run is active.
    GlobalJob,
}

impl Mode {
    /// Whether tasks run to completion (a job) rather than forever (a service).
    pub fn is_job(self) -> bool {
        matches!(self, Mode::ReplicatedJob | Mode::GlobalJob)
    }

    /// Whether the mode runs one task per eligible node.
    pub fn is_global(self) -> bool {
        matches!(self, Mode::Global | Mode::GlobalJob)
    }

    /// The name written in manifests (`replicated`, `global-job`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Replicated => "replicated",
            Mode::Global => "global",
            Mode::ReplicatedJob => "replicated-job",
            Mode::GlobalJob => "global-job",
        }
    }
}

/// What runs a task on a node. Nodes advertise the runtimes they offer.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// A Docker container.
    #[default]
    Docker,
    /// A host process running `command`.
    Process,
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Process => "process",
        })
    }
}

/// The desired state of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// `replicated` (default), `global`, `replicated-job` or `global-job`.
    #[serde(default)]
    pub mode: Mode,
    /// Number of tasks for a replicated service (default 1). Not allowed with `global`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// `docker` (default) or `process`.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Container image (required for the docker runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command and arguments (the image's entrypoint/cmd when empty; required for `process`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Ports the task listens on, and their host ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// CPU and memory reservations (for placement) and limits (enforced by the runtime).
    #[serde(default)]
    pub resources: Resources,
    /// Where tasks may run.
    #[serde(default)]
    pub placement: Placement,
    /// When a task that stopped is replaced.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How a template change is rolled out.
    #[serde(default)]
    pub update: UpdateConfig,
    /// How a rollback is rolled out.
    #[serde(default)]
    pub rollback: UpdateConfig,
    /// Health check run inside the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Signal sent to stop a task (default `SIGTERM`).
    #[serde(default = "default_stop_signal")]
    pub stop_signal: String,
    /// How long a task has to exit after the stop signal before it is killed (default 10s).
    #[serde(default = "default_stop_grace")]
    pub stop_grace_period: Dur,
    /// Volumes, bind mounts and tmpfs mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Secrets delivered as files under `/run/secrets` (in memory, never on the node's disk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileRef>,
    /// Configs delivered as files at their `target` path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileRef>,
    /// Service discovery registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// Job settings (only with `mode: replicated-job` or `global-job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<crate::job::JobSpec>,
}

impl ServiceSpec {
    /// Replica count a replicated service asks for (1 when omitted); `None` for global.
    pub fn desired_replicas(&self) -> Option<u64> {
        match self.mode {
            Mode::Replicated => Some(self.replicas.unwrap_or(1)),
            Mode::Global | Mode::ReplicatedJob | Mode::GlobalJob => None,
        }
    }
}

fn default_stop_signal() -> String {
    "SIGTERM".to_string()
}

fn default_stop_grace() -> Dur {
    Dur::secs(10)
}

/// Transport protocol of a port.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A port the task listens on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    /// Port inside the task.
    pub target: u16,
    /// Host port; omitted = a dynamic host port chosen at start and reported in the task status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// `ingress` (default: every node answers on `published` and forwards to a task anywhere;
    /// the task itself gets a dynamic host port) or `host` (the node running the task binds
    /// `published`; one task per node per port).
    #[serde(default)]
    pub mode: PortMode,
}

impl PortSpec {
    /// The host port the runtime binds for this port: `published` in host mode, dynamic
    /// (`None`) in ingress mode.
    pub fn host_port(&self) -> Option<u16> {
        match self.mode {
            PortMode::Host => self.published,
            PortMode::Ingress => None,
        }
    }

    /// The routing-mesh port every node answers on, for an ingress port with `published`.
    pub fn ingress_port(&self) -> Option<u16> {
        match self.mode {
            PortMode::Ingress => self.published,
            PortMode::Host => None,
        }
    }
}

/// How a published port is exposed (Swarm's `mode`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// Routing mesh: every ready node accepts on `published` and forwards to an eligible task.
    #[default]
    Ingress,
    /// The node running the task binds `published` itself.
    Host,
}

impl std::fmt::Display for PortMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortMode::Ingress => "ingress",
            PortMode::Host => "host",
        })
    }
}

/// Reservations and limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Set aside on the node at placement time.
    #[serde(default)]
    pub reservations: ResourceAmounts,
    /// Enforced by the runtime.
    #[serde(default)]
    pub limits: ResourceAmounts,
}

/// An amount of CPU and memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAmounts {
    /// CPUs, fractional (`0.25`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory (`64Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
}

/// How tasks are ranked among the nodes that pass the filters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementStrategy {
    /// Fewest tasks of this service, then fewest tasks overall (default).
    #[default]
    Spread,
    /// Fill the busiest node that still fits first.
    Binpack,
}

/// Placement rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Every constraint must hold: `node.labels.KEY ==|!= VALUE`, `node.hostname`, `node.id`,
    /// `node.role`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Spread preferences, applied in order: `{spread: node.labels.zone}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    /// At most this many tasks of the service per node (0 or omitted = no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u64>,
    /// `spread` (default) or `binpack`.
    #[serde(default)]
    pub strategy: PlacementStrategy,
}

/// One placement preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementPreference {
    /// Node attribute to spread over, e.g. `node.labels.zone`.
    pub spread: String,
}

/// When a stopped task is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Whatever the exit (default).
    #[default]
    Any,
    /// Only after a failure (non-zero exit, runtime error).
    OnFailure,
    /// Never.
    None,
}

/// Restart policy (Swarm's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartPolicy {
    /// `any` (default), `on-failure`, `none`.
    #[serde(default)]
    pub condition: RestartCondition,
    /// Wait between a task stopping and its replacement (default 5s).
    #[serde(default = "default_restart_delay")]
    pub delay: Dur,
    /// Restarts allowed within `window` (0 = unlimited).
    #[serde(default)]
    pub max_attempts: u64,
    /// Window over which attempts are counted (0 = unbounded).
    #[serde(default)]
    pub window: Dur,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay: default_restart_delay(),
            max_attempts: 0,
            window: Dur::default(),
        }
    }
}

fn default_restart_delay() -> Dur {
    Dur::secs(5)
}

/// Order of operations when replacing a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old task, then start the new one (default).
    #[default]
    StopFirst,
    /// Start the new task, stop the old once the new one runs (and is healthy).
    StartFirst,
}

/// What happens when a rollout's failures pass `maxFailureRatio`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureAction {
    /// Stop the rollout and wait for a new manifest (default).
    #[default]
    Pause,
    /// Carry on.
    Continue,
    /// Roll back to the previous template.
    Rollback,
}

/// Rolling update (or rollback) configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateConfig {
    /// Tasks replaced at once (default 1; 0 = all at once).
    #[serde(default = "default_parallelism")]
    pub parallelism: u64,
    /// Wait between batches (default 0s).
    #[serde(default)]
    pub delay: Dur,
    /// `stop-first` (default) or `start-first`.
    #[serde(default)]
    pub order: UpdateOrder,
    /// `pause` (default), `continue`, `rollback`.
    #[serde(default)]
    pub failure_action: FailureAction,
    /// How long a new task is watched for failure after it starts (default 5s).
    #[serde(default = "default_monitor")]
    pub monitor: Dur,
    /// Fraction of updated tasks allowed to fail during `monitor` (default 0).
    #[serde(default)]
    pub max_failure_ratio: f64,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: default_parallelism(),
            delay: Dur::default(),
            order: UpdateOrder::StopFirst,
            failure_action: FailureAction::Pause,
            monitor: default_monitor(),
            max_failure_ratio: 0.0,
        }
    }
}

fn default_parallelism() -> u64 {
    1
}

fn default_monitor() -> Dur {
    Dur::secs(5)
}

/// A health check (Docker's semantics).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Healthcheck {
    /// `[CMD, prog, args...]`, `[CMD-SHELL, "script"]` or `[NONE]`.
    pub test: Vec<String>,
    /// Between checks (default 30s).
    #[serde(default = "default_hc_interval")]
    pub interval: Dur,
    /// A check slower than this fails (default 30s).
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    /// Consecutive failures before unhealthy (default 3).
    #[serde(default = "default_hc_retries")]
    pub retries: u32,
    /// Failures during this initial period do not count (default 0s).
    #[serde(default)]
    pub start_period: Dur,
}

fn default_hc_interval() -> Dur {
    Dur::secs(30)
}
fn default_hc_timeout() -> Dur {
    Dur::secs(30)
}
fn default_hc_retries() -> u32 {
    3
}

/// Kind of mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A named volume (default).
    #[default]
    Volume,
    /// A host path.
    Bind,
    /// An in-memory filesystem.
    Tmpfs,
}

/// A mount into the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// `volume` (default), `bind`, `tmpfs`.
    #[serde(rename = "type", default)]
    pub kind: MountType,
    /// Volume name or host path (not used by tmpfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Absolute path inside the task.
    pub target: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// Service discovery settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discovery {
    /// Register running tasks in the node's local Consul agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul: Option<ConsulDiscovery>,
}

/// Consul registration of a task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsulDiscovery {
    /// Consul service name (the Shoal service name when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Consul tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Consul service meta.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Which published port to register (the first port when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The Consul check attached to the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<ConsulCheck>,
}

/// A Consul health check for a registered task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsulCheck {
    /// HTTP path checked on the task's address and port (`/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Check by opening a TCP connection to the task's address and port.
    #[serde(default)]
    pub tcp: bool,
    /// Between checks (default 10s).
    #[serde(default = "default_consul_interval")]
    pub interval: Dur,
    /// Check timeout (default 2s).
    #[serde(default = "default_consul_timeout")]
    pub timeout: Dur,
    /// Consul removes the registration after it has been critical this long (default 1m).
    #[serde(default = "default_deregister_after")]
    pub deregister_critical_service_after: Dur,
}

fn default_consul_interval() -> Dur {
    Dur::secs(10)
}
fn default_consul_timeout() -> Dur {
    Dur::secs(2)
}
fn default_deregister_after() -> Dur {
    Dur::secs(60)
}

#[cfg(test)]
mod tests {
    use super::ServiceRef;

    #[test]
    fn service_refs_parse_with_the_default_namespace() {
        let r: ServiceRef = "shop/web".parse().unwrap();
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("shop", "web"));
        let r: ServiceRef = "web".parse().unwrap();
        assert_eq!(r.to_string(), "default/web");
        for bad in ["", "/web", "shop/", "a/b/c"] {
            let e = bad.parse::<ServiceRef>().unwrap_err();
            assert!(e.to_string().contains("namespace/name"), "{e}");
        }
    }
}
