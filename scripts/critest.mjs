#!/usr/bin/env node
// critest v1.37.0 side by side: the CRI validation suite against containerd 2.4, once through kts (the
// kts-runc runtime handler: containerd's Sandbox API → kts) and once through containerd's own runc path
// (the `runc` handler: podsandbox + a pause container + containerd-shim-runc-v2 per pod). Goal: every
// spec that passes on containerd's own path passes through kts.
//   - a node of its own (scripts/containerd-node.sh with the directory, sockets, bridge (ktsct1) and
//     subnet (10.88.215.0/24) below; --bridge and --subnet give a second run a node of its own), torn down at the end (every pod, containerd, kts, mounts, bridge);
//   - critest's images built from the busybox layout and imported under the names of
//     test/critest/test-images.yaml (plus the two names critest hard-codes for specs that run here);
//   - --ginkgo.skip built from test/critest/skips.txt (one entry per line, each with its reason);
//   - one ginkgo JSON report per handler; per-spec results for both and their difference go to
//     test/critest/results.json (or --out), and a short table to stdout.
// Usage (root; after npm run build and bash scripts/build-peers.sh):
//   node scripts/critest.mjs [--handlers kts-runc,runc] [--focus <regex>] [--out <file>] [--dir <dir>] [--bridge <name> --subnet <cidr>] [--keep-node]
// Exit code: 0 when no spec fails only through kts, 1 when one does, 2 when the peers are missing.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { criNode, importDerivedImage, PEERS_BIN, peersMissing } from '../bench/lib/criNode.mjs';
import { REPO } from '../bench/lib/daemon.mjs';
import { formatTable } from '../bench/lib/stats.mjs';
import { runTimed } from '../bench/lib/spawn.mjs';

const CRITEST_DIR = path.join(REPO, 'test/critest');
const TEST_IMAGES_FILE = path.join(CRITEST_DIR, 'test-images.yaml');
const SKIPS_FILE = path.join(CRITEST_DIR, 'skips.txt');
const KTS_HANDLER = 'kts-runc';
const BASELINE_HANDLER = 'runc';
// The busybox the image layout was built from (scripts/build-images.sh: BUSYBOX_BIN).
const BUSYBOX = process.env.BUSYBOX_BIN ?? '/bin/busybox';
// critest names these images itself (no flag renames them); built here so the specs using them run.
const E2E = 'registry.k8s.io/e2e-test-images';
const STAGING = 'gcr.io/k8s-staging-cri-tools';
const GO_ARCH = process.arch === 'x64' ? 'amd64' : process.arch;

const WWW = { 'www/index.html': 'kts critest web server\n' };
const httpd = (port) => ({ config: { Entrypoint: ['/bin/busybox', 'httpd', '-f', '-p', String(port), '-h', '/www'], Cmd: null }, files: WWW });

/**
 * busybox with every applet hard-linked under bin/ (the layout symlinks a few; a masked /bin/ls must not
 * mask the shell, as in busybox:1.29), and the two commands critest runs that this busybox build lacks.
 */
function fullBusybox() {
  const listed = execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  const files = { 'bin/busybox': { bytes: readFileSync(BUSYBOX), mode: 0o755 } };
  for (const applet of listed) if (applet !== 'busybox') files[`bin/${applet}`] = { hardlink: 'bin/busybox' };
  const script = (text) => ({ bytes: `#!/bin/sh\n${text}`, mode: 0o755 });
  files['bin/pgrep'] = script('# pgrep NAME: the pids whose comm is NAME.\nfound=1\nfor dir in /proc/[0-9]*; do\n  [ "$(cat "$dir/comm" 2>/dev/null)" = "$1" ] && echo "${dir#/proc/}" && found=0\ndone\nexit $found\n');
  files['bin/ipcs'] = script('# ipcs -m: the shared memory segments of this IPC namespace.\ncat /proc/sysvipc/shm\n');
  return files;
}

/** A static build of one of test/critest/*.c, for the images that stand in for critest's own. */
function staticProgram(workDir, source) {
  const binary = path.join(workDir, path.basename(source, '.c'));
  execFileSync('gcc', ['-static', '-O2', '-o', binary, path.join(CRITEST_DIR, source)]);
  return readFileSync(binary);
}

