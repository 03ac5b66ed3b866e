import { describe, expect, it } from 'vitest';
import { IllegalTransitionError, replay } from './index.js';
import {
  SANDBOX_EVENT_TYPES,
  SANDBOX_STATES,
  sandboxMachine,
  type SandboxEvent,
  type SandboxEventType,
  type SandboxStateValue,
} from './sandboxMachine.js';
import { specifyTransitionTable, type TransitionRow } from './machineGraph.testkit.js';

/** The specification: every legal (state, event) → state of a sandbox. Anything else is illegal. */
const TRANSITIONS: Array<TransitionRow & { from: SandboxStateValue; event: SandboxEventType; to: SandboxStateValue }> = [
  { from: 'absent', event: 'SandboxCreated', to: 'created' },
  { from: 'created', event: 'SandboxStartRequested', to: 'starting' },
  { from: 'created', event: 'SandboxStopRequested', to: 'stopping' },
  { from: 'created', event: 'SandboxShutdownRequested', to: 'shuttingDown' },
  { from: 'created', event: 'SandboxUpdated', to: 'created' },
  { from: 'starting', event: 'SandboxNetworkRequested', to: 'starting' },
  { from: 'starting', event: 'SandboxNetworkConfigured', to: 'starting' },
  { from: 'starting', event: 'SandboxStarted', to: 'ready' },
  { from: 'starting', event: 'SandboxStartFailed', to: 'failed' },
  { from: 'ready', event: 'SandboxStopRequested', to: 'stopping' },
  { from: 'ready', event: 'SandboxExited', to: 'stopped' },
  { from: 'ready', event: 'SandboxUpdated', to: 'ready' },
  { from: 'ready', event: 'SandboxReattached', to: 'ready' },
  { from: 'ready', event: 'SandboxUnhealthy', to: 'unhealthy' },
  { from: 'unhealthy', event: 'SandboxHealthy', to: 'ready' },
  { from: 'unhealthy', event: 'SandboxStopRequested', to: 'stopping' },
  { from: 'unhealthy', event: 'SandboxExited', to: 'stopped' },
  { from: 'unhealthy', event: 'SandboxUpdated', to: 'unhealthy' },
  { from: 'unhealthy', event: 'SandboxReattached', to: 'unhealthy' },
  { from: 'failed', event: 'SandboxStopRequested', to: 'stopping' },
  { from: 'failed', event: 'SandboxShutdownRequested', to: 'shuttingDown' },
  { from: 'stopping', event: 'SandboxStopped', to: 'stopped' },
  // Back to ready when the sandbox had started; a never-started sandbox has no process to be ready with.
  { from: 'stopping', event: 'SandboxStopFailed', to: 'ready' },
  { from: 'stopping', event: 'SandboxStopFailed', to: 'failed' },
  { from: 'stopped', event: 'SandboxShutdownRequested', to: 'shuttingDown' },
  { from: 'shuttingDown', event: 'SandboxRemoved', to: 'removed' },
  { from: 'shuttingDown', event: 'SandboxShutdownFailed', to: 'stopped' },
];

const created: SandboxEvent = {
  type: 'SandboxCreated',
  sandboxId: 'sb-1',
  kind: 'runc',
  name: 'web-0',
  namespace: 'k8s.io',
  uid: '6f1c2a9e-0000-4000-8000-000000000001',
  hostname: 'web-0',
  annotations: { 'io.kubernetes.cri.sandbox-name': 'web-0' },
  labels: { app: 'web' },
  createdAt: '2026-01-01T00:00:00.000Z',
};
const startRequested: SandboxEvent = { type: 'SandboxStartRequested' };
const networkRequested: SandboxEvent = { type: 'SandboxNetworkRequested', netnsPath: '/var/lib/kts/network/sb-1/netns', network: 'kts', interfaceName: 'eth0' };
const networkConfigured: SandboxEvent = {
  type: 'SandboxNetworkConfigured',
  status: {
    interfaces: [{ name: 'kts0', mac: '0a:58:0a:58:00:01' }, { name: 'eth0', mac: '0a:58:0a:58:00:05', sandbox: '/var/lib/kts/network/sb-1/netns' }],
    ips: [{ address: '10.88.0.5/16', gateway: '10.88.0.1', interface: 1 }],
    routes: [{ dst: '0.0.0.0/0', gw: '10.88.0.1' }],
  },
};
const started: SandboxEvent = {
  type: 'SandboxStarted',
  pid: 4242,
  taskAddress: 'unix:///run/kts/sb-1/task.sock',
  startedAt: '2026-01-01T00:00:01.000Z',
};
const unhealthy: SandboxEvent = { type: 'SandboxUnhealthy', reason: 'the guest agent does not answer: deadline exceeded' };
const healthy: SandboxEvent = { type: 'SandboxHealthy' };
const startFailed: SandboxEvent = { type: 'SandboxStartFailed', reason: 'guest boot timed out after 30000 ms' };
const updated: SandboxEvent = { type: 'SandboxUpdated', labels: { app: 'web', tier: 'frontend' }, resources: { cpuShares: 512 } };
const reattached: SandboxEvent = { type: 'SandboxReattached', pid: 4343 };
const exited: SandboxEvent = { type: 'SandboxExited', exitStatus: 137, exitedAt: '2026-01-01T00:00:05.000Z' };
const stopRequested: SandboxEvent = { type: 'SandboxStopRequested', timeoutMs: 10_000 };
const stopped: SandboxEvent = { type: 'SandboxStopped', exitStatus: 0, exitedAt: '2026-01-01T00:00:06.000Z' };
const stopFailed: SandboxEvent = { type: 'SandboxStopFailed', reason: 'kill: operation not permitted' };
const shutdownRequested: SandboxEvent = { type: 'SandboxShutdownRequested' };
const removed: SandboxEvent = { type: 'SandboxRemoved' };
const shutdownFailed: SandboxEvent = { type: 'SandboxShutdownFailed', reason: 'umount: target is busy' };

