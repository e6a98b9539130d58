#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside (and never touching) the single test
# brokers on 5672-5674, in one of three series:
#
#   series  RabbitMQ                             nodes                AMQP       distribution
#   3       the host's installed one (3.10)      rabbit-c1..c3        5681-5683  25681-25683
#   4.0     the Debian 13 root of rabbitmq4.sh   rabbit40-c1..c3      5691-5693  25691-25693
#   4.3     the Debian sid root of rabbitmq4.sh  rabbit43-c1..c3      5695-5697  25695-25697
#
# all @localhost, each node with its own config, plugins file, database and logs, and one
# Erlang cookie per cluster: under $WXCOURIER_CLUSTER_DIR (default /var/tmp/wxcourier-cluster)
# for series 3, under /var/lib/wxcourier-cluster inside the root for 4.x. A 4.x node runs
# chrooted in the root `scripts/rabbitmq4.sh 4.0|4.3 bootstrap` made, as its rabbitmq user,
# in a mount namespace of its own (the root's /proc is mounted there, so neither this script
# nor rabbitmq4.sh can unmount it from under the other's nodes).
#
# The series is `--series S` before the verb, else RABBITMQ_CLUSTER_SERIES, else 3:
#
#   scripts/cluster.sh [--series S] start           start the three nodes and join c2, c3 to c1
#   scripts/cluster.sh [--series S] stop            stop the three nodes (only by recorded pid)
#   scripts/cluster.sh [--series S] status          each node: up or down, and the cluster as seen
#   scripts/cluster.sh [--series S] urls            the three nodes' AMQP URLs, comma-separated
#   scripts/cluster.sh [--series S] stop-node N     stop node N gracefully (rabbitmqctl stop)
#   scripts/cluster.sh [--series S] kill-node N     kill -9 node N's VM (a node lost without a goodbye)
#   scripts/cluster.sh [--series S] start-node N    start node N again; it rejoins the cluster by itself
#   scripts/cluster.sh [--series S] ctl N ARGS      rabbitmqctl ARGS against node N
#   scripts/cluster.sh [--series S] queues N ARGS   rabbitmq-queues ARGS against node N
#   scripts/cluster.sh [--series S] failover-test   start the cluster, run tests/cluster.rs, stop
#
# The nodes share the host's epmd (4369), which is how several Erlang nodes on one machine are
# meant to run. Series 3 runs as any user that can write its data directory; 4.x needs root
# (chroot, unshare, mount).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --series ]; then
  RABBITMQ_CLUSTER_SERIES=${2:-}
  shift 2 || true
fi
SERIES=${RABBITMQ_CLUSTER_SERIES:-3}
# The test and its calls back into this script must address the same cluster.
export RABBITMQ_CLUSTER_SERIES=$SERIES
BIN=/usr/lib/rabbitmq/bin
NODES=(1 2 3)

say() { echo "cluster $SERIES: $*"; }
die() { echo "cluster $SERIES: $*" >&2; exit 1; }

# ROOT is empty for the host's RabbitMQ; BASE is the cluster's directory as its nodes see it
# (inside ROOT for 4.x), HOST_BASE the same directory as this script sees it.
case "$SERIES" in
  3)
    ROOT=
    BASE=${WXCOURIER_CLUSTER_DIR:-/var/tmp/wxcourier-cluster}
    PREFIX=rabbit-c
    PORT_BASE=5680
    ;;
  4.0)
    ROOT=${RABBITMQ4_ROOT:-/var/lib/wxcourier-rmq4/root}
    BASE=/var/lib/wxcourier-cluster
    PREFIX=rabbit40-c
    PORT_BASE=5690
    ;;
  4.3)
    ROOT=${RABBITMQ43_ROOT:-/var/lib/wxcourier-rmq43/root}
    BASE=/var/lib/wxcourier-cluster
    PREFIX=rabbit43-c
    PORT_BASE=5694
    ;;
  *) die "unknown series '$SERIES' (3, 4.0 or 4.3)" ;;
esac
HOST_BASE=$ROOT$BASE

node_name() { echo "$PREFIX$1@localhost"; }
amqp_port() { echo $((PORT_BASE + $1)); }
dist_port() { echo $((20000 + PORT_BASE + $1)); }
node_dir() { echo "$BASE/c$1"; }
pid_file() { echo "$(node_dir "$1")/rabbit.pid"; }

