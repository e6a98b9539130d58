#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, from the installed RabbitMQ, beside (and never
# touching) the host's broker on 5672: nodes rabbit-c1..c3@localhost, AMQP 127.0.0.1:5681-5683,
# distribution 25681-25683, each with its own config, plugins file, database and logs under
# $WXCOURIER_CLUSTER_DIR (default /var/tmp/wxcourier-cluster), and one Erlang cookie of their own.
#
#   scripts/cluster.sh start           start the three nodes and join c2, c3 to c1
#   scripts/cluster.sh stop            stop the three nodes (only the pids this script started)
#   scripts/cluster.sh status          each node: up or down, and the cluster as c1 sees it
#   scripts/cluster.sh urls            the AMQP URLs of the three nodes, comma-separated
#   scripts/cluster.sh stop-node N     stop node N gracefully (rabbitmqctl stop)
#   scripts/cluster.sh kill-node N     kill -9 node N's VM (a node lost without a goodbye)
#   scripts/cluster.sh start-node N    start node N again; it rejoins the cluster by itself
#   scripts/cluster.sh ctl N ARGS      rabbitmqctl ARGS against node N
#   scripts/cluster.sh queues N ARGS   rabbitmq-queues ARGS against node N
#   scripts/cluster.sh failover-test   start the cluster, run the failover test under load, stop
#
# The nodes share the host's epmd (4369), which is how several Erlang nodes on one machine are
# meant to run. Runs as any user that can write the data directory.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${WXCOURIER_CLUSTER_DIR:-/var/tmp/wxcourier-cluster}
BIN=/usr/lib/rabbitmq/bin
NODES=(1 2 3)

say() { echo "cluster: $*"; }
die() { echo "cluster: $*" >&2; exit 1; }