/** What each image critest runs is, derived from busybox (see bench/lib/criNode.mjs). */
function imageRecipes(workDir) {
  const named = YAML.parse(readFileSync(TEST_IMAGES_FILE, 'utf8'));
  const busybox = fullBusybox();
  return [
    [named.defaultTestContainerImage, { files: busybox }],
    [named.webServerTestImage, { ...httpd(80), files: { ...busybox, ...WWW } }],
    [`${STAGING}/hostnet-nginx-${GO_ARCH}:latest`, httpd(12003)],
    // The multi-container specs look for "httpd" in its log.
    [`${E2E}/httpd:2.4.39-4`, { config: { Entrypoint: ['/bin/sh', '-c', 'echo httpd serving; exec /bin/busybox httpd -f -p 80 -h /www'], Cmd: null }, files: WWW }],
    // The NamespaceOption specs look for nginx by its pid file, `pidof nginx` and "master process".
    [`${E2E}/nginx:1.14-2`, { config: { Entrypoint: ['/usr/sbin/nginx', '-g', 'daemon off;'], Cmd: null }, files: { ...WWW, 'usr/sbin/nginx': { bytes: staticProgram(workDir, 'fake-nginx.c'), mode: 0o755 } } }],
    // Setuid root, it prints the effective uid it got: 0 unless no_new_privs stopped the setuid bit.
    [`${E2E}/nonewprivs:1.3`, { config: { Entrypoint: ['/usr/local/bin/nonewprivs'], Cmd: null }, files: { 'usr/local/bin/nonewprivs': { bytes: staticProgram(workDir, 'nonewprivs.c'), mode: 0o4755 } } }],
    // As critest's image-predefined-group: default-user (uid 1000) is in group-defined-in-image (gid 50000).
    [`${STAGING}/test-image-predefined-group:latest`, {
      config: { User: '1000' },
      files: {
        'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n',
        'etc/group': 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n',
      },
    }],
  ];
}

/** The skip entries: `<literal spec text> | <reason>` per line, `#` comments. */
export function readSkips(file = SKIPS_FILE) {
  return readFileSync(file, 'utf8').split('\n').map((line) => line.trim()).filter((line) => line && !line.startsWith('#')).map((line) => {
    const bar = line.indexOf(' | ');
    if (bar < 0) throw new Error(`${file}: "${line}" has no " | <reason>"`);
    return { spec: line.slice(0, bar).trim(), reason: line.slice(bar + 3).trim() };
  });
}

const escapeRegex = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Runs critest once for `handler`; resolves with its ginkgo JSON report and how long it took. */
async function runCritest(node, handler, { runDir, focus }) {
  const report = path.join(runDir, `${handler}.json`);
  const log = path.join(runDir, `${handler}.log`);
  rmSync(report, { force: true });
  const endpoint = `unix://${node.socket}`;
  const args = [
    `-runtime-endpoint=${endpoint}`, `-image-endpoint=${endpoint}`, `-runtime-handler=${handler}`,
    `-test-images-file=${TEST_IMAGES_FILE}`,
    `-ginkgo.skip=${readSkips().map((entry) => escapeRegex(entry.spec)).join('|')}`,
    // Each vmm pod boots a VM (~12 s under TCG): its suite took 34 min on 2 cores, 50m leaves too little margin.
    `-ginkgo.json-report=${report}`, '-ginkgo.no-color', '-ginkgo.seed=1', `-ginkgo.timeout=${handler === 'kts-vmm' ? '3h' : '50m'}`,
    ...(focus ? [`-ginkgo.focus=${focus}`] : []),
  ];
  const started = Date.now();
  const result = await runTimed(path.join(PEERS_BIN, 'critest'), args, { env: { ...process.env, PATH: `${PEERS_BIN}:${process.env.PATH}` } });
  writeFileSync(log, result.stdout + result.stderr);
  const seconds = Math.round((Date.now() - started) / 1000);
  let suite;
  try {
    [suite] = JSON.parse(readFileSync(report, 'utf8'));
  } catch {
    throw new Error(`critest (${handler}) wrote no report (exit ${result.code}); see ${log}: ${result.stderr.trim().slice(-400)}`);
  }
  return { suite, seconds, log };
}

const specName = (spec) => [...spec.ContainerHierarchyTexts, spec.LeafNodeText].join(' ');
const failureOf = (spec) => spec.Failure && { message: spec.Failure.Message.trim().slice(0, 2000), location: `${spec.Failure.Location.FileName.replace(/^.*cri-tools@[^/]+\//, '')}:${spec.Failure.Location.LineNumber}` };

