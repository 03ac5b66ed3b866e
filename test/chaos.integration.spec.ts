// Crash consistency by fault injection: the daemon SIGKILLs itself at a named crash point while
// pods are being created, started, stopped and removed; after each restart, the store and the host
// must agree, nothing may leak, every intent must have its outcome, and retried requests must not
// duplicate anything. KTS_CHAOS_CYCLES sets the number of crash cycles (default 200; the longer
// run is `KTS_CHAOS_CYCLES=2000 npx vitest run test/chaos.integration.spec.ts`).
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CRASH_POINTS } from '../src/engine/crashPoints.js';
import { busyboxRootfs, ociSpec } from './helpers/bundles.js';
import { TestDaemon, canRunContainers, mountsUnder } from './helpers/daemon.js';
import { adminClient, controllerClient, taskClient, type ProtoClient } from './helpers/protoClient.js';

const skip = canRunContainers();
const CYCLES = Number(process.env.KTS_CHAOS_CYCLES ?? 200);
const VERIFY_EVERY = 25;
const TRANSITIONAL = new Set(['starting', 'stopping', 'shuttingDown', 'creating', 'deleting']);

interface Clients { controller: ProtoClient; task: ProtoClient; admin: ProtoClient; close(): void }
function clients(socket: string): Clients {
  const c = { controller: controllerClient(socket), task: taskClient(socket), admin: adminClient(socket) };
  return { ...c, close: () => Object.values(c).forEach((client) => client.close()) };
}

/** kts-sandbox-init processes of one sandbox (its holder is a fork with the same command line, so not counted). */
function initsOf(root: string, sandboxId: string): number {
  const dir = path.join(root, 'sandboxes', sandboxId);
  const processes = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' }).split('\n')
    .map((line) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && m[3]!.includes('kts-sandbox-init --dir ') && (sandboxId ? m[3]!.includes(`--dir ${dir} `) : m[3]!.includes(`--dir ${dir}`)));
  const pids = new Set(processes.map((m) => m[1]));
  return processes.filter((m) => !pids.has(m[2])).length;
}

