#!/usr/bin/env bash
# The test suite, on every broker of the matrix (docs/reliability.md, "Broker matrix"):
#   1. every test (unit, integration, doc, benches built) against RabbitMQ 3.x on 5672;
#   2. every integration test binary again against RabbitMQ 4.0 on 5673, then 4.3 on 5674
#      (scripts/rabbitmq4.sh);
#   3. the wechatpy compatibility check of the simulator and a parse check of deploy/;
#   4. last and alone, the tests that stop the broker (3.x, 4.0, 4.3) and Redis.
# SKIP_RABBITMQ4=1 runs the 3.x part only, SKIP_RABBITMQ43=1 leaves 4.3 out (each says so);
# CI sets neither.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

leg() { echo; echo "=== $* ($(date +%T))"; }

leg "RabbitMQ 3.x: cargo test --all-targets"
TEST_RABBITMQ_VERSION=3. cargo test --no-fail-fast --all-targets

# Every integration test binary but the service faults (they run alone, below) and those that
# never touch the broker (client: the WeChat client against the simulator only).
integration=()
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  case "$name" in service_faults | client) ;; *) integration+=(--test "$name") ;; esac
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
  python3 -c "import yaml" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check pyyaml
  python3 scripts/check_deploy.py
else
  echo "test: python3 is missing, skipping the wechatpy and deploy-file checks" >&2
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
leg "done"
