//! One chaos run from start to teardown: hosts and cluster up, checker following the store,
//! workload and nemesis side by side for the configured time, every fault healed, then the
//! final checks and the result line. Teardown is the [`Cluster`]'s drop, so it also happens
//! when the run fails or panics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_api::Client;
use shoal_controller::runner::leader::LeaderRecord;
use shoal_core::Keys;
use shoal_store::{EtcdStore, Store};

use crate::checker::{Checker, Violation};
use crate::cluster::{Cluster, ClusterConfig, ClusterError, Role, node_id};
use crate::nemesis::{self, NemesisError, Step};
use crate::netns::{Net, NetError};
use crate::report::{Recovery, RunResult, median_max, round};
use crate::timeline::Disturbance;
use crate::verify;
use crate::workload::Workload;

/// Hosts of the cluster.
pub const HOSTS: usize = 3;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seed of the schedule and the workload.
    pub seed: u64,
    /// How long the nemesis runs.
    pub duration: Duration,
    /// The `shoal` binary.
    pub shoal: PathBuf,
    /// The `etcd` binary.
    pub etcd: PathBuf,
    /// Where the run's data and logs go (a run-id directory is made inside).
    pub work_dir: PathBuf,
    /// Lease TTL of controllers and agents.
    pub lease_ttl: Duration,
    /// How long the cluster may take to converge once the nemesis stops.
    pub converge_bound: Duration,
    /// How long the cluster may take to be whole again after one fault heals.
    pub recover_bound: Duration,
}

