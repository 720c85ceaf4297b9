#!/usr/bin/env bash
# Events per core (docs/benchmarks.md, "Events per core"): what one core of
# gateway or worker carries, measured with the process pinned to core 0 by
# taskset and everything else on core 1: a private RabbitMQ node and a private
# Redis (scripts/private-brokers.sh), the load generator and the receiver.
# Events per core = 1 / CPU seconds per event, from /proc/<pid>/stat.
#
#   scripts/bench-cores.sh [--docs] [[LABEL=]DIR ...]
#
# Each DIR holds a build's sluice-gateway and sluice-worker (and a bench.toml
# when that build needs a config of its own); the FIRST DIR's sluice-load
# drives every build, so an older build's load generator, which may lack
# newer flags, is never run. Without DIRs: the working tree's release build
# (target/release, built here) and that of BENCH_BASE (default HEAD~1, built
# once per commit into target/bench-base/ and kept there); BENCH_BASE=none
# measures the working tree's alone.
#
# Per round and build, builds alternating (A B A B ...) so a comparison is
# same-run: the build's gateway on core 0 under a closed loop (32 keep-alive
# connections, one event per request, DURATION, default 10s), with the CPU of
# gateway, RabbitMQ, Redis and the load generator; then the build's worker on
# core 0 draining the queue that run filled to `sluice-load receive`. ROUNDS
# (default 3) rounds; medians. About 25 s per build and round, plus 15 s for
# the brokers. --docs writes the table into docs/benchmarks.md between
# <!-- bench:cores:begin --> and <!-- bench:cores:end -->.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
docs=
if [[ ${1:-} == --docs ]]; then
  docs=1
  shift
fi

# This script's own node, ports and receiver, none of them used by the tests
# (AMQP 16000-19000, Redis 20000-22000), scripts/bench.sh (18180, 19180,
# 19181, 18999) or scripts/capacity.sh (16990, 23990): it can run beside them.
node=sluice-cores@localhost
amqp_port=15990
redis_port=23991
gateway_port=15180
gateway_admin=15181
worker_admin=15182
receiver_port=15183
count=150000 # requests signed before each closed loop: more than 10 s sends
ticks_per_s=$(getconf CLK_TCK)

# The previous commit's release binaries, built once per commit (in a copy of
# its tree, with a target dir of its own so the working tree's stays as is).
build_base() {
  local hash short out src
  hash=$(git rev-parse --verify --quiet "$1^{commit}") || {
    echo "bench-cores: BENCH_BASE=$1 names no commit" >&2
    exit 1
  }
  short=$(git rev-parse --short "$hash")
  out=target/bench-base/bins/$hash
  if [[ ! -x $out/sluice-worker ]]; then
    src=target/bench-base/src
    rm -rf "$src" "$out.tmp"
    mkdir -p "$src" "$out.tmp"
    git archive "$hash" | tar -x -C "$src"
    echo "bench-cores: building $short's release binaries once (a few minutes; kept in $out)" >&2
    if ! (cd "$src" && CARGO_TARGET_DIR=../target cargo build --release --bins) \
      >target/bench-base/build.log 2>&1; then
      echo "bench-cores: the build of $short failed; see target/bench-base/build.log" >&2
      exit 1
    fi
    cp target/bench-base/target/release/sluice-gateway target/bench-base/target/release/sluice-worker "$out.tmp/"
    cp "$src/scripts/bench.toml" "$out.tmp/bench.toml"
    mv "$out.tmp" "$out"
    rm -rf "$src"
  fi
  echo "$short=$out"
}

