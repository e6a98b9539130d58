"""Each deploy check fails on the mistake it exists to catch, and passes the shipped files."""

import copy
import json
import pathlib
import shutil
import unittest

import yaml

from deploy_checks import exported, kube, monitoring, recipes
from deploy_checks.promql import PromqlError, expand_grafana, selectors

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"


def manifests() -> list[dict]:
    return [d for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def find(docs, kind):
    return next(d for d in docs if d["kind"] == kind)


class KubernetesSchemas(unittest.TestCase):
    def test_a_misspelt_field_fails(self):
        d = copy.deepcopy(find(manifests(), "Deployment"))
        d["spec"]["template"]["spec"]["enableServiceLink"] = False
        errors = kube.errors(d, "t")
        self.assertTrue(errors and "enableServiceLink" in errors[0], errors)

    def test_a_wrong_type_fails(self):
        d = copy.deepcopy(find(manifests(), "Deployment"))
        d["spec"]["replicas"] = "2"
        self.assertTrue(kube.errors(d, "t"))

    def test_an_unknown_kind_fails_instead_of_passing_unchecked(self):
        self.assertTrue(kube.errors({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}, "t"))

    def test_keda_misspelt_field_and_wrong_type_fail(self):
        d = copy.deepcopy(find(manifests(), "ScaledObject"))
        d["spec"]["minReplicaCnt"] = 1
        self.assertIn("minReplicaCnt", " ".join(kube.errors(d, "t")))
        d = copy.deepcopy(find(manifests(), "ScaledObject"))
        d["spec"]["maxReplicaCount"] = "8"
        self.assertTrue(kube.errors(d, "t"))
        d = copy.deepcopy(find(manifests(), "TriggerAuthentication"))
        d["spec"]["secretTargetRef"][0]["keyy"] = "x"
        self.assertIn("keyy", " ".join(kube.errors(d, "t")))

    def test_the_shipped_manifests_pass(self):
        for d in manifests():
            self.assertEqual(kube.errors(d, d["kind"]), [])


class Recipes(unittest.TestCase):
    def test_the_shipped_recipes_pass(self):
        self.assertEqual(recipes.kubernetes_errors(manifests()), [])
        self.assertEqual(recipes.compose_errors(yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())), [])

    def test_memory_state_with_replicas_fails(self):
        docs = manifests()
        del find(docs, "Secret")["stringData"]["WXCOURIER_STATE__URL"]
        self.assertIn("WXCOURIER_STATE__URL", " ".join(recipes.kubernetes_errors(docs)))
        docs = manifests()
        cm = find(docs, "ConfigMap")
        cm["data"]["wxcourier.toml"] += '\n[state]\nurl = "memory"\n'
        self.assertIn("state.url", " ".join(recipes.kubernetes_errors(docs)))

    def test_service_links_left_on_fail(self):
        docs = manifests()
        del find(docs, "Deployment")["spec"]["template"]["spec"]["enableServiceLinks"]
        self.assertIn("enableServiceLinks", " ".join(recipes.kubernetes_errors(docs)))

    def test_a_keda_trigger_on_no_app_queue_fails(self):
        docs = manifests()
        find(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]["queueName"] = "wxcourier.jobs.shopp"
        errors = " ".join(recipes.kubernetes_errors(docs))
        self.assertIn("shopp", errors)
        self.assertIn("no trigger for app shop", errors)

    def test_compose_without_restart_or_redis_fails(self):
        compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
        del compose["services"]["redis"]["restart"]
        compose["services"]["worker"]["environment"]["WXCOURIER_STATE__URL"] = "memory"
        errors = " ".join(recipes.compose_errors(compose))
        self.assertIn("redis has no restart policy", errors)
        self.assertIn("WXCOURIER_STATE__URL", errors)


