import { describe, expect, it } from 'vitest';
import { EngineSpecification, META, givenClosedAfterEach, SANDBOX_PID, createdContainer, readySandbox, runningContainer, sandboxCreated, settle } from './engine.testkit.js';

// Given the events in the log, when a sandbox command (or a restart), then these new events or this error.
const given = givenClosedAfterEach();

const SB = 'sandbox-p1';

describe('create sandbox', () => {
  it('given nothing, when created, then SandboxCreated', async () => {
    const spec = await given().when((engine) => engine.createSandbox({ ...input('p1') }, META));
    spec.thenEvents([[SB, 'SandboxCreated']]);
  });

  it('given the sandbox exists, when created again, then ALREADY_EXISTS and nothing recorded', async () => {
    const spec = await given({ sandboxes: { p1: [sandboxCreated('p1')] } }).when((engine) => engine.createSandbox(input('p1'), META));
    spec.thenError('already_exists', /sandbox p1 already exists/);
  });

  it('given a live pod of the same name, uid and attempt, when another id is created for it, then ALREADY_EXISTS', async () => {
    const spec = await given({ sandboxes: { p1: [sandboxCreated('p1')] } }).when((engine) => engine.createSandbox({ ...input('p2'), name: 'pod-p1', uid: 'uid-p1' }, META));
    spec.thenError('already_exists', /already exists as pod p1/);
  });

  it('given nothing, when a pod with a NUL or an over-long hostname is created, then INVALID_ARGUMENT naming the hostname, and nothing recorded', async () => {
    for (const hostname of ['pod\u0000x', 'h'.repeat(65)]) {
      const spec = await given().when((engine) => engine.createSandbox({ ...input('p1'), hostname }, META));
      spec.thenError('invalid_argument', /hostname .* must be at most 64 bytes without control characters/);
    }
  });

  it('given nothing, when a kind no backend serves is created, then INVALID_ARGUMENT', async () => {
    const spec = await given().when((engine) => engine.createSandbox({ ...input('p1'), kind: 'vmm' }, META));
    spec.thenError('invalid_argument', /sandbox kind "vmm" is not served/);
  });
});

describe('start sandbox', () => {
  it('given a created sandbox, when started, then the intent and SandboxStarted, and its address', async () => {
    const spec = await given({ sandboxes: { p1: [sandboxCreated('p1')] } }).when((engine) => engine.startSandbox('p1', META));
    spec.thenEvents([[SB, 'SandboxStartRequested'], [SB, 'SandboxStarted']])
      .thenResult({ pid: SANDBOX_PID, taskAddress: 'ttrpc+unix:///run/kts/task.sock', createdAt: '2026-01-01T00:00:00.000Z' });
  });

  it('given a created sandbox and a failing backend, when started, then the intent and SandboxStartFailed with the error, and the error', async () => {
    const spec = given({ sandboxes: { p1: [sandboxCreated('p1')] } });
    spec.sandboxer.failures.set('startSandbox', new Error('qemu: no kernel'));
    await spec.when((engine) => engine.startSandbox('p1', META));
    spec.thenError('any', /qemu: no kernel/, [[SB, 'SandboxStartRequested'], [SB, 'SandboxStartFailed']]);
    expect(spec.payloadOf('SandboxStartFailed')).toEqual({ reason: 'qemu: no kernel' });
  });

  it('given a ready sandbox, when started again, then FAILED_PRECONDITION', async () => {
    const spec = await given({ sandboxes: { p1: readySandbox('p1') } }).when((engine) => engine.startSandbox('p1', META));
    spec.thenError('failed_precondition', /is ready; Start needs a created sandbox/);
  });

  it('given no such sandbox, when started, then NOT_FOUND', async () => {
    const spec = await given().when((engine) => engine.startSandbox('p9', META));
    spec.thenError('not_found', /sandbox p9 not found/);
  });

  it('given a start in flight when the daemon died and the sandbox process runs, when it restarts, then SandboxStarted', async () => {
    const spec = await given({ sandboxes: { p1: [sandboxCreated('p1'), { type: 'SandboxStartRequested' }] } }).whenRestarted();
    spec.thenEvents([[SB, 'SandboxStarted']]);
  });

  it('given a start in flight when the daemon died and no process serves, when it restarts, then its leftovers go and SandboxStartFailed', async () => {
    const spec = given({ sandboxes: { p1: [sandboxCreated('p1'), { type: 'SandboxStartRequested' }] } });
    spec.sandboxer.sandboxAlive = { alive: false };
    await spec.whenRestarted();
    spec.thenEvents([[SB, 'SandboxStartFailed']]);
    expect(spec.sandboxer.methodsCalled()).toEqual(['sandboxStatus', 'removeSandbox']);
  });
});

