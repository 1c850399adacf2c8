#!/usr/bin/env bash
# spillway's whole test suite, as CI runs it (.ci/run calls exactly this):
# formatting, lints, the supply chain (cargo-deny), every unit and end-to-end test (the official SDK
# tests and the proptest fuzzers included), and the helm chart's lint and schema checks.
# Installs what it needs: protoc (scripts/build-deps.sh), etcd (tests/etcd/setup.sh), cargo-nextest
# if missing, the SDK virtualenv (tests/python/setup.sh), Claude Code and Codex CLI from npm
# (tests/cli/setup.sh), and helm + kubernetes-validate for the chart checks (tests/k8s/setup.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/build-deps.sh
bash tests/etcd/setup.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest…" >&2
  cargo install cargo-nextest --locked
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done
bash tests/python/setup.sh
bash tests/cli/setup.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash tests/supply-chain.sh
cargo nextest run --workspace --locked --no-fail-fast
bash tests/k8s/check.sh
