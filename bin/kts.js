#!/usr/bin/env node
// The kts command: the CLI bundled into one CommonJS file by scripts/build-cli.sh (npm run build). This
// file is CommonJS too (bin/package.json), so a command never starts node's ES module loader; only
// `kts daemon` and `kts task-relay` import the daemon's modules, from dist/src/.
'use strict';

const fail = (error) => {
  process.stderr.write(`kts: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
};

try {
  require('../dist/src/cli/kts.cjs').main(process.argv).catch(fail);
} catch (error) {
  fail(error);
}
