#!/usr/bin/env bash
# The pulsewatch demo, all on 127.0.0.1: Prometheus (:9090) with NAB history backfilled to end
# now, node_exporter (:9100), and pulsewatch (:9464) with examples/pulsewatch.yml.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bash scripts/install-prometheus.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pulsewatch/target}"
cargo build --release --locked
work=$(mktemp -d /tmp/pulsewatch-demo.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

nab=tests/data/nab
# jumpsup is cut inside its anomaly (row 3000), so the demo opens on a live anomaly.
python3 scripts/nab_to_openmetrics.py \
  "$nab/artificialWithAnomaly/art_daily_jumpsup.csv:3000" \
  "$nab/artificialNoAnomaly/art_daily_small_noise.csv" \
  "$nab/realKnownCause/nyc_taxi.csv::1500" > "$work/backfill.om"
promtool tsdb create-blocks-from openmetrics --max-block-duration=168h "$work/backfill.om" "$work/data" >/dev/null

prometheus-node-exporter --web.listen-address=127.0.0.1:9100 --no-collector.systemd >"$work/node.log" 2>&1 & pids+=($!)
prometheus --config.file="$repo/deploy/prometheus/prometheus.yml" --storage.tsdb.path="$work/data" \
  --storage.tsdb.retention.time=60d --web.listen-address=127.0.0.1:9090 >"$work/prometheus.log" 2>&1 & pids+=($!)
until curl -fs http://127.0.0.1:9090/-/ready >/dev/null; do sleep 0.5; done
"$CARGO_TARGET_DIR/release/pulsewatch" --config.file="$repo/examples/pulsewatch.yml" \
  --web.listen-address=127.0.0.1:9464 --web.enable-lifecycle 2>"$work/pulsewatch.log" & pids+=($!)
cat <<TXT
pulsewatch demo running (logs in $work):
  pulsewatch metrics  http://127.0.0.1:9464/metrics
  pulsewatch rules    http://127.0.0.1:9464/api/v1/rules
  Prometheus          http://127.0.0.1:9090/graph?g0.expr=pulsewatch_anomaly_score
Scores appear within a minute for the NAB rules (jumpsup > 1: the backfill ends inside its
anomaly); node_exporter rules start after a few minutes of live data. Ctrl-C stops the demo.
TXT
wait
