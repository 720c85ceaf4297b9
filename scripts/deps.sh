#!/usr/bin/env bash
# Makes sure the services Sluice needs on a dev machine or in CI are installed
# and answering on loopback: Redis on 6379 and RabbitMQ on 5672 (guest/guest),
# plus the tools the other scripts call (openssl, curl).
#
# Idempotent and quiet: when everything already answers it prints nothing and
# changes nothing. It never stops or restarts a service that is running.
set -euo pipefail

# rabbitmqctl and rabbitmq-server live in /usr/sbin, which a non-login shell may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

# Overridable only to exercise this script against private instances.
readonly REDIS_PORT=${SLUICE_DEPS_REDIS_PORT:-6379}
readonly AMQP_PORT=${SLUICE_DEPS_AMQP_PORT:-5672}
readonly RABBIT_BOOT_TIMEOUT=60

say() { printf 'deps: %s\n' "$*"; }
warn() { printf 'deps: warning: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

# apt-get needs root; use sudo where we are not root (dev machines and CI run as root).
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install packages"
  SUDO=(sudo)
fi

APT_LOG=$(mktemp -t sluice-deps-apt.XXXXXX)
POLICY_RC_ADDED=""
cleanup() {
  rm -f "$APT_LOG"
  # Remove the policy-rc.d we added, never one that was already there.
  if [[ -n $POLICY_RC_ADDED ]]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

APT_UPDATED=""
# Installs the named Debian packages; runs apt-get update once per invocation.
apt_install() {
  if [[ -z $APT_UPDATED ]]; then
    say "apt-get update"
    "${SUDO[@]}" apt-get update -q >"$APT_LOG" 2>&1 \
      || { cat "$APT_LOG" >&2; die "apt-get update failed"; }
    APT_UPDATED=1
  fi
  # Keep apt from starting the services itself: with no init system it would
  # fail the install or start them in a way we do not control. We start them below.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_ADDED=1
  fi
  say "apt-get install -y $*"
  "${SUDO[@]}" apt-get install -y -q "$@" >"$APT_LOG" 2>&1 \
    || { tail -n 40 "$APT_LOG" >&2; die "apt-get install $* failed"; }
}

# Is a TCP port on loopback accepting connections? (bash's /dev/tcp, no extra tools)
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

redis_up() {
  [[ $(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

ensure_packages() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if [[ ${#missing[@]} -gt 0 ]]; then apt_install "${missing[@]}"; fi
}

ensure_redis() {
  redis_up && return 0
  if port_open "$REDIS_PORT"; then
    die "something listens on 127.0.0.1:$REDIS_PORT but does not answer PING like Redis"
  fi
  say "starting redis-server on 127.0.0.1:$REDIS_PORT"
  # No persistence: dev and test data are throwaway, and a save must never stall a test.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
    --save "" --appendonly no >/dev/null \
    || die "redis-server failed to start"
  for _ in $(seq 1 20); do
    redis_up && return 0
    sleep 0.5
  done
  die "redis-server started but does not answer PING on 127.0.0.1:$REDIS_PORT after 10 s"
}

ensure_rabbitmq() {
  # The AMQP listener opens last in the boot sequence, so an open port means ready.
  port_open "$AMQP_PORT" && return 0
  say "starting rabbitmq-server (up to ${RABBIT_BOOT_TIMEOUT} s)"
  # Debian's wrapper switches to the rabbitmq user when run as root. Listen on
  # loopback only (a listener set in /etc/rabbitmq/rabbitmq.conf still wins).
  RABBITMQ_NODE_IP_ADDRESS=${RABBITMQ_NODE_IP_ADDRESS:-127.0.0.1} rabbitmq-server -detached >/dev/null 2>&1 \
    || die "rabbitmq-server -detached failed"
  local deadline=$((SECONDS + RABBIT_BOOT_TIMEOUT))
  # await_startup fails at once while the node is not yet registered, so retry it.
  until timeout 15 rabbitmqctl -q await_startup --timeout 10 >/dev/null 2>&1 && port_open "$AMQP_PORT"; do
    if ((SECONDS >= deadline)); then
      local logs=${RABBITMQ_LOG_BASE:-/var/log/rabbitmq}
      tail -n 30 "$logs"/*.log >&2 2>/dev/null || true
      die "RabbitMQ did not come up on 127.0.0.1:$AMQP_PORT within ${RABBIT_BOOT_TIMEOUT} s (logs: $logs/)"
    fi
    sleep 1
  done
}

# At-least-once dead-lettering from quorum queues needs the stream_queue flag;
# enable every flag the node supports, but only when one is still disabled, so
# a machine that is already set up is left untouched.
ensure_feature_flags() {
  local flags
  if ! flags=$(timeout 30 rabbitmqctl -q list_feature_flags name state 2>/dev/null); then
    warn "could not list RabbitMQ feature flags (rabbitmqctl failed); at-least-once dead-lettering may not work"
    return 0
  fi
  awk '$2 == "disabled" { found = 1 } END { exit !found }' <<<"$flags" || return 0
  if ! timeout 60 rabbitmqctl -q enable_feature_flag all >/dev/null 2>&1; then
    warn "rabbitmqctl enable_feature_flag all failed (old RabbitMQ?); at-least-once dead-lettering needs stream_queue"
  fi
}

ensure_packages
ensure_redis
ensure_rabbitmq
ensure_feature_flags
