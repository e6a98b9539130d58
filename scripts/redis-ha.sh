#!/usr/bin/env bash
# Redis Sentinel and Redis Cluster on this machine, from the installed redis-server, beside (and
# never touching) the Redis on 6379. Each process has a directory of its own (its config, pid
# file and cluster state) under $WXCOURIER_REDIS_HA_DIR (default /var/tmp/wxcourier-redis-ha).
# No persistence (--save "", no AOF): a restarted node gets its data from its primary.
#
#   sentinel set: primary 127.0.0.1:6391, replica 6392, sentinels 26391-26393, master name `wxm`
#                 (down-after 1000 ms, failover-timeout 5000 ms, quorum 2)
#   cluster set:  127.0.0.1:7100-7105, three masters and three replicas (node timeout 2000 ms,
#                 any replica may take over)
#
#   scripts/redis-ha.sh start [sentinel|cluster]   start what is down (both sets by default) and
#                                                  wait until the set is whole again; a killed
#                                                  node comes back as a replica
#   scripts/redis-ha.sh stop [sentinel|cluster]    stop the processes this script started (by the
#                                                  pids it recorded) and forget their state
#   scripts/redis-ha.sh status [sentinel|cluster]  each process up or down, and each set's health
#   scripts/redis-ha.sh whole [sentinel|cluster]   exit 0 when the set(s) are whole, 1 if not
#   scripts/redis-ha.sh urls                       TEST_REDIS_SENTINEL_URL=… and TEST_REDIS_CLUSTER_URL=…
#   scripts/redis-ha.sh primary                    the port of the sentinel set's primary
#   scripts/redis-ha.sh kill-primary               kill -9 the sentinel set's primary; prints its port
#   scripts/redis-ha.sh owner KEY                  the port of the cluster master serving KEY's slot
#   scripts/redis-ha.sh kill-master KEY            kill -9 the cluster master serving KEY's slot;
#                                                  prints its port (its replica takes over)
#   scripts/redis-ha.sh migrate-slot KEY           move KEY's slot, with its keys, to another
#                                                  master; prints "SLOT FROM TO MOVED ON_BOTH"
#   scripts/redis-ha.sh failover-test              start both sets, run tests/redis_failover.rs
#                                                  alone, leave the sets whole
#
# Stops only the pids it recorded, and only while they are still the redis-server it started
# (its port on the command line, its directory as working directory).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${WXCOURIER_REDIS_HA_DIR:-/var/tmp/wxcourier-redis-ha}
MASTER=wxm
DATA_PORTS=(6391 6392)
SENTINEL_PORTS=(26391 26392 26393)
CLUSTER_PORTS=(7100 7101 7102 7103 7104 7105)
# Every wait is bounded: a set that does not come whole fails the command, not the run.
WAIT_S=${WXCOURIER_REDIS_HA_WAIT:-60}

say() { echo "redis-ha: $*" >&2; }
die() { echo "redis-ha: $*" >&2; exit 1; }

node_dir() { echo "$BASE/$1"; }
pid_file() { echo "$(node_dir "$1")/redis.pid"; }
cli() { local p=$1; shift; timeout 5 redis-cli -h 127.0.0.1 -p "$p" "$@"; }
answers() { [ "$(cli "$1" ping 2>/dev/null)" = PONG ]; }

