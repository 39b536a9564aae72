//! Least-privilege etcd users and roles for Shoal's components (`shoal rbac apply|show`).
//!
//! Each key has one writer (DESIGN.md's key table), so each component gets an etcd role that
//! may write only its own keys and read only what it needs:
//!
//! | user (= role) | reads | writes |
//! |---|---|---|
//! | `shoal-controller` | everything under the prefix (it lists and watches the whole prefix) | `status/services/`, `tasks/`, `taskstatus/` and `nodeconfig/` (of nodes gone for good), `leader`, `endpoints/`, `cluster` |
//! | `shoal-api` | everything under the prefix (its watch lists the whole prefix) | `services/`, `nodeconfig/`, `secrets/`, `configs/`, `jobruns/`, `cluster` |
//! | `shoal-agent-<node>` | `tasks/<node>/`, `nodeconfig/<node>`, `endpoints/`, `cluster` | `nodes/<node>`, `taskstatus/<node>/` |
//!
//! [`plan`] computes the roles (pure); [`apply`] makes etcd match it: missing roles, users and
//! permissions are added, permissions not in the plan revoked, each user gets a generated
//! password written to `DIR/<user>.password` (mode 0600) unless that file already holds it.
//! Running it again changes nothing; `prune` removes the agent users of nodes not listed.
//! Any change of users or roles makes etcd's JWT tokens stale; the store re-authenticates.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use etcd_client::{Permission, PermissionType, RoleRevokePermissionOptions};
use rand::TryRngCore as _;
use shoal_core::Keys;

use super::{EtcdStore, prefix_end};
use crate::StoreError;

/// User and role of the controller.
pub const CONTROLLER: &str = "shoal-controller";
/// User and role of the API server.
pub const API: &str = "shoal-api";
/// Prefix of the agents' users and roles (`shoal-agent-<node>`).
pub const AGENT_PREFIX: &str = "shoal-agent-";

/// Random bytes in a generated password.
const PASSWORD_BYTES: usize = 32;

/// Why the users and roles could not be applied or read.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    /// etcd refused or failed a call.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A node ID cannot be part of an etcd user name and a file name.
    #[error("node ID {0:?} cannot name an etcd user (use letters, digits, `-`, `_` and `.`)")]
    InvalidNode(String),
    /// A password file or the output directory could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The operating system's random source failed.
    #[error("cannot draw random bytes: {0}")]
    Random(String),
}

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Read only.
    Read,
    /// Read and write.
    ReadWrite,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::ReadWrite => "readwrite",
        })
    }
}

/// One permission: an access on a key or on every key under a prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// The access.
    pub access: Access,
    /// The key, or the prefix when `prefix` is set.
    pub key: String,
    /// Whether `key` is a prefix.
    pub prefix: bool,
}

impl Grant {
    fn key(access: Access, key: String) -> Self {
        Grant {
            access,
            key,
            prefix: false,
        }
    }

    fn prefix(access: Access, key: String) -> Self {
        Grant {
            access,
            key,
            prefix: true,
        }
    }

    /// The key range in etcd's form (`range_end` empty for one key).
    fn range(&self) -> (Vec<u8>, Vec<u8>) {
        let key = self.key.as_bytes().to_vec();
        let end = if self.prefix {
            prefix_end(&key)
        } else {
            Vec::new()
        };
        (key, end)
    }

    /// The key as shown: `KEY` or `PREFIX*`.
    pub fn shown(&self) -> String {
        if self.prefix {
            format!("{}*", self.key)
        } else {
            self.key.clone()
        }
    }
}

/// A role (and the user of the same name that has it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    /// Role and user name.
    pub name: String,
    /// Its permissions, sorted.
    pub grants: Vec<Grant>,
}

/// The etcd user of the agent of `node`.
pub fn agent_user(node: &str) -> String {
    format!("{AGENT_PREFIX}{node}")
}

