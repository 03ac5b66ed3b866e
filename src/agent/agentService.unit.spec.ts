import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Server, ServerCredentials, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AgentClient, AGENT_PROTO_FILE } from '../backends/vmm/agentClient.js';
import { alreadyExists, internal, isKtsError, notFound, type ErrorKind } from '../core/errors.js';
import type {
  ContainerSpec, ContainerStats, ContainerStatus, OciProcess, ProcessExit, SandboxSpec, Sandboxer, StdioPaths,
} from '../core/sandboxer.js';
import type { OciSpec } from '../oci/containerSpec.js';
import { silentLogger } from '../telemetry/logger.js';
import { activeTraceIds, initTracing, shutdownTracing, withSpan } from '../telemetry/tracing.js';
import { loadAgentDefinition } from '../agentProtocol/agentProto.js';
import { agentService, guestContainerConfig, REQUESTED_OCI_VERSION } from './agentService.js';
import type { GuestNetwork } from './guestNetwork.js';

const HOLDER_PID = 4242;
const EXITED_AT = new Date('2025-01-02T03:04:05.678Z');
const STATS: ContainerStats = {
  cpuUsageNanos: 123_456_789, cpuUserNanos: 100, cpuKernelNanos: 23, memoryUsageBytes: 4096,
  // cgroup's "no limit" does not fit a double exactly; it must still come through as a number.
  memoryLimitBytes: 9_223_372_036_854_771_712, pidsCurrent: 3, pidsLimit: 0,
};

type Call = { method: string; args: unknown[]; traceId: string | undefined };

/** A Sandboxer that records each call (with the trace it ran in) and can fail or hang a method on demand. */
class FakeSandboxer implements Sandboxer {
  readonly kind = 'fake';
  readonly calls: Call[] = [];
  readonly failures = new Map<string, Error>();
  readonly hanging = new Set<string>();
  status: ContainerStatus = { state: 'stopped', pid: 77, exit: { exitStatus: 137, exitedAt: EXITED_AT } };

  private async record(method: string, ...args: unknown[]): Promise<void> {
    this.calls.push({ method, args, traceId: activeTraceIds().traceId });
    if (this.hanging.has(method)) await new Promise(() => undefined);
    const failure = this.failures.get(method);
    if (failure) throw failure;
  }

  callsOf(method: string): unknown[][] {
    return this.calls.filter((call) => call.method === method).map((call) => call.args);
  }

  async startSandbox(spec: SandboxSpec) { await this.record('startSandbox', spec); return { pid: HOLDER_PID }; }
  async stopSandbox(sandboxId: string, options: { timeoutMs: number }): Promise<ProcessExit> {
    await this.record('stopSandbox', sandboxId, options);
    return { exitStatus: 0, exitedAt: EXITED_AT };
  }
  async sandboxStatus(sandboxId: string) { await this.record('sandboxStatus', sandboxId); return { alive: true, pid: HOLDER_PID }; }
  async waitSandboxExit(): Promise<ProcessExit> { throw internal('not used by the agent'); }
  async removeSandbox(): Promise<void> { throw internal('not used by the agent'); }
  async createContainer(spec: ContainerSpec) { await this.record('createContainer', spec); return { pid: 100 }; }
  async startContainer(sandboxId: string, containerId: string) { await this.record('startContainer', sandboxId, containerId); return { pid: 100 }; }
  async killContainer(sandboxId: string, containerId: string, signal: number, all: boolean) { await this.record('killContainer', sandboxId, containerId, signal, all); }
  async deleteContainer(sandboxId: string, containerId: string) { await this.record('deleteContainer', sandboxId, containerId); }
  async containerStatus(sandboxId: string, containerId: string) { await this.record('containerStatus', sandboxId, containerId); return this.status; }
  async execProcess(sandboxId: string, containerId: string, execId: string, process: OciProcess, stdio: StdioPaths) {
    await this.record('execProcess', sandboxId, containerId, execId, process, stdio);
    return { pid: 200 };
  }
  async waitProcessExit(sandboxId: string, pid: number): Promise<ProcessExit> {
    await this.record('waitProcessExit', sandboxId, pid);
    return { exitStatus: 3, exitedAt: EXITED_AT };
  }
  async pids(sandboxId: string, containerId: string) { await this.record('pids', sandboxId, containerId); return [100, 101]; }
  async stats(sandboxId: string, containerId: string) { await this.record('stats', sandboxId, containerId); return STATS; }
  async close() {}
}

const definition = loadAgentDefinition(AGENT_PROTO_FILE);