# Runs a program with node $1's environment only: nothing from /etc/rabbitmq (whose env file
# names the single broker's node) and a HOME holding this cluster's cookie. For 4.x, inside
# the root as its rabbitmq user, in a private mount namespace where the root's /proc is
# mounted (the VM reads memory and process figures there).
with_node() {
  local n=$1 dir
  shift
  dir=$(node_dir "$n")
  local env=(
    /usr/bin/env -i
    HOME="$BASE"
    PATH=/usr/sbin:/usr/bin:/sbin:/bin
    LANG=C.UTF-8
    RABBITMQ_NODENAME="$(node_name "$n")"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$(amqp_port "$n")"
    RABBITMQ_DIST_PORT="$(dist_port "$n")"
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    RABBITMQ_MNESIA_BASE="$dir/mnesia"
    RABBITMQ_LOG_BASE="$dir/log"
    RABBITMQ_PID_FILE="$(pid_file "$n")"
    ERL_EPMD_ADDRESS=127.0.0.1
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  )
  if [ -z "$ROOT" ]; then
    "${env[@]}" "$@"
  else
    unshare --mount --propagation private -- sh -c \
      'mountpoint -q "$0/proc" || mount -t proc proc "$0/proc"; exec chroot --userspec=rabbitmq:rabbitmq "$0" "$@"' \
      "$ROOT" "${env[@]}" "$@"
  fi
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
  f=$ROOT$(pid_file "$1")
  [ -r "$f" ] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q beam.smp || return 1
  tr '\0' '\n' <"/proc/$pid/environ" | grep -qx "RABBITMQ_NODENAME=$(node_name "$1")" || return 1
  if [ -n "$ROOT" ]; then
    [ "$(readlink "/proc/$pid/root")" = "$(readlink -f "$ROOT")" ] || return 1
  fi
  echo "$pid"
}

# Writes node $1's config, plugins file and (once per cluster) the cookie. For 4.x, also what
# a fresh debootstrap root lacks, and hands the data to the root's rabbitmq user.
write_config() {
  local n=$1 dir
  dir=$ROOT$(node_dir "$n")
  mkdir -p "$dir/mnesia" "$dir/log"
  cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
EOF
  # No plugins: the single broker's plugin list (management) must not be loaded here.
  echo "[]." >"$dir/enabled_plugins"
  : >"$dir/rabbitmq-env.conf"
  if [ ! -s "$HOST_BASE/.erlang.cookie" ]; then
    head -c 256 /dev/urandom | tr -dc A-Z | head -c 24 >"$HOST_BASE/.erlang.cookie"
  fi
  chmod 400 "$HOST_BASE/.erlang.cookie"
  if [ -n "$ROOT" ]; then
    # A minbase root has no /etc/hosts; without `localhost` the node fails at boot (epmd
    # nxdomain).
    grep -qsw localhost "$ROOT/etc/hosts" || cp /etc/hosts "$ROOT/etc/hosts"
    chown -R "$(chroot "$ROOT" sh -c 'echo "$(id -u rabbitmq):$(id -g rabbitmq)"')" "$HOST_BASE"
  fi
}

# Checks that the RabbitMQ of this series is there to run; never bootstraps a 4.x root (that
# is rabbitmq4.sh's job, and may be under way).
check_installed() {
  [ -x "$ROOT$BIN/rabbitmq-server" ] && return 0
  if [ -n "$ROOT" ]; then
    die "no RabbitMQ in $ROOT: run 'scripts/rabbitmq4.sh $SERIES bootstrap' first"
  fi
  die "no RabbitMQ installed at $BIN"
}

# Starts node $1's VM in the background; `await_node` waits for it.
launch_node() {
  local n=$1
  if running_pid "$n" >/dev/null; then
    say "c$n already running"
    return 0
  fi
  check_installed
  [ -z "$ROOT" ] || [ "$(id -u)" = 0 ] || die "series $SERIES needs root (chroot, unshare, mount)"
  for port in "$(amqp_port "$n")" "$(dist_port "$n")"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port is taken by something else; not starting c$n"
    fi
  done
  mkdir -p "$HOST_BASE"
  write_config "$n"
  rm -f "$ROOT$(pid_file "$n")"
  say "starting c$n ($(node_name "$n"), AMQP $(amqp_port "$n"))"
  # setsid: the node outlives this shell and its process group.
  setsid "$0" _run "$n" >>"$ROOT$(node_dir "$n")/log/console.log" 2>&1 </dev/null &
}

# Waits for node $1 to boot and answer AMQP; fails if it does not.
await_node() {
  local n=$1
  for _ in $(seq 1 60); do [ -s "$ROOT$(pid_file "$n")" ] && break; sleep 1; done
  # `wait` returns once the node has booted (it may first wait for its cluster peers).
  ctl "$n" wait --timeout 600 "$(pid_file "$n")" >/dev/null || return 1
  for _ in $(seq 1 60); do speaks_amqp "$(amqp_port "$n")" && break; sleep 1; done
  speaks_amqp "$(amqp_port "$n")" || { say "c$n does not answer AMQP on $(amqp_port "$n")"; return 1; }
}

start_node() {
  launch_node "$1"
  await_node "$1" || die "c$1 did not start; its log is under $ROOT$(node_dir "$1")/log"
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
  # All at once: a clustered node that was not the last to stop waits at boot for its peers,
  # so starting them one after another would stall on the first.
  for n in "${NODES[@]}"; do launch_node "$n"; done
  for n in "${NODES[@]}"; do
    await_node "$n" && continue
    # Seen on 4.0 (Mnesia): a node booting beside its peers may fail its cluster consistency
    # check (`node_not_running`) and halt; once the others are up it boots.
    say "c$n did not boot beside its peers; starting it again"
    stop_node "$n"
    start_node "$n"
  done
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
  _run) node_arg "${2:-}"; with_node "$2" "$BIN/rabbitmq-server" ;;
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
  *) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