# The pid of the process this script started on port $1, only while the recorded pid is alive
# and is that redis-server: a stale pid file may name a process that is now something else.
running_pid() {
  local f pid
  f=$(pid_file "$1")
  [ -r "$f" ] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "redis-server.*127\.0\.0\.1:$1\b" || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(node_dir "$1")" ] || return 1
  echo "$pid"
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts redis-server on port $1 (daemonized, in its own directory) with the extra arguments.
launch() {
  local port=$1 dir
  shift
  dir=$(node_dir "$port")
  port_free "$port" || die "port $port is taken by something else; not starting it"
  mkdir -p "$dir"
  rm -f "$(pid_file "$port")"
  (cd "$dir" && redis-server "$@" --port "$port" --bind 127.0.0.1 --dir "$dir" \
    --daemonize yes --pidfile "$(pid_file "$port")" --logfile "$dir/redis.log" \
    --save "" --appendonly no >/dev/null)
  for _ in $(seq 1 50); do answers "$port" && running_pid "$port" >/dev/null && return 0; sleep 0.1; done
  die "redis on $port did not come up (see $dir/redis.log)"
}

stop_port() {
  local port=$1 pid
  pid=$(running_pid "$port") || return 0
  say "stopping $port (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do gone "$pid" && return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# Gone, or a zombie waiting to be reaped (it holds no port any more).
gone() { ! kill -0 "$1" 2>/dev/null || grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

kill_port() {
  local port=$1 pid
  pid=$(running_pid "$port") || die "$port is not running (or not ours)"
  kill -KILL "$pid"
  for _ in $(seq 1 50); do gone "$pid" && return 0; sleep 0.1; done
  die "pid $pid of $port did not die"
}

# Runs the command until it succeeds (0) or $1 seconds pass (1).
within() {
  local secs=$1
  shift
  for _ in $(seq 1 $((secs * 5))); do "$@" 2>/dev/null && return 0; sleep 0.2; done
  return 1
}

# Runs the command until it succeeds or WAIT_S pass; fails the script if it never does.
await() {
  local what=$1
  shift
  within "$WAIT_S" "$@" || die "$what: not within ${WAIT_S}s"
}

# Some node of the set on ports $@ is running, as this script started it.
any_running() {
  local p
  for p in "$@"; do running_pid "$p" >/dev/null && return 0; done
  return 1
}

# State left behind by processes that are all gone (a reboot, a killed machine) is forgotten:
# no persistence means there is no data in it, and a restarted node would wait for peers that
# never come (a cluster node's nodes.conf names masters nobody runs any more).
forget_if_all_gone() {
  local what=$1 p stale=
  shift
  any_running "$@" && return 0
  for p in "$@"; do [ -e "$(node_dir "$p")" ] && stale=1; done
  [ -n "$stale" ] || return 0
  say "no $what process is running: forgetting the state they left and starting afresh"
  for p in "$@"; do rm -rf "$(node_dir "$p")"; done
}

# ---- Sentinel ----------------------------------------------------------------------------

# The primary's port as a running sentinel names it, else as a running data node reports it.
primary() {
  local s p addr
  for s in "${SENTINEL_PORTS[@]}"; do
    running_pid "$s" >/dev/null || continue
    addr=$(cli "$s" sentinel get-master-addr-by-name "$MASTER" 2>/dev/null | sed -n 2p)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
  done
  for p in "${DATA_PORTS[@]}"; do
    running_pid "$p" >/dev/null || continue
    cli "$p" role 2>/dev/null | head -n 1 | grep -qx master && { echo "$p"; return 0; }
  done
  return 1
}

write_sentinel_conf() {
  local port=$1 primary=$2 dir
  dir=$(node_dir "$port")
  mkdir -p "$dir"
  # Sentinels rewrite this file (their id, the peers and replicas they found): each its own.
  cat >"$dir/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
dir $dir
sentinel monitor $MASTER 127.0.0.1 $primary 2
sentinel down-after-milliseconds $MASTER 1000
sentinel failover-timeout $MASTER 5000
sentinel parallel-syncs $MASTER 1
EOF
}

sentinels_up() {
  local s
  for s in "${SENTINEL_PORTS[@]}"; do running_pid "$s" >/dev/null && return 0; done
  return 1
}

# Whole: every process up, the sentinels agree on a primary that says it is one, it has one
# replica online, and each sentinel sees the other two and no replica down.
sentinel_whole() {
  local p s info
  for p in "${DATA_PORTS[@]}" "${SENTINEL_PORTS[@]}"; do running_pid "$p" >/dev/null || return 1; done
  p=$(primary) || return 1
  [ "$(cli "$p" role | head -n 1)" = master ] || return 1
  cli "$p" info replication | grep -q '^slave0:.*state=online' || return 1
  for s in "${SENTINEL_PORTS[@]}"; do
    [ "$(cli "$s" sentinel get-master-addr-by-name "$MASTER" | sed -n 2p)" = "$p" ] || return 1
    info=$(cli "$s" sentinel master "$MASTER" | paste -d ' ' - -)
    echo "$info" | grep -qx 'num-other-sentinels 2' || return 1
    echo "$info" | grep -qx 'flags master' || return 1
    ! cli "$s" sentinel replicas "$MASTER" | paste - - | grep -q '^flags.*down' || return 1
  done
}

not_primary() { [ "$(primary)" != "$1" ]; }

# Some data node other than $1 is up.
other_data_up() {
  local p
  for p in "${DATA_PORTS[@]}"; do [ "$p" != "$1" ] && running_pid "$p" >/dev/null && return 0; done
  return 1
}

start_sentinel() {
  local p s prim
  forget_if_all_gone sentinel "${DATA_PORTS[@]}" "${SENTINEL_PORTS[@]}"
  for p in "${DATA_PORTS[@]}"; do
    # A killed primary restarted before Sentinel noticed would be primary again, empty, and
    # its replica would copy that: first let Sentinel promote the replica.
    if ! running_pid "$p" >/dev/null && sentinels_up && other_data_up "$p" && [ "$(primary)" = "$p" ]; then
      say "waiting for Sentinel to promote a replica in place of $p"
      await "Sentinel promoting a replica of $p" not_primary "$p"
    fi
  done
  prim=$(primary) || prim=
  if [ -z "$prim" ]; then
    # Nothing to follow: a fresh set, 6391 the primary.
    prim=${DATA_PORTS[0]}
    if ! running_pid "$prim" >/dev/null; then
      say "starting the primary $prim"
      launch "$prim"
    fi
  fi
  for p in "${DATA_PORTS[@]}"; do
    running_pid "$p" >/dev/null && continue
    if [ "$p" = "$prim" ]; then
      say "starting $p as the primary"
      launch "$p"
    else
      # A killed primary comes back as a replica of the one Sentinel promoted.
      say "starting $p as a replica of $prim"
      launch "$p" --replicaof 127.0.0.1 "$prim"
    fi
  done
  local fresh=
  sentinels_up || fresh=1
  for s in "${SENTINEL_PORTS[@]}"; do
    running_pid "$s" >/dev/null && continue
    if [ -n "$fresh" ] || [ ! -s "$(node_dir "$s")/sentinel.conf" ]; then
      write_sentinel_conf "$s" "$prim"
    fi
    say "starting sentinel $s"
    launch "$s" "$(node_dir "$s")/sentinel.conf" --sentinel
  done
  await "the sentinel set whole" sentinel_whole
  say "sentinel set whole: primary 127.0.0.1:$(primary)"
}

stop_sentinel() {
  local p
  for p in "${SENTINEL_PORTS[@]}" "${DATA_PORTS[@]}"; do stop_port "$p"; done
  for p in "${SENTINEL_PORTS[@]}" "${DATA_PORTS[@]}"; do rm -rf "$(node_dir "$p")"; done
}

kill_primary() {
  local p
  p=$(primary) || die "no primary to kill"
  say "killing the primary $p with SIGKILL"
  kill_port "$p"
  echo "$p"
}

# ---- Cluster -----------------------------------------------------------------------------

# `CLUSTER NODES` as node 7100 (or the first node up) sees it.
cluster_nodes() {
  local p
  for p in "${CLUSTER_PORTS[@]}"; do
    running_pid "$p" >/dev/null || continue
    cli "$p" cluster nodes && return 0
  done
  return 1
}

# Whole: six nodes up, each says cluster_state ok and knows six nodes, three masters with a
# replica each, nobody flagged failing, every slot served.
cluster_whole() {
  local p nodes
  for p in "${CLUSTER_PORTS[@]}"; do
    running_pid "$p" >/dev/null || return 1
    cli "$p" cluster info | grep -q '^cluster_state:ok' || return 1
    cli "$p" cluster info | grep -q '^cluster_known_nodes:6' || return 1
    cli "$p" cluster info | grep -q '^cluster_slots_assigned:16384' || return 1
  done
  nodes=$(cluster_nodes) || return 1
  ! echo "$nodes" | grep -q 'fail\|handshake\|noaddr' || return 1
  [ "$(echo "$nodes" | awk '$3 ~ /master/' | wc -l)" = 3 ] || return 1
  [ "$(echo "$nodes" | awk '$3 ~ /slave/ && $4 != "-"' | wc -l)" = 3 ] || return 1
  # No slot left half-moved by an interrupted migration (each node shows only its own marks).
  for p in "${CLUSTER_PORTS[@]}"; do
    ! cli "$p" cluster nodes | grep myself | grep -q '\[' || return 1
  done
}

# Node $1 is a master serving slots, as a running node sees it.
holds_slots() {
  cluster_nodes | awk -v a="127.0.0.1:$1@" 'index($2, a) == 1 && $3 ~ /master/ && NF >= 9' | grep -q .
}

lets_go() { ! holds_slots "$1"; }

start_cluster() {
  local p slot created=
  forget_if_all_gone cluster "${CLUSTER_PORTS[@]}"
  for p in "${CLUSTER_PORTS[@]}"; do
    [ -s "$(node_dir "$p")/nodes.conf" ] && created=1
  done
  for p in "${CLUSTER_PORTS[@]}"; do
    running_pid "$p" >/dev/null && continue
    if [ -n "$created" ] && holds_slots "$p"; then
      # A killed master restarted before its replica took over would serve its slots again,
      # empty: first let the cluster fail it over.
      say "waiting for the replica of $p to take over its slots"
      if ! within "$WAIT_S" lets_go "$p"; then
        # Its replica is gone too, or too few masters are left to elect one (a run that died
        # halfway): the set cannot heal itself, and its keys are only test data.
        say "no replica took over from $p within ${WAIT_S}s: starting the cluster afresh"
        stop_cluster
        start_cluster
        return
      fi
    fi
    say "starting cluster node $p"
    # nodes.conf keeps the node's id and peers across a kill: a restarted node rejoins.
    # A replica may always take over, however long ago it last heard its master: Redis counts
    # a replica that restarted and resynced as out of touch since it started, and would leave
    # the slots of its next dead master unserved ("Disconnected from master for longer than
    # allowed"), where a test that kills masters twice needs a takeover each time.
    launch "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --cluster-replica-validity-factor 0
  done
  if [ -n "$created" ]; then
    # A slot a failed move left half-moved stays with its source (the keys already copied stay
    # on the target, unreachable there): the set is whole again, the failure stays reported.
    for p in "${CLUSTER_PORTS[@]}"; do
      for slot in $(cli "$p" cluster nodes | grep myself | grep -o '\[[0-9]*-[<>]-' | tr -dc '0-9\n'); do
        say "slot $slot was left half-moved on $p: it stays where it was"
        cli "$p" cluster setslot "$slot" stable >/dev/null
      done
    done
  fi
  if [ -z "$created" ]; then
    local addrs=()
    for p in "${CLUSTER_PORTS[@]}"; do addrs+=("127.0.0.1:$p"); done
    say "creating the cluster"
    timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  fi
  await "the cluster whole" cluster_whole
  say "cluster whole: masters $(cluster_nodes | awk '$3 ~ /master/ {print $2}' | cut -d@ -f1 | sort | tr '\n' ' ')"
}

stop_cluster() {
  local p
  for p in "${CLUSTER_PORTS[@]}"; do stop_port "$p"; done
  for p in "${CLUSTER_PORTS[@]}"; do rm -rf "$(node_dir "$p")"; done
}

keyslot() {
  local p
  p=$(first_cluster_port) || die "no cluster node is up"
  cli "$p" cluster keyslot "$1"
}

first_cluster_port() {
  local p
  for p in "${CLUSTER_PORTS[@]}"; do running_pid "$p" >/dev/null && { echo "$p"; return 0; }; done
  return 1
}

# The port of the master serving slot $1.
slot_owner() {
  cluster_nodes | awk -v slot="$1" '$3 ~ /master/ && $3 !~ /fail/ {
    for (i = 9; i <= NF; i++) {
      n = split($i, r, "-")
      if ((n == 1 && r[1] == slot) || (n == 2 && slot >= r[1] && slot <= r[2])) {
        split($2, a, "@"); split(a[1], h, ":"); print h[2]; exit
      }
    }
  }'
}

node_id() { cli "$1" cluster myid; }

kill_master() {
  local slot port
  slot=$(keyslot "$1")
  port=$(slot_owner "$slot")
  [ -n "$port" ] || die "no master serves slot $slot"
  say "killing master $port (slot $slot) with SIGKILL"
  kill_port "$port"
  echo "$port"
}

# Moves slot of KEY to the next master, keys and all, the way redis-cli --cluster reshard does
# it for a whole range: IMPORTING on the target, MIGRATING on the source, MIGRATE the keys in
# batches (clients get ASK for keys already moved), then NODE on both and on every master.
# A key that is on both nodes (which a plain MIGRATE refuses with BUSYKEY) is moved with REPLACE
# only when both copies hold the same value, and counted; copies that differ stop the move.
migrate_slot() {
  local slot from to from_id to_id keys moved=0 both=0 m reply src dst
  slot=$(keyslot "$1")
  from=$(slot_owner "$slot")
  [ -n "$from" ] || die "no master serves slot $slot"
  to=$(cluster_nodes | awk '$3 ~ /master/ && $3 !~ /fail/ {split($2, a, "@"); split(a[1], h, ":"); print h[2]}' \
    | sort -n | awk -v from="$from" '$1 != from' | head -n 1)
  [ -n "$to" ] || die "no other master to move slot $slot to"
  from_id=$(node_id "$from")
  to_id=$(node_id "$to")
  cli "$to" cluster setslot "$slot" importing "$from_id" >/dev/null
  cli "$from" cluster setslot "$slot" migrating "$to_id" >/dev/null
  while :; do
    keys=$(cli "$from" cluster getkeysinslot "$slot" 100)
    [ -n "$keys" ] || break
    # A key may already be on the target too: each must hold the same value there, then
    # MIGRATE REPLACE moves the batch (a plain MIGRATE would stop at BUSYKEY).
    # shellcheck disable=SC2086 # one argument per key
    src=$(cli "$from" mget $keys)
    # shellcheck disable=SC2086
    # (One GET per key: a multi-key read of keys not all there is refused while importing.)
    dst=$(echo "$keys" | awk '{print "ASKING"; print "GET " $0}' \
      | timeout 5 redis-cli -h 127.0.0.1 -p "$to" | awk 'NR % 2 == 0')
    if paste <(echo "$src") <(echo "$dst") | awk -F '\t' '$2 != "" && $1 != $2 {bad = 1} END {exit !bad}'; then
      die "slot $slot left migrating: a key differs on $from and $to"
    fi
    both=$((both + $(echo "$dst" | grep -c . || true)))
    # shellcheck disable=SC2086
    reply=$(cli "$from" migrate 127.0.0.1 "$to" "" 0 5000 replace keys $keys)
    case "$reply" in
      OK | NOKEY) moved=$((moved + $(echo "$keys" | wc -l))) ;;
      *) die "slot $slot left migrating: MIGRATE: $reply" ;;
    esac
  done
  cli "$to" cluster setslot "$slot" node "$to_id" >/dev/null
  cli "$from" cluster setslot "$slot" node "$to_id" >/dev/null
  for m in $(cluster_nodes | awk '$3 ~ /master/ && $3 !~ /fail/ {split($2, a, "@"); split(a[1], h, ":"); print h[2]}'); do
    cli "$m" cluster setslot "$slot" node "$to_id" >/dev/null 2>&1 || true
  done
  [ "$both" = 0 ] || say "$both keys of slot $slot were on both $from and $to, with the same value"
  echo "$slot $from $to $moved $both"
}

