#!/usr/bin/env bash
# A RabbitMQ 4.x test broker beside the host's 3.x one, from Debian's packages, chrooted in a
# root kept between runs, with its own node name, ports, data dir and Erlang cookie. It shares
# the host's epmd (4369), which is how two Erlang nodes on one machine are meant to run; it
# never touches the host's broker. Two series, each in a root of its own:
#
#   series  Debian           node                AMQP   dist    management  root
#   4.0     13 (trixie)      rabbit4@localhost   5673   25673   15673       /var/lib/wxcourier-rmq4/root
#   4.3     unstable (sid)   rabbit43@localhost  5674   25674   15674       /var/lib/wxcourier-rmq43/root
#
# The series is the first argument when it is one of these, else RABBITMQ4_SERIES, else 4.0:
#
#   scripts/rabbitmq4.sh [SERIES] bootstrap make the root if missing (debootstrap), nothing else
#   scripts/rabbitmq4.sh [SERIES] start     bootstrap the root if missing, start the node, wait for AMQP
#   scripts/rabbitmq4.sh [SERIES] stop      stop the node by its recorded pid, unmount what start mounted
#   scripts/rabbitmq4.sh [SERIES] status    exit 0 when it answers AMQP, 3 when it does not
#   scripts/rabbitmq4.sh [SERIES] url       the AMQP URL tests use (TEST_AMQP_URL)
#   scripts/rabbitmq4.sh [SERIES] mgmt-url  the management API URL
#   scripts/rabbitmq4.sh [SERIES] ctl ARGS  rabbitmqctl ARGS against this node
#
# Needs root (chroot, mount). Every step is idempotent: start on a running node and stop on a
# stopped one both succeed without doing anything.
set -euo pipefail

case "${1:-}" in
  4.0 | 4.3) RABBITMQ4_SERIES=$1; shift ;;
esac
SERIES=${RABBITMQ4_SERIES:-4.0}
# Re-invocations of this script ($0 _run, $0 ctl) must address the same node.
export RABBITMQ4_SERIES=$SERIES
MIRROR=${RABBITMQ4_MIRROR:-http://deb.debian.org/debian}
case "$SERIES" in
  4.0)
    ROOT=${RABBITMQ4_ROOT:-/var/lib/wxcourier-rmq4/root}
    SUITE=trixie
    NODE=rabbit4@localhost
    AMQP_PORT=5673
    DIST_PORT=25673
    MGMT_PORT=15673
    DATA=/var/lib/rabbit4
    ;;
  4.3)
    ROOT=${RABBITMQ43_ROOT:-/var/lib/wxcourier-rmq43/root}
    # Debian unstable is where 4.3 is packaged (4.3.6 with Erlang 29 when this was written);
    # the root keeps what it was made with until it is deleted and bootstrapped again.
    SUITE=sid
    NODE=rabbit43@localhost
    AMQP_PORT=5674
    DIST_PORT=25674
    MGMT_PORT=15674
    DATA=/var/lib/rabbit43
    ;;
  *) echo "rabbitmq4: unknown series '$SERIES' (4.0 or 4.3)" >&2; exit 2 ;;
esac
# Paths inside the root; the data dir holds config, cookie, database, logs and the pid file.
HOST_DATA=$ROOT$DATA
PIDFILE=$DATA/$(basename "$DATA").pid
HOST_PIDFILE=$ROOT$PIDFILE

say() { echo "rabbitmq $SERIES: $*"; }
die() { echo "rabbitmq $SERIES: $*" >&2; exit 1; }

speaks_amqp() {
  timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$AMQP_PORT; printf 'AMQP\x00\x00\x09\x01' >&3; head -c 1 <&3 >/dev/null" 2>/dev/null
}

# The recorded pid, when it is alive and is this node's Erlang VM (a pid file left by a crash
# may name a process that has since been reused by something else).
running_pid() {
  [ -r "$HOST_PIDFILE" ] || return 1
  local pid
  pid=$(tr -dc 0-9 <"$HOST_PIDFILE")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  # The node name is not on the VM's command line (RabbitMQ starts distribution itself), so
  # tell our VM by its program and by the root it runs in.
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "beam.smp" || return 1
  [ "$(readlink "/proc/$pid/root")" = "$(readlink -f "$ROOT")" ] || return 1
  echo "$pid"
}

# Runs a command inside the root as its rabbitmq user, with this node's environment only.
in_root() {
  chroot --userspec=rabbitmq:rabbitmq "$ROOT" /usr/bin/env -i \
    HOME="$DATA" \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    RABBITMQ_NODENAME="$NODE" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$AMQP_PORT" \
    RABBITMQ_DIST_PORT="$DIST_PORT" \
    RABBITMQ_CONFIG_FILE="$DATA/rabbitmq.conf" \
    RABBITMQ_CONF_ENV_FILE="$DATA/rabbitmq-env.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$DATA/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$DATA/mnesia" \
    RABBITMQ_LOG_BASE="$DATA/log" \
    RABBITMQ_PID_FILE="$PIDFILE" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    "$@"
}

