#!/usr/bin/env bash
# Worker CPU per delivered event, A/B in one run (docs/benchmarks.md): for each
# directory given (holding a build's sluice-gateway, sluice-worker and
# sluice-load), fills a work queue of its own with N events (default 20,000)
# through that build's gateway, stops it, then times that build's worker
# draining the queue to a fast local receiver; the worker's CPU comes from
# /proc and includes its start-up and the receiver's 3 s idle tail.
#   scripts/worker-cpu.sh DIR_A DIR_B DIR_A DIR_B
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
N=${N:-20000}
export SLUICE_BENCH_SECRET=bench-only-secret SLUICE_BENCH_WA_SECRET=bench-only-wa-secret \
  SLUICE_BENCH_WA_VERIFY=bench-only-verify SLUICE_BENCH_ROUTE_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
ticks=$(getconf CLK_TCK)
run=.run/worker-cpu
mkdir -p "$run"
for bin in "$@"; do
  prefix="wcpu-$(date +%s%N | cut -c1-13)"
  sed "s/@PREFIX@/$prefix/" scripts/bench.toml >"$run/sluice.toml"
  export SLUICE_CONFIG=$run/sluice.toml
  "$bin/sluice-gateway" >"$run/gateway.log" 2>&1 &
  gateway=$!
  for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:19180/readyz >/dev/null 2>&1 && break; sleep 0.2; done
  "$bin/sluice-load" closed --connections 32 --count "$N" --duration 120s --label fill >"$run/fill.txt"
  kill -TERM "$gateway"
  wait "$gateway" 2>/dev/null
  "$bin/sluice-load" receive --listen 127.0.0.1:18999 --idle 3s --bursts 1 >"$run/receive.txt" &
  receiver=$!
  sleep 0.5
  "$bin/sluice-worker" >"$run/worker.log" 2>&1 &
  worker=$!
  wait "$receiver"
  used=$(awk -v t="$ticks" '{printf "%.3f", ($14+$15)/t}' "/proc/$worker/stat")
  kill -TERM "$worker"
  wait "$worker" 2>/dev/null
  delivered=$(awk -F'|' '/worker 1/{gsub(/ /,"",$10); print $10}' "$run/receive.txt")
  echo "$bin: worker CPU ${used} s for $N events (delivered: $delivered) = $(awk -v c="$used" -v n="$N" 'BEGIN{printf "%.1f", c/n*1e6}') µs per event"
  "$bin/sluice-load" clean >/dev/null 2>&1 || echo "could not delete $prefix's queues" >&2
  redis-cli --scan --pattern "$prefix:*" | xargs -r -n 5000 redis-cli unlink >/dev/null 2>&1
done
