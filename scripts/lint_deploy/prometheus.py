"""Prometheus configs: every scrape of pulsewatch keeps its labels, and the parts Debian's
promtool cannot check (it is built without Kubernetes discovery) are checked here and taken out
before promtool sees the rest.
"""
PULSEWATCH_PORT = ":9464"
SD_KEYS = {"role", "api_server", "kubeconfig_file", "namespaces", "selectors", "attach_metadata", "basic_auth",
           "authorization", "oauth2", "tls_config", "proxy_url", "follow_redirects", "enable_http2", "http_headers"}
SD_ROLES = ("pod", "service", "endpoints", "endpointslice", "node", "ingress")


def check_config(config, where, fail):
    """Checks a parsed Prometheus config and returns it for promtool: each kubernetes_sd_configs
    block checked here and replaced by an empty static_configs entry (edits `config`)."""
    for job in config.get("scrape_configs") or []:
        name = job.get("job_name")
        targets = [t for s in job.get("static_configs") or [] for t in s.get("targets") or []]
        if any(t.endswith(PULSEWATCH_PORT) for t in targets) and job.get("honor_labels") is not True:
            fail(where, f"job {name}: scrapes pulsewatch ({PULSEWATCH_PORT}) without honor_labels: true")
        for sd in job.pop("kubernetes_sd_configs", None) or []:
            for key in sorted(set(sd) - SD_KEYS):
                fail(where, f"job {name}: kubernetes_sd_configs: unknown key {key!r}")
            if sd.get("role") not in SD_ROLES:
                fail(where, f"job {name}: kubernetes_sd_configs: bad role {sd.get('role')!r}")
            job.setdefault("static_configs", []).append({"targets": []})
    return config