class Promql(unittest.TestCase):
    def test_selectors_skip_functions_keywords_and_label_lists(self):
        expr = ('sum by (app) (rate(wxcourier_jobs_total{status="failed"}[10m])) / ignoring(status) '
                'group_left(x) max without (instance) (x_total offset 1h30m) > bool 1e3 unless on (app) up')
        self.assertEqual(selectors(expr), [("wxcourier_jobs_total", {"status"}), ("x_total", set()), ("up", set())])

    def test_strings_with_braces_and_names_are_not_selectors(self):
        expr = 'label_replace(a{q=~"x{1}\\\\.y"}, "app", "$1", "queue", "wxcourier_jobs_total")'
        self.assertEqual(selectors(expr), [("a", {"q"})])

    def test_grafana_variables_expand(self):
        self.assertEqual(expand_grafana('rate(x{app=~"$app"}[$__rate_interval])'), 'rate(x{app=~".+"}[5m])')

    def test_unterminated_input_is_an_error(self):
        with self.assertRaises(PromqlError):
            selectors('x{a="b}')


class MetricNames(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.LISTED = exported.listing()

    def test_listed_families_carry_suffixes_and_labels(self):
        series = exported.series(exported.families(self.LISTED))
        self.assertEqual(series["wxcourier_jobs_total"], {"app", "status"})
        self.assertEqual(series["wxcourier_send_latency_seconds_bucket"], {"app", "le"})
        self.assertEqual(series["wxcourier_in_flight_jobs"], set())
        self.assertNotIn("wxcourier_jobs", series)
        self.assertEqual(series["wxcourier_foreign_consumers"], {"app"})
        self.assertEqual(series["wxcourier_wechat_quota_remaining"], {"app", "endpoint"})

    def test_a_line_it_cannot_read_is_an_error(self):
        for bad in ["wxcourier_jobs\tcounter\tapp,status", "wxcourier_jobs\tsummary\tapp\thelp",
                    "other_jobs\tcounter\tapp\thelp", ""]:
            with self.subTest(bad=bad), self.assertRaises(exported.SourceError):
                exported.families(bad)

    def test_a_help_text_with_spaces_and_a_family_without_labels_read_whole(self):
        fams = exported.families("wxcourier_in_flight_jobs\tgauge\t\tJobs being processed now.\n"
                                 "wxcourier_jobs\tcounter\tapp,status\tJobs finished, by final status.\n")
        self.assertEqual(fams, {"wxcourier_in_flight_jobs": ("gauge", set()),
                                "wxcourier_jobs": ("counter", {"app", "status"})})

    def test_unknown_metric_and_label_fail(self):
        known = monitoring.known_metrics(exported.series(exported.families(self.LISTED)), {})
        errors = monitoring.metric_errors([
            ("a", "rate(wxcourier_jobs_sent_total[5m])"),
            ("b", 'wxcourier_jobs_total{state="sent"}'),
            ("c", 'wxcourier_jobs_total{status="sent", instance="w1"}'),
        ], known)
        self.assertEqual(len(errors), 2, errors)
        self.assertIn("wxcourier_jobs_sent_total is not a metric", errors[0])
        self.assertIn("no label state", errors[1])

    def test_the_dashboard_and_rules_name_metrics_that_exist(self):
        dash = json.loads((ROOT / "deploy/monitoring/grafana-dashboard.json").read_text())
        queries, problems = monitoring.dashboard_queries(dash)
        self.assertEqual(problems, [])
        self.assertGreater(len(queries), 20)
        rules = yaml.safe_load((ROOT / "deploy/monitoring/alerts.yaml").read_text())
        self.assertGreater(len(monitoring.rule_queries(rules)), 15)

    def test_promtool_refuses_the_dashboards_bad_promql(self):
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool is not installed (scripts/check_deploy.py installs it)")
        # A regex escape PromQL's double-quoted strings do not know, as once shipped here.
        self.assertTrue(monitoring.promql_syntax_errors(promtool, [("t", 'x{q=~"wxcourier\\.jobs"}')]))
        self.assertEqual(monitoring.promql_syntax_errors(promtool, [("t", 'x{q=~"wxcourier\\\\.jobs"}')]), [])

    def test_a_dashboard_with_a_fixed_datasource_or_no_query_fails(self):
        dash = json.loads((ROOT / "deploy/monitoring/grafana-dashboard.json").read_text())
        panel = next(p for p in dash["panels"] if p["type"] != "row")
        panel["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
        panel["targets"] = []
        _, problems = monitoring.dashboard_queries(dash)
        self.assertEqual(len(problems), 2, problems)


if __name__ == "__main__":
    unittest.main()