async function serve(socket: string, implementation: UntypedServiceImplementation): Promise<Server> {
  const server = new Server();
  server.addService(definition, implementation);
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socket}`, ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())));
  return server;
}

async function rejection(promise: Promise<unknown>): Promise<{ kind: ErrorKind; message: string }> {
  const error = await promise.then(() => undefined, (caught: unknown) => caught);
  if (!isKtsError(error)) throw new Error(`expected a KtsError, got ${String(error)}`);
  return { kind: error.kind, message: error.message };
}

function hostConfig(args: string[]): OciSpec {
  return {
    ociVersion: '1.0.2',
    process: { args, cwd: '/', env: ['PATH=/bin'] },
    root: { path: 'rootfs' },
    linux: {
      namespaces: [
        { type: 'pid', path: '/proc/999/ns/pid' }, { type: 'network', path: '/var/run/netns/cni-1' },
        { type: 'ipc' }, { type: 'mount' }, { type: 'cgroup', path: '/proc/999/ns/cgroup' },
      ],
      cgroupsPath: '/kts/pod/ctr',
    },
  };
}

describe('agent service through AgentClient', () => {
  let dir: string;
  let shareDir: string;
  let bundlesDir: string;
  let fake: FakeSandboxer;
  let server: Server;
  let client: AgentClient;
  let socket: string;
  let appliedNetworks: GuestNetwork[];

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kts-agent-'));
    shareDir = path.join(dir, 'share');
    bundlesDir = path.join(dir, 'bundles');
    socket = path.join(dir, 'agent.sock');
    fake = new FakeSandboxer();
    appliedNetworks = [];
    const applyNetwork = async (network: GuestNetwork) => void appliedNetworks.push(network);
    server = await serve(socket, agentService(fake, { logger: silentLogger(), agentVersion: 'test-1', shareDir, bundlesDir, applyNetwork }));
    client = new AgentClient(socket, { callTimeoutMs: 5000 });
  });

  afterEach(async () => {
    client.close();
    server.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  });

  afterAll(() => shutdownTracing());

  async function writeBundle(containerId: string, config: OciSpec = hostConfig(['echo', 'hi'])): Promise<string> {
    const bundle = path.join(shareDir, 'c', containerId);
    await mkdir(path.join(bundle, 'rootfs'), { recursive: true });
    await writeFile(path.join(bundle, 'config.json'), JSON.stringify(config));
    return bundle;
  }

  it('answers Check before and after StartPod', async () => {
    const before = await client.check();
    expect(before).toMatchObject({ agentVersion: 'test-1' });
    expect(before.pod).toBeUndefined();
    expect(before.uptimeSeconds).toBeGreaterThan(0);
    await client.startPod({ sandboxId: 'pod-1', hostname: 'web' });
    expect((await client.check()).pod).toEqual({ sandboxId: 'pod-1', pid: HOLDER_PID, alive: true });
  });

  it('given the pod netns\'s interfaces and routes, when ConfigureNetwork, then the guest applies them once', async () => {
    const network = {
      interfaces: [{ name: 'eth0', mac: '0A:58:0A:58:00:05', mtu: 1500, addresses: ['10.88.0.5/16'] }],
      routes: [{ destination: 'default', gateway: '10.88.0.1', device: 'eth0', family: 'inet' }],
    };
    await client.configureNetwork(network);
    expect(appliedNetworks).toEqual([{
      interfaces: [{ name: 'eth0', mac: '0a:58:0a:58:00:05', mtu: 1500, addresses: ['10.88.0.5/16'] }],
      routes: [{ destination: 'default', gateway: '10.88.0.1', device: 'eth0', family: 'inet' }],
    }]);
    expect(await rejection(client.configureNetwork(network))).toEqual({ kind: 'failed_precondition', message: 'agent ConfigureNetwork: the guest network was configured already' });
  });

  it('given a route through a device the request does not name, when ConfigureNetwork, then INVALID_ARGUMENT and nothing is applied', async () => {
    const network = { interfaces: [], routes: [{ destination: 'default', gateway: '10.88.0.1', device: 'eth0', family: 'inet' }] };
    expect((await rejection(client.configureNetwork(network))).kind).toBe('invalid_argument');
    expect(appliedNetworks).toEqual([]);
  });

  it('starts the one pod of the guest in the guest network namespace', async () => {
    expect(await client.startPod({ sandboxId: 'pod-1', hostname: 'web' })).toEqual({ pid: HOLDER_PID });
    expect(fake.callsOf('startSandbox')).toEqual([[{ sandboxId: 'pod-1', name: 'pod-1', namespace: '', hostname: 'web', annotations: {}, netnsPath: `/proc/${process.pid}/ns/net` }]]);
    expect(await rejection(client.startPod({ sandboxId: 'pod-2', hostname: 'web' }))).toEqual({
      kind: 'failed_precondition', message: 'agent StartPod: this guest already runs pod pod-1',
    });
  });

  it('creates a container from the share bundle, joined to the pod holder', async () => {
    await client.startPod({ sandboxId: 'pod-1', hostname: 'web' });
    const bundle = await writeBundle('ctr-1');
    const stdout = path.join(bundle, 'stdout');
    expect(await client.createContainer({ containerId: 'ctr-1', bundle, stdio: { stdout } })).toEqual({ pid: 100 });

    const localBundle = path.join(bundlesDir, 'ctr-1');
    expect(fake.callsOf('createContainer')).toEqual([[{ sandboxId: 'pod-1', containerId: 'ctr-1', bundleDir: localBundle, rootfsMounts: [], stdio: { stdout } }]]);
    const written = JSON.parse(await readFile(path.join(localBundle, 'config.json'), 'utf8')) as OciSpec;
    expect(written.root.path).toBe(path.join(bundle, 'rootfs'));
    expect(written.linux?.namespaces).toEqual([
      { type: 'pid', path: `/proc/${HOLDER_PID}/ns/pid` }, { type: 'network', path: `/proc/${HOLDER_PID}/ns/net` },
      { type: 'ipc', path: `/proc/${HOLDER_PID}/ns/ipc` }, { type: 'uts', path: `/proc/${HOLDER_PID}/ns/uts` },
      { type: 'mount' }, { type: 'cgroup' },
    ]);
    expect(written.linux?.cgroupsPath).toBe('/kts/pod/ctr');

    expect((await rejection(client.createContainer({ containerId: 'ctr-1', bundle, stdio: {} }))).kind).toBe('already_exists');
    await client.deleteContainer('ctr-1');
    await expect(readFile(path.join(localBundle, 'config.json'))).rejects.toThrow(/ENOENT/);
  });

  it('round-trips every container call', async () => {
    await client.startPod({ sandboxId: 'pod-1', hostname: 'web' });
    const stdout = path.join(shareDir, 'c', 'ctr-1', 'exec', 'e1', 'stdout');
    const process = { args: ['sh', '-c', 'exit 3'], cwd: '/' };

    expect(await client.startContainer('ctr-1')).toEqual({ pid: 100 });
    await client.killContainer('ctr-1', 15, true);
    expect(await client.containerStatus('ctr-1')).toEqual({ state: 'stopped', pid: 77, exit: { exitStatus: 137, exitedAt: EXITED_AT } });
    fake.status = { state: 'created' };
    expect(await client.containerStatus('ctr-1')).toEqual({ state: 'created' });
    expect(await client.execProcess({ containerId: 'ctr-1', execId: 'e1', process, stdio: { stdout } })).toEqual({ pid: 200 });
    expect(await client.waitProcess(200)).toEqual({ exitStatus: 3, exitedAt: EXITED_AT });
    expect(await client.pids('ctr-1')).toEqual([100, 101]);
    expect(await client.stats('ctr-1')).toEqual(STATS);
    expect(await client.stopPod(1500)).toEqual({ exitStatus: 0, exitedAt: EXITED_AT });

    expect(fake.callsOf('killContainer')).toEqual([['pod-1', 'ctr-1', 15, true]]);
    expect(fake.callsOf('execProcess')).toEqual([['pod-1', 'ctr-1', 'e1', process, { stdout }]]);
    expect(fake.callsOf('waitProcessExit')).toEqual([['pod-1', 200]]);
    expect(fake.callsOf('stopSandbox')).toEqual([['pod-1', { timeoutMs: 1500 }]]);
  });

  it('refuses container calls before StartPod with FAILED_PRECONDITION', async () => {
    for (const call of [client.startContainer('ctr-1'), client.pids('ctr-1'), client.waitProcess(5), client.stopPod(0)].map(rejection)) {
      expect(await call).toMatchObject({ kind: 'failed_precondition', message: expect.stringContaining('StartPod first') });
    }
    expect(fake.calls.filter((call) => call.method !== 'sandboxStatus')).toEqual([]);
  });

  it('refuses bad input with INVALID_ARGUMENT before the sandboxer sees it', async () => {
    await client.startPod({ sandboxId: 'pod-1', hostname: 'web' });
    const bundle = await writeBundle('ctr-1');
    const bad = [
      client.startPod({ sandboxId: '../etc', hostname: 'web' }),
      client.startContainer('../ctr'),
      client.createContainer({ containerId: 'ctr-1', bundle: '/etc', stdio: {} }),
      client.createContainer({ containerId: 'ctr-1', bundle: `${shareDir}/c/../../x`, stdio: {} }),
      client.createContainer({ containerId: 'ctr-1', bundle: 'relative/bundle', stdio: {} }),
      client.createContainer({ containerId: 'ctr-1', bundle, stdio: { stdout: '/var/log/escape' } }),
      client.createContainer({ containerId: 'ctr-2', bundle: path.join(shareDir, 'c', 'missing'), stdio: {} }),
      client.killContainer('ctr-1', 0, false),
      client.killContainer('ctr-1', 65, false),
      client.execProcess({ containerId: 'ctr-1', execId: 'e1', process: { cwd: '/' }, stdio: {} }),
      client.waitProcess(0),
      client.stopPod(24 * 3600 * 1000),
    ].map(rejection);
    for (const call of bad) expect((await call).kind).toBe('invalid_argument');
    expect(fake.callsOf('createContainer')).toEqual([]);
  });

  it('refuses a bundle whose root leaves the share', async () => {
    await client.startPod({ sandboxId: 'pod-1', hostname: 'web' });
    const bundle = await writeBundle('ctr-1', { ...hostConfig(['true']), root: { path: '../../../../etc' } });
    expect(await rejection(client.createContainer({ containerId: 'ctr-1', bundle, stdio: {} }))).toMatchObject({
      kind: 'invalid_argument', message: expect.stringContaining('leaves'),
    });
  });

  it('keeps the kind of a sandboxer error', async () => {
    await client.startPod({ sandboxId: 'pod-1', hostname: 'web' });
    fake.failures.set('startContainer', notFound('container ctr-9 not found in sandbox pod-1'));
    fake.failures.set('pids', alreadyExists('odd'));
    fake.failures.set('stats', new Error('runc exploded'));
    expect(await rejection(client.startContainer('ctr-9'))).toEqual({ kind: 'not_found', message: 'agent StartContainer: container ctr-9 not found in sandbox pod-1' });
    expect((await rejection(client.pids('ctr-1'))).kind).toBe('already_exists');
    expect(await rejection(client.stats('ctr-1'))).toEqual({ kind: 'internal', message: 'agent Stats: runc exploded' });
  });

  it('gives up on a hung call at the client deadline', async () => {
    await client.startPod({ sandboxId: 'pod-1', hostname: 'web' });
    fake.hanging.add('pids');
    const impatient = new AgentClient(socket, { callTimeoutMs: 300 });
    const started = Date.now();
    try {
      expect(await rejection(impatient.pids('ctr-1'))).toEqual({ kind: 'deadline_exceeded', message: 'agent Pids did not answer within 300 ms' });
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      impatient.close();
    }
  });

  it('waits for a process without a deadline until close() cancels it', async () => {
    await client.startPod({ sandboxId: 'pod-1', hostname: 'web' });
    fake.hanging.add('waitProcessExit');
    const impatient = new AgentClient(socket, { callTimeoutMs: 100 });
    const waiting = rejection(impatient.waitProcess(100));
    const outcome = await Promise.race([waiting, new Promise((resolve) => setTimeout(resolve, 600, 'still waiting'))]);
    expect(outcome).toBe('still waiting');
    impatient.close();
    expect(await waiting).toEqual({ kind: 'unavailable', message: 'agent WaitProcess: the client was closed' });
    expect((await rejection(impatient.check())).kind).toBe('unavailable');
  });

  it("carries the caller's trace into the agent", async () => {
    initTracing('kts-test');
    await client.startPod({ sandboxId: 'pod-1', hostname: 'web' });
    const traceId = await withSpan('test.caller', {}, async () => {
      await client.startContainer('ctr-1');
      return activeTraceIds().traceId;
    });
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(fake.calls.find((call) => call.method === 'startContainer')?.traceId).toBe(traceId);
  });

  it('waits for an agent that is not up yet, and gives up at the deadline', async () => {
    const lateSocket = path.join(dir, 'late.sock');
    const late = new AgentClient(lateSocket, { callTimeoutMs: 1000 });
    try {
      expect(await rejection(late.waitForReady(700))).toMatchObject({ kind: 'deadline_exceeded', message: expect.stringContaining('did not answer Check within 700 ms') });
      const lateServer = new Promise<Server>((resolve) => setTimeout(() => resolve(serve(lateSocket, agentService(new FakeSandboxer(), {
        logger: silentLogger(), agentVersion: 'late', shareDir, bundlesDir,
      }))), 500));
      try {
        expect((await late.waitForReady(10_000)).agentVersion).toBe('late');
      } finally {
        (await lateServer).forceShutdown();
      }
    } finally {
      late.close();
    }
  });
});

describe('AgentClient against a misbehaving guest', () => {
  let dir: string;
  let server: Server;
  let client: AgentClient;

  /** Unary handlers that answer with whatever the test gives them. */
  function answering(replies: Record<string, object>): UntypedServiceImplementation {
    return Object.fromEntries(Object.entries(replies).map(([method, reply]) => [method, (_call: unknown, callback: (error: null, reply: object) => void) => callback(null, reply)]));
  }

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kts-agent-evil-'));
    const socket = path.join(dir, 'agent.sock');
    server = await serve(socket, answering({
      // 1.1 M pids of 4 varint bytes each: more than the 4 MiB a reply may have.
      Pids: { pids: new Array(1_100_000).fill(4_000_000) },
      StartContainer: { pid: 0 },
      ContainerStatus: { state: 'zombie', pid: 5 },
      WaitProcess: { exitStatus: 300, exitedAtMs: 1 },
      Check: { uptimeSeconds: 1, agentVersion: 'x'.repeat(1000) },
      ExecProcess: { pid: 5_000_000 },
    }));
    client = new AgentClient(socket, { callTimeoutMs: 10_000 });
  });

  afterEach(async () => {
    client.close();
    server.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a reply larger than the limit', async () => {
    expect(await rejection(client.pids('ctr-1'))).toMatchObject({ kind: 'internal', message: expect.stringMatching(/^agent Pids: .*larger than max/) });
  });

  it('refuses replies whose fields are out of range', async () => {
    expect(await rejection(client.startContainer('ctr-1'))).toEqual({ kind: 'internal', message: 'agent StartContainer sent an invalid reply: pid is 0, not an integer in 1-4194304' });
    expect((await rejection(client.containerStatus('ctr-1'))).message).toContain('state is "zombie", not one of created, running, stopped, absent');
    expect((await rejection(client.waitProcess(5))).message).toContain('exitStatus is 300');
    expect((await rejection(client.check())).message).toContain('agentVersion is "xxxx');
    expect((await rejection(client.execProcess({ containerId: 'c', execId: 'e', process: { args: ['true'] }, stdio: {} }))).message).toContain('pid is 5000000');
  });

  it('maps an unimplemented method to UNIMPLEMENTED', async () => {
    expect((await rejection(client.stats('ctr-1'))).kind).toBe('unimplemented');
  });
});

describe('guestContainerConfig', () => {
  it('joins the holder, keeps a private mount namespace and drops host namespace paths', () => {
    const config = guestContainerConfig(hostConfig(['true']), 7, '/run/kts/share/c/x', '/run/kts/share');
    expect(config.root.path).toBe('/run/kts/share/c/x/rootfs');
    expect(config.linux?.namespaces?.map((ns) => `${ns.type}:${ns.path ?? ''}`)).toEqual([
      'pid:/proc/7/ns/pid', 'network:/proc/7/ns/net', 'ipc:/proc/7/ns/ipc', 'uts:/proc/7/ns/uts', 'mount:', 'cgroup:',
    ]);
  });

  it('adds the joined namespaces to a spec that lists none', () => {
    const { linux: _linux, ...bare } = hostConfig(['true']);
    const config = guestContainerConfig(bare, 7, '/run/kts/share/c/x', '/run/kts/share');
    expect(config.linux?.namespaces).toHaveLength(5);
  });

  it.each([
    ['1.2.1', '1.1.0', { [REQUESTED_OCI_VERSION]: '1.2.1' }],
    ['2.0.0', '1.1.0', { [REQUESTED_OCI_VERSION]: '2.0.0' }],
    ['1.1.0', '1.1.0', undefined],
    ['1.0.2', '1.0.2', undefined],
    ['not-a-version', 'not-a-version', undefined],
  ])('given a spec of version %s and a runtime that takes up to 1.1, then it runs as %s', (asked, runs, annotations) => {
    const config = guestContainerConfig({ ...hostConfig(['true']), ociVersion: asked }, 7, '/run/kts/share/c/x', '/run/kts/share', '1.1.0');
    expect(config.ociVersion).toBe(runs);
    expect(config.annotations).toEqual(annotations);
  });

  it('given no ceiling (runc), then the version is left as it is', () => {
    expect(guestContainerConfig({ ...hostConfig(['true']), ociVersion: '1.2.1' }, 7, '/run/kts/share/c/x', '/run/kts/share').ociVersion).toBe('1.2.1');
  });
});
