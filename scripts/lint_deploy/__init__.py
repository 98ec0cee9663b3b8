"""The deployment lint's checks that need parsing (scripts/lint-deploy.sh installs the tools and
runs `python -m lint_deploy`; see deploy/README.md for what is checked and what cannot be).

# Layout

- `__main__.py`, `checks.py`: the run, in order, with the venv's packages (PyYAML, docker-py,
  kubernetes-validate, cloudcoil) and the external tools (kubectl, promtool, pulsewatch).
- `report.py`: `FAIL <where>: <problem>` lines, each once, and the count that sets the exit code.
- `kustomize.py`: kustomizations without kustomize: named files exist, generated ConfigMaps.
- `validate.py`, `schemas.py`: objects against Kubernetes and CRD schemas; strict schemas.
- `workloads.py`: cross-checks on pulsewatch's pods and on the monitors that scrape it.
- `autoscalers.py`: the autoscalers' PromQL and the rules and horizons it selects.
- `prometheus.py`: Prometheus configs (honor_labels; Kubernetes discovery promtool cannot check).
- `dockerfile.py`: Dockerfile instructions, COPY sources against the build context, the image.
- `smoke.py`: pulsewatch with the image's flags, and the HEALTHCHECK binary against it.

The modules the unit tests (`test_*.py`) import use the standard library only, so the tests run
with any python3: `python3 -m unittest discover -s scripts/lint_deploy -t scripts`.
"""