/// The roles of the controller, the API and the agents of `nodes`.
pub fn plan(keys: &Keys, nodes: &[String]) -> Vec<RoleSpec> {
    use Access::{Read, ReadWrite};
    let all = format!("{}/", keys.prefix());
    let role = |name: String, mut grants: Vec<Grant>| {
        grants.sort();
        RoleSpec { name, grants }
    };
    let mut roles = vec![
        role(
            CONTROLLER.into(),
            vec![
                Grant::prefix(Read, all.clone()),
                Grant::prefix(ReadWrite, keys.service_status_prefix()),
                Grant::prefix(ReadWrite, keys.tasks_prefix()),
                Grant::prefix(ReadWrite, keys.task_status_prefix()),
                Grant::prefix(ReadWrite, keys.node_config_prefix()),
                Grant::key(ReadWrite, keys.leader()),
                Grant::prefix(ReadWrite, keys.endpoints_prefix()),
                Grant::key(ReadWrite, keys.cluster()),
            ],
        ),
        role(
            API.into(),
            vec![
                Grant::prefix(Read, all),
                Grant::prefix(ReadWrite, keys.services_prefix()),
                Grant::prefix(ReadWrite, keys.node_config_prefix()),
                Grant::prefix(ReadWrite, keys.secrets_prefix()),
                Grant::prefix(ReadWrite, keys.configs_prefix()),
                Grant::prefix(ReadWrite, keys.job_runs_prefix()),
                Grant::key(ReadWrite, keys.cluster()),
            ],
        ),
    ];
    let nodes: BTreeSet<&String> = nodes.iter().collect();
    for node in nodes {
        roles.push(role(
            agent_user(node),
            vec![
                Grant::prefix(Read, keys.node_tasks_prefix(node)),
                Grant::key(Read, keys.node_config(node)),
                Grant::prefix(Read, keys.endpoints_prefix()),
                Grant::key(Read, keys.cluster()),
                Grant::key(ReadWrite, keys.node(node)),
                Grant::prefix(ReadWrite, keys.node_task_status_prefix(node)),
            ],
        ));
    }
    roles
}

/// Why `node` cannot be an agent's user name and file name, if it cannot.
fn check_node(node: &str) -> Result<(), RbacError> {
    let ok = !node.is_empty()
        && node.len() <= 200
        && node != "."
        && node != ".."
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RbacError::InvalidNode(node.to_string()))
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Roles created.
    pub roles_created: Vec<String>,
    /// Permissions granted, as `role: access key`.
    pub granted: Vec<String>,
    /// Permissions revoked, as `role: access key`.
    pub revoked: Vec<String>,
    /// Users created.
    pub users_created: Vec<String>,
    /// Users whose password was set anew (their password file was missing).
    pub passwords_set: Vec<String>,
    /// Users (and their roles) removed by `prune`.
    pub removed: Vec<String>,
    /// Agent users of nodes not listed, kept because `prune` was not asked for.
    pub stale: Vec<String>,
    /// Every user of the plan with its password file.
    pub password_files: Vec<(String, PathBuf)>,
}

impl ApplyReport {
    /// Whether etcd was changed.
    pub fn changed(&self) -> bool {
        !(self.roles_created.is_empty()
            && self.granted.is_empty()
            && self.revoked.is_empty()
            && self.users_created.is_empty()
            && self.passwords_set.is_empty()
            && self.removed.is_empty())
    }
}

/// Makes etcd's users and roles match [`plan`] for `nodes`, writing passwords into `out`.
/// Needs credentials allowed to manage users and roles (etcd's `root`).
pub async fn apply(
    store: &EtcdStore,
    keys: &Keys,
    nodes: &[String],
    out: &Path,
    prune: bool,
) -> Result<ApplyReport, RbacError> {
    for node in nodes {
        check_node(node)?;
    }
    create_private_dir(out)?;
    let mut report = ApplyReport::default();
    let existing = Existing::read(store).await?;
    let specs = plan(keys, nodes);
    for spec in &specs {
        if !existing.roles.contains(&spec.name) {
            role_add(store, &spec.name).await?;
            report.roles_created.push(spec.name.clone());
        }
        sync_permissions(store, spec, &mut report).await?;
        let file = out.join(format!("{}.password", spec.name));
        let exists = existing.users.contains(&spec.name);
        ensure_user(store, &spec.name, exists, &file, &mut report).await?;
        report.password_files.push((spec.name.clone(), file));
    }
    let wanted: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let stale: BTreeSet<&String> = existing
        .users
        .iter()
        .chain(existing.roles.iter())
        .filter(|n| n.starts_with(AGENT_PREFIX) && !wanted.contains(n.as_str()))
        .collect();
    for name in stale {
        if prune {
            existing.remove(store, name, out).await?;
            report.removed.push(name.clone());
        } else {
            report.stale.push(name.clone());
        }
    }
    tracing::info!(
        roles = specs.len(),
        changed = report.changed(),
        "etcd users and roles applied"
    );
    Ok(report)
}

