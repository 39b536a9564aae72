//! The JSON Schema of the Service manifest, generated from the Rust types (so it cannot drift
//! from what [`crate::parse`] accepts): served to editors and printed by `shoal schema`.
//!
//! Every object in it has `additionalProperties: false`, like the types' `deny_unknown_fields`.
//! The schema checks shapes and formats; cross-field rules (a global service has no `replicas`,
//! limits are not below reservations, ...) are [`crate::validate`]'s.

use crate::manifest::Service;

/// JSON Schema (draft 2020-12) of a Service manifest document.
pub fn service_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Service);
    serde_json::to_value(&schema).unwrap_or(serde_json::Value::Null)
}

/// The schema as pretty-printed JSON text.
pub fn service_schema_pretty() -> String {
    serde_json::to_string_pretty(&service_schema()).unwrap_or_default()
}
