#!/usr/bin/env bash
# Creates the Python virtualenv the SDK end-to-end tests use (target/sdk-venv) and installs the
# pinned SDKs into it. Idempotent: does nothing when requirements.txt has not changed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${SPILLWAY_VENV:-$root/target/sdk-venv}"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "setting up $venv (openai, anthropic and google-genai SDKs, botocore, pytest)…" >&2
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
echo "$want" > "$stamp"
