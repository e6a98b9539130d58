#!/usr/bin/env bash
# Makes sure RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379) answer: starts them when
# they are installed but down, installs them with apt on Debian/Ubuntu when missing.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A broker can accept TCP and still never answer AMQP (seen after a wedged boot): send the
# protocol header and wait for the first byte of Connection.Start.
speaks_amqp() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672; printf "AMQP\x00\x00\x09\x01" >&3; head -c 1 <&3 >/dev/null' 2>/dev/null
}

need_apt() {
  command -v apt-get >/dev/null || { echo "services: $1 is not installed and there is no apt-get; install it by hand" >&2; exit 1; }
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

if ! answers 5672; then
  command -v rabbitmq-server >/dev/null || need_apt rabbitmq-server
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached
  for _ in $(seq 1 120); do answers 5672 && break; sleep 1; done
  rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
if ! speaks_amqp; then
  echo "services: RabbitMQ accepts connections but does not answer AMQP; restarting it"
  rabbitmqctl stop >/dev/null 2>&1 &
  sleep 15
  pkill -9 -f beam.smp || true
  sleep 2
  rabbitmq-server -detached
  for _ in $(seq 1 120); do speaks_amqp && break; sleep 1; done
fi
speaks_amqp || { echo "services: RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }

if ! answers 6379; then
  command -v redis-server >/dev/null || need_apt redis-server
  echo "services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 30); do answers 6379 && break; sleep 1; done
fi
answers 6379 || { echo "services: Redis did not come up on 127.0.0.1:6379" >&2; exit 1; }
echo "services: RabbitMQ and Redis are answering"
