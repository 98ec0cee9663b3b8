"""The autoscalers' queries as the lint gets them, and the rule and horizon they select."""
import io
import unittest

from . import autoscalers
from .report import Report


class QueriesTest(unittest.TestCase):
    def test_adapter_templates_filled_in_as_the_adapter_would(self):
        doc = {"rules": [{"seriesQuery": 'pulsewatch_forecast{rule="rps"}',
                          "metricsQuery": "max(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"}],
               "externalRules": [{"seriesQuery": "up", "metricsQuery": "sum(<<.Series>>) by (<<.Resource>>)"},
                                 "not a rule"]}
        report = Report(io.StringIO())
        self.assertEqual(autoscalers.adapter_queries(doc, "adapter.yaml", report.fail), [
            'pulsewatch_forecast{rule="rps"}',
            'max(pulsewatch_forecast{namespace="default",app="web"}) by (namespace)',
            "up",
            "sum(pulsewatch_forecast) by (<<.Resource>>)",
        ])
        self.assertEqual(report.failures, [("adapter.yaml", "metricsQuery: unknown template <<.Resource>>")])

    def test_only_the_prometheus_triggers_of_a_scaledobject(self):
        doc = {"kind": "ScaledObject", "spec": {"triggers": [
            {"type": "prometheus", "metadata": {"query": "up"}},
            {"type": "cpu", "metadata": {"value": "50"}},
            {"type": "prometheus"},
        ]}}
        self.assertEqual(autoscalers.trigger_queries(doc), ["up", ""])
        self.assertEqual(autoscalers.trigger_queries({"kind": "Deployment", "spec": doc["spec"]}), [])


class SelectionsTest(unittest.TestCase):
    RULES = {"groups": [{"rules": [{"forecast": "rps", "horizons": ["15m", "1h"]},
                                   {"anomaly": "latency"}]}]}

    def test_horizons_as_written(self):
        self.assertEqual(autoscalers.horizons(self.RULES), {"rps": ["15m", "1h"], "latency": []})
        for not_rules in [None, "text", {"groups": "x"}, {"groups": [{"rules": ["x"]}]}, ["a"]]:
            with self.subTest(rule_file=not_rules):
                self.assertEqual(autoscalers.horizons(not_rules), {})

    def test_selectors_naming_rule_and_horizon(self):
        query = ('max(pulsewatch_forecast_upper { rule = "rps", horizon="1h" }) '
                 '/ pulsewatch_forecast{rule="rps"} + pulsewatch_forecast{horizon="15m",rule="x"}')
        self.assertEqual(autoscalers.selections(query), [("rps", "1h"), ("x", "15m")])

    def test_a_rule_or_horizon_that_a_build_does_not_define(self):
        defined = [("sidecar", autoscalers.horizons(self.RULES))]
        cases = [
            ('pulsewatch_forecast{rule="rps",horizon="1h"}', []),
            ('pulsewatch_forecast{rule="cpu",horizon="1h"}', ['selects rule="cpu", which sidecar does not define']),
            ('pulsewatch_forecast{rule="rps",horizon="60m"}',
             ["selects horizon=\"60m\" of rule rps, whose horizons in sidecar are ['15m', '1h'] "
              "(the label is the horizon as written)"]),
        ]
        for query, want in cases:
            with self.subTest(query=query):
                report = Report(io.StringIO())
                autoscalers.check_selections(query, "keda", defined, report.fail)
                self.assertEqual([msg for _, msg in report.failures], want)


if __name__ == "__main__":
    unittest.main()