/// The users and roles etcd has.
struct Existing {
    roles: BTreeSet<String>,
    users: BTreeSet<String>,
}

impl Existing {
    async fn read(store: &EtcdStore) -> Result<Self, RbacError> {
        let roles = store
            .run(|| {
                let mut c = store.client.clone();
                async move { c.role_list().await }
            })
            .await?
            .roles()
            .iter()
            .cloned()
            .collect();
        let users = store
            .run(|| {
                let mut c = store.client.clone();
                async move { c.user_list().await }
            })
            .await?
            .users()
            .iter()
            .cloned()
            .collect();
        Ok(Existing { roles, users })
    }

    /// Deletes the user and the role `name` (those that exist) and its password file.
    async fn remove(&self, store: &EtcdStore, name: &str, out: &Path) -> Result<(), RbacError> {
        if self.users.contains(name) {
            store
                .run(|| {
                    let mut c = store.client.clone();
                    let n = name.to_string();
                    async move { c.user_delete(n).await }
                })
                .await?;
        }
        if self.roles.contains(name) {
            store
                .run(|| {
                    let mut c = store.client.clone();
                    let n = name.to_string();
                    async move { c.role_delete(n).await }
                })
                .await?;
        }
        let file = out.join(format!("{name}.password"));
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io(&file, source)),
        }
    }
}

async fn role_add(store: &EtcdStore, name: &str) -> Result<(), RbacError> {
    store
        .run(|| {
            let mut c = store.client.clone();
            let name = name.to_string();
            async move { c.role_add(name).await }
        })
        .await?;
    Ok(())
}

/// The permissions of a role in etcd, as `(type, key, range_end)`.
type RawGrant = (i32, Vec<u8>, Vec<u8>);

async fn role_permissions(store: &EtcdStore, role: &str) -> Result<Vec<RawGrant>, RbacError> {
    let resp = store
        .run(|| {
            let mut c = store.client.clone();
            let role = role.to_string();
            async move { c.role_get(role).await }
        })
        .await?;
    Ok(resp
        .permissions()
        .iter()
        .map(|p| (p.get_type(), p.key().to_vec(), p.range_end().to_vec()))
        .collect())
}

fn perm_type(access: Access) -> PermissionType {
    match access {
        Access::Read => PermissionType::Read,
        Access::ReadWrite => PermissionType::Readwrite,
    }
}

fn raw(grant: &Grant) -> RawGrant {
    let (key, end) = grant.range();
    (perm_type(grant.access) as i32, key, end)
}

async fn sync_permissions(
    store: &EtcdStore,
    spec: &RoleSpec,
    report: &mut ApplyReport,
) -> Result<(), RbacError> {
    let current: BTreeSet<RawGrant> = role_permissions(store, &spec.name)
        .await?
        .into_iter()
        .collect();
    let desired: BTreeMap<RawGrant, &Grant> = spec.grants.iter().map(|g| (raw(g), g)).collect();
    for (t, key, end) in &current {
        if desired.contains_key(&(*t, key.clone(), end.clone())) {
            continue;
        }
        let (role, key, end) = (spec.name.clone(), key.clone(), end.clone());
        store
            .run(|| {
                let mut c = store.client.clone();
                let (role, key) = (role.clone(), key.clone());
                let opts = (!end.is_empty())
                    .then(|| RoleRevokePermissionOptions::new().with_range_end(end.clone()));
                async move { c.role_revoke_permission(role, key, opts).await }
            })
            .await?;
        report.revoked.push(format!(
            "{}: {}",
            spec.name,
            shown_raw(&(*t, key.clone(), end.clone()))
        ));
    }
    for (rawg, grant) in &desired {
        if current.contains(rawg) {
            continue;
        }
        let (key, end) = grant.range();
        let mut perm = Permission::new(perm_type(grant.access), key);
        if !end.is_empty() {
            perm = perm.with_range_end(end);
        }
        store
            .run(|| {
                let mut c = store.client.clone();
                let (role, perm) = (spec.name.clone(), perm.clone());
                async move { c.role_grant_permission(role, perm).await }
            })
            .await?;
        report
            .granted
            .push(format!("{}: {} {}", spec.name, grant.access, grant.shown()));
    }
    Ok(())
}