describe('a ready sandbox across a restart', () => {
  it('given a ready sandbox whose process still runs, when the daemon restarts, then SandboxReattached', async () => {
    const spec = await given({ sandboxes: { p1: readySandbox('p1') } }).whenRestarted();
    spec.thenEvents([[SB, 'SandboxReattached']]);
  });

  it('given a ready sandbox whose process ended while no daemon watched, when it restarts, then SandboxExited', async () => {
    const spec = given({ sandboxes: { p1: readySandbox('p1') } });
    spec.sandboxer.sandboxAlive = { alive: false };
    await spec.whenRestarted();
    spec.thenEvents([[SB, 'SandboxExited']]);
  });

  it('given a ready sandbox with a running container, when the sandbox process ends on its own, then the container\'s exit and then the sandbox\'s', async () => {
    const spec = given({ sandboxes: { p1: readySandbox('p1') }, containers: { c1: runningContainer('c1', 'p1') } });
    spec.sandboxer.containerStatuses.set('c1', { state: 'running', pid: 100 });
    await spec.when(async () => {
      spec.sandboxer.end('100', { exitStatus: 137, exitedAt: new Date('2026-01-01T00:00:09.000Z') });
      spec.sandboxer.end('sandbox');
      await settle();
    });
    expect(spec.newEvents()).toContainEqual([SB, 'SandboxExited']);
    expect(spec.newEvents()).toContainEqual(['container-c1', 'ContainerExited']);
  });
});

describe('stop sandbox', () => {
  it('given a ready sandbox, when stopped, then the intent and SandboxStopped', async () => {
    const spec = await given({ sandboxes: { p1: readySandbox('p1') } }).when((engine) => engine.stopSandbox('p1', undefined, META));
    spec.thenEvents([[SB, 'SandboxStopRequested'], [SB, 'SandboxStopped']]);
    expect(spec.payloadOf('SandboxStopRequested')).toEqual({ timeoutMs: 1000 });
  });

  it('given a ready sandbox with a created container, when stopped, then the container\'s exit is recorded before the sandbox\'s', async () => {
    const spec = given({ sandboxes: { p1: readySandbox('p1') }, containers: { c1: createdContainer('c1', 'p1') } });
    spec.sandboxer.containerStatuses.set('c1', { state: 'created', pid: 100 });
    await spec.when(async (engine) => {
      const stopping = engine.stopSandbox('p1', 500, META);
      spec.sandboxer.end('100');
      await stopping;
    });
    spec.thenEvents([[SB, 'SandboxStopRequested'], ['container-c1', 'ContainerExited'], [SB, 'SandboxStopped']]);
  });

  it('given a ready sandbox and a failing backend, when stopped, then the intent and SandboxStopFailed (it stays ready)', async () => {
    const spec = given({ sandboxes: { p1: readySandbox('p1') } });
    spec.sandboxer.failures.set('stopSandbox', new Error('kill: EPERM'));
    await spec.when((engine) => engine.stopSandbox('p1', undefined, META));
    spec.thenError('any', /kill: EPERM/, [[SB, 'SandboxStopRequested'], [SB, 'SandboxStopFailed']]);
    expect((await spec.engine()).sandbox('p1').state).toBe('ready');
  });

  it('given a stopped sandbox, when stopped again, then nothing (a no-op)', async () => {
    const spec = await given({ sandboxes: { p1: [...readySandbox('p1'), { type: 'SandboxStopRequested', timeoutMs: 1 }, { type: 'SandboxStopped', exitStatus: 0, exitedAt: '2026-01-01T00:00:05.000Z' }] } })
      .when((engine) => engine.stopSandbox('p1', undefined, META));
    spec.thenEvents([]);
  });

  it('given a sandbox whose start failed and a failing backend, when stopped, then SandboxStopFailed leaves it failed', async () => {
    const spec = given({ sandboxes: { p1: [sandboxCreated('p1'), { type: 'SandboxStartRequested' }, { type: 'SandboxStartFailed', reason: 'no kernel' }] } });
    spec.sandboxer.failures.set('stopSandbox', new Error('no such process'));
    await spec.when((engine) => engine.stopSandbox('p1', undefined, META));
    spec.thenError('any', /no such process/, [[SB, 'SandboxStopRequested'], [SB, 'SandboxStopFailed']]);
    expect((await spec.engine()).sandbox('p1').state).toBe('failed');
  });

  it('given a stop in flight when the daemon died, when it restarts, then the stop is finished: SandboxStopped', async () => {
    const spec = await given({ sandboxes: { p1: [...readySandbox('p1'), { type: 'SandboxStopRequested', timeoutMs: 1 }] } }).whenRestarted();
    spec.thenEvents([[SB, 'SandboxStopped']]);
    expect(spec.sandboxer.methodsCalled()).toEqual(['sandboxStatus', 'stopSandbox']);
  });
});

