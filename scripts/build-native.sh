#!/usr/bin/env bash
# Builds the native helpers under dist/native; rebuilds only what is older than its source.
set -euo pipefail
cd "$(dirname "$0")/.."

src=src/backends/runc/sandbox-init.c
out=dist/native/kts-sandbox-init
mkdir -p "$(dirname "$out")"
if [[ ! -x "$out" || "$src" -nt "$out" ]]; then
  cc -O2 -Wall -Wextra -o "$out.tmp" "$src"
  mv -f "$out.tmp" "$out"
  echo "built $out"
fi
