#!/usr/bin/env bash
# The test command: installs and builds what the tests need (scripts/setup.sh, scripts/build-peers.sh), then runs every
# unit and integration test with vitest and ends with one "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# containerd 2.4, its runc shim, crictl and critest for test/crictl.integration.spec.ts (cached: seconds when built).
bash scripts/build-peers.sh
mkdir -p .kts
set +e
npx vitest run --reporter=default --reporter=json --outputFile.json=.kts/vitest.json "$@"
code=$?
set -e
node -e '
  const r = JSON.parse(require("fs").readFileSync(".kts/vitest.json", "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
' || true
exit $code
