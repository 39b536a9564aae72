//! S5: S1 with a warm standby and the leader killed a third of the way through, repeated
//! (each run's standby leads the next); the figures of each failover (the gap in placements,
//! duplicated and lost slots, what each controller spent before the kill) and the median and
//! spread of the runs' gaps and rates.

use std::time::Duration;

use etcd_client::{Client, GetOptions};
use serde_json::json;

use super::observer::Observer;
use super::repeat::Spread;
use super::{Bench, BulkRun, PREFIX, ScenarioError, Seen, Sizes, metric_sum, service_prefix};
use crate::cluster::Proc;

impl Bench<'_> {
    /// What the leader and the warm standby spent while the leader placed the tasks before
    /// it was killed, per 1,000 of those placements (`cpu`: leader's and standby's
    /// CPU-seconds): the standby's share is what following the store costs beside a leader.
    pub(super) fn cpu_before_kill(&mut self, scenario: &str, placed: usize, cpu: [f64; 2]) {
        let thousands = placed.max(1) as f64 / 1000.0;
        for (who, spent) in ["leader", "standby"].into_iter().zip(cpu) {
            self.report.figure(
                scenario,
                &format!("{who}_cpu_s_per_1000_placements_before_kill"),
                spent / thousands,
                "cpu-s",
                json!({"placements": placed, "cpuS": spent}),
            );
        }
    }

    /// The figures of a run whose leader was killed `killed` after its start: the placement
    /// gap, duplicated and lost slots (at the end and at every revision), and which placements
    /// were the scenario's own. Returns the gap.
    pub(super) async fn failover_figures(
        &mut self,
        scenario: &str,
        killed: Duration,
        seen: &Seen,
        obs: &Observer,
        client: &mut Client,
        items: &[(String, String)],
    ) -> Result<Duration, ScenarioError> {
        // From the observer's timestamp of every assignment, not from the per-second curve
        // (whose flat stretch misses the partly idle seconds at both ends of the gap).
        let times = obs.assigned_since(seen.t0);
        let pause = longest_pause(&times, killed);
        let gap = pause.len();
        // The gap split: the old record's delete (its lease ended), the new leader's record.
        let (gone, elected) = obs.leader_record_since(seen.t0 + killed);
        let since_t0 = |t: Option<std::time::Instant>| t.map(|t| (t - seen.t0).as_secs_f64());
        self.report.figure(
            scenario,
            "placement_gap_after_leader_kill",
            gap.as_secs_f64(),
            "s",
            json!({"killedAtS": killed.as_secs_f64(), "leaseTtlS": self.lease_ttl.as_secs_f64(), "gapInTtl": gap.as_secs_f64() / self.lease_ttl.as_secs_f64(), "stretches": stretches(&times, pause), "leaderRecordGoneS": since_t0(gone), "newLeaderRecordS": since_t0(elected)}),
        );
        let replicas = seen.slots / items.len().max(1);
        let (dups, lost) = slot_check(client, items, replicas).await?;
        self.report.figure(
            scenario,
            "duplicated_slots",
            dups as f64,
            "slots",
            json!({}),
        );
        self.report
            .figure(scenario, "lost_slots", lost as f64, "slots", json!({}));
        // Checked at every revision of the run, not only at its end.
        let (max_live, violations) = obs.slot_check();
        self.report.figure(
            scenario,
            "max_live_tasks_per_slot_seen",
            max_live as f64,
            "tasks",
            json!({"revisionBoundariesOverOne": violations}),
        );
        // Placements counted above include every task first assigned during the run: those
        // of this scenario's services, and replacements of earlier scenarios' tasks (the new
        // leader reconciles every service).
        let prefix = format!("{}-", service_prefix(scenario));
        let (own_a, own_r) = obs.counts_since_of(seen.t0, &prefix);
        let (a, r) = (seen.placed, seen.running);
        self.report.figure(
            scenario,
            "placements_of_this_scenarios_services",
            own_a as f64,
            "tasks",
            json!({"running": own_r, "slots": seen.slots, "otherPlacements": a - own_a.min(a), "otherRunning": r - own_r.min(r)}),
        );
        Ok(gap)
    }

    /// Elections the controller whose metrics are at `url` won on its predecessor's lease
    /// proven run out (it revoked the lease rather than wait for etcd to remove it).
    async fn elections_won_on_lease_end(&self, url: &str) -> f64 {
        let name = "shoal_controller_elections_won_total";
        let http = reqwest::Client::new();
        metric_sum(&http, url, name, &[("vacated", "lease_run_out")]).await
    }

    /// Reports and returns a run's placement rate ÷ S1's median rate `m`, with the gap and
    /// without it.
    fn rates_vs_s1(&mut self, scenario: &str, run: &BulkRun, m: f64) -> (f64, f64) {
        let vs_s1 = |rate: f64| (rate / m, json!({"s5": rate, "s1Median": m}));
        let (all, out) = (vs_s1(run.rate), vs_s1(run.rate_outside_gap));
        let ratios = (all.0, out.0);
        for (name, (ratio, extra)) in [
            ("placement_rate_vs_S1_median", all),
            ("placement_rate_outside_gap_vs_S1_median", out),
        ] {
            self.report.figure(scenario, name, ratio, "ratio", extra);
        }
        ratios
    }

    /// S5, `runs` times (`S5.1` …): each run starts a standby controller (`controller-<k>`),
    /// waits until it has loaded the store, then runs S1 at `sizes` and kills the leader with
    /// SIGKILL a third of the way through; the standby, leading now, is the next run's leader
    /// (`leader` is replaced by it). Every run but the last deletes its services (each run
    /// starts from the same cluster), as S1's runs do; etcd is compacted and defragmented
    /// before each.
    ///
    /// Under `S5`: the median, smallest and largest gap, and, when S1 ran (`s1_median`, its
    /// median rate), of the placement rate ÷ S1's median with and without the gap.
    pub async fn s5_repeated(
        &mut self,
        sizes: &Sizes,
        leader: &mut Proc,
        runs: usize,
        s1_median: Option<f64>,
    ) -> Result<(), ScenarioError> {
        let (mut gaps, mut rates, mut outside) = (Vec::new(), Vec::new(), Vec::new());
        let mut on_lease_end = Vec::new();
        for k in 1..=runs {
            let scenario = format!("S5.{k}");
            self.scenario_start(&scenario, Some(leader.pid())).await?;
            let before = self.task_keys().await?;
            let (standby, metrics) = self
                .cluster
                .controller_with_metrics(&format!("controller-{k}"))?;
            let warm = self.wait_warm(&metrics).await?;
            let secs = warm.as_secs_f64();
            self.report.figure(
                &scenario,
                "standby_cache_loaded_after",
                secs,
                "s",
                json!({}),
            );
            let run = self
                .s1_bulk(sizes, leader, &scenario, Some(standby.pid()))
                .await?;
            *leader = standby;
            let won = self.elections_won_on_lease_end(&metrics).await;
            on_lease_end.push(won);
            self.report.figure(
                &scenario,
                "took_over_on_lease_end",
                won,
                "elections",
                json!({"metric": "shoal_controller_elections_won_total{vacated=\"lease_run_out\"}"}),
            );
            if let Some(e) = &run.incomplete {
                eprintln!("{e}");
            }
            if let Some(gap) = run.gap {
                gaps.push(gap.as_secs_f64() / self.lease_ttl.as_secs_f64());
            }
            if let Some(m) = s1_median.filter(|m| *m > 0.0) {
                let (all, out) = self.rates_vs_s1(&scenario, &run, m);
                rates.push(all);
                outside.push(out);
            }
            if k < runs {
                self.delete_services(&scenario, before, sizes.limit).await?;
            }
        }
        self.report.figure(
            "S5",
            "took_over_on_lease_end",
            on_lease_end.iter().sum(),
            "runs",
            json!({"runs": on_lease_end}),
        );
        let ttl = json!({"leaseTtlS": self.lease_ttl.as_secs_f64()});
        for (name, all, unit, extra) in [
            ("placement_gap_in_ttl", &gaps, "lease TTLs", ttl),
            ("placement_rate_vs_S1", &rates, "ratio", json!({})),
            (
                "placement_rate_outside_gap_vs_S1",
                &outside,
                "ratio",
                json!({}),
            ),
        ] {
            if let Some(s) = Spread::of(all) {
                self.spread_figures("S5", name, s, unit, all, extra);
            }
        }
        Ok(())
    }
}

