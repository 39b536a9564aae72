//! Secrets and configs as a service uses them: the references a manifest makes
//! (`spec.secrets`, `spec.configs`), file modes written as in Compose files, the checks on
//! names, targets, modes and owners, and which referenced objects are missing.
//!
//! A secret is delivered to a task as the file `/run/secrets/<target>` (`target` defaults to
//! the secret's name); a config as the file at its absolute `target` path (default
//! `/<source>`). Both are read-only files with `mode` (default `0444`) and owner `uid:gid`.
//! Values never appear here: a reference names its object, the API keeps the value.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validate::dns_label_problem;

/// Largest secret or config value (500 KiB), as in Swarm.
pub const MAX_SIZE: usize = 500 * 1024;
/// Directory of secret files inside a container.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Mode of a delivered file when the manifest gives none.
pub const DEFAULT_MODE: u32 = 0o444;
/// Largest mode a file may have (no setuid, setgid or sticky bits).
pub const MAX_MODE: u32 = 0o777;

/// Secret or config: what a reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// Encrypted at rest, delivered under `/run/secrets`.
    Secret,
    /// Stored as is, delivered at any absolute path.
    Config,
}

impl FileKind {
    /// `secret` or `config`, as in messages and commands.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }

    /// The manifest field listing references of this kind (`spec.secrets`).
    pub fn field(self) -> &'static str {
        match self {
            FileKind::Secret => "spec.secrets",
            FileKind::Config => "spec.configs",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Permission bits of a delivered file, written as in Compose files: the string `"0400"`
/// (octal, what YAML parsers yield for an unquoted `0400`) or a number, which is the mode's
/// value in decimal (`256` = `0400`). Shown and stored as the octal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileMode(pub u32);

impl FileMode {
    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Parses octal digits, with or without a leading `0` or `0o` (`"0400"`, `"400"`,
    /// `"0o400"`).
    pub fn parse_octal(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let digits = t.strip_prefix("0o").unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(format!(
                "invalid mode {text:?}: expected octal digits such as \"0400\" or \"0644\""
            ));
        }
        u32::from_str_radix(digits, 8)
            .map(FileMode)
            .map_err(|_| format!("invalid mode {text:?}: the number is too large"))
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => u32::try_from(n)
                .map(FileMode)
                .map_err(|_| serde::de::Error::custom(format!("invalid mode {n}: too large"))),
            Raw::S(s) => FileMode::parse_octal(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for FileMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FileMode".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                {"type": "string", "pattern": "^(0o)?[0-7]{1,4}$"},
                {"type": "integer", "minimum": 0, "maximum": 511}
            ],
            "description": "File mode as in Compose files: \"0400\" (octal), or a number holding the mode's value (256 = 0400); at most 0777",
            "examples": ["0400", "0444"]
        })
    }
}

/// A secret or config a service's tasks receive as a file (`spec.secrets[]`,
/// `spec.configs[]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRef {
    /// Name of the secret or config (a DNS label) in the service's namespace.
    pub source: String,
    /// Secrets: the file name under `/run/secrets` (default: `source`). Configs: the absolute
    /// path of the file (default: `/<source>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Permission bits, `"0400"` (default `0444`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    /// Numeric user id owning the file (default: `0` in containers, the agent's own user for
    /// host processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Numeric group id owning the file (defaults as `uid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
}

impl FileRef {
    /// The target as written, or its default: `source` for a secret, `/<source>` for a
    /// config.
    pub fn target(&self, kind: FileKind) -> String {
        match (&self.target, kind) {
            (Some(t), _) => t.clone(),
            (None, FileKind::Secret) => self.source.clone(),
            (None, FileKind::Config) => format!("/{}", self.source),
        }
    }

    /// Absolute path of the file inside a container.
    pub fn container_path(&self, kind: FileKind) -> String {
        match kind {
            FileKind::Secret => format!("{SECRETS_DIR}/{}", self.target(kind)),
            FileKind::Config => self.target(kind),
        }
    }

    /// Path of the file relative to the task's directory of this kind (host processes get
    /// `$SHOAL_SECRETS_DIR/<target>` and `$SHOAL_CONFIGS_DIR/<target without its leading />`).
    pub fn relative_path(&self, kind: FileKind) -> String {
        self.target(kind).trim_start_matches('/').to_string()
    }

    /// The mode, or [`DEFAULT_MODE`].
    pub fn mode_bits(&self) -> u32 {
        self.mode.map_or(DEFAULT_MODE, FileMode::bits)
    }

