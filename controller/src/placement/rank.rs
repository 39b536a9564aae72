//! Ranking of the nodes that pass the filters. Spread preferences come first (the label value
//! group with the fewest tasks of the service wins, level by level, as in Swarm's tree); then
//! spread (fewest tasks of this service, then fewest tasks overall) or binpack (the most
//! reserved node first); the node id breaks ties.
//!
//! Without spread preferences a node's rank depends on that node alone, and placing a task
//! changes only the chosen node's: the candidates wait in a heap ([`Ranked`]), the best is
//! popped, and it goes back with its new rank once it has taken the task. A node that does
//! not fit is dropped from the heap for good: within one placer a node's reservations and
//! tasks only grow, so what does not fit now never fits later.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::{Candidate, Placer};

/// A candidate's rank without spread preferences: lower ranks first.
pub(crate) type Rank = (u64, u64, u64);

/// Candidates by rank, then by index (the node id order), the best on top.
pub(crate) type Ranked = BinaryHeap<Reverse<(Rank, usize)>>;

/// The heap entry of candidate `i` at `rank`.
fn entry(rank: Rank, i: usize) -> Reverse<(Rank, usize)> {
    Reverse((rank, i))
}

/// The rank of `c`: spread puts the fewest tasks of this service first, then the fewest
/// tasks; binpack the most reserved memory, then CPU, then tasks. As [`better`] orders them.
pub(crate) fn rank(c: &Candidate<'_>, binpack: bool) -> Rank {
    let u = &c.usage;
    if binpack {
        (
            u64::MAX - u.memory,
            u64::MAX - u.millicpus,
            u64::MAX - u.tasks,
        )
    } else {
        (c.own, u.tasks, 0)
    }
}

/// The best candidate that fits, popped off the placer's heap (built first when the placer
/// has none); candidates that do not fit are dropped on the way.
pub(crate) fn best_ranked(p: &mut Placer<'_>) -> Option<usize> {
    let mut ranked = match p.ranked.take() {
        Some(r) => r,
        None => (0..p.candidates.len())
            .filter(|&i| p.candidates[i].blocked.is_none())
            .map(|i| entry(p.rank_of(i), i))
            .collect(),
    };
    let mut best = None;
    while let Some(Reverse((_, i))) = ranked.pop() {
        if p.fits(i) {
            best = Some(i);
            break;
        }
    }
    p.ranked = Some(ranked);
    best
}

/// Puts candidate `i` back on the placer's heap (if it keeps one) with its rank after taking
/// a task.
pub(crate) fn put_back(p: &mut Placer<'_>, i: usize) {
    if let Some(mut ranked) = p.ranked.take() {
        ranked.push(entry(p.rank_of(i), i));
        p.ranked = Some(ranked);
    }
}

/// Whether candidate `a` ranks strictly before candidate `b`.
pub(crate) fn better(p: &Placer<'_>, a: usize, b: usize) -> bool {
    compare(p, a, b) == Ordering::Less
}

fn compare(p: &Placer<'_>, a: usize, b: usize) -> Ordering {
    let (ca, cb) = (&p.candidates[a], &p.candidates[b]);
    for (level, counts) in p.group_counts.iter().enumerate() {
        let o = counts[ca.groups[level]].cmp(&counts[cb.groups[level]]);
        if o != Ordering::Equal {
            return o;
        }
    }
    let o = if p.binpack {
        cb.usage
            .memory
            .cmp(&ca.usage.memory)
            .then_with(|| cb.usage.millicpus.cmp(&ca.usage.millicpus))
            .then_with(|| cb.usage.tasks.cmp(&ca.usage.tasks))
    } else {
        ca.own
            .cmp(&cb.own)
            .then_with(|| ca.usage.tasks.cmp(&cb.usage.tasks))
    };
    // Candidates are in node id order: comparing indexes compares the ids, without reading
    // the strings (this runs once per node for every task placed).
    o.then_with(|| a.cmp(&b))
}