/// Counts slots with more than one live task and slots with none, for the given services.
async fn slot_check(
    client: &mut Client,
    items: &[(String, String)],
    replicas: usize,
) -> Result<(usize, usize), ScenarioError> {
    let mut live: std::collections::HashMap<(String, u64), usize> = Default::default();
    for kv in list_all(client, &format!("{PREFIX}tasks/")).await? {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(kv.value()) else {
            continue;
        };
        if v["desiredState"] != "running" || v["orphaned"] == true {
            continue;
        }
        let name = v["service"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(slot) = v["slot"]["replica"].as_u64() {
            *live.entry((name, slot)).or_default() += 1;
        }
    }
    let mut dups = 0;
    let mut lost = 0;
    for (name, _) in items {
        for slot in 1..=replicas as u64 {
            match live.get(&(name.clone(), slot)).copied().unwrap_or(0) {
                0 => lost += 1,
                1 => {}
                _ => dups += 1,
            }
        }
    }
    Ok((dups, lost))
}

/// A time without placements: from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Pause {
    from: Duration,
    to: Duration,
}

impl Pause {
    fn len(self) -> Duration {
        self.to - self.from
    }
}

/// The longest time from `from` on without a placement: between `from` and the first
/// placement after it, or between two placements after it (the first such when several are
/// as long; empty at `from` when nothing is placed after it). `times` are the placements'
/// times, sorted; placements before `from` do not count.
fn longest_pause(times: &[Duration], from: Duration) -> Pause {
    let mut last = from;
    let mut longest = Pause { from, to: from };
    for &t in times.iter().filter(|&&t| t >= from) {
        if t - last > longest.len() {
            longest = Pause { from: last, to: t };
        }
        last = t;
    }
    longest
}

