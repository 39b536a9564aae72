//! Semantic checks of a [`Service`] that the types alone cannot express: names are DNS labels,
//! ports are in range and not published twice, constraints parse, limits are not below
//! reservations, and so on.
//!
//! [`validate`] returns every problem, each with the manifest path of the offending field
//! (`spec.placement.constraints[1]`), so that [`crate::parse`] can point at its line and column.
//! Map keys that are not plain identifiers are written `labels["com.example/team"]`.

use std::collections::BTreeMap;
use std::fmt;

mod job;

use crate::constraint::{Attribute, Constraint};
use crate::manifest::{
    API_VERSION, FailureAction, KIND_SERVICE, Mode, MountType, RuntimeKind, Service, UpdateConfig,
};

/// One semantic problem in a service, at a manifest path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValidationError {
    /// Path of the offending field, e.g. `spec.ports[1].published`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Longest DNS label (RFC 1123).
pub const MAX_NAME_LEN: usize = 63;
/// Longest label key.
pub const MAX_LABEL_KEY_LEN: usize = 253;
/// Smallest memory limit Docker accepts (6 MiB).
pub const MIN_DOCKER_MEMORY_LIMIT: u64 = 6 << 20;

/// Checks everything about `service` that deserialization does not. The errors are sorted by
/// path (checks on the same path keep their order); an empty vector means the service is valid.
pub fn validate(service: &Service) -> Vec<ValidationError> {
    let mut v = Errors::default();
    check_header(service, &mut v);
    check_metadata(service, &mut v);
    check_spec(service, &mut v);
    let mut errors = v.0;
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    errors
}

/// Whether `s` is a DNS label: 1 to 63 lowercase letters, digits and `-`, starting and ending
/// with a letter or digit.
pub fn is_dns_label(s: &str) -> bool {
    dns_label_problem(s).is_none()
}

/// Why `s` is not a DNS label, or `None` when it is one.
pub fn dns_label_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("must not be empty");
    }
    if s.len() > MAX_NAME_LEN {
        return Some("must be at most 63 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("may contain only lowercase letters, digits and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must start and end with a letter or digit");
    }
    None
}

/// Appends `key` to `parent` as a path segment: `.key` for identifiers, `["key"]` otherwise.
pub fn key_path(parent: &str, key: &str) -> String {
    let plain = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", serde_json::Value::String(key.to_string())),
    }
}

#[derive(Default)]
struct Errors(Vec<ValidationError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Why `api_version` is not one Shoal reads, or `None` when it is `shoal/v1`.
pub fn api_version_problem(api_version: &str) -> Option<String> {
    (api_version != API_VERSION)
        .then(|| format!("unsupported apiVersion {api_version:?}: expected {API_VERSION:?}"))
}

/// Why `kind` is not one Shoal reads, or `None` when it is `Service`.
pub fn kind_problem(kind: &str) -> Option<String> {
    (kind != KIND_SERVICE).then(|| format!("unsupported kind {kind:?}: expected {KIND_SERVICE:?}"))
}

fn check_header(s: &Service, v: &mut Errors) {
    if let Some(p) = api_version_problem(&s.api_version) {
        v.push("apiVersion", p);
    }
    if let Some(p) = kind_problem(&s.kind) {
        v.push("kind", p);
    }
}

fn check_metadata(s: &Service, v: &mut Errors) {
    let m = &s.metadata;
    if let Some(p) = dns_label_problem(&m.name) {
        v.push(
            "metadata.name",
            format!("invalid name {:?}: a name is a DNS label and {p}", m.name),
        );
    }
    if let Some(p) = dns_label_problem(&m.namespace) {
        v.push(
            "metadata.namespace",
            format!(
                "invalid namespace {:?}: a namespace is a DNS label and {p}",
                m.namespace
            ),
        );
    }
    for key in m.labels.keys() {
        if let Some(p) = label_key_problem(key) {
            v.push(
                key_path("metadata.labels", key),
                format!("invalid label key {key:?}: {p}"),
            );
        }
    }
}

/// Why `key` is not an acceptable label key (`app`, `tier`, `com.example/team`), if it is not.
fn label_key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("must not be empty");
    }
    if key.len() > MAX_LABEL_KEY_LEN {
        return Some("must be at most 253 characters");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    {
        return Some("may contain only letters, digits, '-', '_', '.' and '/'");
    }
    let first = key.as_bytes()[0];
    let last = key.as_bytes()[key.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Some("must start and end with a letter or digit");
    }
    None
}

