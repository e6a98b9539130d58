#!/usr/bin/env bash
# Runs deploy/compose.yaml for real with podman + podman-compose, on a machine that reaches no
# image registry, and checks it end to end:
#   - the stack starts and the worker turns ready (/readyz);
#   - `wxcourier check` passes inside the worker container;
#   - a job published from the host (host port 5690) gets its `sent` outcome and the simulator's
#     delivery report, through the worker's callback;
#   - the worker, killed with SIGKILL, is restarted by its restart policy and sends again.
# Images: a Debian bookworm base from debootstrap (`podman import`), RabbitMQ and Redis from
# Debian's packages (deploy/offline/), wxcourier from deploy/Dockerfile's `prebuilt` stage with
# target/release/wxcourier (Debian's rustc is older than the crate's MSRV, and no Rust image can
# be pulled). Heavy (minutes the first time): not part of scripts/test.sh.
#
#   scripts/compose-test.sh            run, then tear down what it started
#   scripts/compose-test.sh --keep     leave the stack running (tear down with --down)
#   scripts/compose-test.sh --down     tear down a kept stack
#   scripts/compose-test.sh --record   also rewrite deploy/monitoring/{worker,rabbitmq}-metrics.txt
# Needs root (podman, apt-get). Idempotent: packages, the base root and images are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PROJECT=wxcourier-compose-test
STATE=/var/tmp/wxcourier-compose            # debootstrap root and podman config, kept between runs
TOOLS=$ROOT/target/compose-test-venv        # podman-compose and pika, pinned
BASE=localhost/debian:bookworm-slim
RABBITMQ_IMAGE=localhost/wxcourier-offline/rabbitmq:3.10
REDIS_IMAGE=localhost/wxcourier-offline/redis:7
export AMQP_PORT=5690 MANAGEMENT_PORT=5691 HTTP_PORT=5692 SIM_PORT=5693 PROMETHEUS_PORT=5694
export RABBITMQ_IMAGE REDIS_IMAGE
# podman's defaults fail on this kind of VM: crun refuses hybrid cgroups, and the default ulimits
# exceed the hard limits. A private config, so the host's /etc/containers stays as it is.
export CONTAINERS_CONF=$STATE/containers.conf

keep=0 record=0 down_only=0
for arg in "$@"; do
  case $arg in
    --keep) keep=1 ;;
    --record) record=1 ;;
    --down) down_only=1 ;;
    *) echo "compose-test: unknown argument $arg" >&2; exit 2 ;;
  esac
done

t0=$(date +%s)
phase_start=$t0
phase() { # prints how long the previous phase took, then names the next
  local now; now=$(date +%s)
  [ -n "${PHASE:-}" ] && echo "compose-test: [$PHASE] $((now - phase_start))s"
  PHASE=$1 phase_start=$now
  echo "compose-test: --- $1"
}
compose() { "$TOOLS/bin/podman-compose" -p "$PROJECT" -f deploy/compose.yaml "$@"; }

phase "tools"
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -x "$TOOLS/bin/podman-compose" ]; then
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --disable-pip-version-check podman-compose==1.6.0 pika==1.4.4
fi
mkdir -p "$STATE"
printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' \
  > "$CONTAINERS_CONF"

if [ $down_only = 1 ]; then
  compose down -t 30 >/dev/null 2>&1 || true
  echo "compose-test: project $PROJECT is down"
  exit 0
