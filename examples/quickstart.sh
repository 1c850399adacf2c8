#!/usr/bin/env bash
# Quick start: builds spillway, starts two fake OpenAI-compatible providers and the sidecar on
# 127.0.0.1:4000 with examples/quickstart.yaml. Ctrl-C stops everything. Works offline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/build-deps.sh
cargo build --release --locked -p spillway-dataplane -p spillway-tests --bins
bin=target/release

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin/fake-provider" --listen 127.0.0.1:9101 --name primary --error-rate 0.2 --error-status 503 --chunk-interval-ms 40 &
pids+=($!)
"$bin/fake-provider" --listen 127.0.0.1:9102 --name backup --chunk-interval-ms 40 &
pids+=($!)

cat <<'MSG'

spillway quick start — the sidecar is on http://127.0.0.1:4000. In another terminal:

  curl -s http://127.0.0.1:4000/v1/chat/completions -H 'content-type: application/json' \
       -d '{"model":"chat","messages":[{"role":"user","content":"hi"}]}'

  # the same feature through the Anthropic Messages API
  curl -s http://127.0.0.1:4000/v1/messages -H 'content-type: application/json' \
       -d '{"model":"chat","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}'

  # a fallback: feature `recap` starts at an endpoint that always answers 503
  curl -si http://127.0.0.1:4000/v1/chat/completions -H 'content-type: application/json' \
       -d '{"model":"recap","messages":[{"role":"user","content":"hi"}]}' | grep -i '^x-spillway'

  # the official openai SDK (installs it into target/sdk-venv first)
  bash tests/python/setup.sh && target/sdk-venv/bin/python examples/quickstart_client.py

  curl -s http://127.0.0.1:4000/metrics | grep spillway_attempts
  curl -s http://127.0.0.1:4000/debug/endpoints     # breaker states, latency percentiles

MSG
"$bin/spillway-proxy" --config examples/quickstart.yaml --listen 127.0.0.1:4000 &
pids+=($!)
wait "${pids[2]}"