ctl() { in_root /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" "$@"; }

ensure_root() {
  [ -x "$ROOT/usr/lib/rabbitmq/bin/rabbitmq-server" ] && return 0
  [ "$(id -u)" = 0 ] || die "bootstrapping $ROOT needs root"
  if ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || die "debootstrap is missing and there is no apt-get; install it by hand"
    say "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  # Bootstrap beside the final path and move it in place only when complete, so an interrupted
  # run never leaves a half-made root that the check above would take for a good one.
  local partial="$ROOT.partial"
  rm -rf "$partial"
  mkdir -p "$(dirname "$ROOT")"
  say "bootstrapping Debian $SUITE with rabbitmq-server into $ROOT (several minutes, once)"
  debootstrap --variant=minbase --include=rabbitmq-server "$SUITE" "$partial" "$MIRROR" >/dev/null
  rm -rf "$ROOT"
  mv "$partial" "$ROOT"
}

# A minbase root has no /etc/hosts, and without `localhost` in it the node fails at boot with
# an epmd `nxdomain`. Copied at every start, so a root made before this step gets one too.
ensure_hosts() {
  grep -qsw localhost "$ROOT/etc/hosts" || cp /etc/hosts "$ROOT/etc/hosts"
}

mount_root() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
}

unmount_root() {
  if mountpoint -q "$ROOT/proc"; then
    umount "$ROOT/proc" 2>/dev/null || umount -l "$ROOT/proc"
  fi
}

# Config, plugins and cookie in the node's own data dir; written every start so a change here
# takes effect, except the cookie, which must stay what the database was made with.
write_config() {
  mkdir -p "$HOST_DATA/mnesia" "$HOST_DATA/log"
  cat >"$HOST_DATA/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
EOF
  echo "[rabbitmq_management]." >"$HOST_DATA/enabled_plugins"
  : >"$HOST_DATA/rabbitmq-env.conf"
  if [ ! -s "$HOST_DATA/.erlang.cookie" ]; then
    head -c 64 /dev/urandom | tr -dc A-Z | head -c 20 >"$HOST_DATA/.erlang.cookie"
  fi
  chmod 400 "$HOST_DATA/.erlang.cookie"
  local ids
  ids=$(chroot "$ROOT" sh -c 'echo "$(id -u rabbitmq):$(id -g rabbitmq)"')
  chown -R "$ids" "$HOST_DATA"
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (chroot and mount)"
  ensure_root
  if pid=$(running_pid) && speaks_amqp; then
    say "already running (pid $pid) on 127.0.0.1:$AMQP_PORT"
    return 0
  fi
  if pid=$(running_pid); then
    # Alive but not answering: maybe still booting; give it the usual time before giving up.
    wait_amqp "$pid" && { say "running (pid $pid) on 127.0.0.1:$AMQP_PORT"; return 0; }
    die "pid $pid is alive but does not answer AMQP on $AMQP_PORT; run '$0 stop' and look at $HOST_DATA/log"
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$AMQP_PORT") 2>/dev/null; then
    die "something else listens on 127.0.0.1:$AMQP_PORT"
  fi
  mount_root
  ensure_hosts
  write_config
  rm -f "$HOST_PIDFILE"
  say "starting $NODE (RabbitMQ $(ls "$ROOT/usr/lib/rabbitmq/lib" | sed -n 's/^rabbitmq_server-//p'))"
  # setsid: the node outlives this shell and its process group; the wrapper script stays as
  # the VM's parent, the VM writes its own pid to the pid file.
  setsid "$0" _run >"$HOST_DATA/log/console.log" 2>&1 </dev/null &
  local launched=$!
  for _ in $(seq 1 60); do
    pid=$(running_pid) && break
    kill -0 "$launched" 2>/dev/null || break
    sleep 1
  done
  pid=$(running_pid) || { tail -n 30 "$HOST_DATA/log/console.log" >&2; die "the node did not start"; }
  wait_amqp "$pid" || { tail -n 30 "$HOST_DATA/log/console.log" >&2; die "pid $pid did not answer AMQP on $AMQP_PORT"; }
  say "running (pid $pid) on 127.0.0.1:$AMQP_PORT, management http://127.0.0.1:$MGMT_PORT"
}

wait_amqp() {
  for _ in $(seq 1 120); do
    speaks_amqp && return 0
    kill -0 "$1" 2>/dev/null || return 1
    sleep 1
  done
  return 1
}

stop() {
  local pid
  if pid=$(running_pid); then
    say "stopping $NODE (pid $pid)"
    # A clean stop first (flushes queues to disk); by pid only if that does not end it.
    timeout 60 "$0" ctl stop "$PIDFILE" >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    fi
    if kill -0 "$pid" 2>/dev/null; then
      say "pid $pid ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
    fi
  else
    say "not running"
  fi
  rm -f "$HOST_PIDFILE"
  unmount_root
}

status() {
  local pid
  if pid=$(running_pid) && speaks_amqp; then
    say "running (pid $pid) on 127.0.0.1:$AMQP_PORT"
    return 0
  fi
  say "not running"
  return 3
}

case "${1:-}" in
  bootstrap) ensure_root ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) echo "amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f" ;;
  mgmt-url) echo "http://guest:guest@127.0.0.1:$MGMT_PORT" ;;
  ctl) shift; ctl "$@" ;;
  _run) in_root /usr/lib/rabbitmq/bin/rabbitmq-server ;;
  *) echo "usage: $0 [4.0|4.3] bootstrap|start|stop|status|url|mgmt-url|ctl ARGS…" >&2; exit 2 ;;
esac
