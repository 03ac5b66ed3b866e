import { describe, expect, it } from 'vitest';
import { IllegalTransitionError, acceptsEvent, replay } from './index.js';
import {
  CONTAINER_EVENT_TYPES,
  CONTAINER_STATES,
  containerMachine,
  type ContainerEvent,
  type ContainerEventType,
  type ContainerStateValue,
} from './containerMachine.js';
import { specifyTransitionTable, type TransitionRow } from './machineGraph.testkit.js';

/** The specification: every legal (state, event) → state of a container. Anything else is illegal. */
const TRANSITIONS: Array<TransitionRow & { from: ContainerStateValue; event: ContainerEventType; to: ContainerStateValue }> = [
  { from: 'absent', event: 'ContainerCreateRequested', to: 'creating' },
  { from: 'creating', event: 'ContainerCreated', to: 'created' },
  { from: 'creating', event: 'ContainerCreateFailed', to: 'failed' },
  { from: 'created', event: 'ContainerStartRequested', to: 'starting' },
  { from: 'created', event: 'ContainerKillRequested', to: 'created' },
  { from: 'created', event: 'ContainerExited', to: 'stopped' },
  { from: 'created', event: 'ContainerDeleteRequested', to: 'deleting' },
  { from: 'starting', event: 'ContainerStarted', to: 'running' },
  { from: 'starting', event: 'ContainerStartFailed', to: 'stopped' },
  { from: 'running', event: 'ContainerExited', to: 'stopped' },
  { from: 'running', event: 'ContainerKillRequested', to: 'running' },
  { from: 'running', event: 'ContainerReattached', to: 'running' },
  { from: 'running', event: 'ContainerUpdated', to: 'running' },
  { from: 'running', event: 'ExecCreated', to: 'running' },
  { from: 'running', event: 'ExecStartRequested', to: 'running' },
  { from: 'running', event: 'ExecStarted', to: 'running' },
  { from: 'running', event: 'ExecStartFailed', to: 'running' },
  { from: 'running', event: 'ExecExited', to: 'running' },
  { from: 'running', event: 'ExecDeleted', to: 'running' },
  { from: 'stopped', event: 'ContainerDeleteRequested', to: 'deleting' },
  { from: 'stopped', event: 'ExecExited', to: 'stopped' },
  { from: 'stopped', event: 'ExecStartFailed', to: 'stopped' },
  { from: 'stopped', event: 'ExecDeleted', to: 'stopped' },
  { from: 'stopped', event: 'ContainerKillRequested', to: 'stopped' },
  { from: 'failed', event: 'ContainerDeleteRequested', to: 'deleting' },
  { from: 'deleting', event: 'ContainerDeleted', to: 'deleted' },
  // Back to stopped when a process was created; a container whose create failed goes back to failed.
  { from: 'deleting', event: 'ContainerDeleteFailed', to: 'stopped' },
  { from: 'deleting', event: 'ContainerDeleteFailed', to: 'failed' },
];

