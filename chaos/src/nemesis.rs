//! The nemesis: a schedule of faults drawn from a seed (the same seed gives the same
//! schedule — [`schedule`] is pure), and the code that applies and heals each fault on a
//! [`Cluster`].
//!
//! Steps run one after another; a quarter of them combine a network fault with a process
//! fault. At most one fault of a step touches etcd's quorum (a member partitioned, killed or
//! replaced), so the store stays available while Shoal is under fire.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cluster::{Cluster, ClusterError, ETCD_CLIENT_PORT, Role};
use crate::netns::NetError;

/// The kinds of fault, as counted in results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// kill -9 of a component, restarted at heal.
    Kill,
    /// SIGSTOP of the leading controller past its lease, SIGCONT at heal.
    PauseLeader,
    /// One host (its etcd member, agent and whatever else runs there) cut off from the others.
    PartitionMinority,
    /// Two hosts cut off from each other only.
    PartitionPair,
    /// One host cannot reach any etcd client port; its tasks keep running.
    AgentCutOff,
    /// Latency (NFQUEUE delay) and packet loss on one host's link.
    Degrade,
    /// An etcd member stopped, its data wiped, removed and added back as a new member.
    EtcdReplace,
}

impl FaultKind {
    /// Name used in results.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::PauseLeader => "pause_leader",
            FaultKind::PartitionMinority => "partition_minority",
            FaultKind::PartitionPair => "partition_pair",
            FaultKind::AgentCutOff => "agent_cut_off",
            FaultKind::Degrade => "degrade",
            FaultKind::EtcdReplace => "etcd_replace",
        }
    }
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Fault {
    /// kill -9, restart at heal.
    Kill(Role),
    /// SIGSTOP the leader, SIGCONT at heal.
    PauseLeader,
    /// Isolate a host.
    PartitionMinority(usize),
    /// Cut two hosts apart.
    PartitionPair(usize, usize),
    /// Block etcd's client port from a host.
    AgentCutOff(usize),
    /// Delay and loss on a host.
    Degrade {
        /// Host.
        host: usize,
        /// Added delay.
        delay_ms: u32,
        /// Loss in percent.
        loss_pct: u32,
    },
    /// Replace an etcd member.
    EtcdReplace(usize),
}

impl Fault {
    /// Its kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill(_) => FaultKind::Kill,
            Fault::PauseLeader => FaultKind::PauseLeader,
            Fault::PartitionMinority(_) => FaultKind::PartitionMinority,
            Fault::PartitionPair(..) => FaultKind::PartitionPair,
            Fault::AgentCutOff(_) => FaultKind::AgentCutOff,
            Fault::Degrade { .. } => FaultKind::Degrade,
            Fault::EtcdReplace(_) => FaultKind::EtcdReplace,
        }
    }

    /// Whether the fault takes an etcd member out of the quorum.
    fn touches_quorum(&self) -> bool {
        matches!(
            self,
            Fault::Kill(Role::Etcd(_))
                | Fault::PartitionMinority(_)
                | Fault::PartitionPair(..)
                | Fault::EtcdReplace(_)
        )
    }

    fn is_network(&self) -> bool {
        matches!(
            self,
            Fault::PartitionMinority(_)
                | Fault::PartitionPair(..)
                | Fault::AgentCutOff(_)
                | Fault::Degrade { .. }
        )
    }

    /// Whether the fault can keep agents on hosts it does not disturb from the store: it
    /// takes an etcd member out, cuts it off or slows it, so requests sent through that member
    /// (or forwarded by it to the raft leader) can go unanswered.
    pub fn disturbs_store(&self) -> bool {
        matches!(
            self,
            Fault::Kill(Role::Etcd(_))
                | Fault::PartitionMinority(_)
                | Fault::PartitionPair(..)
                | Fault::Degrade { .. }
                | Fault::EtcdReplace(_)
        )
    }

    /// Hosts whose agent may be unable to report while the fault lasts.
    pub fn disturbed_hosts(&self, agent_host: impl Fn(Role) -> Option<usize>) -> Vec<usize> {
        match self {
            Fault::Kill(r) => agent_host(*r).into_iter().collect(),
            Fault::PartitionMinority(h) | Fault::AgentCutOff(h) => vec![*h],
            Fault::Degrade { host, .. } => vec![*host],
            Fault::PartitionPair(a, b) => vec![*a, *b],
            Fault::PauseLeader | Fault::EtcdReplace(_) => Vec::new(),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.kind().name();
        match self {
            Fault::Kill(role) => write!(f, "{kind}({role})"),
            Fault::PauseLeader => f.write_str(kind),
            Fault::PartitionMinority(h)
            | Fault::AgentCutOff(h)
            | Fault::Degrade { host: h, .. } => {
                write!(f, "{kind}(h{h})")
            }
            Fault::PartitionPair(a, b) => write!(f, "{kind}(h{a},h{b})"),
            Fault::EtcdReplace(h) => write!(f, "{kind}(etcd-{h})"),
        }
    }
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// When it starts, from the start of the nemesis.
    pub at: Duration,
    /// The faults applied together.
    pub faults: Vec<Fault>,
    /// How long they last before healing.
    pub hold: Duration,
}

