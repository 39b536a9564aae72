//! The records Shoal components write to the store (JSON, camelCase): nodes, node settings,
//! tasks, task statuses and service statuses. Each has exactly one writer (see `keys`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::manifest::{
    ConsulDiscovery, Healthcheck, Mount, PortSpec, Protocol, ResourceAmounts, RuntimeKind,
    ServiceRef, ServiceSpec,
};
use crate::secret::FileRef;
use crate::units::{ByteSize, Dur};

mod status;
pub use status::{Condition, Event, RolloutRecord, RolloutState, RolloutStatus, ServiceStatus};

/// Errors decoding or validating model records.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A task state name that does not exist.
    #[error("unknown task state {0:?}")]
    UnknownState(String),
    /// A state change that would go backwards or leave a final state.
    #[error("task state cannot move from {from} to {to}")]
    Backwards {
        /// Current state.
        from: TaskState,
        /// Requested state.
        to: TaskState,
    },
    /// A record that is not valid JSON for its type.
    #[error("invalid {what} record: {source}")]
    Json {
        /// Record type.
        what: &'static str,
        /// Decoder error.
        #[source]
        source: serde_json::Error,
    },
}

/// Wall-clock time in milliseconds since the Unix epoch, written as RFC 3339 in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as u64)
    }
    /// Milliseconds since the epoch.
    pub fn millis(self) -> u64 {
        self.0
    }
    /// This time plus a duration.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
    /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_millis(self.0);
        write!(f, "{}", humantime::format_rfc3339_millis(t))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)?;
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis();
        Ok(Timestamp(ms as u64))
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "date-time"})
    }
}

/// Operator-set availability of a node (Swarm's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Receives new tasks.
    #[default]
    Active,
    /// Keeps its tasks, receives no new ones.
    Pause,
    /// Its tasks move elsewhere; receives none.
    Drain,
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        })
    }
}

impl FromStr for Availability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(Availability::Active),
            "pause" => Ok(Availability::Pause),
            "drain" => Ok(Availability::Drain),
            _ => Err(format!(
                "unknown availability {s:?} (expected active, pause or drain)"
            )),
        }
    }
}

/// CPU and memory a node offers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capacity {
    /// CPUs.
    pub cpus: f64,
    /// Memory.
    pub memory: ByteSize,
}

/// What an agent says about its node (`nodes/<id>`, bound to the agent's lease).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Node id (unique, stable across agent restarts).
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Address other hosts reach the node's tasks on.
    pub address: String,
    /// Engine labels given to the agent (`--label storage=ssd`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Runtimes the agent offers.
    pub runtimes: Vec<RuntimeKind>,
    /// Capacity for reservations.
    pub capacity: Capacity,
    /// Role for `node.role` constraints (`worker` unless set).
    #[serde(default = "default_role")]
    pub role: String,
    /// The agent holding this registration: an id kept in its data directory, so the same
    /// agent restarting takes its registration back while another agent with the same node id
    /// is refused.
    #[serde(default)]
    pub instance: String,
    /// Version of the agent binary.
    pub agent_version: String,
    /// When the agent registered.
    pub started_at: Timestamp,
    /// Why service names and addresses are unavailable to this node's tasks, naming the
    /// privilege or command the agent lacks (absent when they work or networking is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_unavailable: Option<String>,
    /// Where the agent serves its tasks' output (`http://ADDR:PORT` or `https://…`, from
    /// `shoal agent --listen`); absent when it does not listen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_url: Option<String>,
}

fn default_role() -> String {
    "worker".to_string()
}

/// Operator settings for a node (`nodeconfig/<id>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    /// Availability (default active).
    #[serde(default)]
    pub availability: Availability,
    /// Extra labels, added to (and overriding) the agent's.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Set by `shoal node rm`: the controller deletes the node's tasks, their statuses and
    /// this record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// A node as placement sees it: what the agent reports plus operator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Agent record.
    pub info: NodeInfo,
    /// Operator settings.
    pub config: NodeConfig,
    /// Whether the node's lease is alive (its `nodes/` key exists).
    pub ready: bool,
}

