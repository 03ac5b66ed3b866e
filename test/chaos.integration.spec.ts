// Crash consistency by fault injection: the daemon SIGKILLs itself at a named crash point while
// pods are being created, started, stopped and removed; after each restart, the store and the host
// must agree, nothing may leak, every intent must have its outcome, and retried requests must not
// duplicate anything. Mixed pods: KTS_CHAOS_CYCLES crash cycles (default 200; scripts/chaos.sh is the
// long run), each a runc and a wasm pod, and every 20th a VM pod too, started, stopped and removed at
// once in the cycles that end in a random SIGKILL; runc pods with CNI networks: 50 cycles; VM pods:
// one cycle per crash point (each costs a guest boot under TCG).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CRASH_POINTS } from '../src/engine/crashPoints.js';
import { busyboxRootfs, ociSpec } from './helpers/bundles.js';
import { REPO, TestDaemon, canRunContainers, mountsUnder } from './helpers/daemon.js';
import { adminClient, controllerClient, taskClient, type ProtoClient } from './helpers/protoClient.js';

const GUEST_DIR = process.env.KTS_GUEST_DIR ?? '/var/lib/kts/guest';
const WAT2WASM = path.join(REPO, 'node_modules/.bin/wat2wasm');
const skip = canRunContainers();
const skipVm = skip ?? (existsSync(path.join(GUEST_DIR, 'rootfs.img')) && existsSync(path.join(REPO, 'dist/agent/main.mjs')) ? undefined : `needs the guest image in ${GUEST_DIR} (scripts/setup.sh builds it)`);
const skipWasm = skip ?? (existsSync(path.join(REPO, 'dist/native/kts-wasm-runner')) && existsSync(WAT2WASM) ? undefined : 'needs kts-wasm-runner and wat2wasm (npm ci, npm run build)');
const skipMixed = skipWasm ?? skipVm;
const skipCni = skip ?? (existsSync('/usr/lib/cni/bridge') ? undefined : 'needs the CNI plugins in /usr/lib/cni (scripts/setup.sh installs containernetworking-plugins)');
const CYCLES = Number(process.env.KTS_CHAOS_CYCLES ?? 200);
const VERIFY_EVERY = 25;
const TRANSITIONAL = new Set(['starting', 'stopping', 'shuttingDown', 'creating', 'deleting']);

interface Clients { controller: ProtoClient; task: ProtoClient; admin: ProtoClient; close(): void }
function clients(socket: string): Clients {
  const c = { controller: controllerClient(socket), task: taskClient(socket), admin: adminClient(socket) };
  return { ...c, close: () => Object.values(c).forEach((client) => client.close()) };
}

/** Command lines of the host processes matching `pattern` whose parent does not match too (a forked holder is not counted twice). */
function topProcessArgs(pattern: (args: string) => boolean): string[] {
  const processes = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' }).split('\n')
    .map((line) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && pattern(m[3]!));
  const pids = new Set(processes.map((m) => m[1]));
  return processes.filter((m) => !pids.has(m[2])).map((m) => m[3]!);
}

type PodKind = 'runc' | 'wasm' | 'vmm';

/** What differs between the suites of this test. */
interface Kind {
  name: string;
  cycles: number;
  /** The kind of each pod a cycle starts; the last one is stopped and removed by the next cycle. */
  pods(cycle: number): PodKind[];
  extraToml: string;
  /** Some cycles SIGKILL the daemon from outside at a random instant while pods start, stop and go, all at once. */
  randomKills: boolean;
  /** Pods get CNI networks on this bridge, with host-local's allocations in ipamDir (the test's own subnet). */
  network?: { bridge: string; subnetPrefix: string; ipamDir: string };
}

/**
 * The host processes of this daemon's pods, each with the pod it belongs to by what its command line
 * names: runc pods' kts-sandbox-init, VM pods' QEMU, and wasm containers' kts-wasm-runner (one per module).
 * `holds`: whether a pod of that kind holds one process for as long as it is ready.
 */
