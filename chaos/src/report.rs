//! The figures of one run: one JSON line appended to a results file (`chaos/results/*.jsonl`),
//! with the seed, duration, faults per kind, events checked, violations and convergence time,
//! plus per-fault recovery times for the fault matrix of RELIABILITY.md.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::checker::Violation;

/// Recovery of one kind of fault.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    /// Faults of this kind applied.
    pub count: u64,
    /// Steps after which the leader had changed.
    pub leader_changes: u64,
    /// Seconds from heal until the cluster was whole again (API answers, every node ready, a
    /// leader, no stale copy left): median and maximum.
    pub recover_median_s: f64,
    /// Maximum of the same.
    pub recover_max_s: f64,
    /// Heals after which the cluster was not whole within the bound.
    pub not_recovered: u64,
}

/// One run's result line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunResult {
    /// Seed of the schedule and workload.
    pub seed: u64,
    /// Run id (names of namespaces, links and processes).
    pub run_id: String,
    /// Nemesis duration asked for.
    pub nemesis_s: u64,
    /// Wall time of the whole run.
    pub duration_s: f64,
    /// Faults applied per kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Steps of the schedule (some combine two faults).
    pub steps: u64,
    /// Store events the checker examined.
    pub events_checked: u64,
    /// Number of invariant violations.
    pub violations: u64,
    /// The violations themselves.
    pub violation_details: Vec<Violation>,
    /// Seconds from the end of the nemesis (every fault healed) until every service converged
    /// (None: it did not).
    pub converge_s: Option<f64>,
    /// Workload requests per outcome (ok, rejected, unknown).
    pub requests: BTreeMap<&'static str, u64>,
    /// Stale copies on disturbed nodes that stopped, and the longest time after heal.
    pub stale_copies: u64,
    /// Longest time a stale copy ran after its node healed.
    pub stale_stop_max_s: f64,
    /// Stale copies that stopped while a nemesis fault was active on their host: not timed.
    pub stale_stopped_cut_off: u64,
    /// Tasks moved off their node (orphaned: the node's lease expired), per cause, and every
    /// node loss not caused by a fault on that node's host, with the faults active then.
    pub moves: crate::timeline::Moves,
    /// Recovery per fault kind.
    pub recovery: BTreeMap<&'static str, Recovery>,
    /// Packets held by the delay of degraded links, and for how long in total.
    pub delayed: crate::delay::DelayStats,
}

impl RunResult {
    /// Appends this result as one JSON line to `path`.
    pub fn append_to(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let line = serde_json::to_string(self).map_err(std::io::Error::other)?;
        writeln!(f, "{line}")
    }
}

/// Median and maximum of a list of seconds.
pub fn median_max(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (round(s[s.len() / 2]), round(s[s.len() - 1]))
}

/// Rounds to milliseconds.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Renders the fault matrix of the last result line of a results file as a Markdown table
/// (the figures RELIABILITY.md quotes).
pub fn render_matrix(jsonl: &str) -> Result<String, String> {
    let line = jsonl
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("the results file is empty")?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let mut out = format!(
        "seed {} · run {} · nemesis {} s · {} steps · {} store events checked · {} violations · converged {} s after the nemesis stopped\n\n",
        v["seed"],
        v["run_id"],
        v["nemesis_s"],
        v["steps"],
        v["events_checked"],
        v["violations"],
        v["converge_s"]
    );
    out.push_str("| fault | applied | leader changed | whole again after heal: median | max | not whole within bound |\n|---|---|---|---|---|---|\n");
    if let Some(rec) = v["recovery"].as_object() {
        for (kind, r) in rec {
            out.push_str(&format!(
                "| {kind} | {} | {} | {} s | {} s | {} |\n",
                r["count"],
                r["leader_changes"],
                r["recover_median_s"],
                r["recover_max_s"],
                r["not_recovered"]
            ));
        }
    }
    let cut_off = match v["stale_stopped_cut_off"].as_u64() {
        Some(n) => format!("; {n} more stopped while a fault was active on their host"),
        None => String::new(),
    };
    out.push_str(&format!(
        "\nstale copies stopped: {} (longest {} s after their node was back{cut_off}) · {} · requests: {} · {}\n",
        v["stale_copies"], v["stale_stop_max_s"], moves_line(&v), v["requests"], latency_line(&v)
    ));
    out.push_str(&losses_table(&v));
    Ok(out)
}

/// Tasks moved, per cause (older result lines only counted the moves off untouched hosts).
fn moves_line(v: &serde_json::Value) -> String {
    let Some(by) = v["moves"]["by_cause"].as_object() else {
        return format!(
            "tasks orphaned on untouched hosts: {}",
            v["spurious_orphans"]
        );
    };
    let n = |k: &str| by.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    format!(
        "tasks moved: {} (fault on their host: {}, faults elsewhere: {}, no fault: {})",
        n("fault_on_host") + n("fault_elsewhere") + n("no_fault"),
        n("fault_on_host"),
        n("fault_elsewhere"),
        n("no_fault")
    )
}

/// Every node loss not caused by a fault on its own host, with the faults active then.
fn losses_table(v: &serde_json::Value) -> String {
    let Some(losses) = v["moves"]["losses"].as_array().filter(|l| !l.is_empty()) else {
        return String::new();
    };
    let mut out = String::from(
        "\n| t (s) | node lost | tasks moved | cause | faults active in its last lease | load (1 min) |\n|---|---|---|---|---|---|\n",
    );
    for l in losses {
        let faults: Vec<&str> = l["faults"]
            .as_array()
            .map(|f| f.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            l["t"],
            l["node"].as_str().unwrap_or(""),
            l["tasks"],
            l["cause"].as_str().unwrap_or(""),
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(", ")
            },
            l["load1"]
        ));
    }
    out
}

/// The latency added by degraded links (older result lines only said whether netem existed).
fn latency_line(v: &serde_json::Value) -> String {
    let d = &v["delayed"];
    match (d["packets"].as_u64(), d["held_ms"].as_f64()) {
        (Some(n), Some(ms)) if n > 0 => format!(
            "latency injected: {n} packets delayed, {:.1} ms each on average",
            ms / n as f64
        ),
        (Some(_), _) => "latency injected: no packet delayed".to_string(),
        _ => format!("latency injected: {}", v["netem"]),
    }
}