fn check_spec(s: &Service, v: &mut Errors) {
    let spec = &s.spec;

    if spec.mode == Mode::Global && spec.replicas.is_some() {
        v.push(
            "spec.replicas",
            "replicas cannot be set with mode: global (a global service runs one task per node)",
        );
    }

    match spec.runtime {
        RuntimeKind::Docker => match &spec.image {
            None => v.push("spec.image", "the docker runtime needs an image"),
            Some(i) if i.trim().is_empty() => v.push(
                "spec.image",
                "the docker runtime needs an image, not an empty string",
            ),
            Some(i) if i.chars().any(char::is_whitespace) => v.push(
                "spec.image",
                format!("invalid image {i:?}: an image reference has no whitespace"),
            ),
            Some(_) => {}
        },
        RuntimeKind::Process => {
            if spec.command.is_empty() {
                v.push("spec.command", "the process runtime needs a command");
            }
            check_process_limits(s, v);
        }
    }
    if let Some(first) = spec.command.first()
        && first.trim().is_empty()
    {
        v.push("spec.command[0]", "the program to run must not be empty");
    }

    for key in spec.env.keys() {
        let path = key_path("spec.env", key);
        if key.is_empty() {
            v.push(path, "environment variable names must not be empty");
        } else if key.contains('=') {
            v.push(
                path,
                format!("invalid environment variable name {key:?}: it must not contain '='"),
            );
        } else if key.contains('\0') {
            v.push(
                path,
                format!("invalid environment variable name {key:?}: it must not contain NUL"),
            );
        }
    }

    check_ports(s, v);
    check_resources(s, v);
    check_placement(s, v);
    check_update("spec.update", &spec.update, false, v);
    check_update("spec.rollback", &spec.rollback, true, v);
    check_healthcheck(s, v);
    check_stop_signal(&spec.stop_signal, v);
    check_mounts(s, v);
    check_files(s, v);
    check_discovery(s, v);
    job::check_job(s, v);
}

/// Secret and config references (see [`crate::secret::check_refs`]).
fn check_files(s: &Service, v: &mut Errors) {
    use crate::secret::{FileKind, check_refs};
    let mut taken = BTreeMap::new();
    for (kind, refs) in [
        (FileKind::Secret, &s.spec.secrets),
        (FileKind::Config, &s.spec.configs),
    ] {
        for p in check_refs(kind, refs, &mut taken) {
            v.push(
                format!("{}[{}].{}", kind.field(), p.index, p.field),
                p.message,
            );
        }
    }
}

/// What the process runtime cannot do, refused rather than silently ignored: a host process
/// binds its own ports (no dynamic or remapped port), runs without cgroups (no limits) and
/// sees the host's filesystem (no mounts).
fn check_process_limits(s: &Service, v: &mut Errors) {
    let spec = &s.spec;
    for (i, p) in spec.ports.iter().enumerate() {
        let path = format!("spec.ports[{i}].published");
        match p.published {
            None => v.push(
                path,
                format!(
                    "the process runtime cannot give a host process a dynamic port: set published: {} (a process binds its own port)",
                    p.target
                ),
            ),
            Some(pp) if pp != 0 && pp != p.target => v.push(
                path,
                format!(
                    "the process runtime cannot map port {} to {pp}: a host process binds its own port, so published must equal target",
                    p.target
                ),
            ),
            Some(_) => {}
        }
    }
    let l = &spec.resources.limits;
    if l.cpus.is_some() || l.memory.is_some() {
        v.push(
            "spec.resources.limits",
            "the process runtime does not enforce resource limits: remove them (reservations are fine), or use runtime: docker",
        );
    }
    if !spec.mounts.is_empty() {
        v.push(
            "spec.mounts",
            "the process runtime cannot mount anything into a host process: remove mounts, or use runtime: docker",
        );
    }
}

