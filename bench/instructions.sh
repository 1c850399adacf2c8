#!/usr/bin/env bash
# User-space instructions per request, sidecar vs bare forwarder, counted by callgrind: the
# deterministic figure behind the profile in docs/benchmarks.md. Wall-clock CPU on a shared VM
# moves ±30 % between runs; instruction counts move by well under 1 %, so a change to the
# request path is judged here first.
#
# Each binary runs under `valgrind --tool=callgrind` twice, serving N1 and then N2 non-streaming
# requests (oha, 4 connections) from the fake provider; the difference divided by N2 − N1 is
# the cost of one request with start-up and shutdown cancelled out. The kernel's share (loopback
# TCP, about 40 % of the sidecar's CPU) is not counted: both processes make the same syscalls
# per request (`strace -c`: 2 reads, 2 writes).
#
# Usage: bash bench/instructions.sh [N1 N2]   (default 500 2500; needs valgrind and oha)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n1=${1:-500}
n2=${2:-2500}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
command -v oha >/dev/null || { echo "installing oha…" >&2; cargo install oha --locked; }
cargo build --release --locked -p spillway-dataplane --bin spillway-proxy -p spillway-tests --bin fake-provider --bin bare-forwarder
bin=target/release
tmp=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
fake_port=$(port)
"$bin/fake-provider" --listen "127.0.0.1:$fake_port" --chunks 20 2>/dev/null &
fake=$!
trap 'kill $fake 2>/dev/null; rm -rf "$tmp"' EXIT
cat >"$tmp/routing.yaml" <<EOF
endpoints:
  fake: { provider: openai_compatible, base_url: "http://127.0.0.1:$fake_port/v1", model: m }
features:
  m: { hierarchy: [fake], attempt_timeout_ms: 30000, deadline_ms: 60000 }
EOF
body='{"model":"m","messages":[{"role":"user","content":"hello"}]}'

# instructions KIND N: total instructions of one callgrind run serving N requests.
instructions() {
  local kind=$1 n=$2 p
  p=$(port)
  local out="$tmp/$kind.$n.callgrind"
  if [[ $kind == sidecar ]]; then
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin/spillway-proxy" --config "$tmp/routing.yaml" \
      --listen "127.0.0.1:$p" --no-watch 2>/dev/null &
  else
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin/bare-forwarder" --listen "127.0.0.1:$p" \
      --upstream "127.0.0.1:$fake_port" 2>/dev/null &
  fi
  local pid=$!
  for _ in $(seq 300); do
    curl -s -o /dev/null "http://127.0.0.1:$p/healthz" && break
    sleep 0.1
  done
  oha --no-tui -n "$n" -c 4 -m POST -H 'content-type: application/json' -d "$body" \
    "http://127.0.0.1:$p/v1/chat/completions" >/dev/null
  kill -TERM "$pid"
  wait "$pid" || true
  grep -h '^summary:\|^totals:' "$out" | head -1 | awk '{print $2}'
}

declare -A per
for kind in bare sidecar; do
  a=$(instructions "$kind" "$n1")
  b=$(instructions "$kind" "$n2")
  per[$kind]=$(((b - a) / (n2 - n1)))
  echo "$kind: ${per[$kind]} instructions per request"
done
python3 -c "print(f'sidecar / bare forwarder: {${per[sidecar]} / ${per[bare]}:.2f}')"
