#!/usr/bin/env bash
# Sums the per-binary "test result:" lines of a `cargo test` log into one closing line; a
# binary killed by scripts/test-timeout.sh counts as one failed test.
set -euo pipefail
log=${1:?usage: test-summary.sh LOG}
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     /^test binary .* hung: killed after/ { f += 1; print }
     END { printf "\nShoal test suite: %d passed, %d failed, %d ignored\n", p, f, i;
           printf "%d passed, %d failed\n", p, f }' "$log"
