"""Publishes one wxcourier job with a W3C traceparent, then waits for its outcome.

    pip install pika
    python3 producer.py [--amqp URL] [--app APP] [--to OPENID] [--template ID]

The outcome is read from a queue of its own bound to wxcourier.results as `*.APP` (every
status of the app); it exits 0 when the job's outcome is `sent`, 1 otherwise.
"""

import argparse
import json
import os
import sys
import uuid

import pika

ap = argparse.ArgumentParser()
ap.add_argument("--amqp", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
ap.add_argument("--app", default="default")
ap.add_argument("--to", default="oia2TjuEGTNoeX76QEjQNrcURxG8")
ap.add_argument("--template", default="ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY")
ap.add_argument("--timeout", type=float, default=30)
args = ap.parse_args()

conn = pika.BlockingConnection(pika.URLParameters(args.amqp))
ch = conn.channel()
# Bind before publishing, so the outcome cannot come before anyone listens.
results = ch.queue_declare(queue="", exclusive=True).method.queue
ch.queue_bind(results, "wxcourier.results", routing_key=f"*.{args.app}")

job_id = f"py-{uuid.uuid4()}"
traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
job = {
    "id": job_id,
    "touser": args.to,
    "template_id": args.template,
    "data": {"keyword1": {"value": "Order 1842 paid"}},
    "meta": {"order": 1842},
}
ch.confirm_delivery()  # the broker confirms each publish; an unconfirmed one raises
ch.basic_publish(
    "wxcourier.jobs",
    args.app,
    json.dumps(job).encode(),
    pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id=job_id,
        headers={"traceparent": traceparent},
    ),
    mandatory=True,  # a job for an app with no queue comes back instead of vanishing
)
print(f"published {job_id} with traceparent {traceparent}")

for method, props, body in ch.consume(results, inactivity_timeout=args.timeout):
    if method is None:
        sys.exit(f"no outcome for {job_id} within {args.timeout:.0f}s")
    ch.basic_ack(method.delivery_tag)
    outcome = json.loads(body)
    if outcome.get("id") != job_id:
        continue
    echoed = (props.headers or {}).get("traceparent")
    print(f"{method.routing_key}: {json.dumps(outcome)}")
    print(f"traceparent on the outcome: {echoed}")
    ok = outcome["status"] == "sent" and echoed == traceparent
    conn.close()
    sys.exit(0 if ok else 1)
