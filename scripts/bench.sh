#!/usr/bin/env bash
# The benchmark suite (docs/benchmarks.md): builds release binaries, runs the
# gateway against the local Redis and RabbitMQ under a prefix of its own, and
# prints one table from one run: the I/O floor, closed loop, open loop at half
# the closed-loop rate, 1,000-update WhatsApp batches, the worker's drain rate
# and end-to-end latency. About 3 minutes. Traffic stays on loopback.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_name=bench
# shellcheck source=scripts/bench-env.sh
. scripts/bench-env.sh

wait_ready() {
  for _ in $(seq 1 100); do
    curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "bench: $1 did not become ready" >&2
  exit 1
}

target/release/sluice-gateway >"$run/gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")
wait_ready 127.0.0.1:19180
load=(target/release/sluice-load --pid "gateway=$gateway")

echo "## $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; gateway, Redis, RabbitMQ and load generator on this machine"
echo
echo "### floor: the gateway's Redis + RabbitMQ work per event, no HTTP"
target/release/sluice-load floor --concurrency 32 --duration 10s | tee "$run/floor.txt"
echo
echo "### closed loop, 32 connections, one event per request"
"${load[@]}" closed --connections 32 --duration 15s | tee "$run/closed.txt"
closed_rate=$(awk -F'|' '/closed/{gsub(/ /,"",$3); print $3}' "$run/closed.txt")
floor_rate=$(awk -F'|' '/floor/{gsub(/ /,"",$4); print $4}' "$run/floor.txt")
closed_events=$(awk -F'|' '/closed/{gsub(/ /,"",$4); print $4}' "$run/closed.txt")
echo
echo "closed-loop events/s over floor events/s: $(awk -v a="$closed_events" -v b="$floor_rate" 'BEGIN{printf "%.2f", a/b}')"
echo
echo "### WhatsApp batches of 1,000 updates, one connection, one batch at a time"
"${load[@]}" closed --kind whatsapp --source whatsapp --batch 1000 --connections 1 --count 100 --duration 60s --label "batches of 1,000, 1 connection"

half=$(awk -v r="$closed_rate" 'BEGIN{printf "%.0f", r/2}')
echo
echo "### open loop at half the closed-loop rate ($half req/s), gateway alone"
"${load[@]}" open --rate "$half" --duration 15s --label "open, $half req/s, gateway alone"

echo
echo "### worker: drain the backlog, then deliver while the open loop runs"
target/release/sluice-load receive --listen 127.0.0.1:18999 --idle 3s --bursts 2 >"$run/receive.txt" &
receiver=$!
pids+=("$receiver")
sleep 0.5
target/release/sluice-worker >"$run/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
wait "$receiver" 2>/dev/null &
# The first burst is the backlog; wait for its row before the open loop starts.
for _ in $(seq 1 600); do grep -q "worker 1" "$run/receive.txt" 2>/dev/null && break; sleep 0.5; done
cat "$run/receive.txt"
echo
echo "### open loop at half the closed-loop rate ($half req/s), worker delivering"
"${load[@]}" --pid "worker=$worker" open --rate "$half" --duration 15s --label "open, $half req/s, worker delivering"
for _ in $(seq 1 120); do grep -q "worker 2" "$run/receive.txt" 2>/dev/null && break; sleep 0.5; done
grep "worker 2" "$run/receive.txt" || echo "(no second delivery burst recorded)"
