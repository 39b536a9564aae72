#!/usr/bin/env bash
# Runs one test binary (cargo's runner for `make test`) and kills it when it outlasts
# SHOAL_TEST_BINARY_TIMEOUT seconds (default 1200), so that one hung test fails the suite
# with its binary's name instead of stalling it.
set -uo pipefail
limit=${SHOAL_TEST_BINARY_TIMEOUT:-1200}
timeout --kill-after=30 "$limit" "$@"
status=$?
# 124: timed out; 137: still running 30 s after, killed (a binary killed otherwise, by the
# OOM killer say, ends with 137 too, but before the limit).
if [ "$status" -eq 124 ] || { [ "$status" -eq 137 ] && [ "$SECONDS" -ge "$limit" ]; }; then
    echo "test binary $(basename "$1") hung: killed after ${limit} s" >&2
fi
exit "$status"
