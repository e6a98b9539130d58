"""Runs every dashboard query and alert expression against a live Prometheus scraping the stack.

    python3 scripts/query_monitoring.py PROMETHEUS_URL

Each query must be accepted; the ones that describe a working stack must return data (the jobs
sent, WeChat's answers and latency, the app queue's depth and consumers, the side queues, the
paused gauge); and every rule must evaluate without error. Queries that can only be empty here
(kube-state-metrics, failures that did not happen) are listed, not failed.
"""

import json
import pathlib
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ left in scripts/
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from deploy_checks.promql import expand_grafana  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Must return data from a stack that has sent jobs (substrings of the query).
MUST_HAVE_DATA = [
    "count(wxcourier_in_flight_jobs)",
    'sum by (status) (rate(wxcourier_jobs_total{app=~".+"}[5m]))',
    'sum by (errcode) (rate(wxcourier_wechat_calls_total{app=~".+"}[5m]))',
    "histogram_quantile(0.99, sum by (le) (rate(wxcourier_send_latency_seconds_bucket",
    "sum by (queue) (rabbitmq_detailed_queue_messages_ready",
    "sum by (queue) (rabbitmq_detailed_queue_consumers",
    "max by (queue) (wxcourier_queue_messages)",
    'max by (app) (wxcourier_app_paused{app=~".+"})',
    "sum by (app) (rate(wxcourier_token_refreshes_total",
]


def get(base: str, path: str, **params) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def main() -> int:
    base = sys.argv[1].rstrip("/")
    dash = json.loads((ROOT / "deploy/monitoring/grafana-dashboard.json").read_text())
    queries = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            queries.append((p["title"], expand_grafana(t["expr"])))
    failed, empty = [], []
    with_data = 0
    for title, q in queries:
        try:
            r = get(base, "/api/v1/query", query=q)
        except urllib.error.HTTPError as e:
            failed.append(f"{title}: {q}: HTTP {e.code} {e.read().decode()[:200]}")
            continue
        if r.get("status") != "success":
            failed.append(f"{title}: {q}: {r}")
        elif r["data"]["result"]:
            with_data += 1
        else:
            empty.append((title, q))
    for title, q in empty:
        if any(m in q for m in MUST_HAVE_DATA):
            failed.append(f"{title}: {q}: no data from a stack that has sent jobs")
    # Rules: wait for one evaluation after the data arrived, then every rule must be healthy.
    time.sleep(3)
    rules = get(base, "/api/v1/rules")["data"]["groups"]
    n_rules = 0
    for g in rules:
        for rule in g["rules"]:
            n_rules += 1
            if rule.get("health") != "ok":
                failed.append(f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
    firing = [a["labels"]["alertname"] for a in get(base, "/api/v1/alerts")["data"]["alerts"]]
    print(f"query_monitoring: {len(queries)} dashboard queries accepted by Prometheus, {with_data} with data, "
          f"{len(empty)} empty here:")
    for title, q in empty:
        print(f"    empty: {title}: {q}")
    print(f"query_monitoring: {n_rules} rules evaluated; alerts pending or firing: {', '.join(firing) or 'none'}")
    for f in failed:
        print(f"query_monitoring: FAIL {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
