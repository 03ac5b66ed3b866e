#!/usr/bin/env bash
# The long API fuzzing run: random and mutated requests to every gRPC method, checked after every batch
# (daemon alive, well-formed statuses, host matches records, hash chain, nothing outside its directory).
# CI runs 15,000 calls with a random seed; this runs as many as you ask (default 100,000). The seed is
# printed; give it back to replay the same requests (their interleaving still depends on timing).
# Usage: scripts/fuzz.sh [calls] [seed]     (root; after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export KTS_FUZZ_CALLS="${1:-100000}"
if [ -n "${2:-}" ]; then export KTS_FUZZ_SEED="$2"; fi
exec npx vitest run test/fuzz.integration.spec.ts