/// The lifecycle of a task. Ordered: a task's state only moves forward.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Written by the controller; not yet seen by the agent.
    Assigned,
    /// The agent has seen the task.
    Accepted,
    /// Preparing (pulling the image, creating the container).
    Preparing,
    /// Starting.
    Starting,
    /// Running.
    Running,
    /// Exited with code 0.
    Complete,
    /// Exited non-zero or could not run.
    Failed,
    /// Stopped because its desired state became shutdown.
    Shutdown,
    /// Refused by the agent (e.g. no such image, runtime not offered).
    Rejected,
    /// Its node is gone; marked by the controller.
    Orphaned,
}

impl TaskState {
    /// Every state, in order.
    pub const ALL: [TaskState; 10] = [
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Failed,
        TaskState::Shutdown,
        TaskState::Rejected,
        TaskState::Orphaned,
    ];

    /// Whether the state is final (the task will never run again).
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// Lowercase name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Failed => "failed",
            TaskState::Shutdown => "shutdown",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// Checks that moving from `self` to `to` goes forward and does not leave a final state.
    pub fn check_transition(self, to: TaskState) -> Result<(), ModelError> {
        if to > self && !self.is_terminal() {
            Ok(())
        } else {
            Err(ModelError::Backwards { from: self, to })
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ModelError::UnknownState(s.to_string()))
    }
}

/// What the controller wants a task to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Run it.
    #[default]
    Running,
    /// Stop it.
    Shutdown,
}

/// Where a task sits in its service.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Slot {
    /// Replicated services: slot 1..=replicas.
    Replica(u64),
    /// Global services: one slot per node.
    Node(String),
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Replica(n) => write!(f, "{n}"),
            Slot::Node(n) => f.write_str(n),
        }
    }
}

/// The part of a service spec a task is made from. A change here is a rollout;
/// anything else (replicas, update policy, ...) is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskTemplate {
    /// Runtime that runs the task.
    pub runtime: RuntimeKind,
    /// Image (docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command and arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Limits enforced by the runtime.
    #[serde(default)]
    pub limits: ResourceAmounts,
    /// Reservations (kept for accounting on the node).
    #[serde(default)]
    pub reservations: ResourceAmounts,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Stop signal.
    pub stop_signal: String,
    /// Grace period before kill.
    pub stop_grace_period: Dur,
    /// Consul registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul: Option<ConsulDiscovery>,
    /// Placement constraints (a change moves tasks, as in Swarm).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Secrets the task receives as files (references only; the agent fetches the values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileRef>,
    /// Configs the task receives as files (references only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileRef>,
}

impl TaskTemplate {
    /// The template of a service spec.
    pub fn from_spec(spec: &ServiceSpec) -> Self {
        TaskTemplate {
            runtime: spec.runtime,
            image: spec.image.clone(),
            command: spec.command.clone(),
            env: spec.env.clone(),
            ports: spec.ports.clone(),
            limits: spec.resources.limits.clone(),
            reservations: spec.resources.reservations.clone(),
            mounts: spec.mounts.clone(),
            healthcheck: spec.healthcheck.clone(),
            stop_signal: spec.stop_signal.clone(),
            stop_grace_period: spec.stop_grace_period,
            consul: spec.discovery.as_ref().and_then(|d| d.consul.clone()),
            constraints: spec.placement.constraints.clone(),
            secrets: spec.secrets.clone(),
            configs: spec.configs.clone(),
        }
    }

