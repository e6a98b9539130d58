#!/usr/bin/env bash
# The test suite, on both brokers of the matrix (docs/reliability.md, "Broker matrix"):
#   1. every test (unit, integration, doc, benches built) against RabbitMQ 3.x on 5672;
#   2. every integration test binary again against RabbitMQ 4.x on 5673 (scripts/rabbitmq4.sh);
#   3. the wechatpy compatibility check of the simulator and a parse check of deploy/;
#   4. last and alone, the tests that stop the broker (3.x, then 4.x) and Redis.
# SKIP_RABBITMQ4=1 runs the 3.x half only (and says so); CI never sets it.
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

if [ "${SKIP_RABBITMQ4:-}" = 1 ]; then
  echo "test: SKIP_RABBITMQ4=1: the RabbitMQ 4.x half of the matrix did NOT run" >&2
else
  leg "RabbitMQ 4.x: the integration tests"
  TEST_AMQP_URL=$(scripts/rabbitmq4.sh url) \
    TEST_MANAGEMENT_URL=$(scripts/rabbitmq4.sh mgmt-url) \
    TEST_RABBITMQ_VERSION=4. \
    cargo test --no-fail-fast "${integration[@]}"
fi

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
if [ "${SKIP_RABBITMQ4:-}" != 1 ]; then
  # The broker faults again on 4.x, through the 4.x broker's own rabbitmqctl; the Redis
  # outage does not depend on the broker and ran above.
  leg "RabbitMQ 4.x: service faults"
  TEST_AMQP_URL=$(scripts/rabbitmq4.sh url) \
    TEST_MANAGEMENT_URL=$(scripts/rabbitmq4.sh mgmt-url) \
    TEST_RABBITMQ_VERSION=4. \
    TEST_RABBITMQCTL="scripts/rabbitmq4.sh ctl" \
    cargo test --test service_faults -- --ignored --test-threads=1 --skip a_redis_outage
fi
leg "done"
