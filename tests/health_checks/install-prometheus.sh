#!/usr/bin/env bash
# Install Debian's prometheus for the Prometheus-gate tests, only when it is missing.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-prometheus.sh: prometheus is missing and we are not root; skipping" >&2
  exit 0
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus
