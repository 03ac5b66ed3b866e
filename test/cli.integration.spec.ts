// The kts CLI as an operator meets it (issue 14): each bug seen gets its regression test here, run
// against a real daemon on a real socket.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, TestDaemon, canRunContainers } from './helpers/daemon.js';

const KTS = path.join(REPO, 'bin/kts.js');
const skip = canRunContainers();

/** Runs `kts` with `args`, its stdout piped into `head -<lines>`, as a shell would. */
function ktsIntoHead(socket: string, args: string[], lines: number): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve) => {
    const shell = spawn('sh', ['-c', `"${process.execPath}" "${KTS}" ${args.join(' ')} | head -${lines}`], { env: { ...process.env, KTS_SOCKET: socket }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    shell.stdout.on('data', (chunk) => (stdout += chunk));
    shell.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => shell.kill('SIGKILL'), 20_000);
    shell.on('close', (code) => { clearTimeout(timer); resolve({ stdout, stderr, code }); });
  });
}

describe.skipIf(skip)(`the kts CLI${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let podId = '';
  let containerId = '';

  beforeAll(async () => {
    await daemon.start();
    const run = JSON.parse(daemon.ktsOk('run', '--json', path.join(REPO, 'examples/pod.yaml'), path.join(REPO, 'examples/busybox.yaml'))) as { podId: string; containerId: string };
    ({ podId, containerId } = run);
  }, 120_000);
  afterAll(() => daemon.cleanup(), 60_000);

  it('logs of an unknown container ends at once with one line naming it', async () => {
    const result = await daemon.ktsAsync('logs', 'no-such-container');
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe('kts: container no-such-container not found');
  });

  it('events piped into head exits quietly', async () => {
    for (let i = 0; i < 3; i++) daemon.ktsOk('pods');
    const result = await ktsIntoHead(daemon.socket, ['events'], 3);
    expect(result.stdout.trim().split('\n')).toHaveLength(3);
    expect(result.stderr).toBe('');
  });

  it('ps --pod takes the pod\'s name or a unique prefix of its id, and fails naming a pod it cannot find', () => {
    const byName = JSON.parse(daemon.ktsOk('ps', '--json', '--pod', 'busybox-pod')) as Array<{ id: string }>;
    expect(byName.map((c) => c.id)).toEqual([containerId]);
    const byPrefix = JSON.parse(daemon.ktsOk('ps', '--json', '--pod', podId.slice(0, 8))) as Array<{ id: string }>;
    expect(byPrefix.map((c) => c.id)).toEqual([containerId]);
    const unknown = daemon.kts('ps', '--pod', 'no-such-pod');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim()).toBe('kts: no pod or container "no-such-pod"');
  });

  it.each([
    [['events', '--after', 'abc'], '--after'],
    [['events', '--after', '-5'], '--after'],
    [['stop', '--timeout', 'abc', 'busybox-pod'], '--timeout'],
  ])('refuses a bad number: kts %j exits 2 with one line', (args, flag) => {
    const result = daemon.kts(...args);
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toContain(flag);
  });

  it('inspect of a container shows that container\'s own record', () => {
    const inspected = JSON.parse(daemon.ktsOk('inspect', containerId)) as { id: string; podId: string; state: string };
    expect(inspected).toMatchObject({ id: containerId, podId, state: 'running' });
  });

  it('--socket works before the command as well as after it', () => {
    const before = daemon.kts('--socket', daemon.socket, 'pods', '--json');
    expect(before.code).toBe(0);
    expect((JSON.parse(before.stdout) as Array<{ id: string }>).map((p) => p.id)).toContain(podId);
  });

  it('refuses a second pod with the same name, namespace, uid and attempt, naming the first', () => {
    const again = daemon.kts('run', path.join(REPO, 'examples/pod.yaml'), path.join(REPO, 'examples/busybox.yaml'));
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`already exists as pod ${podId}`);
    expect((JSON.parse(daemon.ktsOk('pods', '--json')) as unknown[]).length).toBe(1);
  });
});