const createRequested: ContainerEvent = {
  type: 'ContainerCreateRequested',
  containerId: 'ctr-1',
  sandboxId: 'sb-1',
  name: 'nginx',
  bundleDir: '/run/kts/sb-1/ctr-1',
  image: 'oci-layout:///var/lib/kts/images/busybox',
  args: ['/bin/sh', '-c', 'sleep 3600'],
  logPath: '/var/log/pods/web-0/nginx/0.log',
  stdio: { stdout: '/run/kts/sb-1/ctr-1/stdout', stderr: '/run/kts/sb-1/ctr-1/stderr' },
  createdAt: '2026-01-01T00:00:00.000Z',
};
const containerCreated: ContainerEvent = { type: 'ContainerCreated', pid: 100 };
const createFailed: ContainerEvent = { type: 'ContainerCreateFailed', reason: 'runc create: exit status 1' };
const startRequested: ContainerEvent = { type: 'ContainerStartRequested' };
const containerStarted: ContainerEvent = { type: 'ContainerStarted', pid: 100, startedAt: '2026-01-01T00:00:01.000Z' };
const startFailed: ContainerEvent = { type: 'ContainerStartFailed', reason: 'exec: "/bin/sh": not found' };
const killRequested: ContainerEvent = { type: 'ContainerKillRequested', signal: 15, all: false };
const containerExited: ContainerEvent = { type: 'ContainerExited', exitStatus: 143, exitedAt: '2026-01-01T00:00:09.000Z' };
const reattached: ContainerEvent = { type: 'ContainerReattached', pid: 101 };
const updated: ContainerEvent = { type: 'ContainerUpdated', resources: { memoryLimitBytes: 67_108_864 } };
const execCreated: ContainerEvent = { type: 'ExecCreated', execId: 'exec-1', args: ['ls', '/'], stdio: { stdout: '/run/kts/exec-1.out' } };
const execStartRequested: ContainerEvent = { type: 'ExecStartRequested', execId: 'exec-1' };
const execStarted: ContainerEvent = { type: 'ExecStarted', execId: 'exec-1', pid: 200 };
const execStartFailed: ContainerEvent = { type: 'ExecStartFailed', execId: 'exec-1', reason: 'exec: "ls": not found' };
const execExited: ContainerEvent = { type: 'ExecExited', execId: 'exec-1', exitStatus: 0, exitedAt: '2026-01-01T00:00:02.000Z' };
const execDeleted: ContainerEvent = { type: 'ExecDeleted', execId: 'exec-1' };
const deleteRequested: ContainerEvent = { type: 'ContainerDeleteRequested' };
const containerDeleted: ContainerEvent = { type: 'ContainerDeleted' };
const deleteFailed: ContainerEvent = { type: 'ContainerDeleteFailed', reason: 'umount rootfs: device busy' };

/** One sample of every event type (one exec id): the graph traversal offers these in every state. */
const SAMPLE_EVENTS: ContainerEvent[] = [
  createRequested,
  containerCreated,
  createFailed,
  startRequested,
  containerStarted,
  startFailed,
  killRequested,
  containerExited,
  reattached,
  updated,
  execCreated,
  execStartRequested,
  execStarted,
  execStartFailed,
  execExited,
  execDeleted,
  deleteRequested,
  containerDeleted,
  deleteFailed,
];

function describeEvent(event: ContainerEvent): string {
  return 'execId' in event ? `${event.type}(${event.execId})` : event.type;
}

const running: ContainerEvent[] = [createRequested, containerCreated, startRequested, containerStarted];

specifyTransitionTable({
  name: 'containerMachine', entity: 'container', machine: containerMachine, states: CONTAINER_STATES, eventTypes: CONTAINER_EVENT_TYPES,
  sampleEvents: SAMPLE_EVENTS, transitions: TRANSITIONS, initialState: 'absent',
});