/// Why a run could not be carried out (violations are results, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// Network setup failed (not root, no `ip`, ...).
    #[error(transparent)]
    Net(#[from] NetError),
    /// A process could not be started.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A fault could not be applied.
    #[error(transparent)]
    Nemesis(#[from] NemesisError),
    /// The cluster did not come up.
    #[error("the cluster did not come up: {0}")]
    Startup(String),
}

fn run_id() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Runs the whole scenario and returns its figures.
pub async fn run(cfg: Config) -> Result<RunResult, ChaosError> {
    let started = Instant::now();
    let id = run_id();
    let net = Net::create(&id, HOSTS)?;
    let dir = cfg.work_dir.join(format!("run-{id}"));
    let mut cluster = Cluster::new(
        ClusterConfig {
            shoal: cfg.shoal.clone(),
            etcd: cfg.etcd.clone(),
            dir: dir.clone(),
            lease_ttl: cfg.lease_ttl,
        },
        net,
    )?;
    tracing::info!(run = %id, seed = cfg.seed, dir = %dir.display(), "chaos run starting");
    let store = start_cluster(&mut cluster).await?;
    let client = Client::new(&cluster.api_url(), Some(cluster.token.clone()));
    wait_whole(&client, store.as_ref(), Duration::from_secs(60))
        .await
        .map_err(ChaosError::Startup)?;
    let disturbance = Arc::new(Mutex::new(Disturbance::default()));
    let checker = Checker::spawn(store.clone(), disturbance.clone(), cfg.lease_ttl);

    let mut workload = Workload::new(cfg.seed, &id, &cluster.api_url(), &cluster.token);
    workload.seed_services().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(drive(workload, stop.clone()));

    let steps = nemesis::schedule(cfg.seed, cfg.duration, HOSTS, cfg.lease_ttl);
    let ctx = Ctx {
        client: &client,
        store: store.as_ref(),
        disturbance: &disturbance,
        bound: cfg.recover_bound,
    };
    let recovery = run_nemesis(&mut cluster, &steps, &ctx).await?;
    stop.store(true, Ordering::SeqCst);
    let workload = load.await.map_err(|e| ChaosError::Startup(e.to_string()))?;
    cluster.net.heal_all()?;
    cluster.resume_all();

    let mut result = finish(&cluster, store.as_ref(), &client, &checker, &workload, &cfg).await;
    result.seed = cfg.seed;
    result.run_id = id;
    result.nemesis_s = cfg.duration.as_secs();
    result.faults = nemesis::count(&steps);
    result.steps = steps.len() as u64;
    result.recovery = recovery;
    result.delayed = cluster.net.delayed();
    result.duration_s = round(started.elapsed().as_secs_f64());
    let _ = std::fs::write(
        dir.join("requests.json"),
        serde_json::to_string_pretty(&workload.records).unwrap_or_default(),
    );
    Ok(result)
}

async fn start_cluster(cluster: &mut Cluster) -> Result<Arc<dyn Store>, ChaosError> {
    for h in 0..HOSTS {
        cluster.start(Role::Etcd(h))?;
    }
    let store = EtcdStore::connect(&cluster.etcd_endpoints())
        .await
        .map_err(|e| ChaosError::Startup(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.get("/shoal/leader").await.is_err() {
        if Instant::now() > deadline {
            return Err(ChaosError::Startup(
                "etcd cluster did not answer within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for role in cluster
        .roles()
        .into_iter()
        .filter(|r| !matches!(r, Role::Etcd(_)))
    {
        cluster.start(role)?;
    }
    Ok(Arc::new(store))
}

async fn drive(mut w: Workload, stop: Arc<AtomicBool>) -> Workload {
    while !stop.load(Ordering::SeqCst) {
        w.step().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    w
}

/// What the nemesis loop needs besides the cluster.
struct Ctx<'a> {
    client: &'a Client,
    store: &'a dyn Store,
    disturbance: &'a Arc<Mutex<Disturbance>>,
    bound: Duration,
}

async fn leader_identity(store: &dyn Store) -> Option<String> {
    let kv = store.get(&Keys::default().leader()).await.ok()??;
    serde_json::from_slice::<LeaderRecord>(&kv.value)
        .ok()
        .map(|r| r.identity)
}

fn leader_role(cluster: &Cluster, identity: Option<&str>) -> Option<Role> {
    let identity = identity?;
    (0..2).map(Role::Controller).find(|r| {
        cluster
            .pid(*r)
            .is_some_and(|pid| identity.starts_with(&format!("controller-{pid}-")))
    })
}

fn agent_host(r: Role) -> Option<usize> {
    match r {
        Role::Agent(h) => Some(h),
        _ => None,
    }
}

async fn run_nemesis(
    cluster: &mut Cluster,
    steps: &[Step],
    ctx: &Ctx<'_>,
) -> Result<BTreeMap<&'static str, Recovery>, ChaosError> {
    let t0 = Instant::now();
    let mut times: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut rec: BTreeMap<&'static str, Recovery> = BTreeMap::new();
    for step in steps {
        if let Some(wait) = step.at.checked_sub(t0.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let before = leader_identity(ctx.store).await;
        let leader = leader_role(cluster, before.as_deref());
        let mut applied = Vec::new();
        for f in &step.faults {
            let nodes = f
                .disturbed_hosts(agent_host)
                .into_iter()
                .map(node_id)
                .collect();
            let id = ctx.disturbance.lock().expect("disturbance").begin(
                f.to_string(),
                nodes,
                f.disturbs_store(),
            );
            tracing::info!(fault = %f, hold = ?step.hold, "fault");
            let a = nemesis::apply(cluster, f, leader).await?;
            applied.push((a, id));
        }
        tokio::time::sleep(step.hold).await;
        for (a, id) in &applied {
            nemesis::heal(cluster, a)?;
            ctx.disturbance.lock().expect("disturbance").end(*id);
        }
        let recovered = wait_whole(ctx.client, ctx.store, ctx.bound).await;
        let after = leader_identity(ctx.store).await;
        for (a, _) in &applied {
            let r = rec.entry(a.fault.kind().name()).or_default();
            r.count += 1;
            r.leader_changes += u64::from(before != after);
            match &recovered {
                Ok(s) => times.entry(a.fault.kind().name()).or_default().push(*s),
                Err(why) => {
                    r.not_recovered += 1;
                    tracing::warn!(fault = ?a.fault, %why, "not whole again within the bound");
                }
            }
        }
    }
    for (k, v) in times {
        let (m, x) = median_max(&v);
        let r = rec.entry(k).or_default();
        r.recover_median_s = m;
        r.recover_max_s = x;
    }
    Ok(rec)
}

/// Waits until the API answers, every node is ready and a leader exists; returns seconds.
async fn wait_whole(client: &Client, store: &dyn Store, bound: Duration) -> Result<f64, String> {
    let t0 = Instant::now();
    loop {
        let why = match client.nodes().await {
            Ok(nodes) if nodes.iter().filter(|n| n.ready).count() < HOSTS => {
                format!(
                    "{} of {HOSTS} nodes ready",
                    nodes.iter().filter(|n| n.ready).count()
                )
            }
            Ok(_) if leader_identity(store).await.is_none() => "no leader".to_string(),
            Ok(_) => return Ok(round(t0.elapsed().as_secs_f64())),
            Err(e) => format!("API: {e}"),
        };
        if t0.elapsed() > bound {
            return Err(why);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn finish(
    cluster: &Cluster,
    store: &dyn Store,
    client: &Client,
    checker: &Checker,
    workload: &Workload,
    cfg: &Config,
) -> RunResult {
    let mut extra: Vec<Violation> = Vec::new();
    // Counted from the end of the nemesis: nodes back, a leader, then every service.
    let t0 = Instant::now();
    let _ = wait_whole(client, store, cfg.converge_bound).await;
    let converge = verify::wait_converged(client, cfg.converge_bound)
        .await
        .map(|_| t0.elapsed().as_secs_f64());
    let t = 0.0;
    if let Err(left) = &converge {
        extra.push(Violation {
            t,
            invariant: "convergence",
            detail: format!(
                "not converged {} s after the nemesis stopped: {}",
                cfg.converge_bound.as_secs(),
                left.join("; ")
            ),
        });
    }
    match verify::final_state(client).await {
        Ok(state) => {
            extra.extend(verify::check_acknowledged(&workload.model, &state, t));
            extra.extend(process_check(cluster, &state).await);
        }
        Err(e) => extra.push(Violation {
            t,
            invariant: "acknowledged-writes",
            detail: format!("final state unreadable: {e}"),
        }),
    }
    let f = checker.findings();
    let mut violations = f.violations.clone();
    violations.extend(extra);
    let mut requests = BTreeMap::new();
    for r in &workload.records {
        *requests.entry(r.outcome).or_insert(0) += 1;
    }
    let (_, stale_max) = median_max(&f.stale_stop_s);
    RunResult {
        events_checked: f.events_checked,
        violations: violations.len() as u64,
        violation_details: violations,
        converge_s: converge.ok().map(round),
        requests,
        stale_copies: f.stale_stop_s.len() as u64,
        stale_stop_max_s: stale_max,
        stale_stopped_cut_off: f.stale_stopped_cut_off,
        moves: f.moves,
        ..RunResult::default()
    }
}

async fn process_check(
    cluster: &Cluster,
    state: &BTreeMap<String, crate::workload::Desired>,
) -> Vec<Violation> {
    // Stops take up to the grace period; give the hosts a moment to settle.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let procs = verify::processes(&cluster.net.run_id);
        let wrong = verify::process_mismatches(state, &procs, HOSTS as u64);
        if wrong.is_empty() {
            return Vec::new();
        }
        if Instant::now() > deadline {
            return vec![Violation {
                t: 0.0,
                invariant: "processes-match-tasks",
                detail: wrong.join("; "),
            }];
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Config {
    /// Defaults for a run of `duration` with `seed`: Shoal's default 5 s leases, 180 s to converge, 60 s to
    /// recover from each fault; `shoal` defaults to the binary beside the current one.
    pub fn new(
        seed: u64,
        duration: Duration,
        shoal: Option<PathBuf>,
        etcd: PathBuf,
        work_dir: PathBuf,
    ) -> Self {
        let shoal = shoal.unwrap_or_else(default_shoal);
        Config {
            seed,
            duration,
            shoal,
            etcd,
            work_dir,
            lease_ttl: Duration::from_secs(5),
            converge_bound: Duration::from_secs(180),
            recover_bound: Duration::from_secs(60),
        }
    }
}

/// `shoal` beside the running binary (`target/<profile>/`), also from `deps/` of a test.
pub fn default_shoal() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("shoal")
}
