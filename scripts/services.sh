#!/usr/bin/env bash
# Makes sure the services the tests use answer: RabbitMQ 3.x on 127.0.0.1:5672 (with its
# management API on 127.0.0.1:15672), Redis on 127.0.0.1:6379, and the RabbitMQ 4.0 and 4.3 test
# brokers on 127.0.0.1:5673 and 5674 (scripts/rabbitmq4.sh), and a Redis Sentinel set and a Redis
# Cluster on their own ports (scripts/redis-ha.sh). Starts them when installed but down,
# installs them with apt on Debian/Ubuntu when missing. SKIP_RABBITMQ4=1 leaves both 4.x brokers
# out, SKIP_RABBITMQ43=1 only the 4.3 one, SKIP_REDIS_HA=1 the Sentinel and Cluster sets (CI sets
# none).
#
# Other Erlang VMs may run on this host (the 4.x broker, other nodes): this script only ever
# stops the broker it manages, by that broker's own pid, never by a process-name pattern.
set -euo pipefail
cd "$(dirname "$0")/.."

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A broker can accept TCP and still never answer AMQP (seen after a wedged boot): send the
# protocol header and wait for the first byte of Connection.Start.
speaks_amqp() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672; printf "AMQP\x00\x00\x09\x01" >&3; head -c 1 <&3 >/dev/null' 2>/dev/null
}

need_apt() {
  command -v apt-get >/dev/null || { echo "services: $1 is not installed and there is no apt-get; install it by hand" >&2; exit 1; }
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

is_beam() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q beam.smp; }

# The pid of the broker on 5672: asked of the node itself, else the process listening on 5672
# (a wedged node may not answer the CLI). Only a pid that is an Erlang VM counts.
broker_pid() {
  local pid
  pid=$(timeout 20 rabbitmqctl eval 'os:getpid().' 2>/dev/null | tr -dc 0-9) || true
  if [ -z "$pid" ] || ! is_beam "$pid"; then
    pid=$(ss -ltnpH 'sport = :5672' 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | tr -dc 0-9) || true
  fi
  [ -n "$pid" ] && is_beam "$pid" && echo "$pid"
}

start_broker() {
  rabbitmq-server -detached
  for _ in $(seq 1 120); do speaks_amqp && break; sleep 1; done
  # Bounded: a boot that hangs (seen after recovering thousands of quorum queues) must fail
  # here, not hang the run.
  timeout 180 rabbitmqctl await_startup >/dev/null 2>&1 || true
}

# Stops the broker on 5672 and only it: a clean `rabbitmqctl stop` (which addresses that node
# by name), then its pid with SIGTERM, then SIGKILL.
stop_broker() {
  local pid
  pid=$(broker_pid) || { echo "services: cannot tell the pid of the broker on 5672; stop it by hand" >&2; exit 1; }
  echo "services: stopping the broker (pid $pid)"
  timeout 30 rabbitmqctl stop >/dev/null 2>&1 || true
  for _ in $(seq 1 15); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 15); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  kill -KILL "$pid" 2>/dev/null || true
  sleep 1
}

# The management API, which `wxcourier` uses to list queues: bound to loopback only, both on
# this boot (set before the plugin starts) and on later ones (rabbitmq.conf).
ensure_management() {
  local conf=/etc/rabbitmq/rabbitmq.conf
  if [ -w "$(dirname "$conf")" ] && ! grep -qs '^management\.tcp\.ip' "$conf"; then
    echo "management.tcp.ip = 127.0.0.1" >>"$conf"
  fi
  if ! answers 15672; then
    echo "services: enabling the RabbitMQ management plugin on 127.0.0.1:15672"
    rabbitmqctl eval 'application:set_env(rabbitmq_management, tcp_config, [{ip, "127.0.0.1"}, {port, 15672}]).' >/dev/null
    rabbitmq-plugins enable rabbitmq_management >/dev/null
  fi
  for _ in $(seq 1 60); do answers 15672 && return 0; sleep 1; done
  echo "services: the RabbitMQ management API did not come up on 127.0.0.1:15672" >&2
  exit 1
}

if ! answers 5672; then
  command -v rabbitmq-server >/dev/null || need_apt rabbitmq-server
  echo "services: starting RabbitMQ"
  start_broker
fi
if ! speaks_amqp; then
  echo "services: RabbitMQ accepts connections but does not answer AMQP; restarting it"
  stop_broker
  start_broker
fi
speaks_amqp || { echo "services: RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }
ensure_management

if ! answers 6379; then
  command -v redis-server >/dev/null || need_apt redis-server
  echo "services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 30); do answers 6379 && break; sleep 1; done
fi
answers 6379 || { echo "services: Redis did not come up on 127.0.0.1:6379" >&2; exit 1; }

if [ "${SKIP_REDIS_HA:-}" = 1 ]; then
  echo "services: SKIP_REDIS_HA=1: Redis Sentinel and Cluster not started"
else
  # Idempotent: whole sets are left as they are; a set missing a node gets it back.
  scripts/redis-ha.sh start
fi

if [ "${SKIP_RABBITMQ4:-}" = 1 ]; then
  echo "services: RabbitMQ 3.x and Redis are answering (RabbitMQ 4.x skipped)"
elif [ "${SKIP_RABBITMQ43:-}" = 1 ]; then
  scripts/rabbitmq4.sh 4.0 start
  echo "services: RabbitMQ 3.x, RabbitMQ 4.0 and Redis are answering (RabbitMQ 4.3 skipped)"
else
  scripts/rabbitmq4.sh 4.0 start
  scripts/rabbitmq4.sh 4.3 start
  echo "services: RabbitMQ 3.x, RabbitMQ 4.0, RabbitMQ 4.3 and Redis are answering"
fi
