"""The Grafana dashboard and the Prometheus rules: well formed, valid PromQL, and only metrics that exist."""

import json
import pathlib
import subprocess
import tempfile

import yaml

from . import exported
from .promql import PromqlError, expand_grafana, label_values_metric, selectors

# Series that come from elsewhere than the worker, with where they come from. kube-state-metrics
# cannot run here, so its names are declared, not verified against a scrape.
KUBE_STATE_METRICS = {
    "kube_deployment_spec_replicas": {"namespace", "deployment"},
    "kube_deployment_status_replicas_available": {"namespace", "deployment"},
}
PROMETHEUS_OWN = {"up": set()}


def dashboard_queries(dash: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """(where, PromQL) for every panel target and variable query, and what is malformed."""
    queries, errors = [], []
    ids = set()

    def walk(panels, path):
        for p in panels:
            where = f"{path} panel {p.get('id')} {p.get('title')!r}"
            if p.get("id") in ids:
                errors.append(f"{where}: duplicate panel id")
            ids.add(p.get("id"))
            grid = p.get("gridPos", {})
            if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
                errors.append(f"{where}: gridPos needs integer x, y, w, h")
            if p.get("type") == "row":
                walk(p.get("panels", []), path)
                continue
            ds = p.get("datasource", {})
            if ds.get("uid") != "${datasource}":
                errors.append(f"{where}: datasource must be the ${{datasource}} variable, not a fixed uid")
            targets = p.get("targets") or []
            if not targets:
                errors.append(f"{where}: no query")
            for t in targets:
                if not t.get("expr"):
                    errors.append(f"{where} target {t.get('refId')}: no expr")
                else:
                    queries.append((f"{where} target {t.get('refId')}", t["expr"]))

    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dash:
            errors.append(f"dashboard: no {key!r}")
    walk(dash.get("panels", []), "dashboard")
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        metric = label_values_metric(q or "")
        if metric is None:
            errors.append(f"dashboard variable {var.get('name')}: only label_values(metric, label) is checked, got {q!r}")
        else:
            queries.append((f"dashboard variable {var.get('name')}", metric))
    return queries, errors


def rule_queries(doc: dict) -> list[tuple[str, str]]:
    out = []
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            out.append((f"rule {group.get('name')}/{name}", rule["expr"]))
    return out


def test_series(doc: dict) -> list[tuple[str, str]]:
    """The input series of promtool rule tests, as selectors."""
    out = []
    for n, test in enumerate(doc.get("tests", [])):
        for s in test.get("input_series", []):
            out.append((f"rule test {n + 1}", s["series"]))
    return out


def known_metrics(worker: dict[str, set[str]], rabbitmq: dict[str, set[str]]) -> dict[str, set[str]]:
    known = {}
    for source in (worker, rabbitmq, KUBE_STATE_METRICS, PROMETHEUS_OWN):
        for name, labels in source.items():
            known.setdefault(name, set()).update(labels)
    return known


def metric_errors(queries: list[tuple[str, str]], known: dict[str, set[str]]) -> list[str]:
    """Every selector names a known metric, and matches only on labels that metric has."""
    errors = []
    for where, expr in queries:
        try:
            found = selectors(expand_grafana(expr))
        except PromqlError as e:
            errors.append(f"{where}: {e}")
            continue
        if not found:
            errors.append(f"{where}: no metric in {expr!r}")
        for name, labels in found:
            if name not in known:
                errors.append(f"{where}: {name} is not a metric the worker, RabbitMQ or kube-state-metrics exports")
                continue
            unknown = labels - known[name] - exported.TARGET_LABELS
            if unknown:
                errors.append(f"{where}: {name} has no label {', '.join(sorted(unknown))} "
                              f"(it has {', '.join(sorted(known[name])) or 'none'})")
    return errors


def promql_syntax_errors(promtool: str, queries: list[tuple[str, str]]) -> list[str]:
    """Checks the dashboard's PromQL with promtool, as recording rules in a scratch file."""
    rules = [{"record": f"dashboard:query:{n}", "expr": expand_grafana(expr)}
             for n, (_, expr) in enumerate(queries)]
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "dashboard-queries.yaml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    if r.returncode == 0:
        return []
    return [f"dashboard PromQL: {(r.stdout + r.stderr).strip()}"]


def promtool_errors(promtool: str, args: list[str]) -> list[str]:
    r = subprocess.run([promtool, *args], capture_output=True, text=True)
    if r.returncode == 0:
        return []
    return [f"promtool {' '.join(args)}: {(r.stdout + r.stderr).strip()}"]


def load_dashboard(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())
