import { beforeEach, describe, expect, it } from 'vitest';
import type { StoredEvent } from '../core/store.js';
import { POD_START_PHASES, PodStartTracker, type FailedPhase, type GuestStarted, type PodStarted } from './podStarts.js';

const T0 = Date.parse('2025-06-01T12:00:00.000Z');
let sequence = 0;

function event(streamId: string, type: string, stateBefore: string, stateAfter: string, atMs: number, payload: Record<string, unknown> = {}): StoredEvent {
  sequence += 1;
  return { sequence, streamId, streamVersion: 1, type, stateBefore, stateAfter, payload, time: new Date(T0 + atMs).toISOString(), prevHash: '', hash: '' };
}

/** The events of one sandbox reaching ready, at the given offsets in ms. */
function sandboxReady(id: string, kind: string, [created, requested, started]: [number, number, number], backend?: Record<string, unknown>): StoredEvent[] {
  const stream = `sandbox-${id}`;
  return [
    event(stream, 'SandboxCreated', 'absent', 'created', created, { sandboxId: id, kind }),
    event(stream, 'SandboxStartRequested', 'created', 'starting', requested),
    event(stream, 'SandboxStarted', 'starting', 'ready', started, backend ? { pid: 1, backend } : { pid: 1 }),
  ];
}

/** The events of one container being created and started, at the given offsets in ms. */
function containerRunning(id: string, sandboxId: string, [requested, created, startRequested, started]: [number, number, number, number]): StoredEvent[] {
  const stream = `container-${id}`;
  return [
    event(stream, 'ContainerCreateRequested', 'absent', 'creating', requested, { containerId: id, sandboxId }),
    event(stream, 'ContainerCreated', 'creating', 'created', created, { pid: 2 }),
    event(stream, 'ContainerStartRequested', 'created', 'starting', startRequested),
    event(stream, 'ContainerStarted', 'starting', 'running', started, { pid: 2 }),
  ];
}

