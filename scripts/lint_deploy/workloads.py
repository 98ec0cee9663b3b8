"""Cross-checks on rendered Kubernetes objects: what pulsewatch needs from its pods and from
whatever scrapes it. Plain dicts in, problems out through `fail(where, msg)`.

- Every ServiceMonitor/PodMonitor endpoint has honorLabels (pulsewatch re-exports job, instance
  and namespace).
- pulsewatch containers run non-root with a read-only root, drop ALL capabilities, have both
  probes and memory requests and limits, outlast the shutdown grace period, and mount their
  config from a ConfigMap of the same build without subPath. A sharded one is a StatefulSet
  with one pod per shard (--shard.count = replicas) and --shard.index=$(POD_NAME).
"""
import re
from pathlib import Path

POD_CONTROLLERS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
PROBES = [("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")]
DEFAULT_GRACE = "30s"  # pulsewatch's --shutdown.grace-period
DEFAULT_TERMINATION_GRACE = 30  # Kubernetes' terminationGracePeriodSeconds


def kind_name(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def seconds(text):
    """A pulsewatch duration flag ("45s", "2m") in seconds; None if it is not one."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]] if match else None


def pod_specs(doc):
    spec = doc.get("spec") or {}
    if doc.get("kind") in POD_CONTROLLERS:
        return [(spec.get("template") or {}).get("spec") or {}]
    return [spec] if doc.get("kind") == "Pod" else []


def check_monitor(doc, where, fail):
    """A ServiceMonitor or PodMonitor: every endpoint honors pulsewatch's labels."""
    kind = doc.get("kind")
    if kind not in ("ServiceMonitor", "PodMonitor"):
        return
    key = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
    for i, endpoint in enumerate((doc.get("spec") or {}).get(key) or []):
        if endpoint.get("honorLabels") is not True:
            fail(where, f"{kind_name(doc)}: endpoint {i}: honorLabels must be true "
                 "(pulsewatch re-exports job, instance and namespace)")


def pulsewatch_containers(doc):
    """(pod spec, container) for each pulsewatch container (by image or name) of a workload."""
    for pod in pod_specs(doc):
        for c in pod.get("containers") or []:
            if "pulsewatch" in c.get("image", "") or c.get("name") == "pulsewatch":
                yield pod, c


def check_container(doc, pod, c, config_maps, where, fail):
    """Checks one pulsewatch container. Returns (its --config.file, the name of the ConfigMap
    mounted at that file's directory) when that ConfigMap is one of `config_maps`, else None."""
    name = f"{kind_name(doc)} container {c.get('name')}"
    security = c.get("securityContext") or {}
    pod_security = pod.get("securityContext") or {}
    if not (security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))):
        fail(where, f"{name}: runAsNonRoot is not set")
    if security.get("readOnlyRootFilesystem") is not True:
        fail(where, f"{name}: readOnlyRootFilesystem must be true")
    if security.get("allowPrivilegeEscalation") is not False:
        fail(where, f"{name}: allowPrivilegeEscalation must be false")
    if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
        fail(where, f"{name}: capabilities must drop ALL")
    for probe, want in PROBES:
        if ((c.get(probe) or {}).get("httpGet") or {}).get("path") != want:
            fail(where, f"{name}: {probe} must GET {want}")
    resources = c.get("resources") or {}
    if "memory" not in (resources.get("limits") or {}) or "memory" not in (resources.get("requests") or {}):
        fail(where, f"{name}: needs memory requests and limits")
    args = dict(a.split("=", 1) for a in c.get("args") or [] if a.startswith("--") and "=" in a)
    grace = seconds(args.get("--shutdown.grace-period", DEFAULT_GRACE))
    if grace is not None and pod.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE) <= grace:
        fail(where, f"{name}: terminationGracePeriodSeconds must exceed --shutdown.grace-period {grace:g}s")
    # Each pod of a sharded workload is one shard: more pods than shards score series twice,
    # fewer leave some unscored.
    if "--shard.count" in args:
        replicas = (doc.get("spec") or {}).get("replicas", 1)
        if args["--shard.count"] != str(replicas):
            fail(where, f"{name}: --shard.count={args['--shard.count']} must equal spec.replicas ({replicas})")
        if doc.get("kind") != "StatefulSet" or args.get("--shard.index") != "$(POD_NAME)":
            fail(where, f"{name}: a sharded pulsewatch needs a StatefulSet and --shard.index=$(POD_NAME)")
    config = args.get("--config.file")
    if not config:
        fail(where, f"{name}: no --config.file=...")
        return None
    mounts = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == str(Path(config).parent)]
    if not mounts:
        fail(where, f"{name}: nothing mounted at {Path(config).parent}")
        return None
    if "subPath" in mounts[0]:
        fail(where, f"{name}: the config volume uses subPath, which never sees ConfigMap updates")
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    configmap = ((volumes.get(mounts[0].get("name")) or {}).get("configMap") or {}).get("name")
    if configmap not in config_maps:
        fail(where, f"{name}: volume {mounts[0].get('name')} is not a ConfigMap of this kustomization")
        return None
    return config, configmap
