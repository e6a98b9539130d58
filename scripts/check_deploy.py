"""Deployment files, checked as far as this machine can: every file parses; the Kubernetes
manifests pass the Kubernetes schemas and KEDA's; the recipes keep their rules (Redis state where
several workers run, restart policies, no service links); the alert rules pass promtool and their
unit tests; the dashboard's PromQL parses; and every metric the dashboard and the rules use is one
the worker (as `wxcourier metrics-list` reads its registry), RabbitMQ or kube-state-metrics exports.

The worker's list comes from the binary in $DEPLOY_CHECK_BINARY, or else from `cargo run` here.

Runs itself in a venv with pinned packages (target/deploy-check-venv) and installs Debian's
`prometheus` package for promtool when it is missing. Its own unit tests run first.
"""

import configparser
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib
import venv

ROOT = pathlib.Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "scripts" / "deploy_checks" / "requirements.txt"
VENV = ROOT / "target" / "deploy-check-venv"
MONITORING = ROOT / "deploy" / "monitoring"


def in_pinned_venv() -> None:
    """Re-runs this script in the venv built from requirements.txt (rebuilt when it changes)."""
    python = VENV / "bin" / "python"
    stamp = VENV / "requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if pathlib.Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        print(f"check_deploy: installing {REQUIREMENTS.relative_to(ROOT)} into {VENV.relative_to(ROOT)}")
        shutil.rmtree(VENV, ignore_errors=True)
        venv.create(VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(wanted)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def find_promtool() -> str:
    """promtool from Debian's prometheus package, installed when missing and we are root."""
    path = shutil.which("promtool")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("check_deploy: installing Debian's prometheus package for promtool")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        path = shutil.which("promtool")
    if path is None:
        sys.exit("check_deploy: promtool is missing: apt-get install prometheus")
    return path


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name: str, errors: list[str]) -> None:
        if errors:
            self.failed += 1
            print(f"FAIL {name}")
            for e in errors:
                print(f"     {e}")
        else:
            self.passed += 1
            print(f"ok   {name}")


