//! Task output on the node: the `process` runtime's log files ([`file`]), a container's output
//! through Docker's logs API ([`docker`]), and the routes the agent's listener serves them on
//! ([`http`]), to the API only (it presents the cluster's agent token).
//!
//! A runtime hands out a task's output as [`Lines`] (see
//! [`crate::runtime::Runtime::logs`]); the listener turns them into the NDJSON events of
//! [`shoal_core::logs`].

pub mod docker;
pub mod file;
pub mod http;

use std::pin::Pin;
use std::time::SystemTime;

use futures::Stream;
use shoal_core::logs::OutputStream;

use crate::runtime::RuntimeError;

/// One line of a task's output as the runtime keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// stdout or stderr.
    pub stream: OutputStream,
    /// When the runtime received it.
    pub time: SystemTime,
    /// The text, without its line break.
    pub text: String,
}

/// A task's output, in order; it ends when every line asked for was sent (with `follow`:
/// when the task's output closed).
pub type Lines = Pin<Box<dyn Stream<Item = Result<RawLine, RuntimeError>> + Send>>;
