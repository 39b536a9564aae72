#!/usr/bin/env bash
# Runs one test binary (cargo's runner for `make test`) and kills it when it outlasts
# SHOAL_TEST_BINARY_TIMEOUT seconds (default 1200), so that one hung test fails the suite
# with its binary's name instead of stalling it. Every binary of the suite ends in well
# under two minutes.
set -uo pipefail
limit=${SHOAL_TEST_BINARY_TIMEOUT:-1200}
timeout --kill-after=30 "$limit" "$@"
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "test binary $(basename "$1") hung: killed after ${limit} s" >&2
fi
exit "$status"
