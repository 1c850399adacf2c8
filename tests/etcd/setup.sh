#!/usr/bin/env bash
# A real etcd for the multi-replica control-plane tests (tests/tests/etcd_*.rs start a 3-member
# cluster on 127.0.0.1 from it). Installs Debian's etcd-server when `etcd` is missing. Debian's
# package also enables a system service; it is stopped, since the tests start their own members.
set -euo pipefail

if command -v etcd >/dev/null 2>&1; then
  exit 0
fi
echo "installing etcd (Debian etcd-server)…" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq || true
$sudo apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
# The package's own service (if a service manager runs here) would hold 2379.
$sudo systemctl disable --now etcd >/dev/null 2>&1 || true
