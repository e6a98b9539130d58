#!/usr/bin/env bash
# Runs the example producers of examples/ (Python with pika, Node with amqplib) against the real
# worker and the simulator: each publishes a job with a traceparent and must read its outcome,
# `sent`, with the same traceparent. Installs pika (pip, user site) and amqplib (npm ci) when
# missing. Starts its own simulator and worker (target/debug/wxcourier, app `examples`) and
# stops them, by pid, whatever happens.
#
#   scripts/examples.sh [PATH/TO/wxcourier]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/wxcourier}
amqp=${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

python3 -c "import pika" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check pika
if [ ! -d examples/node/node_modules/amqplib ]; then
  (cd examples/node && npm ci --no-audit --no-fund --silent)
fi

sim_port=$(free_port)
"$bin" sim --listen "127.0.0.1:$sim_port" 2>"$dir/sim.log" &
pids+=($!)
http_port=$(free_port)
cat >"$dir/wxcourier.toml" <<TOML
[amqp]
url = "$amqp"
[wechat]
base_url = "http://127.0.0.1:$sim_port"
[http]
listen = "127.0.0.1:$http_port"
[apps.examples]
appid = "wx0000000000000000"
TOML
WXCOURIER_APPS__EXAMPLES__SECRET=secret RUST_LOG=warn "$bin" run --config "$dir/wxcourier.toml" &
pids+=($!)
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/readyz")" = 200 ] && break
  sleep 0.2
done
answers "$http_port" || { echo "examples: the worker did not come up" >&2; exit 1; }

echo "examples: Python (pika)"
python3 examples/python/producer.py --amqp "$amqp" --app examples
echo "examples: Node (amqplib)"
node examples/node/producer.js --amqp "$amqp" --app examples
echo "examples: both producers read their job's outcome, sent, with their traceparent"