describe.skipIf(skip)(`crash at any instant, restart, nothing lost or leaked${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let lower: string;
  const podIds: string[] = [];
  const fired = new Map<string, number>();

  beforeAll(() => {
    lower = busyboxRootfs(path.join(daemon.root, 'image'));
  });
  afterAll(() => daemon.cleanup());

  /** One pod's life, as far as the daemon lets it get before it dies. */
  async function workload(api: Clients, cycle: number): Promise<void> {
    const pods = [`c${cycle}-a`, `c${cycle}-b`];
    podIds.push(...pods);
    // The previous cycle's crash may have come before its second pod existed.
    if (cycle > 0) await api.controller.Shutdown!({ sandbox_id: `c${cycle - 1}-b` }).catch((error: { code?: number }) => { if (error.code !== status.NOT_FOUND) throw error; });
    for (const sandboxId of pods) {
      await api.controller.Create!({ sandbox_id: sandboxId, sandboxer: 'runc' });
      const started = await api.controller.Start!({ sandbox_id: sandboxId });
      await api.admin.Prepare!({
        sandbox_id: sandboxId, container_id: `${sandboxId}-ctr`, spec_json: JSON.stringify(ociSpec(sandboxId, started.pid, ['sleep', '600'])),
        rootfs_json: [JSON.stringify({ type: 'bind', source: lower, options: ['rbind', 'ro'] })],
      });
      await api.task.Start!({ id: `${sandboxId}-ctr` });
    }
    await api.controller.Stop!({ sandbox_id: pods[0], timeout_secs: 1 });
    await api.controller.Shutdown!({ sandbox_id: pods[0] });
  }

  async function crashCycle(cycle: number): Promise<void> {
    const point = CRASH_POINTS[cycle % CRASH_POINTS.length]!;
    const occurrence = 1 + ((cycle * 7) % 5);
    try {
      await daemon.start({ KTS_CRASH_AT: `${point}:${occurrence}` });
    } catch {
      // It crashed while recovering: that is a cycle too.
    }
    const api = clients(daemon.socket);
    await workload(api, cycle).catch((error: { code?: number }) => {
      if (error.code !== status.UNAVAILABLE && error.code !== status.CANCELLED && error.code !== status.INTERNAL) throw error;
    });
    api.close();
    await daemon.kill();
    const line = /crash point (\S+) reached/.exec(daemon.logs)?.[1];
    if (line) fired.set(line, (fired.get(line) ?? 0) + 1);
  }

  /** Starts a clean daemon and checks every invariant; then retries and removes every pod. */
  async function verify(): Promise<void> {
    await daemon.start();
    const api = clients(daemon.socket);
    try {
      const sandboxes = (await api.admin.ListSandboxes!({})).sandboxes as Array<{ id: string; state: string; pid: number }>;
      const containers = (await api.admin.ListContainers!({})).containers as Array<{ id: string; state: string }>;
      expect(sandboxes.filter((s) => TRANSITIONAL.has(s.state))).toEqual([]);
      expect(containers.filter((c) => TRANSITIONAL.has(c.state))).toEqual([]);
      for (const sandbox of sandboxes) {
        expect(initsOf(daemon.root, sandbox.id), `inits of ${sandbox.id} (${sandbox.state})`).toBe(sandbox.state === 'ready' ? 1 : 0);
      }
      for (const sandboxId of podIds) await retryLikeAClient(api, sandboxId);
      for (const sandboxId of podIds) {
        await api.controller.Shutdown!({ sandbox_id: sandboxId }).catch((error: { code?: number }) => expect(error.code).toBe(status.NOT_FOUND));
      }
      expect((await api.admin.ListSandboxes!({})).sandboxes).toEqual([]);
      expect((await api.admin.Verify!({})).ok).toBe(true);
    } finally {
      api.close();
      await daemon.stop();
    }
    expectNothingLeft();
    expectEveryIntentHasAnOutcome();
    podIds.length = 0;
  }

  /** A client that lost its answers retries Create and Start with the same ids: no duplicate sandbox. */
  async function retryLikeAClient(api: Clients, sandboxId: string): Promise<void> {
    await api.controller.Create!({ sandbox_id: sandboxId, sandboxer: 'runc' }).catch((error: { code?: number }) => expect(error.code).toBe(status.ALREADY_EXISTS));
    await api.controller.Start!({ sandbox_id: sandboxId }).catch((error: { code?: number }) => expect([status.FAILED_PRECONDITION, status.NOT_FOUND]).toContain(error.code));
    expect(initsOf(daemon.root, sandboxId)).toBeLessThanOrEqual(1);
  }

  function expectNothingLeft(): void {
    expect(mountsUnder(daemon.root)).toEqual([]);
    const sandboxesDir = path.join(daemon.root, 'sandboxes');
    expect(existsSync(sandboxesDir) ? readdirSync(sandboxesDir) : []).toEqual([]);
    const runcList = execFileSync('runc', ['--root', daemon.runcRoot, 'list', '-q'], { encoding: 'utf8' }).trim();
    expect(runcList).toBe('');
    expect(initsOf(daemon.root, '')).toBe(0);
  }

  function expectEveryIntentHasAnOutcome(): void {
    const db = new Database(daemon.db, { readonly: true });
    try {
      const lastStates = db.prepare(`SELECT stream_id, state_after FROM events e WHERE stream_version = (SELECT MAX(stream_version) FROM events WHERE stream_id = e.stream_id)`).all() as Array<{ stream_id: string; state_after: string }>;
      expect(lastStates.filter((row) => TRANSITIONAL.has(row.state_after))).toEqual([]);
    } finally {
      db.close();
    }
  }

  it(`survives ${CYCLES} crash/restart cycles with zero invariant violations, crashing at every point`, async () => {
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      await crashCycle(cycle);
      if ((cycle + 1) % VERIFY_EVERY === 0 || cycle === CYCLES - 1) await verify();
    }
    console.log(`crash points fired: ${JSON.stringify(Object.fromEntries(fired))}`);
    for (const point of CRASH_POINTS) expect(fired.get(point) ?? 0, `crashes at ${point}`).toBeGreaterThan(0);
  }, 1_800_000);
});