describe('containerMachine: context', () => {
  it('given nothing, when ContainerCreateRequested, then the request is recorded and no process exists', () => {
    const snapshot = replay(containerMachine, [createRequested]);
    expect(snapshot.context).toMatchObject({
      containerId: 'ctr-1',
      sandboxId: 'sb-1',
      name: 'nginx',
      bundleDir: '/run/kts/sb-1/ctr-1',
      image: 'oci-layout:///var/lib/kts/images/busybox',
      args: ['/bin/sh', '-c', 'sleep 3600'],
      logPath: '/var/log/pods/web-0/nginx/0.log',
      stdio: { stdout: '/run/kts/sb-1/ctr-1/stdout', stderr: '/run/kts/sb-1/ctr-1/stderr' },
      createdAt: '2026-01-01T00:00:00.000Z',
      pid: null,
      execs: {},
    });
  });

  it('given a creating container, when ContainerCreated, then its pid is recorded', () => {
    expect(replay(containerMachine, [createRequested, containerCreated]).context.pid).toBe(100);
  });

  it('given a starting container, when ContainerStarted, then pid and start time are recorded', () => {
    expect(replay(containerMachine, running).context).toMatchObject({ pid: 100, startedAt: '2026-01-01T00:00:01.000Z' });
  });

  it('given a running container, when ContainerReattached, then the new pid is recorded', () => {
    expect(replay(containerMachine, [...running, reattached]).context.pid).toBe(101);
  });

  it('given a running container, when ContainerExited, then the exit is recorded and the pid kept', () => {
    const snapshot = replay(containerMachine, [...running, containerExited]);
    expect(snapshot.context).toMatchObject({ exitStatus: 143, exitedAt: '2026-01-01T00:00:09.000Z', pid: 100 });
  });

  it('given a created container, when ContainerExited before any start, then it is stopped with the exit recorded', () => {
    const snapshot = replay(containerMachine, [createRequested, containerCreated, containerExited]);
    expect(snapshot.value).toBe('stopped');
    expect(snapshot.context.exitStatus).toBe(143);
  });

  it('given a running container, when ContainerUpdated, then the resources are recorded', () => {
    expect(replay(containerMachine, [...running, updated]).context.resources).toEqual({ memoryLimitBytes: 67_108_864 });
  });

  it('given failures, then each reason is recorded', () => {
    expect(replay(containerMachine, [createRequested, createFailed]).context.lastError).toBe('runc create: exit status 1');
    expect(replay(containerMachine, [createRequested, containerCreated, startRequested, startFailed]).context.lastError).toBe(
      'exec: "/bin/sh": not found',
    );
  });

  it('given a container whose create failed being deleted, when ContainerDeleteFailed, then it is failed again', () => {
    const snapshot = replay(containerMachine, [createRequested, createFailed, deleteRequested, deleteFailed]);
    expect(snapshot.value).toBe('failed');
    expect(snapshot.context.lastError).toBe('umount rootfs: device busy');
  });

  it('given a stopped container being deleted, when ContainerDeleteFailed, then it is stopped again', () => {
    expect(replay(containerMachine, [...running, containerExited, deleteRequested, deleteFailed]).value).toBe('stopped');
  });

  it('given a container being deleted, when ContainerDeleted, then the machine is done', () => {
    const snapshot = replay(containerMachine, [...running, containerExited, deleteRequested, containerDeleted]);
    expect(snapshot.value).toBe('deleted');
    expect(snapshot.status).toBe('done');
  });
});

