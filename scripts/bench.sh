#!/usr/bin/env bash
# The benchmark suite (docs/benchmarks.md): builds release binaries, runs the
# gateway against the local Redis and RabbitMQ under a prefix of its own, and
# prints one table from one run: the I/O floor and the closed loop (three
# alternating pairs, the median ratio), 1,000-update WhatsApp batches, open
# loop at half the closed-loop rate, the worker's drain rate and end-to-end
# latency. About 2 minutes after the build. Traffic stays on loopback.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_name=bench
# shellcheck source=scripts/bench-env.sh
. scripts/bench-env.sh

target/release/sluice-gateway >"$run/gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")
wait_ready 127.0.0.1:19180 "$gateway"
load=(target/release/sluice-load --pid "gateway=$gateway")
# Each gateway run starts from an empty work queue, as the floor does: a deep
# quorum queue costs RabbitMQ more per message and would tilt the comparison.
# RabbitMQ frees the purged segments after answering: give it 3 s to settle.
empty_queue() {
  rabbitmqctl purge_queue "$prefix.work" -q >/dev/null
  sleep 3
}

echo "## $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; gateway, Redis, RabbitMQ and load generator on this machine"
echo
echo "### floor and closed loop, three alternating pairs of 10 s"
echo "floor: the gateway's Redis + RabbitMQ work per event, no HTTP, 32 at a time."
echo "closed: 32 keep-alive connections, one event per request. The machine's"
echo "speed drifts by 20 % from run to run, so each pair gives a ratio and the"
echo "median of the three is the headline."
: >"$run/pairs.txt"
for pair in 1 2 3; do
  echo
  target/release/sluice-load floor --concurrency 32 --duration 10s --label "floor (no HTTP), pair $pair" | tee "$run/floor.txt"
  empty_queue
  "${load[@]}" closed --connections 32 --duration 10s --label "closed, 32 connections, pair $pair" | tee "$run/closed.txt"
  empty_queue
  floor_rate=$(awk -F'|' '/floor/{gsub(/ /,"",$4); print $4}' "$run/floor.txt")
  closed_rate=$(awk -F'|' '/closed/{gsub(/ /,"",$4); print $4}' "$run/closed.txt")
  echo "$closed_rate $floor_rate" >>"$run/pairs.txt"
done
echo
awk '{printf "pair %d: closed %d / floor %d = %.2f\n", NR, $1, $2, $1/$2}' "$run/pairs.txt"
# The median pair by ratio: its closed rate sets the open loop's half rate.
read -r closed_rate floor_rate < <(awk '{print $1/$2, $1, $2}' "$run/pairs.txt" | sort -n | sed -n 2p | cut -d' ' -f2-)
echo "floor ratio (median pair): $(awk -v a="$closed_rate" -v b="$floor_rate" 'BEGIN{printf "%.2f", a/b}')"
echo
echo "### WhatsApp batches of 1,000 updates, one connection, one batch at a time"
"${load[@]}" closed --kind whatsapp --source whatsapp --batch 1000 --connections 1 --count 100 --duration 60s --label "batches of 1,000, 1 connection"
empty_queue

half=$(awk -v r="$closed_rate" 'BEGIN{printf "%.0f", r/2}')
echo
echo "### open loop at half the closed-loop rate ($half req/s), gateway alone"
"${load[@]}" open --rate "$half" --duration 15s --label "open, $half req/s, gateway alone"

echo
echo "### worker: drain the open loop's backlog, then deliver while a second open loop runs"
target/release/sluice-load receive --listen 127.0.0.1:18999 --idle 3s --bursts 2 >"$run/receive.txt" &
receiver=$!
pids+=("$receiver")
sleep 0.5
target/release/sluice-worker >"$run/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
wait_ready 127.0.0.1:19181 "$worker"
wait "$receiver" 2>/dev/null &
# The first burst is the backlog; wait for its row before the open loop starts.
for _ in $(seq 1 600); do grep -q "worker 1" "$run/receive.txt" 2>/dev/null && break; sleep 0.5; done
cat "$run/receive.txt"
echo
echo "### open loop at half the closed-loop rate ($half req/s), worker delivering"
"${load[@]}" --pid "worker=$worker" open --rate "$half" --duration 15s --label "open, $half req/s, worker delivering"
for _ in $(seq 1 120); do grep -q "worker 2" "$run/receive.txt" 2>/dev/null && break; sleep 0.5; done
grep "worker 2" "$run/receive.txt" || echo "(no second delivery burst recorded)"
