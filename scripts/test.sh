#!/usr/bin/env bash
# Runs every test: unit tests, the integration tests against a real Prometheus (installed here
# from Debian's packages if missing), and promtool checks of the shipped files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-prometheus.sh
# Builds are heavy: keep them outside the clone so that repeated runs reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pulsewatch/target}"
# Formatting first: it fails in seconds, the build takes minutes. Lints after the tests.
cargo fmt --check
cargo test --all-targets --locked
cargo test --doc --locked
cargo clippy --all-targets --all-features --locked -- -D warnings
# The shipped alerting rules load and pass their unit tests; the demo's Prometheus config loads.
promtool check rules rules/*.yml
promtool test rules rules/tests/*.yml
promtool check config --syntax-only deploy/prometheus/prometheus.yml
# The Alertmanager example loads and routes each severity where its comments say.
am=deploy/alertmanager/alertmanager.yml
amtool check-config "$am"
route() { amtool config routes test --config.file="$am" --verify.receivers="$1" "${@:2}" 2>/dev/null; }
route webhook,pagerduty,slack category=anomaly severity=critical
route webhook,slack category=capacity severity=warning
route webhook,email category=health severity=info
route email alertname=SomethingElse severity=critical
# The deployment files (Dockerfile, deploy/): offline lints and checks, see deploy/README.md.
python3 -B -m unittest discover -s scripts/lint_deploy -t scripts
# They check configs with the binary `cargo test` built for the integration tests.
PULSEWATCH_BIN="$CARGO_TARGET_DIR/debug/pulsewatch" bash scripts/lint-deploy.sh
