#!/usr/bin/env bash
# The test suite: unit and integration tests against the real RabbitMQ, the wechatpy
# compatibility check of the simulator, a parse check of deploy/, then, alone, the tests that
# stop the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

cargo test --all-targets

if command -v python3 >/dev/null; then
  python3 -c "import wechatpy" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check wechatpy
  python3 tests/wechatpy/sim_compat.py target/debug/wxcourier
  python3 -c "import yaml" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check pyyaml
  python3 scripts/check_deploy.py
else
  echo "test: python3 is missing, skipping the wechatpy and deploy-file checks" >&2
fi

# These stop and start RabbitMQ and Redis: never beside other tests.
cargo test --test service_faults -- --ignored --test-threads=1
