#!/usr/bin/env bash
# The long chaos run: crash the daemon at every crash point, over and over, and check that nothing
# is lost or leaked after each restart. CI runs 200 cycles; this runs as many as you ask (default 2000).
# Usage: scripts/chaos.sh [cycles]     (root; after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
KTS_CHAOS_CYCLES="${1:-2000}" exec npx vitest run test/chaos.integration.spec.ts
