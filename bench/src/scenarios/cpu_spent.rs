//! Where a bulk run's CPU went: the CPU-seconds of etcd, the controllers, the hollow agents
//! and the benchmark itself from the run's start until all its tasks run, and the whole
//! machine's (`/proc/stat`), each per 1,000 placements. On two shared cores the placement
//! rate follows what a placement costs all of them together, so comparing two runs' split
//! says which process a slower run paid for.

use std::time::Instant;

use serde_json::json;

use super::Bench;
use crate::cluster::{TICKS_PER_S, cpu_seconds};

/// The processes of one bulk run whose CPU is counted.
#[derive(Debug)]
pub(crate) struct Roles {
    /// etcd.
    pub(crate) etcd: u32,
    /// The controller leading when the run starts.
    pub(crate) leader: u32,
    /// The warm standby (S5), which leads after the kill.
    pub(crate) standby: Option<u32>,
    /// The hollow agents.
    pub(crate) agents: Vec<u32>,
}

/// CPU-seconds of each role, and the machine's busy and total CPU-seconds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    etcd: f64,
    leader: f64,
    standby: f64,
    agents: f64,
    benchmark: f64,
    machine_busy: f64,
    machine_all: f64,
}

impl Sample {
    fn of(roles: &Roles) -> Sample {
        let (machine_busy, machine_all) = machine_cpu().unwrap_or_default();
        Sample {
            etcd: cpu_seconds(roles.etcd),
            leader: cpu_seconds(roles.leader),
            standby: roles.standby.map_or(0.0, cpu_seconds),
            agents: roles.agents.iter().map(|&p| cpu_seconds(p)).sum(),
            benchmark: cpu_seconds(std::process::id()),
            machine_busy,
            machine_all,
        }
    }
}

/// Counts the CPU a bulk run spends, from [`CpuCount::start`] on.
#[derive(Debug)]
pub(crate) struct CpuCount {
    roles: Roles,
    t0: Instant,
    start: Sample,
    /// The leader's CPU-seconds when it was killed (its process is gone at the end).
    leader_at_kill: Option<f64>,
}

impl CpuCount {
    /// Starts counting now.
    pub(crate) fn start(roles: Roles) -> CpuCount {
        let start = Sample::of(&roles);
        CpuCount {
            roles,
            t0: Instant::now(),
            start,
            leader_at_kill: None,
        }
    }

    /// What each role has spent so far, read just before the leader is killed (the
    /// leader's is kept: its process is gone at the end).
    pub(crate) fn leader_killed(&mut self) -> Spent {
        self.leader_at_kill = Some(cpu_seconds(self.roles.leader));
        self.spent()
    }

    /// What the leader has spent so far (until its kill, if it was killed).
    pub(crate) fn leader_spent(&self) -> f64 {
        let now = self
            .leader_at_kill
            .unwrap_or_else(|| cpu_seconds(self.roles.leader));
        now - self.start.leader
    }

    /// What each role spent since the start.
    fn spent(&self) -> Spent {
        let now = Sample::of(&self.roles);
        let s = &self.start;
        let spent = Sample {
            etcd: now.etcd - s.etcd,
            leader: self.leader_at_kill.unwrap_or(now.leader) - s.leader,
            standby: now.standby - s.standby,
            agents: now.agents - s.agents,
            benchmark: now.benchmark - s.benchmark,
            machine_busy: now.machine_busy - s.machine_busy,
            machine_all: now.machine_all - s.machine_all,
        };
        Spent {
            roles: spent,
            seconds: self.t0.elapsed().as_secs_f64(),
        }
    }
}

/// What each role and the machine spent over some seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spent {
    roles: Sample,
    seconds: f64,
}

impl Spent {
    /// The leader's and the standby's CPU-seconds.
    pub(crate) fn controllers(&self) -> [f64; 2] {
        [self.roles.leader, self.roles.standby]
    }
}

impl Bench<'_> {
    /// Reports what `count` saw spent for `placed` placements: the machine's busy
    /// CPU-seconds per 1,000 placements (`cpu_s_per_1000_placements_machine`), with each
    /// role's share and how busy the machine was (`busyShare`: busy ÷ all CPU time) in
    /// `extra`.
    pub(crate) fn report_cpu_spent(&mut self, scenario: &str, count: &CpuCount, placed: usize) {
        self.report_spent(scenario, "", count.spent(), placed);
    }

    /// As [`Bench::report_cpu_spent`], of what was spent until the leader's kill (`spent`,
    /// from [`CpuCount::leader_killed`]), for the `placed` placements made by then.
    pub(crate) fn report_cpu_before_kill(&mut self, scenario: &str, spent: Spent, placed: usize) {
        self.report_spent(scenario, "_before_kill", spent, placed);
    }

    fn report_spent(&mut self, scenario: &str, suffix: &str, spent: Spent, placed: usize) {
        let Spent { roles: r, seconds } = spent;
        let per = |x: f64| x / (placed.max(1) as f64 / 1000.0);
        let named = r.etcd + r.leader + r.standby + r.agents + r.benchmark;
        let extra = json!({
            "etcd": per(r.etcd),
            "leader": per(r.leader),
            "standby": per(r.standby),
            "agents": per(r.agents),
            "benchmark": per(r.benchmark),
            "rest": per((r.machine_busy - named).max(0.0)),
            "busyShare": r.machine_busy / r.machine_all.max(f64::MIN_POSITIVE),
            "seconds": seconds,
            "placements": placed,
        });
        self.report.figure(
            scenario,
            &format!("cpu_s_per_1000_placements_machine{suffix}"),
            per(r.machine_busy),
            "cpu-s",
            extra,
        );
    }
}

/// The machine's busy and total CPU-seconds since boot, over all CPUs (`/proc/stat`).
fn machine_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_cpu(&stat)
}

/// The busy and total CPU-seconds in `/proc/stat`'s first line (`cpu  user nice system idle
/// iowait irq softirq steal …`): idle and iowait are not busy; guest time is already in
/// user time.
fn parse_machine_cpu(stat: &str) -> Option<(f64, f64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    Some((busy / TICKS_PER_S, (busy + idle + iowait) / TICKS_PER_S))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_line_gives_busy_and_total_seconds() {
        let stat = "cpu  100 20 30 400 50 6 4 0 0 0\ncpu0 50 10 15 200 25 3 2 0 0 0\nintr 1\n";
        assert_eq!(parse_machine_cpu(stat), Some((1.6, 6.1)));
        assert_eq!(parse_machine_cpu("intr 1\n"), None);
        assert_eq!(parse_machine_cpu("cpu  1 2 x\n"), None);
    }

    #[test]
    fn this_machine_reports_its_cpu() {
        let (busy, all) = machine_cpu().expect("/proc/stat");
        assert!(busy > 0.0 && all >= busy, "busy {busy}, all {all}");
    }
}
