// A private kts daemon for a bench: its own root, socket and config in a temporary directory, a
// gRPC client connected once (as containerd would hold one), the `kts` CLI pointed at it, and a
// stop() that leaves nothing behind but what the caller chose to keep running.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runChecked } from './spawn.mjs';
import { elapsedMs, sleep, startTimer } from './stats.mjs';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const KTS = path.join(REPO, 'bin/kts.js');
/** The node flags bin/kts.js's `#!/usr/bin/env -S node …` line gives `kts daemon` (a bounded young generation): the benches run what users run. */
export const DAEMON_NODE_FLAGS = readFileSync(KTS, 'utf8').split('\n')[0].split(/\s+/).filter((word) => word.startsWith('--'));
export const IMAGES_DIR = path.join(REPO, '.kts/test-images');
export const RESULTS_DIR = path.join(REPO, 'bench/results');

/** A module of the compiled daemon (`npm run build` first). */
export const dist = (file) => import(path.join(REPO, 'dist', file));

const { connectClient } = await dist('src/cli/client.js');

/** Builds (or finds up to date) busybox:latest and, with `wasm`, the wasm-* images in IMAGES_DIR. */
export function buildTestImages({ wasm = false } = {}) {
  execFileSync('bash', [path.join(REPO, 'scripts/build-images.sh'), IMAGES_DIR], { stdio: 'ignore' });
  if (wasm) execFileSync('bash', [path.join(REPO, 'scripts/build-wasm-images.sh'), IMAGES_DIR], { stdio: 'ignore' });
}

/** True in the script node was asked to run (not when it is imported by another bench). */
export const isMain = (moduleUrl) => process.argv[1] !== undefined && moduleUrl === pathToFileURL(path.resolve(process.argv[1])).href;

/** Writes `result` as bench/results/<name>.json and says so. */
export function writeResult(name, result) {
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(path.join(RESULTS_DIR, `${name}.json`), JSON.stringify(result, null, 2) + '\n');
  console.log(`wrote bench/results/${name}.json`);
}

/**
 * Merges one benchmark's headline keys (and their goals) into bench/results/latest.json, keeping what
 * the other benchmarks wrote there: compare.mjs writes the API keys, cri-start.mjs the cri_* ones.
 */
export function mergeLatest(keys, goals = {}) {
  const file = path.join(RESULTS_DIR, 'latest.json');
  const latest = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
  const merged = { ...latest, ...keys, goals: { ...latest.goals, ...goals } };
  writeResult('latest', merged);
}

/** True once something accepts connections on the unix socket. */
function socketAccepts(socket) {
  return new Promise((resolve) => {
    const probe = connect(socket);
    probe.once('connect', () => (probe.destroy(), resolve(true)));
    probe.once('error', () => resolve(false));
  });
}

/**
 * Polls every 5 ms until the daemon answers ListSandboxes on a fresh connection (a client created
 * before the socket exists would wait out gRPC's reconnect backoff instead), or throws if it exits.
 */
async function waitServing(daemon, socket, exited, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    if (exited.code !== undefined) throw new Error(`kts daemon exited with ${exited.code} before serving`);
    if (await socketAccepts(socket)) {
      const client = connectClient(socket);
      try {
        return { client, listed: (await client.admin.ListSandboxes({})).sandboxes.length };
      } catch {
        client.close();
      }
    }
    await sleep(5);
  }
  throw new Error(`kts daemon at ${socket} not serving after ${deadlineMs} ms`);
}

/**
 * Starts `node bin/kts.js daemon` on a private root. `config` holds extra TOML (sections after the
 * top-level keys), `top` extra top-level keys, `runc` extra `[runc]` keys (e.g. `max_concurrent_starts = 0`), `db` an existing event store to recover from, `nodeArgs` flags for node itself
 * (e.g. --cpu-prof), `nodeBinary` the node to run it with. Resolves once it serves, with `readyMs` (spawn → first answer).
 */
export async function startDaemon({ name = 'kts-bench', config = '', top = '', runc = '', db, env, nodeBinary = process.execPath, nodeArgs = [], stdio = 'ignore', deadlineMs = 60_000 } = {}) {
  const root = mkdtempSync(path.join(tmpdir(), `${name}-`));
  const socket = path.join(root, 'kts.sock');
  const configPath = path.join(root, 'config.toml');
  const topLevel = [`listen = "${socket}"`, `root = "${root}"`, ...(db ? [`db = "${db}"`] : []), 'log_level = "warn"', ...(top ? [top] : [])];
  writeFileSync(configPath, `${topLevel.join('\n')}\n[runc]\nroot = "${root}/runc"\n${runc}\n[images]\ndir = "${IMAGES_DIR}"\n${config}`);
  const started = startTimer();
  const daemon = spawn(nodeBinary, [...DAEMON_NODE_FLAGS, ...nodeArgs, KTS, 'daemon', '--config', configPath], { stdio, ...(env && { env: { ...process.env, ...env } }) });
  const exited = { code: undefined };
  const exit = new Promise((resolve) => daemon.once('exit', (code, signal) => resolve((exited.code = code ?? signal))));
  let serving;
  try {
    serving = await waitServing(daemon, socket, exited, deadlineMs);
  } catch (error) {
    daemon.kill('SIGKILL');
    await exit;
    rmSync(root, { recursive: true, force: true });
    throw error;
  }
  const ktsEnv = { ...process.env, KTS_SOCKET: socket };
  return {
    root, socket, pid: daemon.pid, client: serving.client, readyMs: elapsedMs(started), listedAtReady: serving.listed,
    /** `kts <args>` against this daemon, synchronously; its stdout. */
    kts: (...args) => execFileSync(process.execPath, [KTS, ...args], { env: ktsEnv, encoding: 'utf8' }),
    /** `kts <args>` as a child process, timed (spawn → exit). */
    ktsTimed: (...args) => runChecked(process.execPath, [KTS, ...args], { env: ktsEnv }),
    /** Shuts down every sandbox it still has (unless `keepSandboxes`), stops it, removes its root. */
    async stop({ keepSandboxes = false } = {}) {
      try {
        if (!keepSandboxes) await shutdownAll(serving.client);
      } finally {
        serving.client.close();
        daemon.kill('SIGTERM');
        await exit;
        rmSync(root, { recursive: true, force: true });
      }
    },
  };
}

/**
 * A pod as containerd starts one: Create + Start of a sandbox of `sandboxer`, then one container run
 * in it. Resolves with when each call returned, in ms since this one began.
 */
export async function apiPodStart(client, sandboxId, sandboxer, container) {
  const began = startTimer();
  await client.controller.Create({ sandboxId, sandboxer });
  const createdMs = elapsedMs(began);
  await client.controller.Start({ sandboxId });
  const startedMs = elapsedMs(began);
  await client.admin.RunContainer({ sandboxId, name: 'main', start: true, ...container });
  return { createdMs, startedMs, containerRunningMs: elapsedMs(began) };
}

/** busybox `sleep 600`: the container of every runc pod the benches start. */
export const SLEEPER = { image: 'busybox:latest', command: ['sleep', '600'] };

/** Controller.Shutdown of every sandbox the daemon knows, a few at a time. */
export async function shutdownAll(client) {
  const { sandboxes } = await client.admin.ListSandboxes({});
  const ids = sandboxes.map((sandbox) => String(sandbox.id));
  for (let i = 0; i < ids.length; i += 8) await Promise.all(ids.slice(i, i + 8).map((sandboxId) => client.controller.Shutdown({ sandboxId })));
}
