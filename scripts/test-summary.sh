#!/usr/bin/env bash
# Sums the per-binary "test result:" lines of a `cargo test` log into one closing line. A
# binary that ended without its results (killed by scripts/test-timeout.sh, crashed, aborted:
# cargo reports it as not exiting successfully with a status other than the test harness's
# 101) counts as one failed test, and its line is repeated.
set -euo pipefail
log=${1:?usage: test-summary.sh LOG}
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     /process didn.t exit successfully:/ && !/\(exit status: 101\)$/ { f += 1; sub(/^ +/, ""); print }
     END { printf "\nShoal test suite: %d passed, %d failed, %d ignored\n", p, f, i;
           printf "%d passed, %d failed\n", p, f }' "$log"