    /// A stable hash of the template (hex FNV-1a of its canonical JSON): equal templates,
    /// equal hashes, across processes and versions.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// A task assignment (`tasks/<node>/<task>`), written by the controller. Immutable except for
/// `desiredState` and `orphaned`.
///
/// `T` is how the template is held: decoded and shared (the default), or as the bytes it is
/// stored as ([`StoredTask`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "Task")]
pub struct Task<T = Arc<TaskTemplate>> {
    /// Task id, unique forever (`<service>.<slot>.<suffix>`).
    pub id: String,
    /// Owning service.
    pub service: ServiceRef,
    /// Slot in the service.
    pub slot: Slot,
    /// Node the task is assigned to.
    pub node_id: String,
    /// Revision of the manifest the task was made from.
    pub generation: i64,
    /// Hash of `template`.
    pub template_hash: String,
    /// What to run: shared by the tasks made from one template (a service's replicas), which
    /// copying a task does not copy.
    pub template: T,
    /// What the controller wants.
    pub desired_state: DesiredState,
    /// Restarts of this slot counted by the restart policy (0 for the first task).
    #[serde(default)]
    pub attempt: u64,
    /// Set by the controller when the node is gone.
    #[serde(default)]
    pub orphaned: bool,
    /// The job run the task belongs to (jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    /// When the controller created the task.
    pub created_at: Timestamp,
}

impl Task {
    /// A task of `service` in replica `slot` on `node`, running `template` as the first task of
    /// its slot at generation 1, created at `created_at` (samples and tests).
    pub fn replica(
        id: impl Into<String>,
        service: ServiceRef,
        slot: u64,
        node: impl Into<String>,
        template: TaskTemplate,
        created_at: Timestamp,
    ) -> Task {
        Task {
            id: id.into(),
            service,
            slot: Slot::Replica(slot),
            node_id: node.into(),
            generation: 1,
            template_hash: template.hash(),
            template: Arc::new(template),
            desired_state: DesiredState::Running,
            attempt: 0,
            orphaned: false,
            run: None,
            created_at,
        }
    }
}

/// Encodes tasks as they are stored, each distinct template (by identity: a service's
/// replicas share one) encoded once and copied into every task that holds it: a plan that
/// creates a thousand replicas of one service encodes their template once, not a thousand
/// times. The bytes are [`encode`]'s.
#[derive(Default)]
pub struct TaskEncoder {
    /// Templates encoded so far, by address (a plan holds few).
    encoded: Vec<(Arc<TaskTemplate>, Box<serde_json::value::RawValue>)>,
}

impl TaskEncoder {
    /// `task` as stored.
    pub fn encode(&mut self, task: &Task) -> Vec<u8> {
        let at = match self
            .encoded
            .iter()
            .position(|(t, _)| Arc::ptr_eq(t, &task.template))
        {
            Some(at) => at,
            None => match serde_json::value::to_raw_value(&*task.template) {
                Ok(raw) => {
                    self.encoded.push((task.template.clone(), raw));
                    self.encoded.len() - 1
                }
                Err(_) => return encode(task),
            },
        };
        encode(&task.clone().with_template(&*self.encoded[at].1))
    }
}

impl<T> Task<T> {
    /// This task holding `template` instead of its own: a stored task given the template
    /// decoded from (or found equal to) [`StoredTask::template_bytes`], or a task given its
    /// template as stored.
    pub fn with_template<U>(self, template: U) -> Task<U> {
        Task {
            id: self.id,
            service: self.service,
            slot: self.slot,
            node_id: self.node_id,
            generation: self.generation,
            template_hash: self.template_hash,
            template,
            desired_state: self.desired_state,
            attempt: self.attempt,
            orphaned: self.orphaned,
            run: self.run,
            created_at: self.created_at,
        }
    }
}

/// A stored task read with its template left as the JSON it is stored as: reading the rest
/// costs a fraction of the whole, and a reader that already holds an identical template (a
/// service's replicas share one) need not decode it again.
pub type StoredTask<'a> = Task<&'a serde_json::value::RawValue>;

impl<'a> StoredTask<'a> {
    /// The template's stored bytes.
    pub fn template_bytes(&self) -> &'a [u8] {
        self.template.get().as_bytes()
    }
}

/// Health of a task with a healthcheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Within the start period or not checked yet.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` consecutive checks failed.
    Unhealthy,
}