if (($# == 0)); then
  cargo build --release --bins >/dev/null 2>&1
  head_label=$(git rev-parse --short HEAD)
  [[ -z $(git status --porcelain --untracked-files=no) ]] || head_label+="+changes"
  set -- "$head_label=target/release"
  base=${BENCH_BASE:-HEAD~1}
  if [[ $base != none ]]; then
    base_arg=$(build_base "$base")
    set -- "$@" "$base_arg"
  fi
fi

labels=()
dirs=()
for arg in "$@"; do
  if [[ $arg == *=* ]]; then
    labels+=("${arg%%=*}")
    dirs+=("${arg#*=}")
  else
    labels+=("$arg")
    dirs+=("$arg")
  fi
done
for dir in "${dirs[@]}"; do
  for bin in sluice-gateway sluice-worker; do
    [[ -x $dir/$bin ]] || { echo "bench-cores: no $dir/$bin" >&2; exit 1; }
  done
done
load=${dirs[0]}/sluice-load
[[ -x $load ]] || { echo "bench-cores: no $load (the first build's load generator drives all)" >&2; exit 1; }
if (($(nproc) < 2)); then
  echo "bench-cores: needs 2 cores (the process measured on core 0, the rest on core 1)" >&2
  exit 1
fi
for port in "$gateway_port" "$gateway_admin" "$worker_admin" "$receiver_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "bench-cores: 127.0.0.1:$port is taken by another process (ss -ltnp | grep $port)" >&2
    exit 1
  fi
done

run=.run/bench-cores
rm -rf "$run"
mkdir -p "$run/brokers"
pids=()
# shellcheck source=scripts/private-brokers.sh
. scripts/private-brokers.sh
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  [[ ! -s $run/receiver.pid ]] || kill -TERM "$(cat "$run/receiver.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  private_brokers_stop
  rm -rf "$run/brokers"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load_avg=$(cut -d' ' -f1 /proc/loadavg)
echo "bench-cores: starting a private RabbitMQ ($node, port $amqp_port) and Redis (port $redis_port) on core 1"
private_brokers_start "$run/brokers" "$node" "$amqp_port" "$redis_port" 1

export SLUICE_BENCH_SECRET=bench-only-secret SLUICE_BENCH_WA_SECRET=bench-only-wa-secret \
  SLUICE_BENCH_WA_VERIFY=bench-only-verify SLUICE_BENCH_ROUTE_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

# A config of the run's own prefix and ports, from a build's bench.toml.
config() {
  sed -e "s/@PREFIX@/$2/" -e "s/127.0.0.1:18180/127.0.0.1:$gateway_port/" \
    -e "s/127.0.0.1:19180/127.0.0.1:$gateway_admin/" -e "s/127.0.0.1:19181/127.0.0.1:$worker_admin/" \
    -e "s/127.0.0.1:18999/127.0.0.1:$receiver_port/" "$1"
}

# utime + stime of a process, in clock ticks.
ticks() {
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# The CPU seconds of the children a subshell waited for, from `times`' second line.
child_cpu() {
  sed -n 2p "$1" | awk '{
    s = 0
    for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] }
    printf "%.3f", s
  }'
}

# Column $2 of a sluice-load report row matching $1 (4 = events/s, 10 = statuses).
column() {
  awk -F'|' -v m="$1" -v c="$2" 'index($0, m) {v = $c; gsub(/^ +| +$/, "", v); print v}' "$3" | tail -n 1
}

# The count of 200 answers in a statuses cell ("200:N ..."), else 0.
ok_count() {
  local n
  n=$(tr ' ' '\n' <<<"$1" | awk -F: '$1 == "200" {print $2}')
  echo "${n:-0}"
}

# shellcheck source=scripts/wait-ready.sh
. scripts/wait-ready.sh

us() { awk -v c="$1" -v n="$2" 'BEGIN{printf "%.1f", (n > 0 ? c / n * 1e6 : 0)}'; }
secs() { awk -v t="$1" -v hz="$ticks_per_s" 'BEGIN{printf "%.3f", t / hz}'; }

