#!/usr/bin/env bash
# Runs every test: unit tests, the integration tests against a real Prometheus (installed here
# from Debian's packages if missing), and promtool checks of the shipped files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-prometheus.sh
# Builds are heavy: keep them outside the clone so that repeated runs reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pulsewatch/target}"
cargo test --all-targets --locked
cargo test --doc --locked
# The shipped alerting rules and the demo's Prometheus config must load.
promtool check rules rules/*.yml
promtool check config --syntax-only deploy/prometheus/prometheus.yml