describe('shut down sandbox', () => {
  const stopped = () => [...readySandbox('p1'), { type: 'SandboxStopRequested', timeoutMs: 1 } as const, { type: 'SandboxStopped', exitStatus: 0, exitedAt: '2026-01-01T00:00:05.000Z' } as const];

  it('given a stopped sandbox with a stopped container, when shut down, then the container is deleted, then the intent and SandboxRemoved', async () => {
    const spec = given({
      sandboxes: { p1: stopped() },
      containers: { c1: [...runningContainer('c1', 'p1'), { type: 'ContainerExited', exitStatus: 0, exitedAt: '2026-01-01T00:00:04.000Z' }] },
    });
    spec.sandboxer.containerStatuses.set('c1', { state: 'stopped' });
    await spec.when((engine) => engine.shutdownSandbox('p1', META));
    spec.thenEvents([['container-c1', 'ContainerDeleteRequested'], ['container-c1', 'ContainerDeleted'], [SB, 'SandboxShutdownRequested'], [SB, 'SandboxRemoved']]);
    await expect(spec.engine().then((engine) => engine.sandbox('p1'))).rejects.toThrow(/not found/);
  });

  it('given a ready sandbox, when shut down, then it is stopped first', async () => {
    const spec = await given({ sandboxes: { p1: readySandbox('p1') } }).when((engine) => engine.shutdownSandbox('p1', META));
    spec.thenEvents([[SB, 'SandboxStopRequested'], [SB, 'SandboxStopped'], [SB, 'SandboxShutdownRequested'], [SB, 'SandboxRemoved']]);
  });

  it('given a stopped sandbox and a failing backend, when shut down, then the intent and SandboxShutdownFailed', async () => {
    const spec = given({ sandboxes: { p1: stopped() } });
    spec.sandboxer.failures.set('removeSandbox', new Error('umount: busy'));
    await spec.when((engine) => engine.shutdownSandbox('p1', META));
    spec.thenError('any', /umount: busy/, [[SB, 'SandboxShutdownRequested'], [SB, 'SandboxShutdownFailed']]);
  });

  it('given a created sandbox, when shut down, then no stop: the intent and SandboxRemoved', async () => {
    const spec = await given({ sandboxes: { p1: [sandboxCreated('p1')] } }).when((engine) => engine.shutdownSandbox('p1', META));
    spec.thenEvents([[SB, 'SandboxShutdownRequested'], [SB, 'SandboxRemoved']]);
  });

  it('given a shutdown in flight when the daemon died, when it restarts, then the removal is finished: SandboxRemoved', async () => {
    const spec = await given({ sandboxes: { p1: [...stopped(), { type: 'SandboxShutdownRequested' }] } }).whenRestarted();
    spec.thenEvents([[SB, 'SandboxRemoved']]);
    expect(spec.sandboxer.methodsCalled()).toEqual(['sandboxStatus', 'removeSandbox']);
  });
});

describe('update sandbox', () => {
  it('given a ready sandbox, when updated, then SandboxUpdated', async () => {
    const spec = await given({ sandboxes: { p1: readySandbox('p1') } }).when((engine) => engine.updateSandbox('p1', { labels: { tier: 'web' } }, META));
    spec.thenEvents([[SB, 'SandboxUpdated']]);
  });
});

function input(sandboxId: string) {
  return { sandboxId, kind: 'fake', name: `pod-${sandboxId}`, namespace: 'default', uid: `uid-${sandboxId}`, hostname: sandboxId, annotations: {}, labels: {} };
}