describe('pod start measurement from the event log', () => {
  let started: PodStarted[];
  let failed: Array<{ sandboxId: string; kind: string; phase: FailedPhase }>;
  let guests: GuestStarted[];
  let tracker: PodStartTracker;

  beforeEach(() => {
    started = [];
    failed = [];
    guests = [];
    tracker = new PodStartTracker({ podStarted: (s) => started.push(s), podStartFailed: (f) => failed.push(f), guestStarted: (g) => guests.push(g) });
  });

  it('given a runc pod whose first container starts, when its events are observed, then each phase is the time between two events and they add up to the total', () => {
    tracker.observe([...sandboxReady('p1', 'runc', [0, 2, 40]), ...containerRunning('c1', 'p1', [55, 90, 91, 130])]);

    expect(started).toHaveLength(1);
    expect(started[0]).toMatchObject({
      sandboxId: 'p1', kind: 'runc', totalSeconds: 0.13,
      phaseSeconds: { await_sandbox_start: 0.002, sandbox_start: 0.038, await_container_create: 0.015, container_create: 0.035, await_container_start: 0.001, container_start: 0.039 },
    });
    const sum = POD_START_PHASES.reduce((total, phase) => total + started[0]!.phaseSeconds[phase], 0);
    expect(sum).toBeCloseTo(started[0]!.totalSeconds, 9);
    expect(tracker.pendingCount).toBe(0);
  });

  it('given a pod whose first container already started, when a second container starts, then nothing more is measured', () => {
    tracker.observe([...sandboxReady('p1', 'runc', [0, 1, 2]), ...containerRunning('c1', 'p1', [3, 4, 5, 6])]);

    tracker.observe(containerRunning('c2', 'p1', [10, 11, 12, 13]));

    expect(started).toHaveLength(1);
  });

  it('given a VM sandbox, when its SandboxStarted carries the backend timings, then the guest boot and guest pod start are reported with the accelerator', () => {
    tracker.observe(sandboxReady('vm1', 'vmm', [0, 1, 6000], { 'hypervisor.accelerator': 'tcg', 'guest.boot_ms': 4600, 'guest.pod_start_ms': 350 }));

    expect(guests).toEqual([{ accelerator: 'tcg', bootSeconds: 4.6, podStartSeconds: 0.35 }]);
  });

  it('given a SandboxStarted without guest timings, when observed, then no guest start is reported', () => {
    tracker.observe(sandboxReady('p1', 'runc', [0, 1, 2], { 'guest.boot_ms': 'soon' }));

    expect(guests).toEqual([]);
  });

  it('given a sandbox whose start fails, when observed, then one failure in sandbox_start is counted and the start is no longer followed', () => {
    const stream = 'sandbox-p1';
    tracker.observe([
      event(stream, 'SandboxCreated', 'absent', 'created', 0, { sandboxId: 'p1', kind: 'runc' }),
      event(stream, 'SandboxStartRequested', 'created', 'starting', 1),
      event(stream, 'SandboxStartFailed', 'starting', 'failed', 5, { reason: 'boom' }),
    ]);

    expect(failed).toEqual([{ sandboxId: 'p1', kind: 'runc', phase: 'sandbox_start' }]);
    expect(started).toEqual([]);
    expect(tracker.pendingCount).toBe(0);
  });

  it('given the first container fails to create, when a second container then starts, then the failure is counted and the total runs from SandboxCreated through the retry', () => {
    tracker.observe([
      ...sandboxReady('p1', 'runc', [0, 1, 10]),
      event('container-bad', 'ContainerCreateRequested', 'absent', 'creating', 20, { containerId: 'bad', sandboxId: 'p1' }),
      event('container-bad', 'ContainerCreateFailed', 'creating', 'failed', 30, { reason: 'no image' }),
      ...containerRunning('good', 'p1', [100, 120, 121, 150]),
    ]);

    expect(failed).toEqual([{ sandboxId: 'p1', kind: 'runc', phase: 'container_create' }]);
    expect(started).toHaveLength(1);
    expect(started[0]!.totalSeconds).toBe(0.15);
    expect(started[0]!.phaseSeconds.await_container_create).toBe(0.09);
  });

  it('given a sandbox stopped before any container ran, when observed, then nothing is measured and it is no longer followed', () => {
    tracker.observe([...sandboxReady('p1', 'runc', [0, 1, 2]), event('sandbox-p1', 'SandboxStopRequested', 'ready', 'stopping', 3)]);

    tracker.observe(containerRunning('c1', 'p1', [4, 5, 6, 7]));

    expect(started).toEqual([]);
    expect(failed).toEqual([]);
    expect(tracker.pendingCount).toBe(0);
  });

  it('given a sandbox created before the tracker listened (a restart), when recovery completes its start and a container runs, then nothing is measured', () => {
    tracker.observe([event('sandbox-old', 'SandboxStarted', 'starting', 'ready', 0, { pid: 1 }), ...containerRunning('c1', 'old', [1, 2, 3, 4])]);

    expect(started).toEqual([]);
    expect(tracker.pendingCount).toBe(0);
  });

  it('given a bound of two followed starts, when a third sandbox is created, then the oldest is forgotten and only the others are measured', () => {
    const bounded = new PodStartTracker({ podStarted: (s) => started.push(s), podStartFailed: () => {}, guestStarted: () => {} }, 2);
    bounded.observe([...sandboxReady('a', 'runc', [0, 1, 2]), ...sandboxReady('b', 'runc', [0, 1, 2]), ...sandboxReady('c', 'wasm', [0, 1, 2])]);

    expect(bounded.pendingCount).toBe(2);
    bounded.observe([...containerRunning('ca', 'a', [3, 4, 5, 6]), ...containerRunning('cc', 'c', [3, 4, 5, 6])]);

    expect(started.map((s) => s.sandboxId)).toEqual(['c']);
  });
});
