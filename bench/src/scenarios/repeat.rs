//! S1 repeated: several bulk placement runs of fresh services, the services of each run but
//! the last deleted (and their tasks gone) before etcd is compacted and defragmented for the
//! next; then the median and the spread of the runs' figures.

use std::time::{Duration, Instant};

use etcd_client::{Client, DeleteOptions};
use serde_json::json;

use super::{Bench, PREFIX, Reach, ScenarioError, Sizes, count_all, service_prefix, wait_count};
use crate::cluster::Proc;

/// Median, smallest and largest of some figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (the mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// (largest − smallest) ÷ median.
    pub fn relative(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median
        }
    }
}

impl Bench<'_> {
    /// S1: `runs` bulk placement runs (`S1.1` …), each from a compacted and defragmented
    /// etcd; reports the median and spread of placements/s, R_place and controller CPU per
    /// 1,000 placements under `S1`, and returns the median placement rate. The last run's
    /// services stay, so that the later scenarios run on a populated cluster.
    pub async fn s1_repeated(
        &mut self,
        sizes: &Sizes,
        controller: &mut Proc,
        runs: usize,
    ) -> Result<Option<f64>, ScenarioError> {
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        for k in 1..=runs {
            let scenario = format!("S1.{k}");
            self.scenario_start(&scenario, Some(controller.pid()))
                .await?;
            let run = self.s1_bulk(sizes, controller, &scenario, None).await?;
            if let Some(e) = &run.incomplete {
                eprintln!("{e}");
            }
            rates.push(run.rate);
            cpus.push(run.cpu_per_1000);
            if k < runs {
                self.delete_services(&scenario, 0, sizes.limit).await?;
            }
        }
        let (Some(rate), Some(cpu)) = (Spread::of(&rates), Spread::of(&cpus)) else {
            return Ok(None);
        };
        let r_place: Vec<f64> = rates.iter().map(|r| self.r_place(*r)).collect();
        let rp = Spread::of(&r_place).unwrap_or(Spread {
            median: 0.0,
            min: 0.0,
            max: 0.0,
        });
        let lb = json!({"lBatch": self.calibration.l_batch});
        for (name, s, unit, all) in [
            ("placements_per_s", rate, "tasks/s", &rates),
            ("R_place", rp, "ratio", &r_place),
            ("controller_cpu_s_per_1000_placements", cpu, "cpu-s", &cpus),
        ] {
            self.spread_figures("S1", name, s, unit, all, lb.clone());
        }
        Ok(Some(rate.median))
    }

    /// Reports the spread `s` of the runs' values `all` of figure `name` as `<name>_median`
    /// (its `extra`: the runs' values, the relative spread and `extra`'s fields),
    /// `<name>_min` and `<name>_max`.
    pub(super) fn spread_figures(
        &mut self,
        scenario: &str,
        name: &str,
        s: Spread,
        unit: &str,
        all: &[f64],
        extra: serde_json::Value,
    ) {
        let mut median_extra = json!({"runs": all, "spread": s.relative()});
        if let (Some(m), serde_json::Value::Object(more)) = (median_extra.as_object_mut(), extra) {
            m.extend(more);
        }
        let report = &mut self.report;
        report.figure(
            scenario,
            &format!("{name}_median"),
            s.median,
            unit,
            median_extra,
        );
        report.figure(scenario, &format!("{name}_min"), s.min, unit, json!({}));
        report.figure(scenario, &format!("{name}_max"), s.max, unit, json!({}));
    }

    /// Tasks and task statuses in the store now.
    pub async fn task_keys(&self) -> Result<i64, ScenarioError> {
        let mut client = Client::connect([self.endpoint.as_str()], None).await?;
        Ok(count_all(&mut client, &task_prefixes()).await?)
    }

    /// Deletes the services of `scenario` and waits until their tasks and task statuses are
    /// gone (the controller deletes the tasks, the agents their statuses): until `leave`
    /// tasks and statuses are left, those of the services before the scenario's.
    pub async fn delete_services(
        &mut self,
        scenario: &str,
        leave: i64,
        limit: Duration,
    ) -> Result<(), ScenarioError> {
        let mut client = Client::connect([self.endpoint.as_str()], None).await?;
        let prefix = service_prefix(scenario);
        let t0 = Instant::now();
        client
            .delete(
                format!("{PREFIX}services/bench/{prefix}-"),
                Some(DeleteOptions::new().with_prefix()),
            )
            .await?;
        wait_count(&mut client, &task_prefixes(), Reach::AtMost(leave), limit).await?;
        self.report.figure(
            scenario,
            "services_deleted_to_tasks_gone",
            t0.elapsed().as_secs_f64(),
            "s",
            json!({}),
        );
        Ok(())
    }
}

/// The prefixes of tasks and of task statuses.
fn task_prefixes() -> [String; 2] {
    [format!("{PREFIX}tasks/"), format!("{PREFIX}taskstatus/")]
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn median_and_spread_of_three_runs() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.relative(), 1.0);
        assert_eq!(Spread::of(&[4.0, 2.0]).unwrap().median, 3.0);
        assert!(Spread::of(&[]).is_none());
    }
}
