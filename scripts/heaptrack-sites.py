#!/usr/bin/env python3
"""Sums a heaptrack flamegraph file (heaptrack_print -F FILE --flamegraph-cost-type leaked) by
the innermost frame naming one of Shoal's per-task holders, and prints bytes and bytes per task.

Usage: scripts/heaptrack-sites.py FLAMEGRAPH TASKS
"""
import collections
import sys

SITES = [
    ("parked record", ["Parked::new", "TaskRunner::park"]),
    ("sim runtime", ["SimRuntime"]),
    ("worker map", ["slots::Slots", "btree::node", "btree::map"]),
    ("task id strings (key parsing)", ["Keys::parse"]),
    ("etcd client", ["tonic", "etcd_client", "hyper", "h2::"]),
    ("status writer", ["shoal_agent::status"]),
]


def site(frames):
    for f in reversed(frames):
        for name, needles in SITES:
            if any(n in f for n in needles):
                return name
    return "other"


def main():
    path, tasks = sys.argv[1], int(sys.argv[2])
    by = collections.Counter()
    total = 0
    for line in open(path):
        stack, _, n = line.rstrip().rpartition(" ")
        by[site(stack.split(";"))] += int(n)
        total += int(n)
    print(f"{'site':32} {'bytes':>12} {'per task':>10}")
    for name, n in by.most_common():
        print(f"{name:32} {n:12} {n / tasks:10.1f}")
    print(f"{'total':32} {total:12} {total / tasks:10.1f}")


if __name__ == "__main__":
    main()
