//! The short fixed-seed chaos run of `make test`: the nemesis runs for 75 s over a 3-host
//! cluster in network namespaces (kills, leader pause, partitions, latency and loss, an etcd
//! member replaced) and every invariant must hold. It needs root (namespaces, iptables) and etcd:
//! without either it fails with the reason, never skips.

use std::time::Duration;

/// Seed of the short run: in 75 s its schedule has every kind of fault (`shoal-chaos --seed 15
/// --duration 75s --schedule` prints it).
const SEED: u64 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_seed_short_run_keeps_every_invariant() {
    let etcd = shoal_tests::etcd::etcd_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = shoal_chaos::Config::new(
        SEED,
        Duration::from_secs(75),
        None,
        etcd,
        std::env::temp_dir().join("shoal-chaos-test"),
    );
    cfg.converge_bound = Duration::from_secs(120);
    assert!(
        cfg.shoal.is_file(),
        "the shoal binary is missing at {} (cargo build -p shoal)",
        cfg.shoal.display()
    );
    let result = shoal_chaos::run(cfg)
        .await
        .unwrap_or_else(|e| panic!("the chaos run could not be carried out: {e}"));
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-short.jsonl");
    result.append_to(&out).expect("results line");
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    println!(
        "chaos short run: {} events checked, converged {:?} s after the nemesis stopped",
        result.events_checked, result.converge_s
    );
    assert_eq!(
        result.violations, 0,
        "invariant violations: {:#?}",
        result.violation_details
    );
    assert!(result.converge_s.is_some(), "the cluster converged");
    assert!(result.events_checked > 100, "the checker saw the store");
    assert!(
        result.faults.values().sum::<u64>() >= 5,
        "{:?}",
        result.faults
    );
    // Its schedule degrades a host: latency was really added (the NFQUEUE delay line).
    assert!(
        result.delayed.packets > 0 && result.delayed.mean_ms() > 10.0,
        "{:?}",
        result.delayed
    );
    assert!(
        result.requests.get("ok").copied().unwrap_or(0) >= 20,
        "{:?}",
        result.requests
    );
}
