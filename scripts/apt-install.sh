#!/usr/bin/env bash
# Installs Debian packages for the project's scripts: `bash scripts/apt-install.sh PKG…`.
# Uses sudo when not root; refreshes the package lists first (offline mirrors may refuse that,
# which is fine when the packages are already known).
set -euo pipefail
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq || true
$sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