# ---- The command line --------------------------------------------------------------------

urls() {
  echo "TEST_REDIS_SENTINEL_URL=redis+sentinel://127.0.0.1:26391,127.0.0.1:26392,127.0.0.1:26393/$MASTER"
  echo "TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102"
}

status_ports() {
  local p pid
  for p in "$@"; do
    if pid=$(running_pid "$p"); then echo "$p up (pid $pid)"; else echo "$p down"; fi
  done
}

status() {
  case "${1:-both}" in
    sentinel | both)
      status_ports "${DATA_PORTS[@]}" "${SENTINEL_PORTS[@]}"
      if sentinel_whole 2>/dev/null; then echo "sentinel: whole, primary $(primary)"; else echo "sentinel: NOT whole"; fi
      ;;&
    cluster | both)
      status_ports "${CLUSTER_PORTS[@]}"
      if cluster_whole 2>/dev/null; then echo "cluster: whole"; else echo "cluster: NOT whole"; fi
      ;;
  esac
}

whole() {
  case "${1:-both}" in
    sentinel) sentinel_whole ;;
    cluster) cluster_whole ;;
    both) sentinel_whole && cluster_whole ;;
  esac
}

set_arg() {
  case "${1:-both}" in sentinel | cluster | both) ;; *) die "name a set: sentinel or cluster" ;; esac
}

command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
case "${1:-}" in
  start)
    set_arg "${2:-}"
    mkdir -p "$BASE"
    case "${2:-both}" in sentinel) start_sentinel ;; cluster) start_cluster ;; both) start_sentinel; start_cluster ;; esac
    ;;
  stop)
    set_arg "${2:-}"
    case "${2:-both}" in sentinel) stop_sentinel ;; cluster) stop_cluster ;; both) stop_sentinel; stop_cluster ;; esac
    ;;
  status) set_arg "${2:-}"; status "${2:-both}" ;;
  whole) set_arg "${2:-}"; whole "${2:-both}" ;;
  urls) urls ;;
  primary) primary ;;
  kill-primary) kill_primary ;;
  owner) [ -n "${2:-}" ] || die "name a key"; slot_owner "$(keyslot "$2")" ;;
  kill-master) [ -n "${2:-}" ] || die "name a key"; kill_master "$2" ;;
  migrate-slot) [ -n "${2:-}" ] || die "name a key"; migrate_slot "$2" ;;
  failover-test)
    "$0" start
    rc=0
    env $(urls) cargo test --test redis_failover -- --ignored --nocapture --test-threads=1 || rc=$?
    "$0" start
    exit "$rc"
    ;;
  *) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
