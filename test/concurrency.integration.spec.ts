// Different sandboxes run concurrently: 20 `kts run` at once all end with a ready pod and a
// running container, and removing them all leaves no process behind.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KTS, TestDaemon, canRunContainers, isAlive, writeYaml } from './helpers/daemon.js';

const skip = canRunContainers();
const run = promisify(execFile);
const PODS = 20;

describe.skipIf(skip)(`${PODS} pods started concurrently${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();

  beforeAll(() => daemon.start());
  afterAll(() => daemon.cleanup());

  it(`given ${PODS} concurrent \`kts run\`, then every pod is ready and every container running`, async () => {
    const starts = Array.from({ length: PODS }, (_, i) => {
      const pod = writeYaml(daemon.root, `pod-${i}.yaml`, `metadata:\n  name: crowd-${i}\n  namespace: load\n  uid: crowd-${i}\n`);
      const container = writeYaml(daemon.root, `ctr-${i}.yaml`, `metadata:\n  name: sleeper\nimage:\n  image: busybox:latest\ncommand: [sh, -c, "echo crowd-${i}; exec sleep 600"]\n`);
      return run(process.execPath, [KTS, 'run', '--json', pod, container], { env: { ...process.env, KTS_SOCKET: daemon.socket } });
    });
    const results = await Promise.all(starts);
    const ids = results.map((r) => JSON.parse(r.stdout) as { podId: string; containerId: string; pid: number });
    expect(new Set(ids.map((r) => r.podId)).size).toBe(PODS);

    const pods = JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; name: string; state: string }>;
    expect(pods.filter((p) => p.name.startsWith('crowd-') && p.state === 'ready')).toHaveLength(PODS);
    const containers = JSON.parse(daemon.ktsOk('ps', '--json')) as Array<{ id: string; state: string; pid: number }>;
    expect(containers.filter((c) => c.state === 'running')).toHaveLength(PODS);
    for (const c of containers) expect(isAlive(c.pid)).toBe(true);

    await Promise.all(ids.map((r) => run(process.execPath, [KTS, 'rm', r.podId], { env: { ...process.env, KTS_SOCKET: daemon.socket } })));
    expect(JSON.parse(daemon.ktsOk('pods', '--json'))).toEqual([]);
    for (const c of containers) expect(isAlive(c.pid)).toBe(false);
    expect(daemon.ktsOk('verify')).toMatch(/hash chain intact/);
  });
});
