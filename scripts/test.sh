#!/usr/bin/env bash
# The test suite, on every broker of the matrix (docs/reliability.md, "Broker matrix"):
#   1. every test (unit, integration, doc, benches built) against RabbitMQ 3.x on 5672;
#   2. every integration test binary again against RabbitMQ 4.0 on 5673, then 4.3 on 5674
#      (scripts/rabbitmq4.sh);
#   3. the wechatpy compatibility checks of the simulator (the send APIs, and the third-party
#      platform's), a parse check of deploy/, and the example producers of examples/
#      (scripts/examples.sh);
#   4. alone, the tests that stop the broker (3.x, 4.0, 4.3) and Redis;
#   5. alone, the Redis Sentinel and Cluster failovers under load (tests/redis_failover.rs) and
#      one state across them (tests/redis_modes.rs, on Redis processes of its own);
#   6. last, the cluster failover and rolling restart under load (tests/cluster.rs) on three
#      nodes of the newest series this run covers (4.3), about 4 minutes; the same test on
#      3.x and 4.0 is run by hand: scripts/cluster.sh --series 3|4.0 failover-test.
# Every leg sees TEST_REDIS_SENTINEL_URL and TEST_REDIS_CLUSTER_URL (scripts/redis-ha.sh), so the
# state conformance tests run on Sentinel and Cluster too.
# SKIP_RABBITMQ4=1 runs the 3.x part only, SKIP_RABBITMQ43=1 leaves 4.3 out, SKIP_REDIS_HA=1
# leaves Sentinel and Cluster out, SKIP_CLUSTER=1 leaves step 6 out (each says so); CI sets none.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
if [ "${SKIP_REDIS_HA:-}" = 1 ]; then
  echo "test: SKIP_REDIS_HA=1: nothing ran against Redis Sentinel or Cluster" >&2
else
  # shellcheck disable=SC2046 # the two NAME=URL words
  export $(scripts/redis-ha.sh urls)
fi

leg() { echo; echo "=== $* ($(date +%T))"; }

leg "RabbitMQ 3.x: cargo test --all-targets"
TEST_RABBITMQ_VERSION=3. cargo test --no-fail-fast --all-targets

# Every integration test binary but the service faults and the Redis failovers (they run alone,
# below) and those that never touch the broker (client: the WeChat client against the simulator
# only).
integration=()
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  case "$name" in service_faults | redis_failover | client) ;; *) integration+=(--test "$name") ;; esac
done

# The 4.x series this run covers.
series=()
if [ "${SKIP_RABBITMQ4:-}" = 1 ]; then
  echo "test: SKIP_RABBITMQ4=1: the RabbitMQ 4.0 and 4.3 parts of the matrix did NOT run" >&2
elif [ "${SKIP_RABBITMQ43:-}" = 1 ]; then
  echo "test: SKIP_RABBITMQ43=1: the RabbitMQ 4.3 part of the matrix did NOT run" >&2
  series=(4.0)
else
  series=(4.0 4.3)
fi

# `cargo test ARGS` against the 4.x broker of series $1: the tests and the workers they start
# read the broker from TEST_*, and the version check holds each leg to its own series.
on_series() {
  local s=$1
  shift
  TEST_AMQP_URL=$(scripts/rabbitmq4.sh "$s" url) \
    TEST_MANAGEMENT_URL=$(scripts/rabbitmq4.sh "$s" mgmt-url) \
    TEST_RABBITMQ_VERSION="$s." \
    TEST_RABBITMQCTL="scripts/rabbitmq4.sh $s ctl" \
    cargo test "$@"
}

for s in "${series[@]}"; do
  leg "RabbitMQ $s: the integration tests"
  on_series "$s" --no-fail-fast "${integration[@]}"
done

leg "wechatpy and deploy/ checks"
if command -v python3 >/dev/null; then
  python3 -c "import wechatpy" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check wechatpy
  python3 tests/wechatpy/sim_compat.py target/debug/wxcourier
  python3 tests/wechatpy/component_compat.py target/debug/wxcourier
  python3 -c "import yaml" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check pyyaml
  python3 scripts/check_deploy.py
else
  echo "test: python3 is missing, skipping the wechatpy and deploy-file checks" >&2
fi

leg "the example producers (Python, Node) against the worker and the simulator"
if command -v python3 >/dev/null && command -v node >/dev/null && command -v npm >/dev/null; then
  scripts/examples.sh target/debug/wxcourier
else
  echo "test: python3, node or npm is missing: the example producers did NOT run" >&2
fi

# These stop and start RabbitMQ and Redis: never beside other tests.
leg "RabbitMQ 3.x: service faults"
TEST_RABBITMQ_VERSION=3. cargo test --test service_faults -- --ignored --test-threads=1
# The broker faults again on each 4.x series, through that broker's own rabbitmqctl; the
# Redis outage does not depend on the broker and ran above.
for s in "${series[@]}"; do
  leg "RabbitMQ $s: service faults"
  on_series "$s" --test service_faults -- --ignored --test-threads=1 --skip a_redis_outage
done
# These kill and move Redis Sentinel and Cluster nodes (never the Redis on 6379, never the
# broker's nodes): alone, after everything that uses the sets.
if [ "${SKIP_REDIS_HA:-}" != 1 ]; then
  leg "Redis Sentinel and Cluster: failover under load"
  rc=0
  TEST_RABBITMQ_VERSION=3. cargo test --test redis_failover -- --ignored --test-threads=1 --nocapture || rc=$?
  # Whole again, pass or fail: later runs and the services' users expect the sets up.
  scripts/redis-ha.sh start
  [ "$rc" = 0 ] || exit "$rc"
  leg "Redis Sentinel and Cluster: one state across a failover and a slot move"
  cargo test --test redis_modes -- --ignored --test-threads=1
fi

# Three more Erlang VMs, started and stopped by the script around the test.
cluster_series=3
[ "${#series[@]}" = 0 ] || cluster_series=${series[-1]}
if [ "${SKIP_CLUSTER:-}" = 1 ]; then
  echo "test: SKIP_CLUSTER=1: the cluster failover test did NOT run" >&2
else
  leg "RabbitMQ $cluster_series cluster: failover and rolling restart"
  scripts/cluster.sh --series "$cluster_series" failover-test
fi
leg "done"
