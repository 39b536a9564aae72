//! The workload: applies, scales, rolling updates and deletes of 20 services through the API,
//! drawn from the run's seed. Every response is recorded; [`Model`] keeps, per service, the
//! last acknowledged state and the states of later requests whose outcome is unknown (a
//! timeout may or may not have been written), which is what the final state is checked
//! against.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use shoal_api::client::{ApplyOptions, Client};

/// Namespace of the workload's services.
pub const NAMESPACE: &str = "chaos";
/// Number of services.
pub const SERVICES: usize = 20;
/// The first services are global (one task per node), the others replicated.
const GLOBAL: usize = 4;

/// Desired state of one service as the workload asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Desired {
    /// Present with this many replicas (`None`: global) and template version.
    Present {
        /// Replicas (replicated services).
        replicas: Option<u64>,
        /// The `VERSION` env value (a change is a rolling update).
        version: u64,
    },
    /// Deleted.
    Absent,
}

/// Name of service `i`.
pub fn service_name(i: usize) -> String {
    format!("svc-{i:02}")
}

/// The manifest of service `i` at `replicas` / `version`.
pub fn manifest(run_id: &str, i: usize, replicas: Option<u64>, version: u64) -> String {
    let name = service_name(i);
    let mode = match replicas {
        Some(r) => format!("mode: replicated\n  replicas: {r}"),
        None => "mode: global".into(),
    };
    format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
         spec:\n  {mode}\n  runtime: process\n  command: [sleep, \"1000000\"]\n\
         \x20 env: {{CHAOS_RUN: \"{run_id}\", CHAOS_SVC: \"{name}\", VERSION: \"{version}\"}}\n\
         \x20 stopGracePeriod: 2s\n  restart: {{condition: any, delay: 1s}}\n\
         \x20 update: {{parallelism: 1, monitor: 1s, failureAction: continue}}\n"
    )
}

/// One request and its answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpRecord {
    /// Seconds since the workload started.
    pub t: f64,
    /// Service.
    pub service: String,
    /// `apply`, `scale`, `update` or `delete`.
    pub op: &'static str,
    /// What it asked for.
    pub desired: Desired,
    /// `ok`, `rejected` (a definite error answer) or `unknown` (no answer: it may be written).
    pub outcome: &'static str,
    /// Store revision of an acknowledged write.
    pub revision: Option<i64>,
    /// Error text otherwise.
    pub error: Option<String>,
    /// Response time in ms.
    pub ms: u64,
}

/// Per service: the last acknowledged state and later unknown outcomes.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Last acknowledged desired state (None: never acknowledged).
    pub acked: BTreeMap<String, Desired>,
    /// States asked for after the last acknowledgement whose outcome is unknown.
    pub uncertain: BTreeMap<String, Vec<Desired>>,
}

impl Model {
    fn record(&mut self, rec: &OpRecord) {
        match rec.outcome {
            "ok" => {
                self.acked.insert(rec.service.clone(), rec.desired.clone());
                self.uncertain.remove(&rec.service);
            }
            "unknown" => self
                .uncertain
                .entry(rec.service.clone())
                .or_default()
                .push(rec.desired.clone()),
            _ => {}
        }
    }

    /// States the final state of `service` may legally be in.
    pub fn allowed(&self, service: &str) -> Vec<Desired> {
        let mut v = vec![self.acked.get(service).cloned().unwrap_or(Desired::Absent)];
        v.extend(self.uncertain.get(service).cloned().unwrap_or_default());
        v
    }
}

/// The workload's generator and its record.
pub struct Workload {
    rng: StdRng,
    run_id: String,
    client: Client,
    started: Instant,
    /// Last state asked for, per service index (what the next op starts from).
    current: Vec<Desired>,
    /// Every request and answer.
    pub records: Vec<OpRecord>,
    /// The model the final state is checked against.
    pub model: Model,
}

impl Workload {
    /// A workload against `api` drawn from `seed`.
    pub fn new(seed: u64, run_id: &str, api: &str, token: &str) -> Self {
        Workload {
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_0f3a_11aa),
            run_id: run_id.to_string(),
            client: Client::new(api, Some(token.to_string())),
            started: Instant::now(),
            current: vec![Desired::Absent; SERVICES],
            records: Vec::new(),
            model: Model::default(),
        }
    }

    /// Creates every service once (the starting point).
    pub async fn seed_services(&mut self) {
        for i in 0..SERVICES {
            let replicas = (i >= GLOBAL).then_some(1 + (i as u64 % 3));
            self.send(
                i,
                "apply",
                Desired::Present {
                    replicas,
                    version: 1,
                },
            )
            .await;
        }
    }

    /// Draws and sends one request.
    pub async fn step(&mut self) {
        let i = self.rng.random_range(0..SERVICES);
        let roll = self.rng.random_range(0..10);
        let (op, desired) = match (&self.current[i], roll) {
            (Desired::Absent, _) => {
                let replicas = (i >= GLOBAL).then(|| self.rng.random_range(1..=4));
                (
                    "apply",
                    Desired::Present {
                        replicas,
                        version: 1,
                    },
                )
            }
            (Desired::Present { .. }, 0) => ("delete", Desired::Absent),
            (Desired::Present { replicas, version }, 1..=4) if replicas.is_some() => (
                "scale",
                Desired::Present {
                    replicas: Some(self.rng.random_range(0..=4)),
                    version: *version,
                },
            ),
            (Desired::Present { replicas, version }, _) => (
                "update",
                Desired::Present {
                    replicas: *replicas,
                    version: version + 1,
                },
            ),
        };
        self.send(i, op, desired).await;
    }

    async fn send(&mut self, i: usize, op: &'static str, desired: Desired) {
        let name = service_name(i);
        let t0 = Instant::now();
        let call = async {
            match &desired {
                Desired::Absent => self
                    .client
                    .delete_service(NAMESPACE, &name)
                    .await
                    .map(|r| r.revision),
                Desired::Present { replicas, version } => {
                    let m = manifest(&self.run_id, i, *replicas, *version);
                    self.client
                        .apply(&m, &ApplyOptions::default())
                        .await
                        .map(|r| r.results.first().map(|w| w.revision).unwrap_or(0))
                }
            }
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), call).await;
        let (outcome, revision, error) = match answer {
            Ok(Ok(rev)) => ("ok", Some(rev), None),
            // A 4xx is a definite refusal; 5xx and transport errors may have been written.
            Ok(Err(e)) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                ("rejected", None, Some(e.to_string()))
            }
            Ok(Err(e)) => ("unknown", None, Some(e.to_string())),
            Err(_) => ("unknown", None, Some("no answer within 10 s".into())),
        };
        // A delete of a service already gone is acknowledged as absent.
        let outcome = if matches!(desired, Desired::Absent)
            && error.as_deref().is_some_and(|e| e.contains("404"))
        {
            "ok"
        } else {
            outcome
        };
        let rec = OpRecord {
            t: self.started.elapsed().as_secs_f64(),
            service: name,
            op,
            desired: desired.clone(),
            outcome,
            revision,
            error,
            ms: t0.elapsed().as_millis() as u64,
        };
        if outcome != "rejected" {
            self.current[i] = desired;
        }
        self.model.record(&rec);
        self.records.push(rec);
    }
}