const POD_PROCESSES: Record<PodKind, { owner(root: string, args: string): string | undefined; holds: boolean }> = {
  runc: { owner: (root, args) => args.includes(`kts-sandbox-init --dir ${path.join(root, 'sandboxes')}/`) ? /--dir \S+\/sandboxes\/(\S+)/.exec(args)![1] : undefined, holds: true },
  vmm: { owner: (root, args) => args.startsWith('qemu-system') && args.includes(`-pidfile ${path.join(root, 'vms')}/`) ? /-pidfile \S+\/vms\/([^/\s]+)\//.exec(args)![1] : undefined, holds: true },
  wasm: { owner: (root, args) => args.includes('kts-wasm-runner') && args.includes(`--scratch ${path.join(root, 'wasm', 'sandboxes')}/`) ? /--scratch \S+\/wasm\/sandboxes\/([^/\s]+)\//.exec(args)![1] : undefined, holds: false },
};

/** Each pod process of this daemon (a forked holder is not counted twice), as the pod it belongs to. */
function processOwners(root: string): string[] {
  return topProcessArgs((args) => Object.values(POD_PROCESSES).some((p) => p.owner(root, args) !== undefined))
    .map((args) => Object.values(POD_PROCESSES).map((p) => p.owner(root, args)).find(Boolean)!);
}

const vmmToml = `[hypervisor]\nguest_dir = "${GUEST_DIR}"\naccelerator = "tcg"\n`;
const runcKind: Kind = { name: 'runc', cycles: CYCLES, pods: () => ['runc', 'runc'], extraToml: '', randomKills: true };
// Which of the two is stopped and removed alternates; every 20th cycle (a random-kill one) boots a VM pod as well.
const mixedKind: Kind = {
  name: 'mixed', cycles: CYCLES, extraToml: vmmToml, randomKills: true,
  pods: (cycle) => [...(cycle % 2 === 0 ? ['runc', 'wasm'] as const : ['wasm', 'runc'] as const), ...(cycle % 20 === 14 ? ['vmm'] as const : [])],
};
const vmmKind: Kind = { name: 'vmm', cycles: CRASH_POINTS.length, pods: () => ['vmm'], extraToml: vmmToml, randomKills: false };

// Its own bridge and subnet, made by the bridge plugin and removed after: pods only ever reach each other there.
const cniNetwork = { bridge: 'ktschaos0', subnetPrefix: '10.88.214', ipamDir: path.join(tmpdir(), `kts-chaos-ipam-${process.pid}`) };
const runcCniKind: Kind = {
  ...runcKind, cycles: Math.min(CYCLES, 50), network: cniNetwork,
  extraToml: ['[network]', 'cni = true', `cni_conf_dir = "${cniNetwork.ipamDir}/conf"`, `network_name = "kts-chaos"`, `bridge = "${cniNetwork.bridge}"`,
    `subnet = "${cniNetwork.subnetPrefix}.0/24"`, `ipam_data_dir = "${cniNetwork.ipamDir}"`].join('\n'),
};

describe.skipIf(skipMixed)(`runc, wasm and VM pods together: crash at any instant, restart, nothing lost or leaked${skipMixed ? ` (skipped: ${skipMixed})` : ''}`, () => chaosSuite(mixedKind));
describe.skipIf(skipCni)(`runc pods with CNI networks: crash at any instant, restart, no netns or address leaked${skipCni ? ` (skipped: ${skipCni})` : ''}`, () => chaosSuite(runcCniKind));
describe.skipIf(skipVm)(`VM pods: crash at every point, restart, nothing lost or leaked${skipVm ? ` (skipped: ${skipVm})` : ''}`, () => chaosSuite(vmmKind));

function chaosSuite(kind: Kind): void {
  const daemon = new TestDaemon(kind.extraToml);
  let lower: string;
  const podIds: string[] = [];
  const podKinds = new Map<string, PodKind>();
  let previousLast: string | undefined;
  let wasmRootfs: string;
  const fired = new Map<string, number>();
  /** Containers that came up, by pod kind: each kind the suite names must have run, not just been asked for. */
  const ran = new Map<PodKind, number>();

  const ipForwardBefore = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8');

  beforeAll(() => {
    lower = busyboxRootfs(path.join(daemon.root, 'image'));
    wasmRootfs = path.join(daemon.root, 'wasm-image');
    mkdirSync(wasmRootfs);
    execFileSync(WAT2WASM, [path.join(REPO, 'src/backends/wasm/testdata/sleep.wat'), '-o', path.join(wasmRootfs, 'sleep.wasm')]);
  });
  afterAll(async () => {
    await daemon.cleanup();
    if (!kind.network) return;
    // The bridge plugin makes the bridge and turns on forwarding; CNI DEL undoes neither.
    spawnSync('ip', ['link', 'del', kind.network.bridge], { stdio: 'ignore' });
    writeFileSync('/proc/sys/net/ipv4/ip_forward', ipForwardBefore);
    rmSync(kind.network.ipamDir, { recursive: true, force: true });
  });

  /** The container each pod runs: a shell's sleep (runc, VM) or the sleep module (wasm), on a read-only bind of its rootfs. */
  function container(sandboxId: string, podKind: PodKind, pid: number) {
    const spec = podKind === 'wasm'
      ? { ociVersion: '1.0.2', process: { args: ['/sleep.wasm', '600'], cwd: '/', user: { uid: 0, gid: 0 } }, root: { path: 'rootfs' }, mounts: [], annotations: { 'io.kubernetes.cri.sandbox-id': sandboxId } }
      : ociSpec(sandboxId, pid, ['sleep', '600']);
    const rootfs = podKind === 'wasm' ? wasmRootfs : lower;
    return { sandbox_id: sandboxId, container_id: `${sandboxId}-ctr`, spec_json: JSON.stringify(spec), rootfs_json: [JSON.stringify({ type: 'bind', source: rootfs, options: ['rbind', 'ro'] })] };
  }

  /**
   * One cycle's pods, as far as the daemon lets them get before it dies: the previous cycle's last pod is
   * removed, each pod is created and started with a container, then the first is stopped and removed.
   * `together`: the removal and all starts at once.
   */
  async function workload(api: Clients, cycle: number, together = false, onStarted: (podKind: PodKind) => void = () => {}): Promise<void> {
    const kinds = kind.pods(cycle);
    const pods = kinds.map((podKind, i) => `c${cycle}-${'abc'[i]}`);
    pods.forEach((sandboxId, i) => podKinds.set(sandboxId, kinds[i]!));
    podIds.push(...pods);
    // The previous cycle's crash may have come before its last pod existed.
    const previous = previousLast;
    previousLast = pods[pods.length - 1];
    const removePrevious = async () => {
      if (previous) await api.controller.Shutdown!({ sandbox_id: previous }).catch((error: { code?: number }) => { if (error.code !== status.NOT_FOUND) throw error; });
    };
    const run = async (sandboxId: string) => {
      await api.controller.Create!({ sandbox_id: sandboxId, sandboxer: podKinds.get(sandboxId) });
      const started = await api.controller.Start!({ sandbox_id: sandboxId });
      await api.admin.Prepare!(container(sandboxId, podKinds.get(sandboxId)!, started.pid));
      await api.task.Start!({ id: `${sandboxId}-ctr` });
      ran.set(podKinds.get(sandboxId)!, (ran.get(podKinds.get(sandboxId)!) ?? 0) + 1);
      onStarted(podKinds.get(sandboxId)!);
    };
    if (together) {
      await Promise.all([removePrevious(), ...pods.map(run)]);
    } else {
      await removePrevious();
      for (const sandboxId of pods) await run(sandboxId);
    }
    if (pods.length < 2) return;
    await api.controller.Stop!({ sandbox_id: pods[0], timeout_secs: 1 });
    await api.controller.Shutdown!({ sandbox_id: pods[0] });
  }

  /** How many pod processes a pod has, of this daemon's; '' = all of them. */
  function hostProcesses(sandboxId: string): number {
    return processOwners(daemon.root).filter((owner) => sandboxId === '' || owner === sandboxId).length;
  }

  /**
   * Two-sided, after every restart: each pod process, pod directory, runc container and mount of this
   * daemon belongs to a live record, and each ready pod has its process. The records are read from the
   * store file, read-only: a call to the daemon would count towards its armed crash point.
   */
  function expectHostMatchesRecords(): void {
    const db = new Database(daemon.db, { readonly: true });
    let sandboxes: Array<{ id: string; state: string }>;
    let containers: Array<{ id: string; state: string }>;
    try {
      sandboxes = db.prepare(`SELECT id, state FROM sandboxes WHERE state NOT IN ('removed', 'absent')`).all() as typeof sandboxes;
      containers = db.prepare(`SELECT id, state FROM containers WHERE state NOT IN ('deleted', 'absent')`).all() as typeof containers;
    } finally {
      db.close();
    }
    const live = new Set(sandboxes.map((s) => s.id));
    const holding = new Set(sandboxes.filter((s) => s.state === 'ready' || s.state === 'unhealthy').map((s) => s.id));
    const liveContainers = new Set(containers.map((c) => c.id));
    const owners = processOwners(daemon.root);
    for (const owner of owners) expect(holding, `a pod process of ${owner}, whose record is ${sandboxes.find((s) => s.id === owner)?.state ?? 'gone'}`).toContain(owner);
    for (const sandbox of sandboxes.filter((s) => s.state === 'ready' && POD_PROCESSES[podKinds.get(s.id)!].holds)) expect(owners.filter((owner) => owner === sandbox.id), `processes of ready pod ${sandbox.id}`).toHaveLength(1);
    for (const dir of ['sandboxes', 'vms', 'bundles', 'wasm/sandboxes']) {
      const full = path.join(daemon.root, dir);
      for (const entry of existsSync(full) ? readdirSync(full) : []) expect(live, `${full}/${entry}`).toContain(entry);
    }
    const runcIds = execFileSync('runc', ['--root', daemon.runcRoot, 'list', '-q'], { encoding: 'utf8' }).split('\n').filter(Boolean);
    for (const id of runcIds) expect(liveContainers, `runc container ${id}`).toContain(id);
    const ids = [...live, ...liveContainers];
    for (const mount of mountsUnder(daemon.root)) expect(ids.some((id) => mount.split('/').includes(id)), `mount ${mount}`).toBe(true);
  }

  async function crashCycle(cycle: number): Promise<void> {
    // Every fifth cycle of a kind that has them (5 and 8 points share no factor: every point still comes up),
    // no crash point but a SIGKILL from outside at a random instant.
    const randomKill = kind.randomKills && cycle % 5 === 4;
    const point = CRASH_POINTS[cycle % CRASH_POINTS.length]!;
    // A cycle spawns one pod process per runc or VM pod (a wasm pod has none of its own): process.spawned is reached that often.
    const spawning = kind.pods(cycle).filter((podKind) => POD_PROCESSES[podKind].holds).length;
    const occurrence = point === 'process.spawned' ? 1 + (cycle % spawning) : kind.name === 'vmm' ? 1 + (cycle % 2) : 1 + ((cycle * 7) % 5);
    const started = await daemon.start(randomKill ? {} : { KTS_CRASH_AT: `${point}:${occurrence}` }).then(() => true, () => false);
    const api = clients(daemon.socket);
    // Recovery has finished (or it crashed while recovering: that is a cycle too): the host must match the records.
    if (started) expectHostMatchesRecords();
    // A VM pod boots for seconds under TCG: every other cycle with one is killed while it boots, the rest just after it served.
    let killer: NodeJS.Timeout | undefined;
    const armKiller = () => (killer = setTimeout(() => void daemon.kill(), Math.floor(Math.random() * 1500)));
    const killAfterBoot = kind.pods(cycle).includes('vmm') && cycle % 40 >= 20;
    if (randomKill && !killAfterBoot) armKiller();
    await workload(api, cycle, randomKill, (podKind) => { if (randomKill && killAfterBoot && podKind === 'vmm') armKiller(); }).catch((error: { code?: number }) => {
      if (error.code !== status.UNAVAILABLE && error.code !== status.CANCELLED && error.code !== status.INTERNAL) throw error;
    });
    clearTimeout(killer);
    api.close();
    await daemon.kill();
    const line = randomKill ? 'random SIGKILL' : /crash point (\S+) reached/.exec(daemon.logs)?.[1];
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
        const holds = sandbox.state === 'ready' && POD_PROCESSES[podKinds.get(sandbox.id)!].holds;
        expect(hostProcesses(sandbox.id), `host processes of ${sandbox.id} (${sandbox.state})`).toBe(holds ? 1 : 0);
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
    await api.controller.Create!({ sandbox_id: sandboxId, sandboxer: podKinds.get(sandboxId) }).catch((error: { code?: number }) => expect(error.code).toBe(status.ALREADY_EXISTS));
    await api.controller.Start!({ sandbox_id: sandboxId }).catch((error: { code?: number }) => expect([status.FAILED_PRECONDITION, status.NOT_FOUND]).toContain(error.code));
    expect(hostProcesses(sandboxId)).toBeLessThanOrEqual(1);
  }

  function expectNothingLeft(): void {
    expect(mountsUnder(daemon.root)).toEqual([]);
    const sandboxesDir = path.join(daemon.root, 'sandboxes');
    expect(existsSync(sandboxesDir) ? readdirSync(sandboxesDir) : []).toEqual([]);
    const runcList = execFileSync('runc', ['--root', daemon.runcRoot, 'list', '-q'], { encoding: 'utf8' }).trim();
    expect(runcList).toBe('');
    expect(hostProcesses('')).toBe(0);
    for (const dir of ['vms', 'wasm/sandboxes']) {
      const full = path.join(daemon.root, dir);
      expect(existsSync(full) ? readdirSync(full) : [], full).toEqual([]);
    }
    if (!kind.network) return;
    const networkDir = path.join(daemon.root, 'network');
    expect(existsSync(networkDir) ? readdirSync(networkDir) : []).toEqual([]);
    const { ipamDir, subnetPrefix } = kind.network;
    const allocations = path.join(ipamDir, 'kts-chaos');
    expect(existsSync(allocations) ? readdirSync(allocations).filter((name) => name.startsWith(`${subnetPrefix}.`)) : []).toEqual([]);
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

  it(`survives ${kind.cycles} crash/restart cycles with zero invariant violations, crashing at every point`, async () => {
    for (let cycle = 0; cycle < kind.cycles; cycle++) {
      await crashCycle(cycle);
      if ((cycle + 1) % VERIFY_EVERY === 0 || cycle === kind.cycles - 1) await verify();
    }
    console.log(`crash points fired: ${JSON.stringify(Object.fromEntries(fired))}`);
    console.log(`containers started: ${JSON.stringify(Object.fromEntries(ran))}`);
    for (const point of CRASH_POINTS) expect(fired.get(point) ?? 0, `crashes at ${point}`).toBeGreaterThan(0);
    // Where random kills let some cycles run on (a crash point always fires before the VM suite's one container starts).
    if (kind.randomKills) for (const podKind of new Set(Array.from({ length: kind.cycles }, (_, cycle) => kind.pods(cycle)).flat())) expect(ran.get(podKind) ?? 0, `${podKind} containers started`).toBeGreaterThan(0);
  }, 1_800_000);
}