def run_checks(report: Report) -> None:
    import yaml

    from deploy_checks import exported, kube, monitoring, recipes

    # Every YAML file parses into mappings.
    yaml_docs = {}
    for path in sorted((ROOT / "deploy").rglob("*.yaml")) + sorted((ROOT / "deploy").rglob("*.yml")):
        rel = path.relative_to(ROOT)
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            errs = [] if docs else ["no document"]
            errs += [f"document {n + 1} is not a mapping" for n, d in enumerate(docs) if not isinstance(d, dict)]
            yaml_docs[rel] = docs
        except yaml.YAMLError as e:
            errs = [str(e)]
        report.check(f"{rel} parses", errs)

    def toml_errors(text):
        try:
            tomllib.loads(text)
            return []
        except tomllib.TOMLDecodeError as e:
            return [str(e)]

    report.check("config/default.toml parses", toml_errors((ROOT / "config/default.toml").read_text()))
    kube_dir = pathlib.Path("deploy/kubernetes")
    manifests = [(rel, d) for rel, docs in yaml_docs.items() if rel.parent == kube_dir for d in docs]
    configmaps = [d for _, d in manifests if d.get("kind") == "ConfigMap"]
    report.check("the ConfigMap's wxcourier.toml parses",
                 [e for c in configmaps for e in toml_errors(c["data"]["wxcourier.toml"])])
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit_text = (ROOT / "deploy/wxcourier.service").read_text()
    unit.read_string(unit_text)
    report.check("deploy/wxcourier.service has [Unit], [Service], [Install]",
                 [] if {"Unit", "Service", "Install"} <= set(unit.sections()) else ["missing sections"])

    # Schemas.
    for rel, doc in manifests:
        what = f"{rel}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        schema = (f"KEDA {kube.KEDA_VERSION} schema" if str(doc.get("apiVersion")).startswith(kube.KEDA_GROUP)
                  else f"Kubernetes {' and '.join(kube.KUBERNETES_VERSIONS)} schemas")
        report.check(f"{what} passes the {schema}", kube.errors(doc, str(rel)))

    # Recipe rules.
    report.check("Kubernetes recipe: shared state, no service links, KEDA on the app queues",
                 recipes.kubernetes_errors([d for _, d in manifests]))
    report.check("compose recipe: restart policies, Redis state",
                 recipes.compose_errors(yaml_docs[pathlib.Path("deploy/compose.yaml")][0]))
    report.check("systemd recipe: says when Redis state is needed", recipes.systemd_errors(unit_text))

    # Monitoring.
    promtool = find_promtool()
    report.check("promtool check config deploy/monitoring/prometheus.yml",
                 monitoring.promtool_errors(promtool, ["check", "config", str(MONITORING / "prometheus.yml")]))
    rules_path = MONITORING / "alerts.yaml"
    tests_path = MONITORING / "alerts.test.yaml"
    report.check("promtool check rules deploy/monitoring/alerts.yaml",
                 monitoring.promtool_errors(promtool, ["check", "rules", str(rules_path)]))
    report.check("promtool test rules deploy/monitoring/alerts.test.yaml",
                 monitoring.promtool_errors(promtool, ["test", "rules", str(tests_path)]))
    dashboard = monitoring.load_dashboard(MONITORING / "grafana-dashboard.json")
    dash_queries, dash_errors = monitoring.dashboard_queries(dashboard)
    report.check("grafana-dashboard.json is well formed", dash_errors)
    report.check("grafana-dashboard.json: its PromQL parses (promtool)",
                 monitoring.promql_syntax_errors(promtool, [q for q in dash_queries if "variable" not in q[0]]))

    try:
        listed_families = exported.families(exported.listing())
        listing_errors = []
    except exported.SourceError as e:
        listed_families, listing_errors = {}, [str(e)]
    report.check("the worker lists its metric families (wxcourier metrics-list)", listing_errors)
    worker = exported.series(listed_families)
    recording_errors = []
    fams, samples = exported.recorded((MONITORING / "worker-metrics.txt").read_text())
    for name, kind in fams.items():
        if listed_families.get(name, (None,))[0] != kind:
            recording_errors.append(f"worker-metrics.txt: {name} ({kind}) is not a family the worker lists so; "
                                    "rerun scripts/compose-test.sh")
    for name, labels in samples.items():
        if name not in worker or not labels - exported.TARGET_LABELS <= worker[name]:
            recording_errors.append(f"worker-metrics.txt: {name}{{{','.join(sorted(labels))}}} is not what "
                                    "the worker exports; rerun scripts/compose-test.sh")
    report.check("the worker's recorded /metrics matches its metrics-list", recording_errors)
    unscraped = sorted(set(listed_families) - set(fams))
    if unscraped:
        print(f"     note: listed by the worker but not in the recorded scrape: {', '.join(unscraped)}")

    _, rabbitmq = exported.recorded((MONITORING / "rabbitmq-metrics.txt").read_text())
    known = monitoring.known_metrics(worker, rabbitmq)
    report.check("grafana-dashboard.json uses only exported metrics and labels",
                 monitoring.metric_errors(dash_queries, known))
    rules = yaml_docs[pathlib.Path("deploy/monitoring/alerts.yaml")][0]
    report.check("alerts.yaml uses only exported metrics and labels",
                 monitoring.metric_errors(monitoring.rule_queries(rules), known))
    tests = yaml_docs[pathlib.Path("deploy/monitoring/alerts.test.yaml")][0]
    report.check("alerts.test.yaml feeds only exported metrics and labels",
                 monitoring.metric_errors(monitoring.test_series(tests), known))
    print(f"     note: kube-state-metrics names are declared, not scraped here: {', '.join(monitoring.KUBE_STATE_METRICS)}")


def run_unit_tests(report: Report) -> None:
    import unittest

    suite = unittest.defaultTestLoader.discover(str(ROOT / "scripts" / "deploy_checks"), pattern="test_*.py",
                                                top_level_dir=str(ROOT / "scripts"))
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=0).run(suite)
    report.check(f"the checks' own unit tests ({result.testsRun})",
                 [f"{t}: failed" for t, _ in result.failures + result.errors])


def main() -> int:
    sys.dont_write_bytecode = True  # no __pycache__ left in scripts/
    in_pinned_venv()
    sys.path.insert(0, str(ROOT / "scripts"))
    report = Report()
    find_promtool()  # before the unit tests, which use it too
    run_unit_tests(report)
    run_checks(report)
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
