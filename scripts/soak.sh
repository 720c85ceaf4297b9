#!/usr/bin/env bash
# A soak: the gateway and worker under a steady open-loop load (default
# 2,000 req/s for 10 minutes), the gateway's and worker's RSS sampled every
# 30 s, so memory growth shows. Same config and ports as scripts/bench.sh.
# Usage: scripts/soak.sh [duration] [rate]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
duration=${1:-10m}
rate=${2:-2000}

run_name=soak
# shellcheck source=scripts/bench-env.sh
. scripts/bench-env.sh

target/release/sluice-load receive --listen 127.0.0.1:18999 --idle 5s --bursts 1 >"$run/receive.txt" &
pids+=("$!")
target/release/sluice-gateway >"$run/gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")
target/release/sluice-worker >"$run/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
wait_ready 127.0.0.1:19180 "$gateway"
wait_ready 127.0.0.1:19181 "$worker"

rss() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
seconds=$(awk -v d="$duration" 'BEGIN{n=d+0; if (d ~ /m$/) n*=60; print n}')
count=$(awk -v s="$seconds" -v r="$rate" 'BEGIN{printf "%d", s*r+r}')
target/release/sluice-load --pid "gateway=$gateway" --pid "worker=$worker" \
  open --rate "$rate" --duration "$duration" --count "$count" --label "soak, $rate req/s for $duration" >"$run/load.txt" &
load=$!
echo "| minute | gateway RSS MiB | worker RSS MiB |"
echo "|---|---|---|"
elapsed=0
while kill -0 "$load" 2>/dev/null; do
  printf '| %.1f | %s | %s |\n' "$(awk -v e="$elapsed" 'BEGIN{print e/60}')" "$(rss "$gateway")" "$(rss "$worker")"
  sleep 30
  elapsed=$((elapsed + 30))
done
wait "$load"
echo
cat "$run/load.txt"