fn check_ports(s: &Service, v: &mut Errors) {
    let mut published: BTreeMap<(u16, crate::manifest::Protocol), usize> = BTreeMap::new();
    let mut targets: BTreeMap<(u16, crate::manifest::Protocol), usize> = BTreeMap::new();
    for (i, p) in s.spec.ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        if p.target == 0 {
            v.push(
                format!("{path}.target"),
                "target port must be between 1 and 65535",
            );
        } else if let Some(first) = targets.insert((p.target, p.protocol), i) {
            targets.insert((p.target, p.protocol), first);
            v.push(
                format!("{path}.target"),
                format!(
                    "target port {}/{} is already listed in spec.ports[{first}]",
                    p.target, p.protocol
                ),
            );
        }
        match p.published {
            Some(0) => v.push(
                format!("{path}.published"),
                "published port must be between 1 and 65535 (omit it for a dynamic host port)",
            ),
            Some(port) => {
                if let Some(first) = published.insert((port, p.protocol), i) {
                    published.insert((port, p.protocol), first);
                    v.push(
                        format!("{path}.published"),
                        format!(
                            "host port {port}/{} is already published by spec.ports[{first}]",
                            p.protocol
                        ),
                    );
                }
            }
            None => {}
        }
    }
}

fn check_resources(s: &Service, v: &mut Errors) {
    let r = &s.spec.resources;
    for (which, amounts) in [("reservations", &r.reservations), ("limits", &r.limits)] {
        if let Some(c) = amounts.cpus
            && !(c.is_finite() && c > 0.0)
        {
            v.push(
                format!("spec.resources.{which}.cpus"),
                format!("cpus must be more than 0, not {c}"),
            );
        }
    }
    if let Some(m) = r.limits.memory {
        if m.bytes() == 0 {
            v.push(
                "spec.resources.limits.memory",
                "a memory limit must be more than 0 (omit it for no limit)",
            );
        } else if s.spec.runtime == RuntimeKind::Docker && m.bytes() < MIN_DOCKER_MEMORY_LIMIT {
            v.push(
                "spec.resources.limits.memory",
                format!("memory limit {m} is below Docker's minimum of 6Mi"),
            );
        }
    }
    if let (Some(limit), Some(res)) = (r.limits.cpus, r.reservations.cpus)
        && limit > 0.0
        && limit < res
    {
        v.push(
            "spec.resources.limits.cpus",
            format!("cpus limit {limit} is below the reservation {res}"),
        );
    }
    if let (Some(limit), Some(res)) = (r.limits.memory, r.reservations.memory)
        && limit.bytes() > 0
        && limit < res
    {
        v.push(
            "spec.resources.limits.memory",
            format!("memory limit {limit} is below the reservation {res}"),
        );
    }
}

fn check_placement(s: &Service, v: &mut Errors) {
    let p = &s.spec.placement;
    for (i, c) in p.constraints.iter().enumerate() {
        if let Err(e) = Constraint::parse(c) {
            v.push(format!("spec.placement.constraints[{i}]"), e.to_string());
        }
    }
    for (i, pref) in p.preferences.iter().enumerate() {
        if Attribute::parse(&pref.spread).is_none() {
            v.push(
                format!("spec.placement.preferences[{i}].spread"),
                format!(
                    "invalid spread attribute {:?}: expected node.labels.KEY, node.hostname, node.id or node.role",
                    pref.spread
                ),
            );
        }
    }
}

fn check_update(path: &str, u: &UpdateConfig, rollback: bool, v: &mut Errors) {
    if !(u.max_failure_ratio.is_finite() && (0.0..=1.0).contains(&u.max_failure_ratio)) {
        v.push(
            format!("{path}.maxFailureRatio"),
            format!(
                "maxFailureRatio must be between 0 and 1, not {}",
                u.max_failure_ratio
            ),
        );
    }
    if rollback && u.failure_action == FailureAction::Rollback {
        v.push(
            format!("{path}.failureAction"),
            "a rollback cannot itself roll back: failureAction must be pause or continue",
        );
    }
    if u.monitor.is_zero() && u.failure_action != FailureAction::Continue {
        v.push(
            format!("{path}.monitor"),
            "monitor 0s leaves no time to notice a failing task; it must be more than 0 unless failureAction is continue",
        );
    }
}

