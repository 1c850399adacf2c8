#!/usr/bin/env bash
# Installs the agent CLIs the end-to-end tests drive through the sidecar — Claude Code
# (@anthropic-ai/claude-code) and Codex CLI (@openai/codex), pinned in package-lock.json — into
# target/cli-tools. Idempotent: does nothing when the lockfile has not changed. Both ship native
# binaries as optional dependencies; Claude Code's postinstall copies its binary into place.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dest="${SPILLWAY_CLI_TOOLS:-$root/target/cli-tools}"
stamp="$dest/.lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [[ -x "$dest/node_modules/.bin/claude" && -x "$dest/node_modules/.bin/codex" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is required for the agent CLI tests (Node.js 20 or later)" >&2
  exit 1
fi
echo "installing Claude Code and Codex CLI into $dest…" >&2
mkdir -p "$dest"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error)
"$dest/node_modules/.bin/claude" --version >/dev/null
"$dest/node_modules/.bin/codex" --version >/dev/null
echo "$want" > "$stamp"
