#!/usr/bin/env bash
# The pulsewatch demo, all on 127.0.0.1: Prometheus (:9090) with NAB history backfilled to end
# now and then replayed live (:9101), node_exporter (:9100), pulsewatch (:9464) with
# examples/pulsewatch.yml, and Alertmanager (:9093) routing rules/pulsewatch.rules.yml's alerts
# as deploy/alertmanager/alertmanager.yml does, but with every receiver replaced by a local
# webhook (:9095) that logs the notifications. Ctrl-C stops everything.
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
end=$(date +%s)
# jumpsup is cut at its jump (row 2989), so the demo opens on a live anomaly; the machine
# temperature (scored by the autoencoder rules of examples/autoencoder) is cut on 2014-02-08
# 12:00 (row 19485), inside NAB's labelled failure. The replay exporter then continues every
# series from where its backfill ends.
series=("$nab/artificialWithAnomaly/art_daily_jumpsup.csv:2989"
        "$nab/artificialNoAnomaly/art_daily_small_noise.csv:3500"
        "$nab/realKnownCause/nyc_taxi.csv:9000"
        "examples/autoencoder/data/machine_temperature_system_failure.csv:19485")
python3 scripts/nab_to_openmetrics.py --end "$end" --labels 'instance="127.0.0.1:9101",job="nab"' \
  "${series[@]}" > "$work/backfill.om"
promtool tsdb create-blocks-from openmetrics --max-block-duration=168h "$work/backfill.om" "$work/data" >/dev/null

python3 scripts/nab_replay.py --port 9101 --start "$end" "${series[@]}" >"$work/replay.log" 2>&1 & pids+=($!)
# The shipped routes and inhibitions, with receivers that stay on this machine.
{
  sed -n '/^route:/,/^receivers:/p' deploy/alertmanager/alertmanager.yml
  for receiver in email slack pagerduty webhook; do
    printf '  - name: %s\n    webhook_configs: [{ url: "http://127.0.0.1:9095/", send_resolved: true }]\n' "$receiver"
  done
} > "$work/alertmanager.yml"
python3 scripts/webhook_log.py --port 9095 >"$work/notifications.log" 2>&1 & pids+=($!)
prometheus-alertmanager --config.file="$work/alertmanager.yml" --storage.path="$work/alertmanager" \
  --web.listen-address=127.0.0.1:9093 --cluster.listen-address= >"$work/alertmanager.log" 2>&1 & pids+=($!)
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
  Prometheus alerts   http://127.0.0.1:9090/alerts
  Alertmanager        http://127.0.0.1:9093
  notifications       tail -f $work/notifications.log
Scores appear within a minute for the NAB rules (jumpsup starts at its jump, so it scores
above 3, and a critical PulsewatchAnomaly fires after its 5m hold and reaches the log through the
pagerduty, slack and webhook routes); the autoencoder rules machine_temperature_dense and
machine_temperature_lstm score the machine's failure above 1 (pulsewatch_reconstruction_error
holds the raw error); node_exporter rules start after a few minutes of live data.
Ctrl-C stops it.
TXT
wait
