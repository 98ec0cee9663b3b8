"""The PromQL the autoscalers run (KEDA's prometheus triggers, prometheus-adapter's rules), and
the pulsewatch rules and horizons it selects. Plain dicts and strings in; the queries are parsed
by promtool elsewhere.
"""
import re

# prometheus-adapter's templates, filled in as the adapter would for the HPA's namespace and
# metric selector.
ADAPTER_TEMPLATES = [
    ("<<.Series>>", "pulsewatch_forecast"),
    ("<<.LabelMatchers>>", 'namespace="default",app="web"'),
    ("<<.GroupBy>>", "namespace"),
]
SELECTOR = re.compile(r"pulsewatch_forecast(?:_lower|_upper)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def trigger_queries(doc):
    """The queries of a ScaledObject's prometheus triggers ("" for a trigger without one)."""
    if doc.get("kind") != "ScaledObject":
        return []
    return [(t.get("metadata") or {}).get("query", "")
            for t in (doc.get("spec") or {}).get("triggers") or [] if t.get("type") == "prometheus"]


def adapter_queries(doc, where, fail):
    """The seriesQuery and the filled-in metricsQuery of each rule of a prometheus-adapter config;
    a template the lint cannot fill in is reported."""
    queries = []
    for rule in (doc.get("rules") or []) + (doc.get("externalRules") or []):
        if not isinstance(rule, dict):
            continue
        queries.append(rule.get("seriesQuery", ""))
        query = rule.get("metricsQuery", "")
        for template, value in ADAPTER_TEMPLATES:
            query = query.replace(template, value)
        for template in re.findall(r"<<[^>]*>>", query):
            fail(where, f"metricsQuery: unknown template {template}")
        queries.append(query)
    return queries


def horizons(rule_file):
    """{rule name: horizons as written} of a parsed rule file; {} if it is not one (pulsewatch
    check config reports that)."""
    try:
        groups = (rule_file or {}).get("groups") or []
        return {r.get("forecast") or r.get("anomaly"): [str(h) for h in r.get("horizons") or []]
                for g in groups for r in g.get("rules") or []}
    except (AttributeError, TypeError):
        return {}


def selections(query):
    """(rule, horizon) of each pulsewatch_forecast selector of a query that names both."""
    found = []
    for selector in SELECTOR.findall(query):
        labels = dict(MATCHER.findall(selector))
        if "rule" in labels and "horizon" in labels:
            found.append((labels["rule"], labels["horizon"]))
    return found


def check_selections(query, where, rule_sets, fail):
    """Every rule and horizon the query selects exists in each of `rule_sets`, a list of
    (where the rules come from, {rule name: horizons as written})."""
    for rule, horizon in selections(query):
        for build, defined in rule_sets:
            if rule not in defined:
                fail(where, f'selects rule="{rule}", which {build} does not define')
            elif horizon not in defined[rule]:
                fail(where, f'selects horizon="{horizon}" of rule {rule}, '
                     f"whose horizons in {build} are {defined[rule]} (the label is the horizon as written)")