/// A published port as bound on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortBinding {
    /// Port inside the task.
    pub target: u16,
    /// Port on the host.
    pub published: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// Observed state of a task (`taskstatus/<node>/<task>`), written by the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// Task id.
    pub task_id: String,
    /// Current state.
    pub state: TaskState,
    /// Container id (docker) or pid (process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Host ports actually bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<PortBinding>,
    /// Health, when the task has a healthcheck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Exit code once it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Human-readable reason (the runtime's own message on failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
    /// When it reached running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

impl TaskStatus {
    /// The status of task `task_id` in `state` as of `at`, with nothing else known yet.
    pub fn new(task_id: impl Into<String>, state: TaskState, at: Timestamp) -> Self {
        TaskStatus {
            task_id: task_id.into(),
            state,
            container_id: None,
            host_ports: Vec::new(),
            health: None,
            exit_code: None,
            message: None,
            updated_at: at,
            started_at: None,
            finished_at: None,
        }
    }
}

/// Decodes a JSON record written by a Shoal component.
pub fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, ModelError> {
    serde_json::from_slice(bytes).map_err(|source| ModelError::Json { what, source })
}

/// Encodes a record as the compact JSON Shoal stores.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_read_with_its_template_as_bytes_is_the_task_once_given_its_template() {
        let text = "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx\n  env:\n    A: b\n";
        let service = crate::parse(text, "web.yaml").unwrap().remove(0).service;
        let template = TaskTemplate::from_spec(&service.spec);
        let task = Task::replica("web.1.a", service.id(), 1, "n1", template, Timestamp(7));
        let bytes = encode(&task);
        let stored: StoredTask = decode("task", &bytes).unwrap();
        assert_eq!(
            stored.template_bytes(),
            encode(&*task.template).as_slice(),
            "a template is stored inside its task as it is encoded alone"
        );
        let template = Arc::new(decode("task", stored.template_bytes()).unwrap());
        assert_eq!(stored.with_template(template), task);
    }

    #[test]
    fn tasks_sharing_a_template_are_encoded_as_each_is_alone() {
        let spec = |env: &str| {
            let text = format!(
                "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx\n  env:\n    A: \"{env}\"\n"
            );
            crate::parse(&text, "web.yaml").unwrap().remove(0).service
        };
        let (one, two) = (spec("one"), spec("two"));
        let first = Task::replica(
            "web.1.a",
            one.id(),
            1,
            "n1",
            TaskTemplate::from_spec(&one.spec),
            Timestamp(7),
        );
        let mut second = first.clone();
        second.id = "web.2.b".into();
        second.node_id = "n2".into();
        second.slot = Slot::Replica(2);
        let mut other = Task::replica(
            "web.3.c",
            two.id(),
            3,
            "n1",
            TaskTemplate::from_spec(&two.spec),
            Timestamp(9),
        );
        other.desired_state = DesiredState::Shutdown;
        other.run = Some(4);
        let mut encoder = TaskEncoder::default();
        for task in [&first, &second, &other, &first] {
            let bytes = encoder.encode(task);
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                String::from_utf8(encode(task)).unwrap()
            );
        }
        assert_eq!(
            encoder.encoded.len(),
            2,
            "each distinct template is encoded once"
        );
    }

    #[test]
    fn task_states_only_move_forward() {
        assert!(
            TaskState::Assigned
                .check_transition(TaskState::Running)
                .is_ok()
        );
        assert!(
            TaskState::Running
                .check_transition(TaskState::Starting)
                .is_err()
        );
        assert!(
            TaskState::Failed
                .check_transition(TaskState::Orphaned)
                .is_err()
        );
        assert_eq!("running".parse::<TaskState>().unwrap(), TaskState::Running);
    }

    #[test]
    fn task_status_state_is_lowercase() {
        let st = TaskStatus::new("web.1.x", TaskState::Running, Timestamp(0));
        let v: serde_json::Value = serde_json::from_slice(&encode(&st)).unwrap();
        assert_eq!(v["state"], "running");
        assert_eq!(v["taskId"], "web.1.x");
        assert_eq!(v["updatedAt"], "1970-01-01T00:00:00.000Z");
    }
}
