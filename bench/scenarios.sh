#!/usr/bin/env bash
# The resilience scenarios against the release sidecar in real time (≈ 5 minutes): surge,
# outage, brownout with and without hedging, flapping, recovery. Prints each score card and its
# per-second timeline, writes target/scenarios.jsonl, and exits non-zero if a check fails.
# Pass scenario names to run only those: bash bench/scenarios.sh outage flapping
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked -p spillway-dataplane --bin spillway-proxy -p spillway-tests --bin scenario
only=()
for name in "$@"; do only+=(--only "$name"); done
exec target/release/scenario --sidecar target/release/spillway-proxy --timeline --json target/scenarios.jsonl "${only[@]}"