node_name() { echo "rabbit-c$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
dist_port() { echo $((25680 + $1)); }
node_dir() { echo "$BASE/c$1"; }
pid_file() { echo "$(node_dir "$1")/rabbit.pid"; }

# Runs a RabbitMQ program with node $1's environment only: nothing from /etc/rabbitmq (whose
# env file names the host's node) and a HOME holding this cluster's cookie.
with_node() {
  local n=$1 dir
  shift
  dir=$(node_dir "$n")
  /usr/bin/env -i \
    HOME="$BASE" \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT="$(dist_port "$n")" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$(pid_file "$n")" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    "$@"
}

ctl() { local n=$1; shift; with_node "$n" "$BIN/rabbitmqctl" -n "$(node_name "$n")" "$@"; }
queues() { local n=$1; shift; with_node "$n" "$BIN/rabbitmq-queues" -n "$(node_name "$n")" "$@"; }

speaks_amqp() {
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; printf 'AMQP\x00\x00\x09\x01' >&3; head -c 1 <&3 >/dev/null" 2>/dev/null
}

# Node $1's VM pid, only when the recorded pid is alive and is that node's VM: a stale pid file
# may name a process that is now something else, and the host's broker must never be hit.
running_pid() {
  local f pid
  f=$(pid_file "$1")
  [ -r "$f" ] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q beam.smp || return 1
  tr '\0' '\n' <"/proc/$pid/environ" | grep -qx "RABBITMQ_NODENAME=$(node_name "$1")" || return 1
  echo "$pid"
}

write_config() {
  local n=$1 dir
  dir=$(node_dir "$n")
  mkdir -p "$dir/mnesia" "$dir/log"
  cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
EOF
  # No plugins: the host broker's plugin list (management on 15672) must not be loaded here.
  echo "[]." >"$dir/enabled_plugins"
  : >"$dir/rabbitmq-env.conf"
  if [ ! -s "$BASE/.erlang.cookie" ]; then
    head -c 256 /dev/urandom | tr -dc A-Z | head -c 24 >"$BASE/.erlang.cookie"
    chmod 400 "$BASE/.erlang.cookie"
  fi
}

# Starts node $1's VM in the background; `await_node` waits for it.
launch_node() {
  local n=$1
  if running_pid "$n" >/dev/null; then
    say "c$n already running"
    return 0
  fi
  for port in "$(amqp_port "$n")" "$(dist_port "$n")"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port is taken by something else; not starting c$n"
    fi
  done
  write_config "$n"
  rm -f "$(pid_file "$n")"
  say "starting c$n ($(node_name "$n"), AMQP $(amqp_port "$n"))"
  with_node "$n" setsid "$BIN/rabbitmq-server" >>"$(node_dir "$n")/log/console.log" 2>&1 </dev/null &
}

await_node() {
  local n=$1
  for _ in $(seq 1 60); do [ -s "$(pid_file "$n")" ] && break; sleep 1; done
  # `wait` returns once the node has booted (it may first wait for its cluster peers).
  ctl "$n" wait --timeout 600 "$(pid_file "$n")" >/dev/null
  for _ in $(seq 1 60); do speaks_amqp "$(amqp_port "$n")" && break; sleep 1; done
  speaks_amqp "$(amqp_port "$n")" || die "c$n does not answer AMQP on $(amqp_port "$n")"
}

start_node() {
  launch_node "$1"
  await_node "$1"
}

stop_node() {
  local n=$1 pid
  pid=$(running_pid "$n") || { say "c$n is not running"; return 0; }
  say "stopping c$n (pid $pid)"
  ctl "$n" stop >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  say "c$n did not stop in 60s; killing pid $pid"
  kill -9 "$pid" 2>/dev/null || true
}

kill_node() {
  local n=$1 pid
  pid=$(running_pid "$n") || die "c$n is not running"
  say "killing c$n (pid $pid) with SIGKILL"
  kill -9 "$pid"
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
}

in_cluster() {
  ctl 1 cluster_status --formatter json 2>/dev/null | grep -q "\"$(node_name "$1")\""
}

start_all() {
  mkdir -p "$BASE"
  # All at once: a clustered node that was not the last to stop waits at boot for its peers,
  # so starting them one after another would stall on the first.
  for n in "${NODES[@]}"; do launch_node "$n"; done
  for n in "${NODES[@]}"; do await_node "$n"; done
  for n in 2 3; do
    in_cluster "$n" && continue
    say "joining c$n to c1"
    ctl "$n" stop_app >/dev/null
    ctl "$n" join_cluster "$(node_name 1)" >/dev/null
    ctl "$n" start_app >/dev/null
  done
  for n in "${NODES[@]}"; do in_cluster "$n" || die "c$n is not in the cluster"; done
  say "three nodes clustered: $(urls)"
}

urls() {
  local out=()
  for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
  (IFS=,; echo "${out[*]}")
}

status() {
  for n in "${NODES[@]}"; do
    if pid=$(running_pid "$n"); then echo "c$n up (pid $pid, AMQP $(amqp_port "$n"))"; else echo "c$n down"; fi
  done
  for n in "${NODES[@]}"; do
    if running_pid "$n" >/dev/null; then
      ctl "$n" cluster_status --formatter json 2>/dev/null | grep -o '"running_nodes":\[[^]]*\]' || true
      break
    fi
  done
}

node_arg() {
  [[ "${1:-}" =~ ^[123]$ ]] || die "name a node: 1, 2 or 3"
}

case "${1:-}" in
  start) start_all ;;
  stop) for n in "${NODES[@]}"; do stop_node "$n"; done ;;
  status) status ;;
  urls) urls ;;
  stop-node) node_arg "${2:-}"; stop_node "$2" ;;
  kill-node) node_arg "${2:-}"; kill_node "$2" ;;
  start-node) node_arg "${2:-}"; start_node "$2" ;;
  ctl) node_arg "${2:-}"; n=$2; shift 2; ctl "$n" "$@" ;;
  queues) node_arg "${2:-}"; n=$2; shift 2; queues "$n" "$@" ;;
  failover-test)
    # Leave the cluster as it was found: stop it afterwards only if this run started it.
    was_up=; running_pid 1 >/dev/null && was_up=1
    start_all
    rc=0
    CLUSTER_AMQP_URLS=$(urls) cargo test --test cluster -- --ignored --nocapture --test-threads=1 || rc=$?
    for n in "${NODES[@]}"; do running_pid "$n" >/dev/null || start_node "$n"; done
    [ -n "$was_up" ] || for n in "${NODES[@]}"; do stop_node "$n"; done
    exit "$rc"
    ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