# One build, one round: the gateway's closed loop, then its worker draining.
measure() {
  local round=$1 i=$2 label=${labels[$2]} dir=${dirs[$2]}
  local prefix cfg lcfg gateway worker receiver
  prefix="cores-$round-$i-$(date +%s)"
  cfg=$run/build$i.toml
  lcfg=$run/load.toml
  config "$([[ -f $dir/bench.toml ]] && echo "$dir/bench.toml" || echo scripts/bench.toml)" "$prefix" >"$cfg"
  config scripts/bench.toml "$prefix" >"$lcfg"

  SLUICE_CONFIG=$cfg taskset -c 0 "$dir/sluice-gateway" >"$run/gateway.log" 2>&1 &
  gateway=$!
  pids+=("$gateway")
  wait_ready "127.0.0.1:$gateway_admin" "$gateway"
  local g0 r0 d0 g1 r1 d1
  g0=$(ticks "$gateway") r0=$(ticks "$beam") d0=$(ticks "$redis")
  (
    taskset -c 1 "$load" --config "$lcfg" closed --connections 32 --count "$count" \
      --duration "$duration" --label "gateway $label, round $round" >"$run/closed.txt"
    times >"$run/closed.times"
  )
  g1=$(ticks "$gateway") r1=$(ticks "$beam") d1=$(ticks "$redis")
  # The same requests signed again with no time to send them: the load
  # generator's start-up and signing, taken off its CPU for the run.
  (
    taskset -c 1 "$load" --config "$lcfg" closed --connections 32 --count "$count" \
      --duration 0s --label signing >/dev/null
    times >"$run/signing.times"
  )
  kill -TERM "$gateway"
  wait "$gateway" 2>/dev/null || true
  cat "$run/closed.txt" >>"$run/rows.md"
  local rate statuses events load_cpu
  rate=$(column "gateway $label" 4 "$run/closed.txt")
  statuses=$(column "gateway $label" 10 "$run/closed.txt")
  events=$(ok_count "$statuses")
  [[ $statuses == "200:$events" ]] || echo "bench-cores: not every answer was 200: $statuses" >&2
  load_cpu=$(awk -v a="$(child_cpu "$run/closed.times")" -v b="$(child_cpu "$run/signing.times")" \
    'BEGIN{printf "%.3f", (a > b ? a - b : 0)}')

  # The worker drains what the closed loop queued.
  local w0 wr0 wd0 w1 wr1 wd1
  rm -f "$run/receive.times"
  # In a subshell for `times`; its pid file lets the cleanup stop it.
  (
    taskset -c 1 "$load" --config "$lcfg" receive --listen "127.0.0.1:$receiver_port" \
      --idle 2s --bursts 1 >"$run/receive.txt" 2>/dev/null &
    echo $! >"$run/receiver.pid"
    wait $!
    times >"$run/receive.times"
  ) &
  receiver=$!
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$receiver_port") 2>/dev/null && break
    sleep 0.1
  done
  wr0=$(ticks "$beam") wd0=$(ticks "$redis")
  SLUICE_CONFIG=$cfg taskset -c 0 "$dir/sluice-worker" >"$run/worker.log" 2>&1 &
  worker=$!
  pids+=("$worker")
  w0=$(ticks "$worker")
  # The receiver's subshell writes its times when the burst is over.
  local deadline=$((SECONDS + 600))
  while [[ ! -s $run/receive.times ]]; do
    if ! kill -0 "$worker" 2>/dev/null; then
      echo "bench-cores: the worker of $label exited; see $run/worker.log" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "bench-cores: the worker of $label delivered nothing for 10 minutes; see $run/worker.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  w1=$(ticks "$worker") wr1=$(ticks "$beam") wd1=$(ticks "$redis")
  kill -TERM "$worker"
  wait "$worker" 2>/dev/null || true
  wait "$receiver" 2>/dev/null || true
  rm -f "$run/receiver.pid"
  cat "$run/receive.txt" >>"$run/rows.md"
  local drain delivered
  drain=$(column "worker 1" 4 "$run/receive.txt")
  delivered=$(ok_count "$(column "worker 1" 10 "$run/receive.txt")")
  ((delivered == events)) || echo "bench-cores: $label delivered $delivered of $events events" >&2

  "$load" --config "$lcfg" clean >/dev/null 2>&1 || echo "bench-cores: could not delete $prefix's queues" >&2
  redis-cli -p "$redis_port" flushall >/dev/null
  # RabbitMQ frees the deleted queue's segments after answering.
  sleep 1

  local gw_us wk_us
  gw_us=$(us "$(secs $((g1 - g0)))" "$events")
  wk_us=$(us "$(secs $((w1 - w0)))" "$delivered")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$round" "$label" "$rate" "$gw_us" \
    "$(us "$(secs $((r1 - r0)))" "$events")" "$(us "$(secs $((d1 - d0)))" "$events")" \
    "$(us "$load_cpu" "$events")" "$(awk -v u="$gw_us" 'BEGIN{printf "%.0f", 1e6 / u}')" \
    "$drain" "$wk_us" "$(us "$(secs $((wr1 - wr0)))" "$delivered")" \
    "$(us "$(secs $((wd1 - wd0)))" "$delivered")" "$(us "$(child_cpu "$run/receive.times")" "$delivered")" \
    "$(awk -v u="$wk_us" 'BEGIN{printf "%.0f", 1e6 / u}')" >>"$run/results.tsv"
  printf 'round %s, %s: gateway %s events/s, %s µs per event (%s per core); worker %s µs per event (%s per core), drained at %s events/s\n' \
    "$round" "$label" "$rate" "$gw_us" "$(awk -v u="$gw_us" 'BEGIN{printf "%.0f", 1e6 / u}')" \
    "$wk_us" "$(awk -v u="$wk_us" 'BEGIN{printf "%.0f", 1e6 / u}')" "$drain"
}

started=$(date +%s)
for round in $(seq 1 "$rounds"); do
  for i in "${!dirs[@]}"; do
    measure "$round" "$i"
  done
