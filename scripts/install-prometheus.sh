#!/usr/bin/env bash
# Installs Debian's Prometheus, node_exporter, Alertmanager and VictoriaMetrics packages if any of
# their binaries is missing.
set -euo pipefail
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-node-exporter >/dev/null || missing+=(prometheus-node-exporter)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends prometheus prometheus-node-exporter prometheus-alertmanager victoria-metrics curl openssl
fi