/** Per-spec states of each run and their difference. */
export function compareRuns(runs) {
  const specs = {};
  const handlers = {};
  for (const [handler, { suite, seconds }] of Object.entries(runs)) {
    const counts = { passed: 0, failed: 0, skipped: 0, seconds };
    for (const spec of suite.SpecReports.filter((report) => report.LeafNodeType === 'It')) {
      const name = specName(spec);
      const state = spec.State === 'passed' || spec.State === 'skipped' || spec.State === 'pending' ? (spec.State === 'pending' ? 'skipped' : spec.State) : 'failed';
      counts[state]++;
      specs[name] ??= {};
      specs[name][handler] = state === 'failed' ? { state, [spec.State === 'failed' ? 'failure' : spec.State]: failureOf(spec) ?? null } : state;
    }
    handlers[handler] = counts;
  }
  const stateOf = (entry) => (typeof entry === 'string' ? entry : entry?.state);
  const onlyFailing = (failing, passing) => Object.entries(specs)
    .filter(([, by]) => stateOf(by[failing]) === 'failed' && stateOf(by[passing]) === 'passed')
    .map(([spec, by]) => ({ spec, ...(by[failing].failure ?? by[failing]) }));
  const sorted = Object.fromEntries(Object.entries(specs).sort(([a], [b]) => a.localeCompare(b)));
  // Every failure of each handler, with its message (the vmm run's list of what fails and why).
  const failures = Object.fromEntries(Object.keys(runs).map((handler) => [handler, Object.entries(sorted)
    .filter(([, by]) => stateOf(by[handler]) === 'failed')
    .map(([spec, by]) => ({ spec, ...(by[handler].failure ?? {}) }))]));
  return {
    handlers,
    failures,
    kts_only_failures: runs[KTS_HANDLER] && runs[BASELINE_HANDLER] ? onlyFailing(KTS_HANDLER, BASELINE_HANDLER) : [],
    baseline_only_failures: runs[KTS_HANDLER] && runs[BASELINE_HANDLER] ? onlyFailing(BASELINE_HANDLER, KTS_HANDLER) : [],
    specs: sorted,
  };
}

function printSummary(comparison) {
  const handlerNames = Object.keys(comparison.handlers);
  console.log(formatTable(['handler', 'passed', 'failed', 'skipped', 'seconds'], handlerNames.map((handler) => {
    const counts = comparison.handlers[handler];
    return [handler, counts.passed, counts.failed, counts.skipped, counts.seconds];
  })));
  const pair = comparison.handlers[KTS_HANDLER] && comparison.handlers[BASELINE_HANDLER];
  const lists = pair
    ? [['fail only through kts', comparison.kts_only_failures], ['fail only on containerd\'s runc path', comparison.baseline_only_failures]]
    : Object.entries(comparison.failures).map(([handler, list]) => [`fail with ${handler}`, list]);
  for (const [title, list] of lists) {
    console.log(`\n${list.length} spec(s) ${title}${list.length ? ':' : ''}`);
    for (const failure of list) console.log(`  - ${failure.spec}\n      ${(failure.message ?? '').split('\n')[0].slice(0, 240)}`);
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      handlers: { type: 'string', default: `${KTS_HANDLER},${BASELINE_HANDLER}` },
      focus: { type: 'string' },
      out: { type: 'string', default: path.join(CRITEST_DIR, 'results.json') },
      dir: { type: 'string', default: '/var/lib/kts-critest' },
      bridge: { type: 'string', default: 'ktsct1' },
      subnet: { type: 'string', default: '10.88.215.0/24' },
      'keep-node': { type: 'boolean', default: false },
    },
  });
  const missing = peersMissing();
  if (missing) {
    console.error(`critest: cannot run: ${missing}`);
    process.exit(2);
  }
  const handlers = values.handlers.split(',').map((handler) => handler.trim()).filter(Boolean);
  const node = criNode({ dir: values.dir, bridge: values.bridge, subnet: values.subnet, handlers: [...new Set([KTS_HANDLER, ...handlers])] });
  const runDir = path.join(values.dir, 'critest');
  await node.down();
  mkdirSync(runDir, { recursive: true });
  const runs = {};
  const started = Date.now();
  try {
    await node.up();
    const workDir = mkdtempSync(path.join(values.dir, 'images-'));
    try {
      for (const [reference, recipe] of imageRecipes(workDir)) await importDerivedImage(node, reference, recipe);
    } finally {
      rmSync(workDir, { recursive: true, force: true });
    }
    for (const handler of handlers) {
      console.log(`critest: running the suite with runtime handler ${handler} (log: ${path.join(runDir, `${handler}.log`)})`);
      runs[handler] = await runCritest(node, handler, { runDir, focus: values.focus });
      // Whatever a failed spec left behind must not leak into the next handler's run.
      await node.crictlTimed(['rmp', '--all', '--force']);
    }
  } finally {
    if (!values['keep-node']) await node.down();
  }
  const comparison = compareRuns(runs);
  const results = {
    generated_at: new Date().toISOString(),
    critest: 'v1.37.0', containerd: 'v2.4.2',
    kts_handler: KTS_HANDLER, baseline_handler: BASELINE_HANDLER,
    focus: values.focus ?? null,
    total_seconds: Math.round((Date.now() - started) / 1000),
    skip_file: path.relative(REPO, SKIPS_FILE), skips: readSkips(),
    test_images_file: path.relative(REPO, TEST_IMAGES_FILE),
    ...comparison,
  };
  mkdirSync(path.dirname(values.out), { recursive: true });
  writeFileSync(values.out, `${JSON.stringify(results, null, 2)}\n`);
  printSummary(comparison);
  console.log(`\ncritest: results in ${values.out} (${results.total_seconds} s)`);
  process.exitCode = comparison.kts_only_failures.length > 0 ? 1 : 0;
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname);
if (isMain) await main();