done
elapsed=$(($(date +%s) - started))

# The headline: medians across rounds, one column per build, the first build
# against the second when there are two.
rabbit_version=$(rabbitmqctl -n "$node" version 2>/dev/null || echo "?")
redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
if [[ -n ${head_label:-} ]]; then how="\`make bench\`"; else how="\`scripts/bench-cores.sh\` with builds given by hand"; fi
# A build's directory, named only when it is inside the repository.
where() {
  case $1 in
    /*) echo "prebuilt, outside this checkout" ;;
    *) echo "\`$1\`" ;;
  esac
}
{
  echo "Generated by $how on $(date -u +%Y-%m-%d) in ${elapsed} s: $(nproc) cores ($model), $(free -g | awk '/Mem:/{print $2}') GiB,"
  echo "Linux $(uname -r), RabbitMQ $rabbit_version and Redis $redis_version (private, pinned to core 1 with the load"
  echo "generator and receiver); the gateway or worker alone on core 0. Load average before the run: $load_avg."
  echo "Builds: $(for i in "${!labels[@]}"; do printf '%s%s' "$([[ $i == 0 ]] || echo ', ')" "\`${labels[$i]}\` ($(where "${dirs[$i]}"))"; done);"
  echo "$rounds round(s), the builds alternating in each; each cell the median of the rounds."
  echo
  awk -F'\t' -v labels="$(IFS=$'\t'; echo "${labels[*]}")" '
    function median(list,   n, v, i, j, t) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function commas(x,   s, r) {
      s = sprintf("%.0f", x); r = ""
      while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
      return s r
    }
    function list(cell,   v, n, i, out) {
      n = split(cell, v, " "); out = ""
      for (i = 1; i <= n; i++) out = out (i > 1 ? ", " : "") commas(v[i])
      return out
    }
    function show(x, kind) { return kind == "n" ? commas(x) : sprintf("%.1f", x) }
    { for (c = 3; c <= NF; c++) cells[$2, c] = cells[$2, c] " " $c }
    END {
      nb = split(labels, b, "\t")
      split("3 n|gateway: events/s (closed loop, 32 connections)|4 u|gateway: CPU µs per event|5 u|RabbitMQ: CPU µs per event|6 u|Redis: CPU µs per event|7 u|load generator: CPU µs per event|8 n|**gateway: events/s per core**|9 n|worker: events/s draining the queue|10 u|worker: CPU µs per delivered event|11 u|RabbitMQ: CPU µs per delivered event|12 u|Redis: CPU µs per delivered event|13 u|receiver: CPU µs per delivered event|14 n|**worker: events/s per core**", rows, "|")
      head = "| medians | " b[1]; line = "|---|---"
      for (i = 2; i <= nb; i++) { head = head " | " b[i]; line = line "|---" }
      if (nb == 2) { head = head " | " b[1] " vs " b[2]; line = line "|---" }
      print head " |"; print line "|"
      for (r = 1; r < 24; r += 2) {
        split(rows[r], spec, " "); c = spec[1]; kind = spec[2]
        out = "| " rows[r + 1]
        for (i = 1; i <= nb; i++) { m[i] = median(cells[b[i], c]); out = out " | " show(m[i], kind) }
        if (nb == 2) out = out " | " (m[2] > 0 ? sprintf("%+.0f %%", (m[1] / m[2] - 1) * 100) : "")
        print out " |"
      }
      print ""
      for (i = 1; i <= nb; i++) {
        printf "Per round, `%s`: gateway %s events/s per core; worker %s.\n", b[i], list(cells[b[i], 8]), list(cells[b[i], 14])
      }
    }' "$run/results.tsv"
} >"$run/table.md"
echo
cat "$run/table.md"

if [[ -n $docs ]]; then
  doc=docs/benchmarks.md
  if ! grep -q '^<!-- bench:cores:begin -->$' "$doc" || ! grep -q '^<!-- bench:cores:end -->$' "$doc"; then
    echo "bench-cores: $doc lacks the <!-- bench:cores:begin/end --> markers" >&2
    exit 1
  fi
  awk -v table="$run/table.md" '
    /^<!-- bench:cores:begin -->$/ { print; while ((getline l < table) > 0) print l; skip = 1; next }
    /^<!-- bench:cores:end -->$/ { skip = 0 }
    !skip { print }' "$doc" >"$run/benchmarks.md"
  mv "$run/benchmarks.md" "$doc"
  echo
  echo "bench-cores: wrote the table into $doc"
fi
