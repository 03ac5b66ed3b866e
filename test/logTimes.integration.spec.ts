// `kts logs --timestamps` and `--since` (issue 14): kts keeps a container's output in CRI's log format,
// a time a line, written by a kts-log-pump of the container's own that outlives the daemon; these
// probe it against a real daemon, runc and `kts run`, and with hostile output.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KTS, REPO, TestDaemon, canRunContainers, until, writeYaml } from './helpers/daemon.js';
import { freshPodYaml } from './helpers/podYaml.js';

const skip = canRunContainers();
const wasmRunner = path.join(REPO, 'dist/native/kts-wasm-runner');
const skipWasm = skip ?? (existsSync(wasmRunner) ? undefined : 'no kts-wasm-runner (bash scripts/build-native.sh)');

const RFC3339_NANO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/;

/** `<time> <text>` lines as `kts logs --timestamps` prints them. */
function timedLines(output: string): Array<{ time: string; millis: number; text: string }> {
  return output.split('\n').filter((line) => line !== '').map((line) => {
    const space = line.indexOf(' ');
    const time = line.slice(0, space);
    expect(time).toMatch(RFC3339_NANO);
    return { time, millis: Date.parse(time), text: line.slice(space + 1) };
  });
}

describe.skipIf(skip)(`kts logs --timestamps and --since (runc)${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let seq = 0;

  /** `kts run` of a busybox pod running `script`; its container id and log path. */
  function run(name: string, script: string): { containerId: string; logPath: string } {
    const dir = daemon.root;
    const pod = writeYaml(dir, `${name}-pod.yaml`, `metadata: { name: ${name}, namespace: default, uid: ${name}-uid-${++seq} }\n`);
    const container = writeYaml(dir, `${name}-container.yaml`, `metadata: { name: ${name} }\nimage: { image: busybox:latest }\ncommand: ["sh", "-c"]\nargs: [${JSON.stringify(script)}]\n`);
    const result = JSON.parse(daemon.ktsOk('run', '--json', pod, container)) as { podId: string; containerId: string };
    return { containerId: result.containerId, logPath: path.join(daemon.root, 'bundles', result.podId, result.containerId, 'container.log') };
  }

  /** `kts logs` with output larger than execFile's 1 MiB buffer. */
  function bigLogs(...args: string[]): string {
    const result = spawnSync(process.execPath, [KTS, 'logs', ...args], { env: { ...process.env, KTS_SOCKET: daemon.socket }, encoding: 'latin1', maxBuffer: 64 * 1024 * 1024 });
    expect(result.status, result.stderr).toBe(0);
    return result.stdout;
  }

  beforeAll(() => daemon.start(), 60_000);
  afterAll(() => daemon.cleanup(), 60_000);

  it('times each line as it was written: increasing and plausible; --since a time and --tail 1 --timestamps', async () => {
    const startedAt = Date.now();
    const { containerId, logPath } = run('ticker', 'for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 1; done; echo done; exec sleep 600');
    await until('the last tick', () => daemon.ktsOk('logs', containerId).includes('done'), 30_000);
    const lines = timedLines(daemon.ktsOk('logs', '--timestamps', containerId));
    expect(lines.map((line) => line.text)).toEqual(['tick 1', 'tick 2', 'tick 3', 'tick 4', 'tick 5', 'tick 6', 'done']);
    for (const [i, line] of lines.entries()) {
      expect(line.millis).toBeGreaterThanOrEqual(startedAt - 1000);
      expect(line.millis).toBeLessThanOrEqual(Date.now());
      if (i > 0) expect(line.millis).toBeGreaterThan(lines[i - 1]!.millis);
    }
    // A second apart, as the container slept.
    expect(lines[5]!.millis - lines[0]!.millis).toBeGreaterThanOrEqual(4500);
    // Without --timestamps the output is what the container wrote; the file itself holds CRI records.
    expect(daemon.ktsOk('logs', containerId)).toBe('tick 1\ntick 2\ntick 3\ntick 4\ntick 5\ntick 6\ndone\n');
    expect(readFileSync(logPath, 'utf8').split('\n')[0]).toMatch(/^\S+Z stdout F tick 1$/);

    // --since as an absolute time between two lines.
    const since = new Date(lines[3]!.millis - 1).toISOString();
    expect(daemon.ktsOk('logs', '--since', since, containerId)).toBe('tick 4\ntick 5\ntick 6\ndone\n');
    expect(daemon.ktsOk('logs', '--tail', '1', '--timestamps', containerId)).toBe(`${lines[6]!.time} done\n`);
  });

  it('--since 2s returns only what was written in the last two seconds', async () => {
    const { containerId } = run('recent', 'echo old; sleep 4; echo new; exec sleep 600');
    await until('the new line', () => daemon.ktsOk('logs', containerId).includes('new'), 30_000);
    expect(daemon.ktsOk('logs', '--since', '2s', containerId)).toBe('new\n');
    expect(daemon.ktsOk('logs', '--since', '1h', containerId)).toBe('old\nnew\n');
    const bad = daemon.kts('logs', '--since', 'yesterday', containerId);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('--since');
  });

  it('-f --timestamps follows with times to the container\'s exit, stdout and stderr alike', async () => {
    const { containerId } = run('followed', 'sleep 1; for i in 1 2 3; do echo "out $i"; echo "err $i" >&2; sleep 0.5; done; printf "no newline at the end"');
    const followed = await daemon.ktsAsync('logs', '-f', '--timestamps', containerId);
    expect(followed.code).toBe(0);
    const lines = timedLines(followed.stdout);
    expect(lines.map((line) => line.text).sort()).toEqual(['err 1', 'err 2', 'err 3', 'no newline at the end', 'out 1', 'out 2', 'out 3']);
    expect(followed.stdout.endsWith('no newline at the end')).toBe(true);
  });

  it('keeps, with their times, lines written while the daemon was stopped', async () => {
    const { containerId } = run('survivor', 'i=0; while [ $i -lt 40 ]; do echo "beat $i"; i=$((i+1)); sleep 0.25; done; echo finished; exec sleep 600');
    await until('the first beats', () => daemon.ktsOk('logs', containerId).includes('beat 2'), 15_000);
    await daemon.stop();
    const downFrom = Date.now();
    await sleep(3000);
    const downUntil = Date.now();
    await daemon.start();
    await until('the last line', () => daemon.ktsOk('logs', containerId).includes('finished'), 30_000);
    const lines = timedLines(daemon.ktsOk('logs', '--timestamps', containerId));
    expect(lines.map((line) => line.text)).toEqual([...Array.from({ length: 40 }, (_, i) => `beat ${i}`), 'finished']);
    // Timed as they were written, not when a daemon came back: several fall in the downtime.
    const duringDowntime = lines.filter((line) => line.millis > downFrom && line.millis < downUntil);
    expect(duringDowntime.length).toBeGreaterThanOrEqual(8);
    for (let i = 1; i < lines.length; i++) expect(lines[i]!.millis).toBeGreaterThanOrEqual(lines[i - 1]!.millis);
  });

  it('survives hostile output: a 1 MiB line without newline, binary bytes, then a normal line', async () => {
    const script = 'head -c 1048576 /dev/zero | tr "\\0" "x"; printf "\\n"; head -c 65536 /dev/urandom; printf "\\nafter the noise\\n"; exec sleep 600';
    const { containerId, logPath } = run('hostile', script);
    await until('the last line', () => daemon.ktsOk('logs', '--tail', '1', containerId).includes('after the noise'), 30_000);
    const raw = bigLogs(containerId);
    expect(raw.startsWith(`${'x'.repeat(1048576)}\n`)).toBe(true);
    expect(raw.endsWith('\nafter the noise\n')).toBe(true);
    // Every byte the container wrote comes back (the random ones too).
    expect(raw.length).toBe(1048576 + 1 + 65536 + '\nafter the noise\n'.length);
    // The long line is split into bounded records, P then F; every record line is bounded.
    const records = readFileSync(logPath).toString('latin1').split('\n').filter((line) => line !== '');
    expect(Math.max(...records.map((line) => line.length))).toBeLessThanOrEqual(16 * 1024 + 64);
    expect(records.slice(0, 64).every((line) => / stdout P x+$/.test(line))).toBe(true);
    expect(records[64]).toMatch(/ stdout F $/);
    // With --timestamps, the long line is one line with one time.
    const timed = bigLogs('--timestamps', containerId).split('\n');
    expect(timed[0]).toMatch(new RegExp(`^\\S+Z x{1048576}$`));
    expect(timed.at(-2)).toMatch(/^\S+Z after the noise$/);
  });
});

describe.skipIf(skipWasm)(`kts logs --timestamps (wasm)${skipWasm ? ` (skipped: ${skipWasm})` : ''}`, () => {
  const daemon = new TestDaemon();
  beforeAll(() => daemon.start(), 60_000);
  afterAll(() => daemon.cleanup(), 60_000);

  it('times a wasm module\'s lines', async () => {
    const startedAt = Date.now();
    const run = JSON.parse(daemon.ktsOk('run', '--json', '--runtime', 'wasm', freshPodYaml(), path.join(REPO, 'examples/wasm-hello.yaml'))) as { containerId: string };
    await until('the module\'s exit', () => daemon.ktsOk('ps', '-a', '--json').includes('"stopped"'), 30_000);
    const lines = timedLines(daemon.ktsOk('logs', '--timestamps', run.containerId));
    expect(lines[0]!.text).toBe('hello from wasm');
    expect(lines.some((line) => line.text === 'env: GREETING=kuasar-ts')).toBe(true);
    for (const line of lines) expect(line.millis).toBeGreaterThanOrEqual(startedAt - 1000);
    expect(daemon.ktsOk('logs', '--since', '1m', run.containerId)).toContain('hello from wasm\n');
  });
});
