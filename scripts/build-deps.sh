#!/usr/bin/env bash
# What building spillway needs beyond the Rust toolchain: protoc and its well-known types, for
# etcd-client's generated gRPC code (the control plane's store off Kubernetes). Installs Debian's
# protobuf-compiler and libprotobuf-dev when either is missing; does nothing otherwise.
set -euo pipefail

if command -v protoc >/dev/null 2>&1 && [ -f /usr/include/google/protobuf/descriptor.proto ]; then
  exit 0
fi
echo "installing protoc (Debian protobuf-compiler, libprotobuf-dev)…" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq || true
$sudo apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null
