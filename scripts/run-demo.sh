#!/usr/bin/env bash
# `make run`: starts Shoal in one process (`shoal dev`: embedded store, API on 127.0.0.1:7878,
# controller and a local agent), applies the example manifests that run on this machine, shows
# what converged, then keeps Shoal running until Ctrl-C. Starting it again finds everything where
# it was (state lives in $SHOAL_DEV_DATA, default ./.shoal-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
SHOAL=${SHOAL:-target/release/shoal}
DATA=${SHOAL_DEV_DATA:-$PWD/.shoal-dev}
export SHOAL_SERVER=${SHOAL_SERVER:-http://127.0.0.1:7878}

# Shoal's own logs go to $DATA.log so the tour below stays readable (RUST_LOG filters them).
mkdir -p "$DATA"
echo "shoal dev: logs in $DATA.log"
"$SHOAL" dev --data-dir "$DATA" 2>>"$DATA.log" &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; exit 0' INT TERM

for _ in $(seq 1 100); do
  "$SHOAL" get nodes >/dev/null 2>&1 && break
  kill -0 $dev 2>/dev/null || { echo "shoal dev exited:" >&2; tail -5 "$DATA.log" >&2; exit 1; }
  sleep 0.2
done

echo
echo "\$ shoal apply -f manifests/local/ --wait"
"$SHOAL" apply -f manifests/local/ --wait --timeout 120s || true
echo
echo "\$ shoal get services"
"$SHOAL" get services
echo
echo "\$ shoal get tasks -o wide"
"$SHOAL" get tasks -o wide
echo
echo "\$ shoal get nodes"
"$SHOAL" get nodes
echo
echo "Shoal is running (API $SHOAL_SERVER, data in $DATA). Try, in another shell:"
echo "  export PATH=\$PWD/target/release:\$PATH"
echo "  shoal describe service hello; shoal scale hello=3; shoal node drain \$(hostname); shoal node activate \$(hostname)"
echo "Press Ctrl-C to stop."
wait $dev