fn check_healthcheck(s: &Service, v: &mut Errors) {
    let Some(hc) = &s.spec.healthcheck else {
        return;
    };
    match hc.test.first().map(String::as_str) {
        None => v.push(
            "spec.healthcheck.test",
            "test must not be empty: use [CMD, prog, args...], [CMD-SHELL, \"script\"] or [NONE]",
        ),
        Some("CMD") => {
            if hc.test.len() < 2 || hc.test[1].trim().is_empty() {
                v.push(
                    "spec.healthcheck.test",
                    "CMD needs a program to run: [CMD, prog, args...]",
                );
            }
        }
        Some("CMD-SHELL") => {
            if hc.test.len() != 2 || hc.test[1].trim().is_empty() {
                v.push(
                    "spec.healthcheck.test",
                    "CMD-SHELL takes exactly one script: [CMD-SHELL, \"script\"]",
                );
            }
        }
        Some("NONE") => {
            if hc.test.len() != 1 {
                v.push("spec.healthcheck.test", "NONE takes no arguments: [NONE]");
            }
        }
        Some(other) => v.push(
            "spec.healthcheck.test[0]",
            format!("unknown healthcheck test type {other:?}: expected CMD, CMD-SHELL or NONE"),
        ),
    }
    if hc.interval.is_zero() {
        v.push("spec.healthcheck.interval", "interval must be more than 0");
    }
    if hc.timeout.is_zero() {
        v.push("spec.healthcheck.timeout", "timeout must be more than 0");
    }
}

/// Signal names Linux knows (what the agents can send), without the `SIG` prefix.
const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
    "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
    "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR", "SYS",
];

