"""JSON schemas as data: `strict` (unknown properties fail, as kubernetes-validate --strict
does for built-in kinds), and prometheus-adapter's config, which is not a Kubernetes object and
has no published schema.
"""


def strict(node):
    """Forbids properties a schema does not name, wherever it names some and says nothing about
    others (edits and returns `node`)."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


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
