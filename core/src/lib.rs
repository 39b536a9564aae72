//! shoal-core: the manifest (types, parsing with line/column errors, validation, JSON Schema),
//! the records components exchange through the store, and the key layout.
//!
//! Pure and fast to test: no I/O beyond what callers hand in, except [`files`], which reads
//! the manifest files and directories a command line names.

pub mod constraint;
pub mod endpoints;
pub mod files;
pub mod job;
pub mod keys;
pub mod logs;
pub mod manifest;
pub mod model;
pub mod parse;
pub mod schedule;
pub mod schema;
pub mod secret;
pub mod stored;
pub mod units;
pub mod validate;
pub mod view;

pub use keys::{Key, Keys};
pub use manifest::{Service, ServiceRef, ServiceRefError, ServiceSpec};
pub use model::{
    Node, NodeConfig, NodeInfo, ServiceStatus, Task, TaskState, TaskStatus, TaskTemplate, Timestamp,
};
pub use parse::{ManifestError, ParsedService, parse};
pub use stored::{StoredManifestError, parse_stored};
pub use units::{ByteSize, Dur};
