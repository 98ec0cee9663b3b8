"""The checks that need parsing, in order, over the repository (the working directory): the
kustomizations as written and rendered, the objects' cross-checks, the ConfigMaps as the pods
see them through `pulsewatch check config`, the Prometheus configs and autoscaler queries
through promtool, and the Dockerfile's build context and image.

Environment: LINT_TMP (a scratch directory), PULSEWATCH_BIN (a pulsewatch binary, empty if it
did not build: already reported), HEALTHCHECK_BIN (pulsewatch-healthcheck, same), KUBECTL (a
kubectl binary, empty without one).
"""
import json
import os
import subprocess
from pathlib import Path

import yaml
from docker.utils.build import exclude_paths

from . import autoscalers, dockerfile, prometheus, workloads
from .kustomize import Kustomizations
from .report import Report
from .smoke import run_image_flags
from .validate import VERSIONS, validate_adapter, validate_object

K8S = Path("deploy/kubernetes")


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def key(doc):
    return json.dumps(doc, sort_keys=True)


def parse(text):
    """A YAML document, or None if it does not parse (whoever loads it reports that)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


class Lint:
    """What one run found so far: the checks below fill it in, in order."""

    def __init__(self, tmp, pulsewatch, healthcheck, kubectl):
        self.tmp = tmp
        self.pulsewatch = pulsewatch
        self.healthcheck = healthcheck
        self.kubectl = kubectl
        self.report = Report()
        self.fail = self.report.fail
        self.kustomizations = Kustomizations(Path("."), self.load_docs, self.fail)
        self.roots = []
        self.builds = {}  # kustomization dir -> (rendered objects, those not seen in an earlier build, where)
        self.rendered_seen = set()  # overlays of one base render the same objects: check those once
        self.queries = []  # (PromQL, where)
        self.rules = {}  # ConfigMap contents -> (where, {rule name: horizons as written})
        self.layouts = {}  # ConfigMap contents -> (directory laid out as the pod sees it, config file, where)
        self.prometheus_configs = [(p, str(p)) for p in sorted(Path("deploy").glob("*/prometheus*.yml"))]

    def load_docs(self, path):
        try:
            with open(path) as f:
                return [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as err:
            self.fail(path, f"invalid YAML: {err}")
            return []

    def fresh(self, objects):
        new = [d for d in objects if key(d) not in self.rendered_seen]
        self.rendered_seen.update(key(d) for d in new)
        return new

    # === kustomizations: as written, and rendered ===

    def render(self):
        k = self.kustomizations
        self.roots = [d for d in sorted(p.parent for p in K8S.rglob("kustomization.yaml")) if k.is_root(d)]
        validated = set()
        for directory in self.roots:
            raw = k.check(directory)
            for doc, source in raw:
                if (source, key(doc)) not in validated:  # a base under several overlays
                    validated.add((source, key(doc)))
                    validate_object(doc, source, self.fail)
            if self.kubectl:
                out = run([self.kubectl, "kustomize", str(directory)])
                if out.returncode != 0:
                    self.fail(directory / "kustomization.yaml", f"kubectl kustomize: {out.stderr.strip()}")
                    continue
                rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
                where = f"{directory} (kubectl kustomize)"
                print(f"kustomize: {directory}: {len(rendered)} objects")
                new = self.fresh(rendered)
                for doc in new:
                    validate_object(doc, where, self.fail)
                self.builds[directory] = (rendered, new, where)
            else:
                # Without kustomize: the ConfigMaps assembled by hand, the rest as written.
                rendered = [doc for doc, _ in raw]
                rendered += [{"kind": "ConfigMap", "metadata": {"name": n}, "data": d}
                             for n, d in k.config_maps(directory).items()]
                self.builds[directory] = (rendered, self.fresh(rendered), f"{directory} (assembled without kustomize)")
        if not self.kubectl:
            print("note: kubectl not installed: kustomizations not rendered, only their files checked")

    # === prometheus-adapter config (not a Kubernetes object: its own small schema) ===

    def adapters(self):
        for path in sorted(K8S.rglob("prometheus-adapter*.yaml")):
            self.kustomizations.used.add(path)
            for doc in self.load_docs(path):
                validate_adapter(doc, path, self.fail)
                self.queries += [(q, path) for q in autoscalers.adapter_queries(doc, path, self.fail)]

    def unused(self):
        for path in sorted(K8S.rglob("*")):
            if path.is_file() and path.suffix in (".yaml", ".yml") and path not in self.kustomizations.used:
                self.fail(path, "not used by any kustomization (list it, or delete it)")

    # === what the objects say ===

    def objects(self):
        used = self.kustomizations.used
        for directory, (objects, new, where) in self.builds.items():
            maps = {(d.get("metadata") or {}).get("name"): d.get("data") or {}
                    for d in objects if d.get("kind") == "ConfigMap"}
            for doc in new:
                workloads.check_monitor(doc, where, self.fail)
                self.queries += [(q, where) for q in autoscalers.trigger_queries(doc)]
                for pod, c in workloads.pulsewatch_containers(doc):
                    mount = workloads.check_container(doc, pod, c, maps, where, self.fail)
                    if mount:
                        self.lay_out(directory, where, *mount, maps)
            # A Prometheus config in a ConfigMap, unless it is one of those already checked.
            for name, data in maps.items():
                for k, text in data.items():
                    if k != "prometheus.yml" or any(p.name == k and p.read_text() == text
                                                    for p, _ in self.prometheus_configs):
                        continue
                    path = self.tmp / "prometheus" / str(directory).replace("/", "_") / k
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
                    source = next((p for p in used if p.name == k and p.read_text() == text), None)
                    self.prometheus_configs.append(
                        (path, f"{where}: ConfigMap {name}" + (f" (from {source})" if source else "")))

    def lay_out(self, directory, where, config, configmap, maps):
        """The ConfigMap as the pod sees it: one directory, one file per key. Overlays of one base
        generate the same ConfigMap: each content is laid out (and checked) once."""
        contents = json.dumps(maps[configmap], sort_keys=True)
        if contents in self.layouts:
            return
        layout = self.tmp / "configmaps" / str(directory).replace("/", "_") / configmap
        layout.mkdir(parents=True, exist_ok=True)
        defined = {}
        for k, text in maps[configmap].items():
            (layout / k).write_text(text)
            if k != Path(config).name:
                defined.update(autoscalers.horizons(parse(text)))
        where_cm = f"{where}: ConfigMap {configmap}"
        self.layouts[contents] = (layout, layout / Path(config).name, where_cm)
        self.rules[contents] = (where_cm, defined)

    # === pulsewatch check config, as the pods would load the ConfigMaps ===

    def check_pulsewatch_configs(self):
        if not self.pulsewatch:
            return
        sources = {p.read_text(): p for p in self.kustomizations.used if p.name != "kustomization.yaml"}
        for layout, config, where in self.layouts.values():
            out = run([self.pulsewatch, "check", "config", config.name], cwd=layout)
            if out.returncode != 0:
                keys = ", ".join(f"{p.name} = {sources.get(p.read_text(), '?')}" for p in sorted(layout.iterdir()))
                self.fail(where, f"pulsewatch check config (the ConfigMap's keys: {keys}):\n"
                          + (out.stdout + out.stderr).strip())
            else:
                print(f"pulsewatch check config: {where}: {', '.join(sorted(p.name for p in layout.iterdir()))}")

    # === Prometheus configs ===

    def check_prometheus_configs(self):
        for path, where in self.prometheus_configs:
            try:
                config = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                self.fail(where, f"invalid YAML: {err}")
                continue
            config = prometheus.check_config(config, where, self.fail)
            checked = self.tmp / "promtool" / path.name
            checked.parent.mkdir(exist_ok=True)
            checked.write_text(yaml.safe_dump(config))
            out = run(["promtool", "check", "config", "--syntax-only", str(checked)])
            if out.returncode != 0:
                self.fail(where, "promtool check config:\n" + (out.stdout + out.stderr).strip())
            else:
                print(f"promtool check config: {where}")

    # === PromQL of the autoscalers, and the pulsewatch rules and horizons they select ===

    def check_promql(self):
        for i, (query, where) in enumerate(self.queries):
            if not query.strip():
                self.fail(where, "empty query")
                continue
            path = self.tmp / f"query{i}.rules.yml"
            path.write_text(yaml.safe_dump(
                {"groups": [{"name": "lint", "rules": [{"record": "lint:query", "expr": query}]}]}))
            out = run(["promtool", "check", "rules", str(path)])
            if out.returncode != 0:
                self.fail(where, f"query {query!r}: " + (out.stdout + out.stderr).strip())
            else:
                print(f"promtool: query of {where} parses")
            autoscalers.check_selections(query, where, list(self.rules.values()), self.fail)

    # === Dockerfile: build context, and the image's /etc/pulsewatch ===

    def check_image(self):
        path = Path("Dockerfile")
        patterns = dockerfile.ignore_patterns(Path(".dockerignore").read_text())
        context = set(exclude_paths(os.getcwd(), patterns))
        steps = dockerfile.instructions(path.read_text())
        image_root = self.tmp / "image"
        dockerfile.copy_into_image(steps, Path("."), context, image_root, self.fail, str(path))
        cmd, args = dockerfile.command(steps)
        config = image_root / args["--config.file"].lstrip("/")
        if not config.is_file():
            self.fail(path, f"CMD names {args['--config.file']}, which no COPY puts into the image")
        elif self.pulsewatch:
            out = run([self.pulsewatch, "check", "config", str(config)])
            if out.returncode != 0:
                self.fail(path, "image config: pulsewatch check config:\n" + (out.stdout + out.stderr).strip())
            elif self.healthcheck:
                print(f"pulsewatch check config: the image's {args['--config.file']}; smoke run with {' '.join(cmd)}")
                run_image_flags(self.pulsewatch, self.healthcheck, cmd, args["--config.file"], config,
                                self.tmp / "smoke.log", path, self.fail)

    def summary(self):
        print(f"checked: {len(self.roots)} kustomizations, {len(self.rendered_seen)} distinct rendered objects, "
              f"{len(self.layouts)} pulsewatch ConfigMaps, {len(self.prometheus_configs)} Prometheus configs, "
              f"{len(self.queries)} queries, kubernetes schemas {', '.join(VERSIONS)}")


def main():
    """Runs every check; returns the exit code."""
    lint = Lint(Path(os.environ["LINT_TMP"]), os.environ.get("PULSEWATCH_BIN") or None,
                os.environ.get("HEALTHCHECK_BIN") or None, os.environ.get("KUBECTL") or None)
    lint.render()
    lint.adapters()
    lint.unused()
    lint.objects()
    lint.check_pulsewatch_configs()
    lint.check_prometheus_configs()
    lint.check_promql()
    lint.check_image()
    lint.summary()
    return 1 if lint.report.problems else 0