fi
# A stack left by an earlier --keep (or an interrupted run) of this project only.
compose down -t 30 >/dev/null 2>&1 || true
PROM_PID=
cleanup() {
  if [ -n "$PROM_PID" ]; then kill "$PROM_PID" 2>/dev/null || true; fi
  if [ $keep = 0 ]; then
    echo "compose-test: tearing down"
    compose down -t 30 >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

phase "base image"
if ! podman image exists "$BASE"; then
  if [ ! -x "$STATE/rootfs-bookworm/bin/sh" ]; then
    rm -rf "$STATE/rootfs-bookworm"
    debootstrap --variant=minbase bookworm "$STATE/rootfs-bookworm" http://deb.debian.org/debian >/dev/null
  fi
  tar -C "$STATE/rootfs-bookworm" --exclude=./var/lib/apt/lists/* --exclude=./var/cache/apt/* -c . \
    | podman import - "$BASE" >/dev/null
fi
podman image inspect --format 'base: {{.Id}} {{.Created}}' "$BASE"

phase "images"
if [ ! -x target/release/wxcourier ]; then
  echo "compose-test: building target/release/wxcourier (minutes)"
  cargo build --release --locked --bin wxcourier
fi
podman build -q -t "$RABBITMQ_IMAGE" -f deploy/offline/rabbitmq.Containerfile deploy/offline >/dev/null
podman build -q -t "$REDIS_IMAGE" -f deploy/offline/redis.Containerfile deploy/offline >/dev/null
podman build -q -t localhost/wxcourier:local -f deploy/Dockerfile --target prebuilt . >/dev/null
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'wxcourier|debian' | sort

phase "up"
compose up -d --no-build >/dev/null
ready=0
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1; then ready=1; break; fi
  sleep 1
done
compose ps
if [ $ready = 0 ]; then
  compose logs >&2 || true
  echo "compose-test: FAIL: the worker did not turn ready within 120s" >&2
  exit 1
fi
echo "compose-test: worker ready"
# podman runs healthchecks from systemd timers, and podman-compose ignores `service_healthy` with
# podman < 4.6: here the worker starts at once and retries the broker until it answers. Run the
# healthcheck commands by hand so the images' checks are proven all the same.
for svc in rabbitmq redis; do
  c=$(podman ps --filter "label=io.podman.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$svc" --format '{{.Names}}')
  podman healthcheck run "$c" && echo "compose-test: $svc healthcheck: healthy"
done

phase "prometheus scraping the stack"
# Debian's Prometheus with deploy/monitoring/prometheus.yml (ports moved, 2 s intervals) and the
# alert rules; queried at the end with every dashboard query and alert expression.
command -v prometheus >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}
rm -rf "$STATE/prometheus-data"
sed -e "s#127.0.0.1:8080#127.0.0.1:$HTTP_PORT#; s#127.0.0.1:15692#127.0.0.1:$PROMETHEUS_PORT#" \
    -e "s#- alerts.yaml#- $ROOT/deploy/monitoring/alerts.yaml#" \
    -e "s#scrape_interval: 15s#scrape_interval: 2s#; s#evaluation_interval: 15s#evaluation_interval: 2s#" \
    deploy/monitoring/prometheus.yml > "$STATE/prometheus.yml"
prometheus --config.file="$STATE/prometheus.yml" --storage.tsdb.path="$STATE/prometheus-data" \
  --web.listen-address=127.0.0.1:5695 > "$STATE/prometheus.log" 2>&1 &
PROM_PID=$!
echo "compose-test: prometheus pid $PROM_PID on 127.0.0.1:5695"

phase "wxcourier check inside the worker"
compose exec -T worker wxcourier check --config /etc/wxcourier/wxcourier.toml

phase "a job from the host"
AMQP_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
"$TOOLS/bin/python" scripts/compose_job.py "$AMQP_URL" target/release/wxcourier "compose-test-$(date +%s)-1"

phase "restart policy: the worker's process killed (SIGKILL, as the OOM killer would)"
worker=$(podman ps --filter "label=io.podman.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.service=worker" --format '{{.Names}}')
before=$(podman inspect --format '{{.RestartCount}}' "$worker")
# Not `podman kill`: podman counts that as stopped by the user and does not restart it.
kill -KILL "$(podman inspect --format '{{.State.Pid}}' "$worker")"
ready=0
for _ in $(seq 1 60); do
  sleep 1
  after=$(podman inspect --format '{{.RestartCount}}' "$worker")
  if [ "$after" -gt "$before" ] && curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1; then
    ready=1; break
  fi
done
if [ $ready = 0 ]; then
  echo "compose-test: FAIL: the killed worker was not restarted and ready within 60s" >&2
  exit 1
fi
echo "compose-test: worker restarted (restarts $before -> $after) and ready"
"$TOOLS/bin/python" scripts/compose_job.py "$AMQP_URL" target/release/wxcourier "compose-test-$(date +%s)-2"

if [ $record = 1 ]; then
  phase "record /metrics"
  python3 scripts/record_metrics.py "http://127.0.0.1:$HTTP_PORT/metrics" deploy/monitoring/worker-metrics.txt \
    "the worker (wxcourier run) in the compose stack"
  python3 scripts/record_metrics.py \
    "http://127.0.0.1:$PROMETHEUS_PORT/metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count" \
    deploy/monitoring/rabbitmq-metrics.txt \
    "RabbitMQ 3.10 (rabbitmq_prometheus, /metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count)"
fi

phase "dashboard and alerts against live data"
sleep 5 # a few more scrapes after the last job
python3 scripts/query_monitoring.py http://127.0.0.1:5695

phase "done"
echo "compose-test: PASS in $(( $(date +%s) - t0 ))s"
