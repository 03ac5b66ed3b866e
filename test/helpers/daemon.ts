import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const KTS = path.join(REPO, 'bin/kts.js');
/** The node flags bin/kts.js's `#!/usr/bin/env -S node …` line gives `kts daemon`: tests run the daemon as users do. */
export const DAEMON_NODE_FLAGS = readFileSync(KTS, 'utf8').split('\n')[0]!.split(/\s+/).filter((word) => word.startsWith('--'));
/** Built once per run, before any spec, by test/globalSetup.ts. */
export const IMAGES_DIR = path.join(REPO, '.kts/test-images');

export function canRunContainers(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (runc, namespaces, mounts)';
  if (!existsSync(path.join(REPO, 'dist/src/cli/main.js'))) return 'needs a build: run "npm run build" (scripts/test.sh does)';
  try {
    execFileSync('runc', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'needs runc (apt-get install runc; scripts/setup.sh does)';
  }
  return undefined;
}

/** Why microVM tests cannot run here (no QEMU, no agent bundle, or what canRunContainers says), or undefined. */
export function canRunVms(): string | undefined {
  const base = canRunContainers();
  if (base) return base;
  try {
    execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'needs qemu-system-x86_64 (apt-get install qemu-system-x86; scripts/setup.sh does)';
  }
  if (!existsSync(path.join(REPO, 'dist/agent/main.mjs'))) return 'needs the guest agent bundle: run "npm run build"';
  return undefined;
}

/** Builds busybox:latest and the wasm-* images into IMAGES_DIR (each script skips what is up to date). */
export function buildTestImages(): void {
  for (const script of ['build-images.sh', 'build-wasm-images.sh']) {
    execFileSync('bash', [path.join(REPO, 'scripts', script), IMAGES_DIR], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
}

/** A real `kts daemon` process with its own root, socket, database and runc root. */
export class TestDaemon {
  readonly root: string;
  readonly socket: string;
  readonly db: string;
  readonly runcRoot: string;
  process?: ChildProcess;
  private output = '';

  /**
   * `extraToml` is appended to the config, e.g. a `[hypervisor]` section; `options.db` puts the store elsewhere;
   * `options.socket` the socket; `options.stateRoot` is the config's `root` (default: this.root, which always
   * holds config.toml); `options.defaultRuncRoot` leaves `[runc] root` out, so the daemon's default applies;
   * `options.topToml` adds top-level keys (before any table), e.g. `socket_group = "kts"`.
   */
  constructor(extraToml = '', options: { db?: string; socket?: string; stateRoot?: string; defaultRuncRoot?: boolean; topToml?: string } = {}) {
    this.root = mkdtempSync(path.join(tmpdir(), 'kts-it-'));
    this.socket = options.socket ?? path.join(this.root, 'kts.sock');
    this.db = options.db ?? path.join(this.root, 'kts.db');
    this.runcRoot = path.join(options.stateRoot ?? this.root, 'runc');
    writeFileSync(path.join(this.root, 'config.toml'), [
      `listen = "${this.socket}"`, `root = "${options.stateRoot ?? this.root}"`, `db = "${this.db}"`, 'log_level = "debug"', 'stop_timeout_seconds = 2', options.topToml ?? '',
      ...(options.defaultRuncRoot ? [] : ['[runc]', `root = "${this.runcRoot}"`]), '[images]', `dir = "${IMAGES_DIR}"`, extraToml,
    ].join('\n'));
  }

  /** `env` is added to the daemon's environment, e.g. `{ KTS_CRASH_AT: 'effect.before:2' }`. */
  async start(env: Record<string, string> = {}): Promise<void> {
    this.output = '';
    const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, KTS, 'daemon', '--config', path.join(this.root, 'config.toml')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    this.process = child;
    child.stdout!.on('data', (d) => (this.output += d));
    child.stderr!.on('data', (d) => (this.output += d));
    const deadline = Date.now() + 20_000;
    while (!this.output.includes('kts daemon serving')) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`daemon exited with ${child.exitCode ?? child.signalCode}:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`daemon did not start in 20 s:\n${this.output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Resolves when the daemon process has exited (at once if it has). */
  exited(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => child.once('exit', () => resolve()));
  }

  /** Starts a daemon that is expected to refuse to start: resolves with its exit code and everything it printed. */
  async startExpectingFailure(): Promise<{ code: number | null; output: string }> {
    const started = await this.start().then(() => true, () => false);
    if (started) throw new Error(`daemon started, but it was expected to refuse:\n${this.output}`);
    const child = this.process!;
    if (child.exitCode === null && child.signalCode === null) throw new Error(`daemon neither served nor exited:\n${this.output}`);
    // 'close' comes after 'exit' once stdout and stderr are drained: the output is complete.
    if (!child.stdout!.closed || !child.stderr!.closed) await new Promise((resolve) => child.once('close', resolve));
    return { code: child.exitCode, output: this.output };
  }

  get logs(): string {
    return this.output;
  }

  /** SIGKILL: no cleanup runs, exactly like a crash. */
  async kill(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
    if (child.exitCode === null && child.signalCode === null) await this.kill();
  }

  /** Runs the kts CLI against this daemon. */
  kts(...args: string[]): { stdout: string; stderr: string; code: number } {
    try {
      const stdout = execFileSync(process.execPath, [KTS, ...args], { env: { ...process.env, KTS_SOCKET: this.socket }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      return { stdout, stderr: '', code: 0 };
    } catch (error) {
      const e = error as { stdout: string; stderr: string; status: number };
      return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: e.status ?? 1 };
    }
  }

  /** Runs the kts CLI against this daemon without blocking the test, e.g. to kill the daemon while it serves. */
  ktsAsync(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [KTS, ...args], { env: { ...process.env, KTS_SOCKET: this.socket }, encoding: 'utf8' }, (error, stdout, stderr) => {
        resolve({ stdout, stderr, code: error ? (typeof error.code === 'number' ? error.code : 1) : 0 });
      });
    });
  }

  ktsOk(...args: string[]): string {
    const result = this.kts(...args);
    if (result.code !== 0) throw new Error(`kts ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
    return result.stdout;
  }

  /** Removes every pod left, stops the daemon and deletes its root. */
  async cleanup(): Promise<void> {
    if (this.process && this.process.exitCode === null && this.process.signalCode === null) {
      const pods = JSON.parse(this.kts('pods', '--json').stdout || '[]') as Array<{ id: string }>;
      for (const pod of pods) this.kts('rm', pod.id);
    }
    await this.stop();
    await rm(this.root, { recursive: true, force: true });
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
  } catch {
    return false;
  }
}

export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((line) => line.split(' ')[4] ?? '').filter((mountPoint) => mountPoint.startsWith(dir));
}

export async function until<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export function writeYaml(dir: string, name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** Pids of the QEMU processes whose command line names a path under `root` (a test daemon's VMs). */
export function qemuProcessesUnder(root: string): number[] {
  const found = spawnSync('pgrep', ['-f', `qemu-system-x86_64.*${root}/`], { encoding: 'utf8' });
  return found.stdout.split('\n').filter(Boolean).map(Number);
}

/** What a container wrote, from the CRI-format log kts keeps (each record's text; a newline after F records). */
export function logText(file: string): string {
  return readFileSync(file, 'latin1').split('\n').filter((line) => line !== '')
    .map((line) => line.replace(/^\S+ (?:stdout|stderr) ([FP])(?: |$)(.*)$/s, (_, tag: string, text: string) => (tag === 'F' ? `${text}\n` : text))).join('');
}

/** Runs a shell command line in which "$KTS" is the kts command, as an operator's shell would; `env` is added to its environment. */
export function ktsInShell(socket: string, line: string, env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve) => {
    const shell = spawn('sh', ['-c', line.replaceAll('"$KTS"', `"${process.execPath}" "${KTS}"`)], { env: { ...process.env, KTS_SOCKET: socket, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    shell.stdout!.on('data', (chunk) => (stdout += chunk));
    shell.stderr!.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => shell.kill('SIGKILL'), 20_000);
    shell.on('close', (code) => { clearTimeout(timer); resolve({ stdout, stderr, code }); });
  });
}

/** kts-console processes serving terminals of the daemon under `root` (their console socket and resize FIFO live there). */
export function consolesUnder(root: string): number[] {
  return readdirSync('/proc').filter((entry) => /^\d+$/.test(entry)).map(Number).filter((pid) => {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return path.basename(argv[0] ?? '') === 'kts-console' && argv.some((arg) => arg.startsWith(root));
    } catch {
      return false;
    }
  });
}