describe('containerMachine: exec lifecycle', () => {
  it('given a running container, when an exec is created, started, exits and is deleted, then each step is recorded', () => {
    const afterCreate = replay(containerMachine, [...running, execCreated]);
    expect(afterCreate.context.execs['exec-1']).toEqual({
      args: ['ls', '/'],
      stdio: { stdout: '/run/kts/exec-1.out' },
      pid: null,
      exitStatus: null,
      exitedAt: null,
      lastError: null,
    });
    const afterStart = replay(containerMachine, [...running, execCreated, execStarted]);
    expect(afterStart.context.execs['exec-1']?.pid).toBe(200);
    const afterExit = replay(containerMachine, [...running, execCreated, execStarted, execExited]);
    expect(afterExit.context.execs['exec-1']).toMatchObject({ pid: 200, exitStatus: 0, exitedAt: '2026-01-01T00:00:02.000Z' });
    expect(afterExit.value).toBe('running');
    const afterDelete = replay(containerMachine, [...running, execCreated, execStarted, execExited, execDeleted]);
    expect(afterDelete.context.execs).toEqual({});
  });

  it('given a created exec, when ExecStartFailed, then the reason is recorded on the exec and the container still runs', () => {
    const snapshot = replay(containerMachine, [...running, execCreated, execStartFailed]);
    expect(snapshot.value).toBe('running');
    expect(snapshot.context.execs['exec-1']?.lastError).toBe('exec: "ls": not found');
    expect(snapshot.context.lastError).toBeNull();
  });

  it('given a running exec when its container exits, when ExecExited, then the exec exit is recorded in stopped', () => {
    const snapshot = replay(containerMachine, [...running, execCreated, execStarted, containerExited, execExited]);
    expect(snapshot.value).toBe('stopped');
    expect(snapshot.context.execs['exec-1']?.exitStatus).toBe(0);
  });

  it('given an exec whose start was requested, then the intent is on the exec until its outcome, and a stopped container can still record the failure', () => {
    const requested = replay(containerMachine, [...running, execCreated, execStartRequested]);
    expect(requested.context.execs['exec-1']).toMatchObject({ startRequested: true, pid: null });
    expect(replay(containerMachine, [...running, execCreated, execStartRequested, execStarted]).context.execs['exec-1']?.pid).toBe(200);
    const failedAfterExit = replay(containerMachine, [...running, execCreated, execStartRequested, containerExited, execStartFailed]);
    expect(failedAfterExit.value).toBe('stopped');
    expect(failedAfterExit.context.execs['exec-1']?.lastError).toBe('exec: "ls": not found');
  });

  it('given two execs, when one is deleted, then the other remains', () => {
    const second: ContainerEvent = { type: 'ExecCreated', execId: 'exec-2', args: ['true'], stdio: {} };
    const snapshot = replay(containerMachine, [...running, execCreated, second, execDeleted]);
    expect(Object.keys(snapshot.context.execs)).toEqual(['exec-2']);
  });

  const rejected: Array<[string, ContainerEvent[], ContainerEvent]> = [
    ['a running container with no exec', running, execStarted],
    ['a running container with no exec', running, execStartFailed],
    ['a running container with no exec', running, execExited],
    ['a running container with no exec', running, execDeleted],
    ['exec-1 created', [...running, execCreated], { ...execCreated, args: ['other'] }],
    ['exec-1 created but not started', [...running, execCreated], execExited],
    ['exec-1 started', [...running, execCreated, execStarted], execStarted],
    ['exec-1 started', [...running, execCreated, execStarted], execStartRequested],
    ['exec-1 start already requested', [...running, execCreated, execStartRequested], execStartRequested],
    ['exec-1 failed to start', [...running, execCreated, execStartFailed], execStartRequested],
    ['a running container with no exec', running, execStartRequested],
    ['a stopped container', [...running, execCreated, containerExited], execStartRequested],
    ['exec-1 started', [...running, execCreated, execStarted], execStartFailed],
    ['exec-1 failed to start', [...running, execCreated, execStartFailed], execStarted],
    ['exec-1 failed to start', [...running, execCreated, execStartFailed], execExited],
    ['exec-1 exited', [...running, execCreated, execStarted, execExited], execExited],
    ['exec-1 deleted', [...running, execCreated, execDeleted], execStarted],
    ['only exec-1', [...running, execCreated], { type: 'ExecStarted', execId: 'exec-2', pid: 201 }],
    ['no exec (id named like an inherited property)', running, { type: 'ExecDeleted', execId: 'constructor' }],
    ['no exec (id named like an inherited property)', running, { type: 'ExecStarted', execId: 'toString', pid: 201 }],
    ['a stopped container with no exec', [...running, containerExited], execExited],
    ['a stopped container with no exec', [...running, containerExited], execDeleted],
    ['a stopped container', [...running, containerExited], execCreated],
  ];
  const rejectedCases = rejected.map(
    ([situation, given, event]) => [`given ${situation}, when ${describeEvent(event)}, then it is rejected`, given, event] as const,
  );

  it.each(rejectedCases)('%s', (_name, given, event) => {
    const snapshot = replay(containerMachine, given);
    expect(acceptsEvent(snapshot, event)).toBe(false);
    expect(() => replay(containerMachine, [...given, event])).toThrow(IllegalTransitionError);
  });
});