/// Whether `s` names a signal: `SIGTERM`, `term`, `15`.
pub fn is_signal(s: &str) -> bool {
    let t = s.trim();
    if let Ok(n) = t.parse::<u32>() {
        return (1..=31).contains(&n);
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    SIGNALS.contains(&name)
}

fn check_stop_signal(sig: &str, v: &mut Errors) {
    if !is_signal(sig) {
        v.push(
            "spec.stopSignal",
            format!(
                "unknown signal {sig:?}: expected a name such as SIGTERM or SIGINT, or a number"
            ),
        );
    }
}

fn check_mounts(s: &Service, v: &mut Errors) {
    let mut targets: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, m) in s.spec.mounts.iter().enumerate() {
        let path = format!("spec.mounts[{i}]");
        if !m.target.starts_with('/') {
            v.push(
                format!("{path}.target"),
                format!("mount target {:?} must be an absolute path", m.target),
            );
        } else if let Some(first) = targets.get(m.target.as_str()) {
            v.push(
                format!("{path}.target"),
                format!("{:?} is already mounted by spec.mounts[{first}]", m.target),
            );
        } else {
            targets.insert(&m.target, i);
        }
        let source = m.source.as_deref();
        match m.kind {
            MountType::Bind => match source {
                None => v.push(format!("{path}.source"), "a bind mount needs a source: an absolute host path"),
                Some(src) if !src.starts_with('/') => v.push(
                    format!("{path}.source"),
                    format!("bind mount source {src:?} must be an absolute host path"),
                ),
                Some(_) => {}
            },
            MountType::Volume => match source {
                None => v.push(format!("{path}.source"), "a volume mount needs a source: the volume's name"),
                Some(src) if !is_volume_name(src) => v.push(
                    format!("{path}.source"),
                    format!(
                        "invalid volume name {src:?}: letters, digits, '_', '.' and '-', starting with a letter or digit (use type: bind for a host path)"
                    ),
                ),
                Some(_) => {}
            },
            MountType::Tmpfs => {
                if source.is_some() {
                    v.push(format!("{path}.source"), "a tmpfs mount has no source");
                }
            }
        }
    }
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn is_volume_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn check_discovery(s: &Service, v: &mut Errors) {
    let Some(consul) = s.spec.discovery.as_ref().and_then(|d| d.consul.as_ref()) else {
        return;
    };
    let ports = &s.spec.ports;
    if ports.is_empty() {
        v.push(
            "spec.discovery.consul",
            "consul registration needs a port: the service has no ports",
        );
    } else if let Some(port) = consul.port
        && !ports
            .iter()
            .any(|p| p.target == port || p.published == Some(port))
    {
        v.push(
            "spec.discovery.consul.port",
            format!("port {port} is not one of the service's ports"),
        );
    }
    if let Some(name) = &consul.name
        && name.trim().is_empty()
    {
        v.push(
            "spec.discovery.consul.name",
            "the consul service name must not be empty (omit it to use the service's name)",
        );
    }
    check_consul_meta(&consul.meta, v);
    if let Some(check) = &consul.check {
        let path = "spec.discovery.consul.check";
        match (&check.http, check.tcp) {
            (Some(_), true) => v.push(path, "a check is either http or tcp, not both"),
            (None, false) => v.push(
                path,
                "a check needs one of http (a path such as /health) or tcp: true",
            ),
            (Some(h), false) if !h.starts_with('/') => v.push(
                format!("{path}.http"),
                format!("http check path {h:?} must start with '/'"),
            ),
            _ => {}
        }
        if check.interval.is_zero() {
            v.push(format!("{path}.interval"), "interval must be more than 0");
        }
        if check.timeout.is_zero() {
            v.push(format!("{path}.timeout"), "timeout must be more than 0");
        }
    }
}

/// Meta keys the agent adds to every Consul registration (the service, node and task).
pub const CONSUL_META_RESERVED: [&str; 3] = ["shoal-service", "shoal-node", "shoal-task"];

/// Consul's limits on service meta (`validateMetaPair` and `ValidateServiceMetadata` in
/// Consul's `agent/structs/structs.go`): at most 64 pairs, keys of 1–128 characters from
/// `[A-Za-z0-9_-]` not starting with `consul-`, values of at most 512 characters. Consul
/// refuses the whole registration with 400 otherwise.
const CONSUL_META_MAX_PAIRS: usize = 64;
const CONSUL_META_KEY_MAX: usize = 128;
const CONSUL_META_VALUE_MAX: usize = 512;

/// Why `key: value` would make Consul refuse a registration, if it would.
pub fn consul_meta_problem(key: &str, value: &str) -> Option<String> {
    if key.is_empty() {
        return Some("a meta key must not be empty".into());
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Some(format!(
            "invalid meta key {key:?}: Consul accepts only letters, digits, '_' and '-'"
        ));
    }
    if key.len() > CONSUL_META_KEY_MAX {
        return Some(format!(
            "meta key is too long: Consul accepts at most {CONSUL_META_KEY_MAX} characters"
        ));
    }
    if key.starts_with("consul-") {
        return Some(format!(
            "invalid meta key {key:?}: the prefix 'consul-' is reserved by Consul"
        ));
    }
    if CONSUL_META_RESERVED.contains(&key) {
        return Some(format!(
            "invalid meta key {key:?}: the agent sets it on every registration"
        ));
    }
    if value.chars().count() > CONSUL_META_VALUE_MAX {
        return Some(format!(
            "meta value of {key:?} is too long: Consul accepts at most {CONSUL_META_VALUE_MAX} characters"
        ));
    }
    None
}

fn check_consul_meta(meta: &std::collections::BTreeMap<String, String>, v: &mut Errors) {
    let path = "spec.discovery.consul.meta";
    let room = CONSUL_META_MAX_PAIRS - CONSUL_META_RESERVED.len();
    if meta.len() > room {
        v.push(
            path,
            format!(
                "{} meta pairs: Consul accepts {CONSUL_META_MAX_PAIRS} and the agent adds {}, so at most {room}",
                meta.len(),
                CONSUL_META_RESERVED.len()
            ),
        );
    }
    for (key, value) in meta {
        if let Some(p) = consul_meta_problem(key, value) {
            v.push(key_path(path, key), p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("web"));
        assert!(is_dns_label("web-1"));
        assert!(is_dns_label("1web"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("-web"));
        assert!(!is_dns_label("web-"));
        assert!(!is_dns_label("web_1"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_label(&"a".repeat(63)));
    }

    #[test]
    fn key_paths() {
        assert_eq!(key_path("", "spec"), "spec");
        assert_eq!(key_path("spec.env", "FOO_BAR"), "spec.env.FOO_BAR");
        assert_eq!(
            key_path("metadata.labels", "com.example/team"),
            "metadata.labels[\"com.example/team\"]"
        );
        assert_eq!(key_path("spec.env", ""), "spec.env[\"\"]");
    }

    #[test]
    fn signals() {
        assert!(is_signal("SIGTERM"));
        assert!(is_signal("term"));
        assert!(is_signal("SIGQUIT"));
        assert!(is_signal("15"));
        assert!(!is_signal("SIGFOO"));
        assert!(!is_signal("0"));
        assert!(!is_signal(""));
    }
}
