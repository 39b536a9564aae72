//! The key layout: the only place that builds or parses store keys.
//!
//! | key | writer |
//! |---|---|
//! | `services/<ns>/<name>` | user, API |
//! | `status/services/<ns>/<name>` | controller |
//! | `nodes/<node>` | agent (leased) |
//! | `nodeconfig/<node>` | user, API |
//! | `tasks/<node>/<task>` | controller |
//! | `taskstatus/<node>/<task>` | agent |
//! | `leader` | controller (leased) |
//! | `secrets/<ns>/<name>` | API (encrypted value and metadata; immutable) |
//! | `configs/<ns>/<name>` | API (value and metadata; immutable) |
//! | `jobruns/<ns>/<name>` | API (`shoal job run`: the last request to start a job run) |

use crate::manifest::ServiceRef;

/// Prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "/shoal";

/// A parsed key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `services/<ns>/<name>`.
    Service(ServiceRef),
    /// `status/services/<ns>/<name>`.
    ServiceStatus(ServiceRef),
    /// `nodes/<node>`.
    Node(String),
    /// `nodeconfig/<node>`.
    NodeConfig(String),
    /// `tasks/<node>/<task>`.
    Task {
        /// Node id.
        node: String,
        /// Task id.
        task: String,
    },
    /// `taskstatus/<node>/<task>`.
    TaskStatus {
        /// Node id.
        node: String,
        /// Task id.
        task: String,
    },
    /// `leader`.
    Leader,
    /// `secrets/<ns>/<name>`.
    Secret {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
    },
    /// `configs/<ns>/<name>`.
    Config {
        /// Namespace.
        namespace: String,
        /// Config name.
        name: String,
    },
    /// `endpoints/<ns>/<service>`.
    Endpoints(ServiceRef),
    /// `jobruns/<ns>/<name>`.
    JobRun(ServiceRef),
}

