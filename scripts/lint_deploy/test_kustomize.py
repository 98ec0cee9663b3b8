"""Kustomizations checked and ConfigMaps assembled without kustomize, on a tree in a temporary
directory (kustomization files written as JSON, which is YAML)."""
import io
import json
import tempfile
import unittest
from pathlib import Path

from .kustomize import Kustomizations
from .report import Report


class Tree:
    """Files under a temporary root; `.k` walks them."""

    def __init__(self, test, files):
        tmp = tempfile.TemporaryDirectory()
        test.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        for path, content in files.items():
            (self.root / path).parent.mkdir(parents=True, exist_ok=True)
            text = content if isinstance(content, str) else json.dumps(content)
            (self.root / path).write_text(text)
        self.report = Report(io.StringIO())
        self.k = Kustomizations(self.root, self.load, self.report.fail)

    def load(self, path):
        text = Path(path).read_text()
        return [json.loads(text)] if text.startswith(("{", "[")) else [{"document": text}]


class CheckTest(unittest.TestCase):
    def test_objects_of_resources_and_bases_with_the_files_used(self):
        t = Tree(self, {
            "app/kustomization.yaml": {"resources": ["../base", "svc.yaml"],
                                       "configMapGenerator": [{"name": "cfg", "files": ["conf=app.yml"]}]},
            "app/svc.yaml": {"kind": "Service"},
            "app/app.yml": "a: 1",
            "base/kustomization.yaml": {"resources": ["deploy.yaml"]},
            "base/deploy.yaml": {"kind": "Deployment"},
        })
        objects = t.k.check(Path("app"))
        self.assertEqual(objects, [({"kind": "Deployment"}, Path("base/deploy.yaml")),
                                   ({"kind": "Service"}, Path("app/svc.yaml"))])
        self.assertEqual(t.k.used, {Path("app/kustomization.yaml"), Path("app/svc.yaml"), Path("app/app.yml"),
                                    Path("base/kustomization.yaml"), Path("base/deploy.yaml")})
        self.assertEqual(t.report.failures, [])

    def test_what_it_names_must_exist(self):
        t = Tree(self, {
            "app/kustomization.yaml": {"resources": ["gone.yaml", "empty"], "components": ["../nope"],
                                       "configMapGenerator": [{"name": "cfg", "files": ["missing.yml"]}],
                                       "commonLabel": {"a": "b"}},
            "app/empty/README": "no kustomization here",
        })
        self.assertEqual(t.k.check(Path("app")), [])
        where = "app/kustomization.yaml"
        self.assertEqual(t.report.failures, [
            (where, "unknown key 'commonLabel'"),
            (where, "gone.yaml: no such file or directory"),
            (where, "empty: directory without kustomization.yaml"),
            (where, "../nope: no such file or directory"),
            (where, "configMapGenerator cfg: missing.yml: no such file"),
        ])

    def test_a_base_shared_twice_is_walked_once(self):
        t = Tree(self, {
            "app/kustomization.yaml": {"resources": ["../base", "../base/"]},
            "base/kustomization.yaml": {"resources": ["cm.yaml"]},
            "base/cm.yaml": {"kind": "ConfigMap"},
        })
        self.assertEqual(len(t.k.check(Path("app"))), 1)

    def test_components_are_not_roots(self):
        t = Tree(self, {
            "app/kustomization.yaml": {"resources": []},
            "comp/kustomization.yaml": {"kind": "Component"},
        })
        self.assertTrue(t.k.is_root(Path("app")))
        self.assertFalse(t.k.is_root(Path("comp")))


class ConfigMapsTest(unittest.TestCase):
    def test_generators_of_bases_overlays_and_merging_components(self):
        t = Tree(self, {
            "base/kustomization.yaml": {"configMapGenerator": [
                {"name": "pulsewatch", "files": ["pulsewatch.yml"]},
                {"name": "prometheus", "files": ["prometheus.yml"]}]},
            "base/pulsewatch.yml": "base config",
            "base/prometheus.yml": "scrape",
            "app/kustomization.yaml": {"resources": ["../base"], "components": ["../rules"],
                                       # replaces the base's ConfigMap (no behavior: merge)
                                       "configMapGenerator": [{"name": "prometheus",
                                                               "files": ["prometheus.yml=other.yml"]}]},
            "app/other.yml": "overlay scrape",
            "rules/kustomization.yaml": {"kind": "Component", "configMapGenerator": [
                {"name": "pulsewatch", "behavior": "merge", "files": ["http.rules.yaml", "gone.yaml"]}]},
            "rules/http.rules.yaml": "groups: []",
        })
        self.assertEqual(t.k.config_maps(Path("app")), {
            "pulsewatch": {"pulsewatch.yml": "base config", "http.rules.yaml": "groups: []"},
            "prometheus": {"prometheus.yml": "overlay scrape"},
        })


if __name__ == "__main__":
    unittest.main()