/** One sample of every event type: the graph traversal offers these in every state. */
const SAMPLE_EVENTS: SandboxEvent[] = [
  created,
  startRequested,
  networkRequested,
  networkConfigured,
  started,
  startFailed,
  unhealthy,
  healthy,
  updated,
  reattached,
  exited,
  stopRequested,
  stopped,
  stopFailed,
  shutdownRequested,
  removed,
  shutdownFailed,
];

specifyTransitionTable({
  name: 'sandboxMachine', entity: 'sandbox', machine: sandboxMachine, states: SANDBOX_STATES, eventTypes: SANDBOX_EVENT_TYPES,
  sampleEvents: SAMPLE_EVENTS, transitions: TRANSITIONS, initialState: 'absent',
});

describe('sandboxMachine: the rejection', () => {
  it('names the rejected event and the state in the error', () => {
    expect(() => replay(sandboxMachine, [created, started])).toThrow('event SandboxStarted (#1) is not accepted in state created');
  });
});

describe('sandboxMachine: context', () => {
  it('given nothing, when SandboxCreated, then the metadata is recorded and nothing runs', () => {
    const snapshot = replay(sandboxMachine, [created]);
    expect(snapshot.context).toMatchObject({
      sandboxId: 'sb-1',
      kind: 'runc',
      name: 'web-0',
      namespace: 'k8s.io',
      uid: '6f1c2a9e-0000-4000-8000-000000000001',
      hostname: 'web-0',
      netnsPath: null,
      logDirectory: null,
      annotations: { 'io.kubernetes.cri.sandbox-name': 'web-0' },
      labels: { app: 'web' },
      createdAt: '2026-01-01T00:00:00.000Z',
      pid: null,
      taskAddress: null,
      exitStatus: null,
    });
  });

  it('given nothing, when SandboxCreated with a netns and log directory, then both are recorded', () => {
    const snapshot = replay(sandboxMachine, [{ ...created, netnsPath: '/var/run/netns/cni-1', logDirectory: '/var/log/pods/web-0' }]);
    expect(snapshot.context.netnsPath).toBe('/var/run/netns/cni-1');
    expect(snapshot.context.logDirectory).toBe('/var/log/pods/web-0');
  });

  it('given a starting sandbox, when SandboxStarted, then its pid and task address are recorded', () => {
    const snapshot = replay(sandboxMachine, [created, startRequested, started]);
    expect(snapshot.context).toMatchObject({
      pid: 4242,
      taskAddress: 'unix:///run/kts/sb-1/task.sock',
      startedAt: '2026-01-01T00:00:01.000Z',
    });
  });

  it('given a starting sandbox, when SandboxNetworkRequested, then the netns is recorded with no result yet', () => {
    const snapshot = replay(sandboxMachine, [created, startRequested, networkRequested]);
    expect(snapshot.value).toBe('starting');
    expect(snapshot.context.network).toEqual({ netnsPath: '/var/lib/kts/network/sb-1/netns', network: 'kts', interfaceName: 'eth0', status: null });
  });

  it('given a network requested, when SandboxNetworkConfigured, then the CNI result is recorded beside the netns', () => {
    const snapshot = replay(sandboxMachine, [created, startRequested, networkRequested, networkConfigured]);
    expect(snapshot.context.network?.netnsPath).toBe('/var/lib/kts/network/sb-1/netns');
    expect(snapshot.context.network?.status?.ips).toEqual([{ address: '10.88.0.5/16', gateway: '10.88.0.1', interface: 1 }]);
  });

  it('given a network requested but not configured, when SandboxStarted, then it is rejected (the start waits for CNI\'s result)', () => {
    expect(() => replay(sandboxMachine, [created, startRequested, networkRequested, started])).toThrow(IllegalTransitionError);
    expect(replay(sandboxMachine, [created, startRequested, networkRequested, networkConfigured, started]).value).toBe('ready');
  });

  it('given a network already requested, when SandboxNetworkRequested again, then it is rejected', () => {
    expect(() => replay(sandboxMachine, [created, startRequested, networkRequested, networkRequested])).toThrow(IllegalTransitionError);
    expect(() => replay(sandboxMachine, [created, startRequested, networkConfigured])).toThrow(IllegalTransitionError);
  });

  it('given a starting sandbox, when SandboxStarted with backend details, then they are kept', () => {
    const snapshot = replay(sandboxMachine, [created, startRequested, { ...started, backend: { 'hypervisor.accelerator': 'tcg' } } as SandboxEvent]);
    expect(snapshot.context.backend).toEqual({ 'hypervisor.accelerator': 'tcg' });
  });

  it('given a ready sandbox, when SandboxReattached, then the new pid is recorded', () => {
    expect(replay(sandboxMachine, [created, startRequested, started, reattached]).context.pid).toBe(4343);
  });

  it('given a ready sandbox, when SandboxExited, then the exit is recorded and the pid kept', () => {
    const snapshot = replay(sandboxMachine, [created, startRequested, started, exited]);
    expect(snapshot.value).toBe('stopped');
    expect(snapshot.context).toMatchObject({ exitStatus: 137, exitedAt: '2026-01-01T00:00:05.000Z', pid: 4242 });
  });

  it('given a stopping sandbox, when SandboxStopped, then the exit is recorded', () => {
    const snapshot = replay(sandboxMachine, [created, startRequested, started, stopRequested, stopped]);
    expect(snapshot.context).toMatchObject({ exitStatus: 0, exitedAt: '2026-01-01T00:00:06.000Z' });
  });

  it('given a ready sandbox, when SandboxUpdated with labels and resources, then those replace the old ones and annotations stay', () => {
    const snapshot = replay(sandboxMachine, [created, startRequested, started, updated]);
    expect(snapshot.context.labels).toEqual({ app: 'web', tier: 'frontend' });
    expect(snapshot.context.resources).toEqual({ cpuShares: 512 });
    expect(snapshot.context.annotations).toEqual({ 'io.kubernetes.cri.sandbox-name': 'web-0' });
  });

  it('given a starting sandbox, when SandboxStartFailed, then the reason is recorded', () => {
    const snapshot = replay(sandboxMachine, [created, startRequested, startFailed]);
    expect(snapshot.value).toBe('failed');
    expect(snapshot.context.lastError).toBe('guest boot timed out after 30000 ms');
  });

  it('given a started sandbox being stopped, when SandboxStopFailed, then it is ready again with the reason recorded', () => {
    const snapshot = replay(sandboxMachine, [created, startRequested, started, stopRequested, stopFailed]);
    expect(snapshot.value).toBe('ready');
    expect(snapshot.context.lastError).toBe('kill: operation not permitted');
  });

  it('given a never-started sandbox being stopped, when SandboxStopFailed, then it is failed', () => {
    expect(replay(sandboxMachine, [created, stopRequested, stopFailed]).value).toBe('failed');
    expect(replay(sandboxMachine, [created, startRequested, startFailed, stopRequested, stopFailed]).value).toBe('failed');
  });

  it('given a sandbox shutting down, when SandboxShutdownFailed, then it is stopped with the reason recorded', () => {
    const snapshot = replay(sandboxMachine, [created, shutdownRequested, shutdownFailed]);
    expect(snapshot.value).toBe('stopped');
    expect(snapshot.context.lastError).toBe('umount: target is busy');
  });

  it('given a sandbox shutting down, when SandboxRemoved, then the machine is done', () => {
    const snapshot = replay(sandboxMachine, [created, shutdownRequested, removed]);
    expect(snapshot.value).toBe('removed');
    expect(snapshot.status).toBe('done');
  });
});