    /// The numeric owner, when given and valid.
    pub fn uid(&self) -> Option<u32> {
        self.uid.as_deref().and_then(|u| u.trim().parse().ok())
    }

    /// The numeric group, when given and valid.
    pub fn gid(&self) -> Option<u32> {
        self.gid.as_deref().and_then(|g| g.trim().parse().ok())
    }
}

/// One problem with a reference: the field under the reference (`source`, `target`, ...)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefProblem {
    /// Index of the reference in its list.
    pub index: usize,
    /// Field of the reference.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Why a secret's target is not a plain file name, if it is not one.
fn secret_target_problem(t: &str) -> Option<String> {
    if t.is_empty() {
        return Some(
            "a secret's target is a file name under /run/secrets and must not be empty".into(),
        );
    }
    if t.contains('/') || t == "." || t == ".." || t.contains('\0') {
        return Some(format!(
            "invalid target {t:?}: a secret's target is a file name under /run/secrets, without '/'"
        ));
    }
    (t.len() > 255).then(|| format!("invalid target {t:?}: a file name has at most 255 bytes"))
}

/// Why a config's target is not a clean absolute path, if it is not one.
fn config_target_problem(t: &str) -> Option<String> {
    if !t.starts_with('/') || t == "/" {
        return Some(format!(
            "invalid target {t:?}: a config's target is the absolute path of a file, e.g. /etc/app.conf"
        ));
    }
    if t[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
        || t.contains('\0')
    {
        return Some(format!(
            "invalid target {t:?}: the path must not contain empty, '.' or '..' components"
        ));
    }
    (t.len() > 4096).then(|| format!("invalid target {t:?}: a path has at most 4096 bytes"))
}

fn id_problem(which: &str, v: &str) -> Option<String> {
    v.trim()
        .parse::<u32>()
        .is_err()
        .then(|| format!("invalid {which} {v:?}: expected a numeric id such as \"0\" or \"1000\""))
}

/// Every problem in one list of references: names are DNS labels, targets are file names
/// (secrets) or clean absolute paths (configs), modes are at most `0777`, owners are numeric,
/// and no two references land on the same file. `taken` holds the container paths of the
/// other list (a config may not land on a secret's file); the paths of this list are added.
pub fn check_refs(
    kind: FileKind,
    refs: &[FileRef],
    taken: &mut std::collections::BTreeMap<String, String>,
) -> Vec<RefProblem> {
    let mut out = Vec::new();
    let mut push = |index, field, message: String| {
        out.push(RefProblem {
            index,
            field,
            message,
        })
    };
    for (i, r) in refs.iter().enumerate() {
        if let Some(p) = dns_label_problem(&r.source) {
            push(
                i,
                "source",
                format!(
                    "invalid {kind} name {:?}: a name is a DNS label and {p}",
                    r.source
                ),
            );
        }
        let target = r.target(kind);
        let problem = match kind {
            FileKind::Secret => secret_target_problem(&target),
            FileKind::Config => config_target_problem(&target),
        };
        match problem {
            Some(p) => push(i, "target", p),
            None => {
                let path = r.container_path(kind);
                let here = format!("{}[{i}]", kind.field());
                if let Some(first) = taken.get(&path) {
                    push(
                        i,
                        "target",
                        format!("{path} is already the file of {first}"),
                    );
                } else {
                    taken.insert(path, here);
                }
            }
        }
        if let Some(m) = r.mode
            && m.bits() > MAX_MODE
        {
            push(
                i,
                "mode",
                format!(
                    "mode {m} is above 0777 (a number is the mode's decimal value: write \"0400\" for octal)"
                ),
            );
        }
        for (field, v) in [("uid", &r.uid), ("gid", &r.gid)] {
            if let Some(p) = v.as_deref().and_then(|v| id_problem(field, v)) {
                push(i, field, p);
            }
        }
    }
    out
}

/// The references of a spec that name objects the namespace lacks: one message per missing
/// object, naming it and where it is referenced, in the order of the manifest.
pub fn missing_objects(
    namespace: &str,
    secrets: &[FileRef],
    configs: &[FileRef],
    exists: impl Fn(FileKind, &str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, refs) in [(FileKind::Secret, secrets), (FileKind::Config, configs)] {
        for (i, r) in refs.iter().enumerate() {
            if !exists(kind, &r.source) {
                out.push(format!(
                    "{}[{i}].source: {kind} {:?} does not exist in namespace {namespace:?} \
                     (create it with `shoal {kind} create {} FILE -n {namespace}`)",
                    kind.field(),
                    r.source,
                    r.source
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn file(source: &str) -> FileRef {
        FileRef {
            source: source.into(),
            target: None,
            mode: None,
            uid: None,
            gid: None,
        }
    }

    #[test]
    fn modes_are_octal_strings_or_decimal_numbers() {
        let mode = |y: &str| yaml_serde::from_str::<FileMode>(y).map(FileMode::bits);
        assert_eq!(mode("0400").unwrap(), 0o400, "unquoted YAML 0400 is octal");
        assert_eq!(mode("\"0400\"").unwrap(), 0o400);
        assert_eq!(mode("\"440\"").unwrap(), 0o440, "strings are always octal");
        assert_eq!(mode("0o640").unwrap(), 0o640);
        assert_eq!(mode("256").unwrap(), 0o400, "a number is the decimal value");
        assert_eq!(
            serde_json::from_str::<FileMode>("256").unwrap().bits(),
            0o400
        );
        assert_eq!(
            serde_json::from_str::<FileMode>("\"0644\"").unwrap().bits(),
            0o644
        );
        let e = mode("\"0800\"").unwrap_err().to_string();
        assert!(e.contains("invalid mode \"0800\""), "{e}");
        assert!(mode("\"\"").is_err());
        assert!(mode("rw").is_err());
        assert!(mode("-1").is_err());
        assert_eq!(FileMode(0o400).to_string(), "0400");
        assert_eq!(serde_json::to_string(&FileMode(0o40)).unwrap(), "\"0040\"");
    }

    #[test]
    fn targets_default_per_kind() {
        let r = file("db-password");
        assert_eq!(r.target(FileKind::Secret), "db-password");
        assert_eq!(
            r.container_path(FileKind::Secret),
            "/run/secrets/db-password"
        );
        assert_eq!(r.container_path(FileKind::Config), "/db-password");
        assert_eq!(r.relative_path(FileKind::Config), "db-password");
        assert_eq!(r.mode_bits(), 0o444);
        let r = FileRef {
            target: Some("/etc/app/app.conf".into()),
            mode: Some(FileMode(0o400)),
            uid: Some("1000".into()),
            ..file("app")
        };
        assert_eq!(r.container_path(FileKind::Config), "/etc/app/app.conf");
        assert_eq!(r.relative_path(FileKind::Config), "etc/app/app.conf");
        assert_eq!((r.mode_bits(), r.uid(), r.gid()), (0o400, Some(1000), None));
    }

    #[test]
    fn bad_references_are_named_by_field() {
        let refs = vec![
            FileRef {
                mode: Some(FileMode(0o1000)),
                ..file("Bad_Name")
            },
            FileRef {
                target: Some("a/b".into()),
                uid: Some("root".into()),
                ..file("ok")
            },
            FileRef {
                target: Some("ok".into()),
                ..file("other")
            },
            file("ok"),
        ];
        let mut taken = BTreeMap::new();
        let problems = check_refs(FileKind::Secret, &refs, &mut taken);
        let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.index, p.field)).collect();
        assert_eq!(
            got,
            vec![
                (0, "source"),
                (0, "mode"),
                (1, "target"),
                (1, "uid"),
                (3, "target")
            ]
        );
        assert!(problems[1].message.contains("above 0777"));
        assert!(
            problems[4].message.contains("spec.secrets[2]"),
            "{problems:?}"
        );

        let configs = vec![
            FileRef {
                target: Some("etc/x".into()),
                ..file("a")
            },
            FileRef {
                target: Some("/etc/../x".into()),
                ..file("b")
            },
            FileRef {
                target: Some("/run/secrets/ok".into()),
                ..file("c")
            },
            file("d"),
        ];
        let problems = check_refs(FileKind::Config, &configs, &mut taken);
        let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.index, p.field)).collect();
        assert_eq!(got, vec![(0, "target"), (1, "target"), (2, "target")]);
    }

    #[test]
    fn missing_objects_name_the_reference_and_the_fix() {
        let have = |k: FileKind, n: &str| k == FileKind::Secret && n == "db";
        let msgs = missing_objects("prod", &[file("db"), file("api-key")], &[file("app")], have);
        assert_eq!(msgs.len(), 2);
        assert!(
            msgs[0].starts_with(
                "spec.secrets[1].source: secret \"api-key\" does not exist in namespace \"prod\""
            ),
            "{}",
            msgs[0]
        );
        assert!(msgs[0].contains("shoal secret create api-key FILE -n prod"));
        assert!(msgs[1].starts_with("spec.configs[0].source: config \"app\""));
    }
}
