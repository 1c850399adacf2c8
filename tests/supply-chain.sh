#!/usr/bin/env bash
# What may enter the build, checked with cargo-deny against deny.toml: licences, banned crates
# (no OpenSSL, no aws-lc: rustls with ring only), sources (crates.io only) and — when the RustSec
# database can be fetched — security advisories. Part of the README test command.
# Installs cargo-deny (pinned, --locked) into target/tools if it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version="0.20.2"
tools="${SPILLWAY_TOOLS:-$PWD/target/tools}"
deny="$tools/bin/cargo-deny"
if ! "$deny" --version 2>/dev/null | grep -q "$version"; then
  echo "installing cargo-deny $version into $tools…" >&2
  CARGO_TARGET_DIR="$PWD/target/tools-build" cargo install cargo-deny --version "$version" --locked --root "$tools" --quiet
fi
"$deny" --log-level error check bans licenses sources
# The advisory database lives on GitHub. Where it cannot be reached (an offline CI machine) the
# check cannot be made; say so loudly rather than pretend it passed.
if out="$("$deny" --log-level error check advisories 2>&1)"; then
  echo "advisories ok" >&2
elif grep -q "failed to fetch advisory database" <<<"$out"; then
  echo "WARNING: the RustSec advisory database cannot be fetched from here: advisories NOT checked" >&2
else
  echo "$out" >&2
  exit 1
fi
