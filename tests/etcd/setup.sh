#!/usr/bin/env bash
# A real etcd for the multi-replica control-plane tests (tests/tests/etcd_*.rs start their own
# members on 127.0.0.1 from it). Installs Debian's etcd-server when `etcd` is missing, then stops
# the system service the package may enable: the tests start their own members.
set -euo pipefail
if command -v etcd >/dev/null 2>&1; then
  exit 0
fi
echo "installing etcd (Debian etcd-server)…" >&2
bash "$(dirname "${BASH_SOURCE[0]}")/../../scripts/apt-install.sh" etcd-server
if [ "$(id -u)" -ne 0 ]; then sudo systemctl disable --now etcd >/dev/null 2>&1 || true
else systemctl disable --now etcd >/dev/null 2>&1 || true; fi
