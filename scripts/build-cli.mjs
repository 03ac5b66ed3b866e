#!/usr/bin/env node
// Builds what bin/kts.js runs, beside tsc's output in dist/src/cli/ (so after tsc: it uses dist/src/grpc/protos.js):
//   kts.cjs            src/cli/main.ts and what it imports, in one CommonJS file (esbuild): a command reads
//                      one file instead of resolving ~400 modules, and node never starts its ES module
//                      loader (bin/kts.js is CommonJS too). The daemon and the task relay, which kts loads
//                      only to run them, stay out: their dynamic imports are left to tsc's output next door
//                      (../daemon.js is dist/src/daemon.js).
//   kts-podconfig.cjs  src/oci/podConfig.ts and the YAML parser, which only `kts run` loads.
//   client-protos/     the CLI's gRPC methods (services.json) and, per type a call sends or receives, a
//                      module with the code of it and of the types it uses, generated from proto/ by
//                      protobufjs (protos.ts, compileClientProtos): kts parses no .proto file, builds no
//                      reflection of one and loads only protobufjs/minimal.
// Idempotent: each output is rebuilt only when an input is newer. bench/cli-start.mjs measures the result.
import { mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT_DIR = path.join(REPO, 'dist/src/cli');
const BUNDLE = path.join(OUT_DIR, 'kts.cjs');
const POD_CONFIG_BUNDLE = path.join(OUT_DIR, 'kts-podconfig.cjs');
const PROTOS_DIR = path.join(OUT_DIR, 'client-protos');

/** main.ts's dynamic imports that only the daemon, the task relay, tracing with an exporter and `verify --db` take. */
const DAEMON_MODULES = ['../daemon.js', '../api/taskRelay.js', '../telemetry/logger.js', '../telemetry/tracing.js', '../telemetry/clientSpans.js', '../store/sqliteStore.js', '../engine/derivedState.js', '../audit/sealedSnapshots.js'];
/** Packages that must not end up in the bundle: what those load, and grpc-js, which the CLI does without (grpcConnection.ts). */
const NOT_IN_BUNDLE = /node_modules\/(@grpc\/grpc-js|@grpc\/proto-loader|better-sqlite3|pino|@opentelemetry\/(sdk-|core|exporter-|resources)|xstate|prom-client|yaml)\//;

const die = (message) => {
  console.error(`build-cli: ${message}`);
  process.exit(1);
};

/** Files under `dir` (relative to the repo) whose names pass `keep`. */
function filesUnder(dir, keep) {
  return readdirSync(path.join(REPO, dir), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && keep(entry.name))
    .map((entry) => path.join(entry.parentPath ?? entry.path, entry.name));
}

/** True when `output` is missing or older than any input. */
function stale(output, inputs) {
  let built;
  try {
    built = statSync(output).mtimeMs;
  } catch {
    return true;
  }
  return inputs.some((input) => statSync(input).mtimeMs > built);
}

async function buildProtos() {
  const generator = path.join(REPO, 'dist/src/grpc/protos.js');
  const inputs = [...filesUnder('proto', (name) => name.endsWith('.proto')), generator, path.join(REPO, 'dist/src/grpc/protoCodec.js'), fileURLToPath(import.meta.url)];
  const services = path.join(PROTOS_DIR, 'services.json');
  if (!stale(services, inputs)) return;
  const { compileClientProtos } = await import(generator);
  const { services: methods, typeSets } = compileClientProtos();
  const staging = `${PROTOS_DIR}.tmp`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  for (const [typeName, typeSet] of Object.entries(typeSets)) {
    const definitions = Object.entries(typeSet).map(([name, definition]) => `${JSON.stringify(name)}: ${definition}`);
    writeFileSync(path.join(staging, `${typeName}.cjs`), `'use strict';\nmodule.exports = {\n${definitions.join(',\n')}\n};\n`);
  }
  // Last, as the file whose age says whether the directory is up to date.
  writeFileSync(path.join(staging, 'services.json'), JSON.stringify(methods));
  rmSync(PROTOS_DIR, { recursive: true, force: true });
  renameSync(staging, PROTOS_DIR);
  console.log(`build-cli: wrote ${path.relative(REPO, PROTOS_DIR)}/ (${Object.keys(typeSets).length} type sets)`);
}

/**
 * How the bundle is cut: the daemon's modules stay outside; podConfig.ts (with the YAML parser) is
 * its own file, required when `kts run` first needs it; and two dependencies are made lighter.
 */
const cliModules = {
  name: 'kts-cli-modules',
  setup(build) {
    build.onResolve({ filter: /^\.\.\// }, (args) => (DAEMON_MODULES.includes(args.path) ? { path: args.path, external: true } : undefined));
    build.onResolve({ filter: /^\.\.\/oci\/podConfig\.js$/ }, () => ({ path: 'podConfig', namespace: 'kts-pod-config' }));
    build.onLoad({ filter: /.*/, namespace: 'kts-pod-config' }, () => ({ contents: `module.exports = require('./${path.basename(POD_CONFIG_BUNDLE)}');`, loader: 'js' }));
    build.onResolve({ filter: /^\.\/kts-podconfig\.cjs$/ }, (args) => ({ path: args.path, external: true }));
    // commander requires child_process at its start for commands run as executables, which kts has none of (~2 ms).
    build.onResolve({ filter: /^node:child_process$/ }, (args) => (args.importer.includes('node_modules/commander/') ? { path: 'child_process', namespace: 'kts-lazy' } : undefined));
    build.onLoad({ filter: /.*/, namespace: 'kts-lazy' }, () => ({ contents: 'module.exports = new Proxy({}, { get: (_, key) => require("node:child_process")[key] });', loader: 'js' }));
    // protobufjs uses long.js for 64-bit integers if it finds it; without it, it reads them as numbers,
    // which is what the CLI asks for (longs: Number) and gets either way.
    build.onResolve({ filter: /^long$/ }, () => ({ path: 'long', namespace: 'kts-no-long' }));
    build.onLoad({ filter: /.*/, namespace: 'kts-no-long' }, () => ({ contents: 'module.exports = null;', loader: 'js' }));
  },
};

const BUNDLE_OPTIONS = {
  bundle: true, platform: 'node', format: 'cjs', target: 'node20', minify: true, logLevel: 'warning', legalComments: 'none', metafile: true,
  // import.meta.url (client.ts finds client-protos/ by it) becomes the bundle's own URL.
  define: { 'import.meta.url': '__ktsModuleUrl' },
  banner: { js: 'const __ktsModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
};

async function buildBundles() {
  const inputs = [
    ...filesUnder('src', (name) => name.endsWith('.ts') && !name.endsWith('.spec.ts')), ...filesUnder('machines', (name) => name.endsWith('.ts')),
    path.join(REPO, 'package.json'), path.join(REPO, 'package-lock.json'), fileURLToPath(import.meta.url),
  ];
  if (!stale(BUNDLE, inputs) && !stale(POD_CONFIG_BUNDLE, inputs)) return;
  const [main, podConfig] = await Promise.all([
    esbuild.build({ ...BUNDLE_OPTIONS, entryPoints: [path.join(REPO, 'src/cli/main.ts')], outfile: `${BUNDLE}.tmp`, plugins: [cliModules], write: false }),
    esbuild.build({ ...BUNDLE_OPTIONS, entryPoints: [path.join(REPO, 'src/oci/podConfig.ts')], outfile: `${POD_CONFIG_BUNDLE}.tmp`, write: false }),
  ]);
  const unwanted = Object.keys(main.metafile.inputs).filter((input) => NOT_IN_BUNDLE.test(input));
  if (unwanted.length > 0) die(`the CLI bundle would hold ${unwanted.slice(0, 3).join(', ')}: which import of src/cli/main.ts brings it in?`);
  // The pod config reader first: a kts started meanwhile finds the old bundle or both new files.
  for (const [file, output] of [[POD_CONFIG_BUNDLE, podConfig], [BUNDLE, main]]) {
    writeFileSync(`${file}.tmp`, output.outputFiles[0].contents);
    renameSync(`${file}.tmp`, file);
  }
  console.log(`build-cli: bundled ${path.relative(REPO, BUNDLE)} (${statSync(BUNDLE).size} bytes) and ${path.basename(POD_CONFIG_BUNDLE)} (${statSync(POD_CONFIG_BUNDLE).size} bytes)`);
}

statSync(path.join(REPO, 'dist/src/grpc/protos.js'), { throwIfNoEntry: false }) ?? die('dist/src/grpc/protos.js is missing (run tsc first: npm run build)');
await buildProtos();
await buildBundles();
