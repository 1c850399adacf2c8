#!/usr/bin/env bash
# What building spillway needs beyond the Rust toolchain: protoc and its well-known types, for
# etcd-client's generated gRPC code (the control plane's store off Kubernetes). Installs Debian's
# protobuf-compiler and libprotobuf-dev when either is missing; does nothing otherwise.
set -euo pipefail
if command -v protoc >/dev/null 2>&1 && [ -f /usr/include/google/protobuf/descriptor.proto ]; then
  exit 0
fi
echo "installing protoc (Debian protobuf-compiler, libprotobuf-dev)…" >&2
bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" protobuf-compiler libprotobuf-dev
