#!/usr/bin/env bash
# The load harness (bench/load.py): builds the release binaries, installs oha and the plotting
# virtualenv if missing, and runs the sidecar-vs-direct comparison. Pass --quick for a smoke run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v oha >/dev/null 2>&1; then
  echo "installing oha…" >&2
  cargo install oha --locked
fi
venv="target/bench-venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
fi
cargo build --release --locked -p spillway-dataplane --bin spillway-proxy -p spillway-tests --bin fake-provider --bin stream-probe --bin bare-forwarder
exec "$venv/bin/python" bench/load.py "$@"
