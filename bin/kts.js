#!/usr/bin/env -S node --max-semi-space-size=1 --v8-pool-size=1
// The kts command: the CLI bundled into one CommonJS file by scripts/build-cli.sh (npm run build). This
// file is CommonJS too (bin/package.json), so a command never starts node's ES module loader; only
// `kts daemon` and `kts task-relay` import the daemon's modules, from dist/src/.
// --max-semi-space-size=1 bounds V8's young generation at 1 MiB per semi-space: a mostly idle daemon
// whose young generation grew to 16 MiB under a burst of pods kept it (issue 18: 486 kB PSS per extra pod
// without it, none with it). V8 reads it only at start, so a daemon started as `node bin/kts.js daemon`
// needs it on that command line too (scripts/containerd-node.sh does).
// --v8-pool-size=1: one V8 worker thread instead of four; each held a malloc arena of its own after
// background compiles and GCs (idle daemon about 2.5 MiB PSS less, pod start latency unchanged within noise).
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
