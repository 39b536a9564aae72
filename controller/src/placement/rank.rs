//! Ranking of the nodes that pass the filters. Spread preferences come first (the label value
//! group with the fewest tasks of the service wins, level by level, as in Swarm's tree); then
//! spread (fewest tasks of this service, then fewest tasks overall) or binpack (the most
//! reserved node first); the node id breaks ties.

use std::cmp::Ordering;

use super::Placer;

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
