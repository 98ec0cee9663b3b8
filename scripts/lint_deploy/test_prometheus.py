"""Prometheus configs: the scrape of pulsewatch, and Kubernetes discovery checked here."""
import io
import unittest

from . import prometheus
from .report import Report


class ConfigTest(unittest.TestCase):
    def check(self, config):
        report = Report(io.StringIO())
        out = prometheus.check_config(config, "prometheus.yml", report.fail)
        return out, [msg for _, msg in report.failures]

    def test_a_scrape_of_pulsewatch_needs_honor_labels(self):
        jobs = [{"job_name": "pw", "static_configs": [{"targets": ["localhost:9464"]}]},
                {"job_name": "ok", "honor_labels": True, "static_configs": [{"targets": ["pw:9464"]}]},
                {"job_name": "node", "static_configs": [{"targets": ["localhost:9100"]}]}]
        _, problems = self.check({"scrape_configs": jobs})
        self.assertEqual(problems, ["job pw: scrapes pulsewatch (:9464) without honor_labels: true"])

    def test_kubernetes_discovery_is_checked_and_left_out_for_promtool(self):
        config = {"scrape_configs": [{"job_name": "pods", "honor_labels": True, "kubernetes_sd_configs": [
            {"role": "pod", "namespaces": {"names": ["monitoring"]}},
            {"role": "pods", "api_servr": "https://k8s"},
        ]}]}
        out, problems = self.check(config)
        self.assertEqual(problems, ["job pods: kubernetes_sd_configs: unknown key 'api_servr'",
                                    "job pods: kubernetes_sd_configs: bad role 'pods'"])
        self.assertEqual(out, {"scrape_configs": [{"job_name": "pods", "honor_labels": True,
                                                   "static_configs": [{"targets": []}, {"targets": []}]}]})

    def test_no_scrape_configs(self):
        self.assertEqual(self.check({}), ({}, []))


if __name__ == "__main__":
    unittest.main()
