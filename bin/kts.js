#!/usr/bin/env node
// The kts command: compiled TypeScript lives in dist/ (npm run build).
import('../dist/src/cli/main.js').then((cli) => cli.main(process.argv)).catch((error) => {
  process.stderr.write(`kts: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