/// Creates the user (or sets its password when its file is missing) and gives it its role.
async fn ensure_user(
    store: &EtcdStore,
    name: &str,
    exists: bool,
    file: &Path,
    report: &mut ApplyReport,
) -> Result<(), RbacError> {
    let known = read_password(file)?;
    if !exists || known.is_none() {
        // The password reaches its file only once etcd has it, so the file never holds a
        // password etcd does not know.
        let password = match known {
            Some(p) => p,
            None => generate_password()?,
        };
        let pending = file.with_extension("password.new");
        write_private(&pending, &password)?;
        let (user, pw) = (name.to_string(), password.clone());
        if exists {
            store
                .run(|| {
                    let mut c = store.client.clone();
                    let (user, pw) = (user.clone(), pw.clone());
                    async move { c.user_change_password(user, pw).await }
                })
                .await?;
            report.passwords_set.push(name.to_string());
        } else {
            store
                .run(|| {
                    let mut c = store.client.clone();
                    let (user, pw) = (user.clone(), pw.clone());
                    async move { c.user_add(user, pw, None).await }
                })
                .await?;
            report.users_created.push(name.to_string());
        }
        std::fs::rename(&pending, file).map_err(|e| io(file, e))?;
    }
    let roles: Vec<String> = store
        .run(|| {
            let mut c = store.client.clone();
            let user = name.to_string();
            async move { c.user_get(user).await }
        })
        .await?
        .roles()
        .to_vec();
    if !roles.iter().any(|r| r == name) {
        store
            .run(|| {
                let mut c = store.client.clone();
                let user = name.to_string();
                async move { c.user_grant_role(user.clone(), user).await }
            })
            .await?;
        report.granted.push(format!("{name}: role {name}"));
    }
    for other in roles.iter().filter(|r| *r != name) {
        store
            .run(|| {
                let mut c = store.client.clone();
                let (user, role) = (name.to_string(), other.clone());
                async move { c.user_revoke_role(user, role).await }
            })
            .await?;
        report.revoked.push(format!("{name}: role {other}"));
    }
    Ok(())
}

/// A role as it is in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleView {
    /// Role name.
    pub name: String,
    /// Users that have it.
    pub users: Vec<String>,
    /// Its permissions, as `(access, key shown)`.
    pub grants: Vec<(String, String)>,
    /// Permissions the plan has and etcd does not (`shoal rbac apply` adds them).
    pub missing: Vec<(String, String)>,
}

/// The `shoal-*` roles in etcd with their users and permissions, and what each lacks
/// compared with [`plan`] for the agents found.
pub async fn show(store: &EtcdStore, keys: &Keys) -> Result<Vec<RoleView>, RbacError> {
    let existing = Existing::read(store).await?;
    let roles: Vec<String> = existing
        .roles
        .iter()
        .filter(|r| r.starts_with("shoal-"))
        .cloned()
        .collect();
    let users: Vec<String> = existing.users.iter().cloned().collect();
    let mut users_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for user in users.iter().filter(|u| u.starts_with("shoal-")) {
        let resp = store
            .run(|| {
                let mut c = store.client.clone();
                let user = user.clone();
                async move { c.user_get(user).await }
            })
            .await?;
        for role in resp.roles() {
            users_of.entry(role.clone()).or_default().push(user.clone());
        }
    }
    let nodes: Vec<String> = roles
        .iter()
        .filter_map(|r| r.strip_prefix(AGENT_PREFIX).map(str::to_string))
        .collect();
    let planned: BTreeMap<String, RoleSpec> = plan(keys, &nodes)
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut out = Vec::new();
    for role in roles {
        let perms = role_permissions(store, &role).await?;
        let have: BTreeSet<RawGrant> = perms.iter().cloned().collect();
        let missing = planned.get(&role).map_or_else(Vec::new, |spec| {
            spec.grants
                .iter()
                .filter(|g| !have.contains(&raw(g)))
                .map(|g| (g.access.to_string(), g.shown()))
                .collect()
        });
        let grants = perms
            .iter()
            .map(|p| {
                let shown = shown_raw(p);
                let (access, key) = shown.split_once(' ').unwrap_or(("?", &shown));
                (access.to_string(), key.to_string())
            })
            .collect();
        out.push(RoleView {
            users: users_of.remove(&role).unwrap_or_default(),
            name: role,
            grants,
            missing,
        });
    }
    Ok(out)
}