/// Builds and parses keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// Keys under `prefix` (a trailing `/` is ignored; `""` means the store root).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The configured prefix, without trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn join(&self, rest: &str) -> String {
        format!("{}/{}", self.prefix, rest)
    }

    /// `services/<ns>/<name>`.
    pub fn service(&self, s: &ServiceRef) -> String {
        self.join(&format!("services/{}/{}", s.namespace, s.name))
    }
    /// Prefix of every manifest.
    pub fn services_prefix(&self) -> String {
        self.join("services/")
    }
    /// Prefix of one namespace's manifests.
    pub fn services_ns_prefix(&self, ns: &str) -> String {
        self.join(&format!("services/{ns}/"))
    }
    /// `status/services/<ns>/<name>`.
    pub fn service_status(&self, s: &ServiceRef) -> String {
        self.join(&format!("status/services/{}/{}", s.namespace, s.name))
    }
    /// Prefix of every service status.
    pub fn service_status_prefix(&self) -> String {
        self.join("status/services/")
    }
    /// `nodes/<node>`.
    pub fn node(&self, node: &str) -> String {
        self.join(&format!("nodes/{node}"))
    }
    /// Prefix of every node record.
    pub fn nodes_prefix(&self) -> String {
        self.join("nodes/")
    }
    /// `nodeconfig/<node>`.
    pub fn node_config(&self, node: &str) -> String {
        self.join(&format!("nodeconfig/{node}"))
    }
    /// Prefix of every node config.
    pub fn node_config_prefix(&self) -> String {
        self.join("nodeconfig/")
    }
    /// `tasks/<node>/<task>`.
    pub fn task(&self, node: &str, task: &str) -> String {
        self.join(&format!("tasks/{node}/{task}"))
    }
    /// Prefix of every assignment.
    pub fn tasks_prefix(&self) -> String {
        self.join("tasks/")
    }
    /// Prefix of one node's assignments.
    pub fn node_tasks_prefix(&self, node: &str) -> String {
        self.join(&format!("tasks/{node}/"))
    }
    /// `taskstatus/<node>/<task>`.
    pub fn task_status(&self, node: &str, task: &str) -> String {
        self.join(&format!("taskstatus/{node}/{task}"))
    }
    /// Prefix of every task status.
    pub fn task_status_prefix(&self) -> String {
        self.join("taskstatus/")
    }
    /// Prefix of one node's task statuses.
    pub fn node_task_status_prefix(&self, node: &str) -> String {
        self.join(&format!("taskstatus/{node}/"))
    }
    /// `leader`.
    pub fn leader(&self) -> String {
        self.join("leader")
    }
    /// `secrets/<ns>/<name>`.
    pub fn secret(&self, ns: &str, name: &str) -> String {
        self.join(&format!("secrets/{ns}/{name}"))
    }
    /// Prefix of every secret.
    pub fn secrets_prefix(&self) -> String {
        self.join("secrets/")
    }
    /// Prefix of one namespace's secrets.
    pub fn secrets_ns_prefix(&self, ns: &str) -> String {
        self.join(&format!("secrets/{ns}/"))
    }
    /// `configs/<ns>/<name>`.
    pub fn config(&self, ns: &str, name: &str) -> String {
        self.join(&format!("configs/{ns}/{name}"))
    }
    /// Prefix of every config.
    pub fn configs_prefix(&self) -> String {
        self.join("configs/")
    }
    /// Prefix of one namespace's configs.
    pub fn configs_ns_prefix(&self, ns: &str) -> String {
        self.join(&format!("configs/{ns}/"))
    }

    /// `endpoints/` (the controller's per-service endpoint lists).
    pub fn endpoints_prefix(&self) -> String {
        self.join("endpoints/")
    }

    /// `endpoints/<ns>/<service>`: the service's stable address and eligible tasks.
    pub fn endpoints(&self, s: &ServiceRef) -> String {
        self.join(&format!("endpoints/{}/{}", s.namespace, s.name))
    }

    /// `jobruns/` (the API's requests to start job runs).
    pub fn job_runs_prefix(&self) -> String {
        self.join("jobruns/")
    }

    /// `jobruns/<ns>/<name>`: the last request to start a run of a job now.
    pub fn job_run(&self, s: &ServiceRef) -> String {
        self.join(&format!("jobruns/{}/{}", s.namespace, s.name))
    }

    /// `cluster` (cluster id, created once).
    pub fn cluster(&self) -> String {
        self.join("cluster")
    }

    /// Parses a full key; `None` for keys outside the layout.
    pub fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        // No key has more than four parts: they are read in place, without a vector for
        // each of the watch's events.
        let mut parts = [""; 4];
        let mut n = 0;
        for part in rest.split('/') {
            if part.is_empty() || n == parts.len() {
                return None;
            }
            parts[n] = part;
            n += 1;
        }
        let sref = |ns: &str, name: &str| ServiceRef {
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        match &parts[..n] {
            ["services", ns, name] => Some(Key::Service(sref(ns, name))),
            ["status", "services", ns, name] => Some(Key::ServiceStatus(sref(ns, name))),
            ["nodes", n] => Some(Key::Node(n.to_string())),
            ["nodeconfig", n] => Some(Key::NodeConfig(n.to_string())),
            ["tasks", n, t] => Some(Key::Task {
                node: n.to_string(),
                task: t.to_string(),
            }),
            ["taskstatus", n, t] => Some(Key::TaskStatus {
                node: n.to_string(),
                task: t.to_string(),
            }),
            ["leader"] => Some(Key::Leader),
            ["secrets", ns, name] => Some(Key::Secret {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            ["configs", ns, name] => Some(Key::Config {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            ["endpoints", ns, name] => Some(Key::Endpoints(sref(ns, name))),
            ["jobruns", ns, name] => Some(Key::JobRun(sref(ns, name))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("/shoal/");
        let web = ServiceRef {
            namespace: "default".into(),
            name: "web".into(),
        };
        let all = [
            (k.service(&web), Key::Service(web.clone())),
            (k.service_status(&web), Key::ServiceStatus(web.clone())),
            (k.node("n1"), Key::Node("n1".into())),
            (k.node_config("n1"), Key::NodeConfig("n1".into())),
            (
                k.task("n1", "web.1.a"),
                Key::Task {
                    node: "n1".into(),
                    task: "web.1.a".into(),
                },
            ),
            (
                k.task_status("n1", "t"),
                Key::TaskStatus {
                    node: "n1".into(),
                    task: "t".into(),
                },
            ),
            (k.leader(), Key::Leader),
            (
                k.secret("default", "db-password"),
                Key::Secret {
                    namespace: "default".into(),
                    name: "db-password".into(),
                },
            ),
            (
                k.config("prod", "app"),
                Key::Config {
                    namespace: "prod".into(),
                    name: "app".into(),
                },
            ),
            (k.endpoints(&web), Key::Endpoints(web.clone())),
            (k.job_run(&web), Key::JobRun(web.clone())),
        ];
        for (s, key) in all {
            assert_eq!(k.parse(&s), Some(key), "{s}");
        }
        assert_eq!(k.service(&web), "/shoal/services/default/web");
        assert_eq!(k.parse("/other/services/a/b"), None);
        assert_eq!(k.parse("/shoal/services/a"), None);
        // Empty parts, a part too many, and keys longer than any kind are not Shoal's.
        assert_eq!(k.parse("/shoal/services//b"), None);
        assert_eq!(k.parse("/shoal/services/a/b/"), None);
        assert_eq!(k.parse("/shoal/status/services/a/b/c"), None);
        assert_eq!(k.parse("/shoal/tasks/n1/t/x/y/z"), None);
        assert_eq!(k.parse("/shoal/"), None);
        assert_eq!(k.secret("default", "x"), "/shoal/secrets/default/x");
        assert!(k.secret("ns", "x").starts_with(&k.secrets_ns_prefix("ns")));
        assert!(k.config("ns", "x").starts_with(&k.configs_ns_prefix("ns")));
        assert!(k.configs_ns_prefix("ns").starts_with(&k.configs_prefix()));
        assert!(k.secrets_ns_prefix("ns").starts_with(&k.secrets_prefix()));
    }
}
