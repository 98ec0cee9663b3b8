"""Kubernetes objects against their schemas, offline: built-in kinds with kubernetes-validate
(strict) for each of `VERSIONS`; ServiceMonitor, PodMonitor and ScaledObject against schemas
generated from cloudcoil's prometheus-operator and KEDA models, made strict the same way.

Needs the venv's packages (scripts/lint-deploy.sh installs them).
"""
import jsonschema
import kubernetes_validate
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, ServiceMonitor

from .schemas import ADAPTER, strict
from .workloads import kind_name

VERSIONS = ["1.28", kubernetes_validate.latest_version()]
CRDS = {
    (cls.model_fields["api_version"].default, cls.model_fields["kind"].default): jsonschema.Draft202012Validator(
        strict(cls.model_json_schema(by_alias=True)))
    for cls in (ServiceMonitor, PodMonitor, ScaledObject)
}
ADAPTER_VALIDATOR = jsonschema.Draft202012Validator(ADAPTER)


def validate_object(doc, where, fail):
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        fail(where, "not a Kubernetes object (no apiVersion and kind)")
        return
    crd = CRDS.get((doc["apiVersion"], doc["kind"]))
    if crd:
        for err in crd.iter_errors(doc):
            path = ".".join(map(str, err.absolute_path))
            fail(where, f"{kind_name(doc)}: {path}: {err.message}")
        return
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(map(str, err.path))
            fail(where, f"{kind_name(doc)}: {path}: {err.message} (Kubernetes {err.version})")
            return
        except kubernetes_validate.SchemaNotFoundError:
            fail(where, f"{kind_name(doc)}: no schema for {doc['apiVersion']} {doc['kind']} (Kubernetes {version})")
            return


def validate_adapter(doc, where, fail):
    """A prometheus-adapter config against `schemas.ADAPTER`."""
    for err in ADAPTER_VALIDATOR.iter_errors(doc):
        fail(where, f"{'.'.join(map(str, err.absolute_path))}: {err.message}")
