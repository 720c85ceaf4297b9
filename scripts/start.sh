#!/usr/bin/env bash
# The quick start: brings up Redis and RabbitMQ if needed, builds the release
# binaries, starts sluice-gateway and sluice-worker in the background with
# config/sluice.example.toml, waits until both are ready, and prints a signed
# sample request to send. Stop them with scripts/stop.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $# -gt 0 ]]; then
  echo "usage: scripts/start.sh   (no options; stop with scripts/stop.sh)" >&2
  exit 2
fi

readonly CONFIG=config/sluice.example.toml
readonly RUN_DIR=.run
readonly READY_TIMEOUT=60

die() { printf 'start: error: %s\n' "$*" >&2; exit 1; }

# An address a client can dial: a wildcard listen address is reached on loopback.
dial_addr() { local a=$1; a=${a/#0.0.0.0:/127.0.0.1:}; printf '%s\n' "${a/#\[::\]:/[::1]:}"; }

# The example config's addresses, unless overridden the documented way (SLUICE_*).
GATEWAY_ADDR=$(dial_addr "${SLUICE_GATEWAY__LISTEN:-127.0.0.1:8080}")
GATEWAY_ADMIN=$(dial_addr "${SLUICE_GATEWAY__ADMIN_LISTEN:-127.0.0.1:9080}")
WORKER_ADMIN=$(dial_addr "${SLUICE_WORKER__ADMIN_LISTEN:-127.0.0.1:9081}")

bash scripts/deps.sh

echo "building release binaries (cargo build --release --bins)..."
cargo build --release --bins

# shellcheck source=scripts/demo.env
. scripts/demo.env

mkdir -p "$RUN_DIR"
# Old instances would hold the ports: stop them first (stop.sh ignores stale pid files).
bash scripts/stop.sh >/dev/null

# A port still taken now belongs to something this script did not start; its
# /readyz would pass the wait below for a process that never came up.
port_open() {
  local host=${1%:*}
  host=${host#[}
  timeout 2 bash -c "exec 3<>/dev/tcp/${host%]}/${1##*:}" 2>/dev/null
}
for addr in "$GATEWAY_ADDR" "$GATEWAY_ADMIN" "$WORKER_ADMIN"; do
  if port_open "$addr"; then
    die "$addr is already in use by another process (a Sluice not started by scripts/start.sh?): stop it first"
  fi
done

start_bin() {
  local name=$1
  # Each start gets a fresh log; nohup keeps the process alive after the terminal closes.
  nohup "target/release/sluice-$name" --config "$CONFIG" >"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
}
start_bin gateway
start_bin worker

show_failure() {
  local name=$1
  echo "---- last lines of $RUN_DIR/$name.log ----" >&2
  tail -n 30 "$RUN_DIR/$name.log" >&2 || true
}

ready() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$1/readyz") == 200 ]]; }

# Waits for both admin /readyz to answer 200; a process that exits stops the wait at once.
deadline=$((SECONDS + READY_TIMEOUT))
for name in gateway worker; do
  admin=$GATEWAY_ADMIN
  [[ $name == worker ]] && admin=$WORKER_ADMIN
  pid=$(<"$RUN_DIR/$name.pid")
  until ready "$admin"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_failure "$name"
      bash scripts/stop.sh >/dev/null
      die "sluice-$name exited during start-up (log above, full log in $RUN_DIR/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      show_failure "$name"
      bash scripts/stop.sh >/dev/null
      die "sluice-$name not ready: http://$admin/readyz did not answer 200 within ${READY_TIMEOUT} s"
    fi
    sleep 0.5
  done
done

# A sample in the WhatzMeAPI `messages.upsert` shape with a fresh id, so the
# first send is accepted and a repeat is reported as a duplicate.
event_id="DEMO-$(date +%Y%m%d%H%M%S)-$(openssl rand -hex 3 | tr 'a-f' 'A-F')"
body='{"event":"messages.upsert","messages":[{"key":{"id":"'"$event_id"'","fromMe":false},"message":{"conversation":"hello"}}]}'
# X-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>; printf adds no newline to the signed bytes.
signature=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$SLUICE_DEMO_WHATZME_SECRET" | awk '{print $NF}')
[[ $signature =~ ^[0-9a-f]{64}$ ]] || die "could not compute the sample's signature with openssl"
url="http://$GATEWAY_ADDR/webhooks/whatzme"
# Logs never hold an event id, only its keyed digest (docs/privacy.md).
digest=$(target/release/sluice-worker --config "$CONFIG" id-digest "$event_id") \
  || die "could not compute the sample's id digest with sluice-worker id-digest"

cat <<MSG

Sluice is running (gateway pid $(<"$RUN_DIR/gateway.pid"), worker pid $(<"$RUN_DIR/worker.pid")).

POST webhooks to:  $url

Send a correctly signed sample (expect {"ok":true,"accepted":1,"duplicates":0};
send it again and it is a duplicate):

curl -sS -w '\n' '$url' -H 'Content-Type: application/json' -H 'X-Signature: sha256=$signature' --data-raw '$body'

Watch the worker log the event (messages.upsert; logs name it by the digest of
its id, event_id_digest $digest):
  tail -f $RUN_DIR/worker.log
Gateway log: $RUN_DIR/gateway.log   Metrics: http://$GATEWAY_ADMIN/metrics, http://$WORKER_ADMIN/metrics
Stop:  scripts/stop.sh
MSG
