"""The cross-checks on a small in-memory manifest: a pulsewatch Deployment as deploy/kubernetes
writes it passes, and each setting it must keep is reported when it goes."""
import copy
import io
import unittest

from . import workloads
from .report import Report

CONTAINER = {
    "name": "pulsewatch",
    "image": "pulsewatch:0.1.0",
    "args": ["--config.file=/etc/pulsewatch/pulsewatch.yml", "--shutdown.grace-period=30s"],
    "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]}},
    "livenessProbe": {"httpGet": {"path": "/-/healthy", "port": 9464}},
    "readinessProbe": {"httpGet": {"path": "/-/ready", "port": 9464}},
    "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "volumeMounts": [{"name": "config", "mountPath": "/etc/pulsewatch"}],
}
DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pulsewatch"},
    "spec": {"template": {"spec": {
        "securityContext": {"runAsNonRoot": True},
        "terminationGracePeriodSeconds": 45,
        "containers": [{"name": "sidecar", "image": "busybox"}, CONTAINER],
        "volumes": [{"name": "config", "configMap": {"name": "pulsewatch"}}],
    }}},
}
NAME = "Deployment/pulsewatch container pulsewatch"


def check(doc, config_maps=("pulsewatch",)):
    """(what check_container returned per pulsewatch container, the problems)."""
    report = Report(io.StringIO())
    mounts = [workloads.check_container(doc, pod, c, config_maps, "here", report.fail)
              for pod, c in workloads.pulsewatch_containers(doc)]
    return mounts, [msg for _, msg in report.failures]


def edited(edit):
    doc = copy.deepcopy(DEPLOYMENT)
    edit(doc["spec"]["template"]["spec"], doc["spec"]["template"]["spec"]["containers"][1])
    return doc


class ContainerTest(unittest.TestCase):
    def test_the_good_deployment_passes_and_names_its_config(self):
        self.assertEqual(check(DEPLOYMENT), ([("/etc/pulsewatch/pulsewatch.yml", "pulsewatch")], []))

    def test_each_missing_setting_is_reported(self):
        def setdefault_path(d, *keys):
            for k in keys:
                d = d.setdefault(k, {})
            return d

        cases = [
            (lambda pod, c: c["resources"]["limits"].pop("memory"), "needs memory requests and limits"),
            (lambda pod, c: c["resources"].pop("requests"), "needs memory requests and limits"),
            (lambda pod, c: pod.pop("securityContext"), "runAsNonRoot is not set"),
            (lambda pod, c: c["securityContext"].update(readOnlyRootFilesystem=False),
             "readOnlyRootFilesystem must be true"),
            (lambda pod, c: c["securityContext"].pop("allowPrivilegeEscalation"),
             "allowPrivilegeEscalation must be false"),
            (lambda pod, c: c["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
             "capabilities must drop ALL"),
            (lambda pod, c: c.pop("readinessProbe"), "readinessProbe must GET /-/ready"),
            (lambda pod, c: setdefault_path(c, "livenessProbe", "httpGet").update(path="/metrics"),
             "livenessProbe must GET /-/healthy"),
            (lambda pod, c: pod.update(terminationGracePeriodSeconds=30),
             "terminationGracePeriodSeconds must exceed --shutdown.grace-period 30s"),
            (lambda pod, c: c["args"].append("--shutdown.grace-period=1m"),
             "terminationGracePeriodSeconds must exceed --shutdown.grace-period 60s"),
            (lambda pod, c: c["volumeMounts"][0].update(subPath="pulsewatch.yml"),
             "the config volume uses subPath, which never sees ConfigMap updates"),
        ]
        for edit, want in cases:
            with self.subTest(want=want):
                mounts, problems = check(edited(edit))
                self.assertEqual(problems, [f"{NAME}: {want}"])

    def test_a_sharded_workload_has_one_pod_per_shard(self):
        def sharded(kind, replicas, index="$(POD_NAME)"):
            doc = edited(lambda pod, c: c["args"].extend(["--shard.count=3", f"--shard.index={index}"]))
            doc.update(kind=kind)
            doc["spec"]["replicas"] = replicas
            return doc
        name = "StatefulSet/pulsewatch container pulsewatch"
        self.assertEqual(check(sharded("StatefulSet", 3))[1], [])
        self.assertEqual(check(sharded("StatefulSet", 2))[1], [f"{name}: --shard.count=3 must equal spec.replicas (2)"])
        self.assertEqual(check(sharded("Deployment", 3))[1],
                         [f"{NAME}: a sharded pulsewatch needs a StatefulSet and --shard.index=$(POD_NAME)"])
        self.assertEqual(check(sharded("StatefulSet", 3, "1"))[1],
                         [f"{name}: a sharded pulsewatch needs a StatefulSet and --shard.index=$(POD_NAME)"])

    def test_a_config_that_does_not_come_from_a_configmap_of_the_build(self):
        cases = [
            (lambda pod, c: c.update(args=[]), "no --config.file=..."),
            (lambda pod, c: c["volumeMounts"][0].update(mountPath="/config"), "nothing mounted at /etc/pulsewatch"),
            (lambda pod, c: pod["volumes"][0].update(configMap={"name": "other"}),
             "volume config is not a ConfigMap of this kustomization"),
        ]
        for edit, want in cases:
            with self.subTest(want=want):
                self.assertEqual(check(edited(edit)), ([None], [f"{NAME}: {want}"]))

    def test_a_container_is_pulsewatch_by_image_or_by_name(self):
        doc = edited(lambda pod, c: pod["containers"].append({"name": "forecaster", "image": "r/pulsewatch:1"}))
        self.assertEqual([c["name"] for _, c in workloads.pulsewatch_containers(doc)], ["pulsewatch", "forecaster"])
        pod = {"kind": "Pod", "spec": {"containers": [{"name": "pulsewatch"}]}}
        self.assertEqual(len(list(workloads.pulsewatch_containers(pod))), 1)
        service = {"kind": "Service", "spec": {"containers": [{"name": "pulsewatch"}]}}
        self.assertEqual(list(workloads.pulsewatch_containers(service)), [])

    def test_seconds(self):
        for text, want in [("30s", 30), ("2m", 120), ("1h", 3600), ("500ms", 0.5), ("1m30s", None), ("", None)]:
            with self.subTest(text=text):
                self.assertEqual(workloads.seconds(text), want)


class MonitorTest(unittest.TestCase):
    def test_every_endpoint_honors_labels(self):
        for kind, key in [("ServiceMonitor", "endpoints"), ("PodMonitor", "podMetricsEndpoints")]:
            with self.subTest(kind=kind):
                doc = {"kind": kind, "metadata": {"name": "pw"},
                       "spec": {key: [{"port": "http", "honorLabels": True}, {"port": "other"}]}}
                report = Report(io.StringIO())
                workloads.check_monitor(doc, "here", report.fail)
                self.assertEqual(report.failures, [("here", f"{kind}/pw: endpoint 1: honorLabels must be true "
                                                    "(pulsewatch re-exports job, instance and namespace)")])


if __name__ == "__main__":
    unittest.main()