fn draw(rng: &mut StdRng, hosts: usize, lease_ttl: Duration) -> (Fault, Duration) {
    let h = rng.random_range(0..hosts);
    let hold = Duration::from_millis(rng.random_range(3_000..12_000));
    let fault = match rng.random_range(0..10) {
        0 | 1 => {
            let role = match rng.random_range(0..4) {
                0 => Role::Etcd(h),
                1 => Role::Controller(rng.random_range(0..2)),
                2 => Role::Agent(h),
                _ => Role::Api,
            };
            Fault::Kill(role)
        }
        2 => {
            let past = lease_ttl * 2 + Duration::from_millis(rng.random_range(0..4_000));
            return (Fault::PauseLeader, past);
        }
        3 | 4 => Fault::PartitionMinority(h),
        5 => Fault::PartitionPair(h, (h + rng.random_range(1..hosts)) % hosts),
        6 | 7 => Fault::AgentCutOff(h),
        8 => Fault::Degrade {
            host: h,
            delay_ms: rng.random_range(20..200),
            loss_pct: rng.random_range(1..15),
        },
        _ => Fault::EtcdReplace(h),
    };
    (fault, hold)
}

/// The schedule for `seed` over `duration` on `hosts` hosts.
pub fn schedule(seed: u64, duration: Duration, hosts: usize, lease_ttl: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = Duration::from_secs(2);
    let mut steps = Vec::new();
    while at < duration {
        let (first, mut hold) = draw(&mut rng, hosts, lease_ttl);
        let mut faults = vec![first];
        if rng.random_range(0..4) == 0 {
            let (second, h2) = draw(&mut rng, hosts, lease_ttl);
            let quorum_ok = !(faults[0].touches_quorum() && second.touches_quorum());
            if quorum_ok && second.is_network() != faults[0].is_network() {
                hold = hold.max(h2);
                faults.push(second);
            }
        }
        let hold = hold.min(duration.saturating_sub(at).max(Duration::from_secs(1)));
        steps.push(Step { at, faults, hold });
        at += hold + Duration::from_millis(rng.random_range(2_000..6_000));
    }
    steps
}

/// Count of faults per kind in a schedule.
pub fn count(steps: &[Step]) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    for f in steps.iter().flat_map(|s| &s.faults) {
        *m.entry(f.kind().name()).or_insert(0) += 1;
    }
    m
}

/// Errors applying a fault.
#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    /// A network change failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A process change failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// What applying a fault did (the controller paused, whether latency was possible).
#[derive(Debug, Clone)]
pub struct Applied {
    /// The fault.
    pub fault: Fault,
    /// The controller paused by [`Fault::PauseLeader`].
    pub paused: Option<Role>,
}

/// Applies a fault. `leader` is the controller holding the leader key, when known.
pub async fn apply(
    cluster: &mut Cluster,
    fault: &Fault,
    leader: Option<Role>,
) -> Result<Applied, NemesisError> {
    let mut applied = Applied {
        fault: fault.clone(),
        paused: None,
    };
    match fault {
        Fault::Kill(role) => cluster.kill9(*role),
        Fault::PauseLeader => {
            let role = leader.unwrap_or(Role::Controller(0));
            cluster.signal_pause(role, true);
            applied.paused = Some(role);
        }
        Fault::PartitionMinority(h) => {
            for other in (0..cluster.net.hosts.len()).filter(|o| o != h) {
                cluster.net.partition(*h, other)?;
            }
        }
        Fault::PartitionPair(a, b) => cluster.net.partition(*a, *b)?,
        Fault::AgentCutOff(h) => cluster.net.cut_from_etcd(*h, ETCD_CLIENT_PORT)?,
        Fault::Degrade {
            host,
            delay_ms,
            loss_pct,
        } => cluster.net.degrade(*host, *delay_ms, *loss_pct)?,
        Fault::EtcdReplace(h) => cluster.replace_etcd_member(*h).await?,
    }
    Ok(applied)
}

/// Heals a fault applied by [`apply`].
pub fn heal(cluster: &mut Cluster, applied: &Applied) -> Result<(), NemesisError> {
    match &applied.fault {
        Fault::Kill(role) => cluster.start(*role)?,
        Fault::PauseLeader => {
            if let Some(r) = applied.paused {
                cluster.signal_pause(r, false);
            }
        }
        Fault::PartitionMinority(_) | Fault::PartitionPair(..) => cluster.net.heal_all()?,
        Fault::AgentCutOff(h) | Fault::Degrade { host: h, .. } => cluster.net.heal(*h)?,
        Fault::EtcdReplace(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule_and_quorum_kept() {
        let ttl = Duration::from_secs(3);
        let a = schedule(7, Duration::from_secs(600), 3, ttl);
        assert_eq!(a, schedule(7, Duration::from_secs(600), 3, ttl));
        assert_ne!(a, schedule(8, Duration::from_secs(600), 3, ttl));
        for s in &a {
            assert!(
                s.faults.iter().filter(|f| f.touches_quorum()).count() <= 1,
                "{s:?}"
            );
        }
        assert!(count(&a).len() >= 6, "{:?}", count(&a));
    }
}
