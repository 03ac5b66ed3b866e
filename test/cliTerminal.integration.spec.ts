// `kts exec -t` (issue 14) as an operator meets it: the kts CLI on a real pseudo-terminal (util-linux
// `script` gives it one) against a real daemon, a shell in a runc container on a terminal of its own:
// its size, its input, a resize, its exit code; what is left afterwards; and the refusals.
import { spawn, spawnSync, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { IMAGES_DIR, KTS, REPO, TestDaemon, canRunContainers, consolesUnder, ktsInShell, until, writeYaml } from './helpers/daemon.js';
import { freshPodYaml } from './helpers/podYaml.js';

function canRunTerminals(): string | undefined {
  const base = canRunContainers();
  if (base) return base;
  if (spawnSync('script', ['--version']).status !== 0) return 'needs util-linux script (it gives kts a pseudo-terminal)';
  return undefined;
}

const skip = canRunTerminals();
const WASM_SKIP = !existsSync(path.join(REPO, 'dist/native/kts-wasm-runner')) ? 'the wasm runner is not built (npm run build builds dist/native/kts-wasm-runner)'
  : !existsSync(path.join(IMAGES_DIR, 'wasm-sleep')) ? 'no wasm-sleep image (scripts/build-wasm-images.sh needs the wabt devDependency)' : undefined;

interface Session { child: ChildProcessWithoutNullStreams; output: () => string; exited: Promise<{ code: number | null; output: string }> }

describe.skipIf(skip)(`kts exec -t: a terminal in a container${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let containerId = '';
  /** TMPDIR of every kts run here: where kts makes its FIFOs' directory, so what it leaves is seen. */
  let ktsTmp = '';
  /** The test's own files: container configs, the resize signal. */
  let work = '';
  const sessions: ChildProcess[] = [];
  const env = () => ({ ...process.env, KTS_SOCKET: daemon.socket, TMPDIR: ktsTmp });
  const kts = `"${process.execPath}" "${KTS}"`;

  /**
   * Runs a shell command line on a new pseudo-terminal, in which "$KTS" is the kts command. What is
   * written to `child.stdin` is typed on the terminal; it stays open (at its end `script` would type a NUL).
   */
  function onTerminal(line: string): Session {
    const child = spawn('script', ['-qec', line.replaceAll('"$KTS"', kts), '/dev/null'], { env: env(), stdio: 'pipe' });
    sessions.push(child);
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const exited = new Promise<{ code: number | null; output: string }>((resolve) => child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    }));
    return { child, output: () => output, exited };
  }

  /** Runs a shell command line without a terminal, in which "$KTS" is the kts command. */
  const inShell = (line: string) => ktsInShell(daemon.socket, line, { TMPDIR: ktsTmp });

  /** Nothing of a finished session is left: no kts-console, no FIFO directory, no exec the container's record still holds. */
  async function expectNothingLeft(): Promise<void> {
    await until('every kts-console to exit', () => consolesUnder(daemon.root).length === 0, 5_000);
    expect(readdirSync(ktsTmp)).toEqual([]);
    const { events } = JSON.parse(daemon.ktsOk('history', '--json', containerId)) as { events: Array<{ type: string; payload: { execId?: string } }> };
    const execsOf = (type: string) => events.filter((event) => event.type === type).map((event) => event.payload.execId);
    expect(execsOf('ExecCreated').filter((execId) => !execsOf('ExecDeleted').includes(execId))).toEqual([]);
  }

  beforeAll(async () => {
    ktsTmp = mkdtempSync(path.join(tmpdir(), 'kts-tty-it-'));
    work = mkdtempSync(path.join(tmpdir(), 'kts-tty-work-'));
    await daemon.start();
    ({ containerId } = JSON.parse(daemon.ktsOk('run', '--json', freshPodYaml(), path.join(REPO, 'examples/busybox.yaml'))) as { containerId: string });
  }, 120_000);
  afterEach(() => {
    for (const child of sessions.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  afterAll(async () => {
    await daemon.cleanup();
    rmSync(ktsTmp, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('gives the command a terminal of the local size, exits with its exit code and leaves the local terminal as it found it', async () => {
    const line = `stty cols 100 rows 30; before=$(stty -g); "$KTS" exec -it ${containerId.slice(0, 12)} -- sh -c 'stty size; tty; exit 5'; code=$?; [ "$(stty -g)" = "$before" ] && echo local-terminal-restored; exit $code`;
    const { code, output } = await onTerminal(line).exited;
    expect(output).toContain('30 100');
    expect(output).toMatch(/\/dev\/pts\/\d+/);
    expect(output).toContain('local-terminal-restored');
    expect(code).toBe(5);
    await expectNothingLeft();
  });

  it('passes what is typed, as it is typed, to the command (a shell reads a line, then exits)', async () => {
    const session = onTerminal(`"$KTS" exec -it ${containerId} -- sh`);
    await until('the shell\'s prompt', () => session.output().includes('# '));
    session.child.stdin.write('read line; echo "got:$line"\r');
    session.child.stdin.write('hello there\r');
    await until('the line to come back', () => session.output().includes('got:hello there'));
    session.child.stdin.write('exit 3\r');
    const { code } = await session.exited;
    expect(code).toBe(3);
    await expectNothingLeft();
  });

  it('resizes the command\'s terminal when the local one is resized (SIGWINCH)', async () => {
    const resized = path.join(work, 'resize-now');
    // In the background, once told: the local terminal to 120x40, as a window resize does (the kernel sends SIGWINCH).
    const resizer = `(while [ ! -e ${resized} ]; do sleep 0.05; done; stty cols 120 rows 40 < /dev/tty) &`;
    const command = `stty size; while read x; do s=$(stty size); echo "now:$s"; [ "$s" = "40 120" ] && exit 0; done; exit 9`;
    const session = onTerminal(`stty cols 100 rows 30; ${resizer} "$KTS" exec -it ${containerId} -- sh -c '${command}'`);
    await until('the first size', () => session.output().includes('30 100'));
    writeYaml(work, 'resize-now', '');
    // Each Enter makes the command print its size again, until it sees the new one.
    const typing = setInterval(() => session.child.stdin.write('\r'), 200);
    const { code, output } = await session.exited.finally(() => clearInterval(typing));
    expect(output).toContain('now:40 120');
    expect(code).toBe(0);
    await expectNothingLeft();
  });

  it('copies the whole output, also what comes after the exit (it ends when the terminal closes, not when the command exits)', async () => {
    // The shell exits as soon as the job it leaves is deaf to the SIGHUP of the terminal's session ending; the job writes a second later.
    const command = `seq 1 50000; rm -f /tmp/deaf; (trap "" HUP; : > /tmp/deaf; sleep 1; echo late-output) & until [ -e /tmp/deaf ]; do sleep 0.01; done; exit 4`;
    const { code, output } = await onTerminal(`"$KTS" exec -t ${containerId} -- sh -c '${command}'`).exited;
    const lines = output.split(/\r*\n/).filter(Boolean);
    expect(lines.slice(0, 50000)).toEqual(Array.from({ length: 50000 }, (_, i) => String(i + 1)));
    expect(lines.slice(50000)).toEqual(['late-output']);
    expect(code).toBe(4);
    await expectNothingLeft();
  });

  it('without a local terminal (stdin a pipe) still gives the command one, as crictl does, and its end is the command\'s ^D', async () => {
    // cat reads its terminal line by line, so the ^D after the last line is its end of file.
    const result = await inShell(`printf 'first line\\nsecond line\\n' | "$KTS" exec -it ${containerId} -- sh -c 'tty; cat; echo "cat-ended:$?"'; echo "code:$?"`);
    expect(result.stdout).toMatch(/\/dev\/pts\/\d+/);
    expect(result.stdout).toContain('second line');
    expect(result.stdout).toContain('cat-ended:0');
    expect(result.stdout).toContain('code:0');
    await expectNothingLeft();
  });

  it('SIGTERM to kts kills the command, ends with 143 and leaves no console or FIFOs', async () => {
    const child = spawn(process.execPath, [KTS, 'exec', '-t', containerId, '--', 'sleep', '4242'], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    sessions.push(child);
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    await until('the command to run on its terminal', () => consolesUnder(daemon.root).length === 1);
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    await expectNothingLeft();
    expect(daemon.ktsOk('exec', containerId, '--', 'ps')).not.toContain('sleep 4242');
  });

  it('when whoever reads kts\'s output goes (| head), kts ends quietly and the command goes with it', async () => {
    const result = await inShell(`"$KTS" exec -t ${containerId} -- sh -c 'while :; do echo flood-of-lines; done' | head -3; echo "code:$?"`);
    expect(result.stdout).toContain('flood-of-lines');
    expect(result.stderr).toBe('');
    await expectNothingLeft();
    await until('the flood to be killed', () => !daemon.ktsOk('exec', containerId, '--', 'ps').includes('flood-of-lines'), 5_000);
  });

  it('bad input: an unknown container is one line and exit 1, with nothing left', async () => {
    const { code, output } = await onTerminal(`"$KTS" exec -it no-such-container -- sh`).exited;
    expect(output.trim().split('\n')).toEqual(['kts: no pod or container "no-such-container"']);
    expect(code).toBe(1);
    await expectNothingLeft();
  });

  it.skipIf(WASM_SKIP)(`a wasm pod refuses a terminal in one readable line, exit 1${WASM_SKIP ? ` (skipped: ${WASM_SKIP})` : ''}`, async () => {
    const container = writeYaml(work, 'nap.yaml', 'metadata: { name: nap }\nimage: { image: "wasm-sleep:latest" }\n');
    const run = JSON.parse(daemon.ktsOk('run', '--json', '--runtime', 'wasm', freshPodYaml(), container)) as { podId: string; containerId: string };
    try {
      const { code, output } = await onTerminal(`"$KTS" exec -it ${run.containerId} -- /sleep.wasm`).exited;
      expect(output.trim().split('\n')).toHaveLength(1);
      expect(output).toMatch(/^kts: .*wasm sandboxes give execs no terminal \(tty\); run it without one/);
      expect(code).toBe(1);
      await expectNothingLeft();
    } finally {
      daemon.kts('rm', run.podId);
    }
  });
});
