//! Benchmark output: one JSON line per figure in `bench/results/`, and a short table on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use crate::calibrate::Calibration;

/// `git rev-parse --short HEAD` of the working directory (empty outside a checkout).
pub fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Context stamped on every figure of a run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunContext {
    /// `git rev-parse --short HEAD` of the tree measured.
    pub git_revision: String,
    /// etcd server version.
    pub etcd_version: String,
    /// Run name (`quick` or `full`).
    pub run: String,
    /// Calibration at the start.
    pub calibration_start: Option<Calibration>,
    /// Calibration at the end.
    pub calibration_end: Option<Calibration>,
}

/// Collects figures and writes them out.
pub struct Report {
    path: PathBuf,
    ctx: RunContext,
    rows: Vec<(String, String, f64, String)>,
    lines: Vec<Value>,
}

impl Report {
    /// A report written to `dir/<timestamp>-<run>.jsonl`.
    pub fn new(dir: &Path, ctx: RunContext) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = dir.join(format!("{stamp}-{}.jsonl", ctx.run));
        Ok(Report {
            path,
            ctx,
            rows: Vec::new(),
            lines: Vec::new(),
        })
    }

    /// Updates the context (e.g. the end calibration).
    pub fn context_mut(&mut self) -> &mut RunContext {
        &mut self.ctx
    }

    /// Records one figure with its scenario, name, value, unit and extra fields.
    pub fn figure(&mut self, scenario: &str, name: &str, value: f64, unit: &str, extra: Value) {
        tracing::info!(scenario, name, value, unit, "figure");
        self.rows.push((
            scenario.to_string(),
            name.to_string(),
            value,
            unit.to_string(),
        ));
        self.lines.push(json!({
            "scenario": scenario, "figure": name, "value": value, "unit": unit, "extra": extra,
        }));
    }

    /// Writes the JSON lines (each with the run context) and prints the table.
    pub fn finish(self) -> std::io::Result<PathBuf> {
        let mut f = std::fs::File::create(&self.path)?;
        let ctx = serde_json::to_value(&self.ctx).unwrap_or(Value::Null);
        for mut l in self.lines {
            l["context"] = ctx.clone();
            writeln!(f, "{l}")?;
        }
        println!("\n{:<10} {:<40} {:>14} unit", "scenario", "figure", "value");
        for (s, n, v, u) in &self.rows {
            println!("{s:<10} {n:<40} {v:>14.2} {u}");
        }
        println!("\nresults: {}", self.path.display());
        Ok(self.path)
    }
}