/// The placing on either side of `gap`: placements per second from the first placement to
/// the gap's start, and from its end to the last placement, with the counts and times
/// (seconds since the run's start) they come from. `times` are sorted.
fn stretches(times: &[Duration], gap: Pause) -> serde_json::Value {
    let (before, after) = times.split_at(times.partition_point(|&t| t <= gap.from));
    let rate = |n: usize, from: Duration, to: Duration| {
        let secs = to.saturating_sub(from).as_secs_f64();
        (secs > 0.0).then(|| n as f64 / secs)
    };
    let (first, last) = (times.first().copied(), times.last().copied());
    json!({
        "firstPlacementS": first.map(|t| t.as_secs_f64()),
        "placedBeforeGap": before.len(),
        "ratePerSBeforeGap": first.and_then(|f| rate(before.len(), f, gap.from)),
        "gapFromS": gap.from.as_secs_f64(),
        "gapToS": gap.to.as_secs_f64(),
        "placedAfterGap": after.len(),
        "ratePerSAfterGap": last.and_then(|l| rate(after.len(), gap.to, l)),
        "lastPlacementS": last.map(|t| t.as_secs_f64()),
    })
}

/// Reads every key under `prefix` in pages (one response is capped at 4 MiB by the client).
async fn list_all(
    client: &mut Client,
    prefix: &str,
) -> Result<Vec<etcd_client::KeyValue>, etcd_client::Error> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let mut from = prefix.as_bytes().to_vec();
    let mut out = Vec::new();
    loop {
        let opts = GetOptions::new().with_range(end.clone()).with_limit(2000);
        let r = client.get(from.clone(), Some(opts)).await?;
        let kvs = r.kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0);
        }
        let more = r.more();
        out.extend(kvs.iter().cloned());
        if !more || kvs.is_empty() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Pause, longest_pause, stretches};

    #[test]
    fn the_gap_is_the_longest_pause_in_placements_after_the_kill() {
        let ms = Duration::from_millis;
        let times = [
            ms(100),
            ms(900),
            ms(1_000),
            ms(1_200),
            ms(5_800),
            ms(5_900),
            ms(6_000),
        ];
        let pause = |from, to| Pause {
            from: ms(from),
            to: ms(to),
        };
        // Killed at 1.1 s: one placement still lands at 1.2 s, the next at 5.8 s.
        assert_eq!(longest_pause(&times, ms(1_100)), pause(1_200, 5_800));
        // Killed at 0.5 s: the same pause, the time from the kill to the next one is shorter.
        assert_eq!(longest_pause(&times, ms(500)), pause(1_200, 5_800));
        // Nothing placed after the kill: no pause can be measured.
        assert_eq!(longest_pause(&times, ms(7_000)).len(), Duration::ZERO);
        assert_eq!(longest_pause(&[], ms(0)).len(), Duration::ZERO);
        // The time from the kill to the first placement after it counts.
        assert_eq!(
            longest_pause(&[ms(4_000), ms(4_100)], ms(1_000)),
            pause(1_000, 4_000)
        );
    }

    #[test]
    fn the_stretches_around_the_gap_have_their_own_rates() {
        let ms = Duration::from_millis;
        let times = [ms(100), ms(600), ms(1_100), ms(5_000), ms(5_250), ms(5_500)];
        let s = stretches(&times, longest_pause(&times, ms(1_000)));
        // Three placements from 0.1 s to 1.1 s; three from 5 s to 5.5 s.
        assert_eq!(s["placedBeforeGap"], 3);
        assert_eq!(s["ratePerSBeforeGap"], 3.0);
        assert_eq!(s["placedAfterGap"], 3);
        assert_eq!(s["ratePerSAfterGap"], 6.0);
        assert_eq!(s["gapFromS"], 1.1);
        assert_eq!(s["gapToS"], 5.0);
    }
}
