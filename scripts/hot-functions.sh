#!/bin/bash
# Writes link/hot-functions.txt: the functions of the release `shoal` that a hollow agent and a
# controller execute, in the order callgrind first reports them (the agent's first). build.rs
# hands the list to the linker, which places those functions together at the start of the
# code, so a long-running Shoal process keeps a few megabytes of its code resident instead of
# pages scattered over all of it (the kernel maps 64 KB around each page a process touches).
#
# The scenario: an etcd, a controller and an agent with 20 hollow nodes, both under
# callgrind; three services of 100 replicas, a rolling update of one, a scale-down of
# another and the removal of the third; then both stop cleanly. Regenerate the list after
# large changes (`make hot-functions`): a function renamed since is simply not ordered.
#
# Usage: scripts/hot-functions.sh [BINARY]   (default target/release/shoal)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/shoal}
OUT=$(mktemp -d)
PORT=${HOT_FUNCTIONS_PORT:-23795}
ETCD= CTL= AGENT=
cleanup() {
    for p in $AGENT $CTL $ETCD; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$OUT"
}
trap cleanup EXIT
etcd --data-dir "$OUT/etcd" --listen-client-urls "http://127.0.0.1:$PORT" \
    --advertise-client-urls "http://127.0.0.1:$PORT" \
    --listen-peer-urls "http://127.0.0.1:$((PORT + 10))" > "$OUT/etcd.log" 2>&1 &
ETCD=$!
sleep 2
STORE="etcd://127.0.0.1:$PORT"
CG=(valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no --dump-instr=no)
"${CG[@]}" --callgrind-out-file="$OUT/controller.cg" "$BIN" controller --store "$STORE" \
    --lease-ttl 30s > "$OUT/controller.log" 2>&1 &
CTL=$!
"${CG[@]}" --callgrind-out-file="$OUT/agent.cg" "$BIN" agent --store "$STORE" --node-id h \
    --address 127.0.0.1 --runtime sim --hollow-nodes 20 --lease-ttl 30s --cpus 64 \
    --memory 256Gi > "$OUT/agent.log" 2>&1 &
AGENT=$!
sleep 40

# Writes through etcd's JSON gateway (Debian's etcd-server has no etcdctl).
b64() { printf '%s' "$1" | base64 -w0; }
kv() { curl -sf -X POST "http://127.0.0.1:$PORT/v3/kv/$1" -d "$2" > /dev/null; }
service() {
    local yaml
    yaml=$(printf 'apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: bench\nspec:\n  replicas: %s\n  image: bench/app:1\n  env: {REV: "%s"}\n  restart: {delay: 1s}\n' "$1" "$2" "$3")
    kv put "{\"key\":\"$(b64 "/shoal/services/bench/$1")\",\"value\":\"$(b64 "$yaml")\"}"
}
for s in a b c; do service "$s" 100 1; done
sleep 60
service a 100 2
sleep 60
service b 10 1
kv deleterange "{\"key\":\"$(b64 /shoal/services/bench/c)\"}"
sleep 40
kill -TERM "$AGENT" "$CTL"
wait "$AGENT" "$CTL" || true
AGENT= CTL=

nm --defined-only "$BIN" | awk '$2 ~ /^[tTwW]$/ {print $3}' > "$OUT/symbols"
cat "$OUT/agent.cg" "$OUT/controller.cg" | sed -n 's/^fn=//p' | awk '!seen[$0]++' \
    | grep -Fxf "$OUT/symbols" > link/hot-functions.txt
echo "link/hot-functions.txt: $(wc -l < link/hot-functions.txt) functions"
