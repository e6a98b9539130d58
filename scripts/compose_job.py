"""Sends one job from the host to a running stack and waits for its outcome and delivery report.

    python3 scripts/compose_job.py AMQP_URL WXCOURIER_BINARY JOB_ID

Listens on wxcourier.results (a private queue bound to "#") before publishing, so no outcome
can be missed; publishes with `wxcourier send`, the producer's side of the contract; then waits
for the send outcome (status sent) and WeChat's delivery report (status delivered) for JOB_ID.
"""

import json
import os
import subprocess
import sys
import time

import pika

RESULTS = "wxcourier.results"
WAIT = 60.0


def main() -> int:
    url, binary, job_id = sys.argv[1:4]
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.exchange_declare(RESULTS, passive=True)
    queue = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
    ch.queue_bind(queue, RESULTS, routing_key="#")

    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXCOURIER_")}
    env["WXCOURIER_AMQP__URL"] = url
    # The config must validate, so the app needs a secret; `send` itself never uses it.
    env["WXCOURIER_APPS__DEFAULT__SECRET"] = "unused-by-send"
    sent = subprocess.run(
        [binary, "send", "--config", "config/default.toml", "--app", "default",
         "--to", "oia2TjuEGTNoeX76QEjQNrcURxG8", "--template", "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
         "--data", "first=hello from the host", "--id", job_id],
        env=env, capture_output=True, text=True)
    if sent.returncode != 0:
        print(f"compose_job: wxcourier send exited {sent.returncode}: {sent.stderr.strip()}", file=sys.stderr)
        return 1

    outcome = report = None
    for method, _, body in ch.consume(queue, inactivity_timeout=1):
        if time.monotonic() - started > WAIT:
            break
        if method is None:
            continue
        ch.basic_ack(method.delivery_tag)
        msg = json.loads(body)
        if msg.get("id") != job_id:
            continue
        took = time.monotonic() - started
        if msg.get("kind") == "send":
            outcome = msg
            print(f"compose_job: outcome after {took:.2f}s ({method.routing_key}): {body.decode()}")
        elif msg.get("kind") == "delivery":
            report = msg
            print(f"compose_job: delivery report after {took:.2f}s ({method.routing_key}): {body.decode()}")
        if outcome and report:
            break
    ch.cancel()
    conn.close()
    if not outcome or outcome.get("status") != "sent":
        print(f"compose_job: no sent outcome for {job_id} within {WAIT:.0f}s (got {outcome})", file=sys.stderr)
        return 1
    if not report or report.get("status") != "delivered":
        print(f"compose_job: no delivered report for {job_id} within {WAIT:.0f}s (got {report})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
