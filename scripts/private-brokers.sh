# shellcheck shell=bash
# A private RabbitMQ node and a private Redis for a measuring script, so their
# CPU time is Sluice's alone even on a machine whose shared brokers are busy
# (the recipe of docs/testing.md, "Private brokers for tests"). Sourced by
# scripts/capacity.sh and scripts/bench-cores.sh:
#
#   private_brokers_start DIR NODE AMQP_PORT REDIS_PORT [CPUS]
#   private_brokers_stop            # in the caller's EXIT trap
#
# DIR must exist (it holds the node's data and the Redis dump dir); NODE is
# the Erlang node name (name@localhost); the distribution port is
# AMQP_PORT - 6000. CPUS, when given, is a taskset CPU list both brokers (every
# thread) are pinned to. On success it sets $beam and $redis (the pids whose
# CPU is Sluice's brokers') and exports SLUICE_AMQP__URL and SLUICE_REDIS__URL;
# it returns 1, with the node's log tail, when either does not come up.

private_brokers_node=
private_brokers_redis_port=

private_brokers_start() {
  local dir=$1 node=$2 amqp_port=$3 redis_port=$4 cpus=${5:-}
  local pin=()
  [[ -n $cpus ]] && pin=(taskset -c "$cpus")
  if rabbitmqctl -n "$node" status >/dev/null 2>&1; then
    echo "private brokers: node $node is already running (another run of this script?)" >&2
    return 1
  fi
  local port
  for port in "$amqp_port" "$((amqp_port - 6000))" "$redis_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "private brokers: 127.0.0.1:$port is taken by another process" >&2
      return 1
    fi
  done
  # From here on private_brokers_stop has something to stop.
  private_brokers_node=$node
  private_brokers_redis_port=$redis_port
  chown rabbitmq:rabbitmq "$dir"
  echo "listeners.tcp.default = 127.0.0.1:$amqp_port" >"$dir/rabbitmq.conf"
  echo "[]." >"$dir/enabled_plugins"
  chown rabbitmq:rabbitmq "$dir"/*
  RABBITMQ_NODENAME=$node RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$amqp_port \
    RABBITMQ_DIST_PORT=$((amqp_port - 6000)) RABBITMQ_MNESIA_BASE=$dir/mnesia \
    RABBITMQ_LOG_BASE=$dir/log RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins \
    RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf "${pin[@]}" rabbitmq-server -detached
  # await_startup fails at once until the node has registered with epmd.
  local up=
  for _ in $(seq 1 60); do
    if rabbitmqctl -n "$node" await_startup --timeout 5 >/dev/null 2>&1; then
      up=1
      break
    fi
    sleep 1
  done
  if [[ -z $up ]]; then
    echo "private brokers: RabbitMQ node $node did not start; its log:" >&2
    tail -n 20 "$dir"/log/*.log >&2 2>/dev/null || true
    return 1
  fi
  "${pin[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
    --save "" --appendonly no >/dev/null
  for _ in $(seq 1 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  beam=$(rabbitmqctl -n "$node" eval 'os:getpid().' | tr -d '"')
  redis=$(redis-cli -p "$redis_port" info server | awk -F: '/^process_id/{print $2}' | tr -d '\r')
  if [[ -z $beam || -z $redis ]]; then
    echo "private brokers: no pid for RabbitMQ ($beam) or Redis ($redis)" >&2
    return 1
  fi
  # Every thread, those started before the affinity was inherited included.
  if [[ -n $cpus ]]; then
    taskset -a -cp "$cpus" "$beam" >/dev/null
    taskset -a -cp "$cpus" "$redis" >/dev/null
  fi
  export SLUICE_AMQP__URL=amqp://guest:guest@127.0.0.1:$amqp_port/%2f
  export SLUICE_REDIS__URL=redis://127.0.0.1:$redis_port
}

private_brokers_stop() {
  if [[ -n $private_brokers_node ]]; then
    rabbitmqctl -n "$private_brokers_node" stop >/dev/null 2>&1 || true
    redis-cli -p "$private_brokers_redis_port" shutdown nosave >/dev/null 2>&1 || true
  fi
  private_brokers_node=
}