/// `access key` of a raw permission.
fn shown_raw((t, key, end): &RawGrant) -> String {
    let access = match PermissionType::try_from(*t) {
        Ok(PermissionType::Read) => "read",
        Ok(PermissionType::Write) => "write",
        Ok(PermissionType::Readwrite) => "readwrite",
        Err(_) => "?",
    };
    let k = String::from_utf8_lossy(key);
    let key_shown = if end.is_empty() {
        k.into_owned()
    } else if *end == prefix_end(key) {
        format!("{k}*")
    } else {
        format!("[{k}, {})", String::from_utf8_lossy(end))
    };
    format!("{access} {key_shown}")
}

fn io(path: &Path, source: std::io::Error) -> RbacError {
    RbacError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn generate_password() -> Result<String, RbacError> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| RbacError::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn read_password(file: &Path) -> Result<Option<String>, RbacError> {
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(file, e)),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), RbacError> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(dir, e))
}

fn write_private(path: &Path, text: &str) -> Result<(), RbacError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants_of(roles: &[RoleSpec], name: &str) -> Vec<String> {
        roles
            .iter()
            .find(|r| r.name == name)
            .map(|r| {
                r.grants
                    .iter()
                    .map(|g| format!("{} {}", g.access, g.shown()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn the_plan_follows_the_key_table() {
        let roles = plan(&Keys::default(), &["n1".into(), "n2".into(), "n1".into()]);
        let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "shoal-controller",
                "shoal-api",
                "shoal-agent-n1",
                "shoal-agent-n2"
            ]
        );
        let agent = grants_of(&roles, "shoal-agent-n1");
        assert_eq!(
            agent,
            [
                "read /shoal/cluster",
                "read /shoal/endpoints/*",
                "read /shoal/nodeconfig/n1",
                "read /shoal/tasks/n1/*",
                "readwrite /shoal/nodes/n1",
                "readwrite /shoal/taskstatus/n1/*",
            ]
        );
        let agent = agent.join("\n");
        assert!(
            !agent.contains("secrets") && !agent.contains("n2"),
            "{agent}"
        );
        let controller = grants_of(&roles, "shoal-controller").join("\n");
        assert!(
            controller.contains("readwrite /shoal/leader"),
            "{controller}"
        );
        assert!(
            controller.contains("readwrite /shoal/tasks/*"),
            "{controller}"
        );
        assert!(
            !controller.contains("readwrite /shoal/services/"),
            "{controller}"
        );
        let api = grants_of(&roles, "shoal-api").join("\n");
        assert!(api.contains("readwrite /shoal/services/*"), "{api}");
        assert!(api.contains("readwrite /shoal/secrets/*"), "{api}");
        // `shoal job run` writes a request the controller only reads.
        assert!(api.contains("readwrite /shoal/jobruns/*"), "{api}");
        assert!(
            !controller.contains("readwrite /shoal/jobruns/"),
            "{controller}"
        );
        assert!(!api.contains("readwrite /shoal/tasks/"), "{api}");
    }

    #[test]
    fn exact_keys_do_not_cover_longer_node_ids() {
        let roles = plan(&Keys::default(), &["n1".into()]);
        let g = roles[2]
            .grants
            .iter()
            .find(|g| g.key == "/shoal/nodes/n1")
            .expect("a nodes grant");
        assert!(!g.prefix, "nodes/n1 must not also grant nodes/n10");
        assert_eq!(g.range().1, Vec::<u8>::new());
    }

    #[test]
    fn node_ids_must_fit_a_user_and_file_name() {
        assert!(check_node("core-01.dc1").is_ok());
        for bad in ["", "..", "a/b", "a b", "x\n"] {
            assert!(check_node(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn raw_permissions_are_shown_like_the_plan() {
        let g = Grant::prefix(Access::Read, "/shoal/tasks/n1/".into());
        assert_eq!(shown_raw(&raw(&g)), "read /shoal/tasks/n1/*");
        let g = Grant::key(Access::ReadWrite, "/shoal/leader".into());
        assert_eq!(shown_raw(&raw(&g)), "readwrite /shoal/leader");
    }
}
