import { describe, expect, it } from 'vitest';
import type { ContainerEvent } from '../../machines/containerMachine.js';
import {
  CONTAINER_PID, EXEC_PID, EngineSpecification, META, givenClosedAfterEach, containerCreateRequested, createdContainer, execCreated, readySandbox, runningContainer, sandboxCreated, settle,
} from './engine.testkit.js';

// Given the events in the log, when a container or exec command (or a restart), then these new events or this error.
const given = givenClosedAfterEach();

const C1 = 'container-c1';
const pod = { p1: readySandbox('p1') };
const exited: ContainerEvent = { type: 'ContainerExited', exitStatus: 0, exitedAt: '2026-01-01T00:00:04.000Z' };
const input = { sandboxId: 'p1', containerId: 'c1', name: 'ctr-c1', bundleDir: '/run/kts/bundles/c1', rootfsMounts: [], stdio: {}, args: ['sleep', '60'] };

/** A running container whose runtime says it still runs (what recovery checks on the spec's start). */
function givenRunning(extra: ContainerEvent[] = []) {
  const spec = given({ sandboxes: pod, containers: { c1: [...runningContainer('c1', 'p1'), ...extra] } });
  spec.sandboxer.containerStatuses.set('c1', { state: 'running', pid: CONTAINER_PID });
  return spec;
}

describe('create container', () => {
  it('given a ready sandbox, when a container is created, then the intent and ContainerCreated', async () => {
    const spec = await given({ sandboxes: pod }).when((engine) => engine.createContainer(input, META));
    spec.thenEvents([[C1, 'ContainerCreateRequested'], [C1, 'ContainerCreated']]).thenResult({ pid: CONTAINER_PID });
  });

  it('given a ready sandbox and a failing backend, when a container is created, then the intent and ContainerCreateFailed', async () => {
    const spec = given({ sandboxes: pod });
    spec.sandboxer.failures.set('createContainer', new Error('runc create: exit status 1'));
    await spec.when((engine) => engine.createContainer(input, META));
    spec.thenError('any', /runc create/, [[C1, 'ContainerCreateRequested'], [C1, 'ContainerCreateFailed']]);
  });

  it('given a sandbox not started, when a container is created, then FAILED_PRECONDITION', async () => {
    const spec = await given({ sandboxes: { p1: [sandboxCreated('p1')] } }).when((engine) => engine.createContainer(input, META));
    spec.thenError('failed_precondition', /containers need a ready sandbox/);
  });

  it('given the container exists, when created again, then ALREADY_EXISTS', async () => {
    const spec = await givenRunning().when((engine) => engine.createContainer(input, META));
    spec.thenError('already_exists', /container c1 already exists/);
  });

  it('given a create in flight when the daemon died and the runtime has it, when it restarts, then ContainerCreated', async () => {
    const spec = given({ sandboxes: pod, containers: { c1: [containerCreateRequested('c1', 'p1')] } });
    spec.sandboxer.containerStatuses.set('c1', { state: 'created', pid: CONTAINER_PID });
    await spec.whenRestarted();
    // Recovery settles a sandbox's containers before the sandbox itself.
    spec.thenEvents([[C1, 'ContainerCreated'], ['sandbox-p1', 'SandboxReattached']]);
  });

  it('given a create in flight when the daemon died and the runtime has none, when it restarts, then its leftovers go and ContainerCreateFailed', async () => {
    const spec = given({ sandboxes: pod, containers: { c1: [containerCreateRequested('c1', 'p1')] } });
    await spec.whenRestarted();
    expect(spec.newEvents()).toContainEqual([C1, 'ContainerCreateFailed']);
    expect(spec.sandboxer.methodsCalled()).toContain('deleteContainer');
  });
});

describe('start container', () => {
  it('given a created container, when started, then the intent and ContainerStarted', async () => {
    const spec = given({ sandboxes: pod, containers: { c1: createdContainer('c1', 'p1') } });
    spec.sandboxer.containerStatuses.set('c1', { state: 'created', pid: CONTAINER_PID });
    await spec.when((engine) => engine.startContainer('c1', META));
    spec.thenEvents([[C1, 'ContainerStartRequested'], [C1, 'ContainerStarted']]).thenResult({ pid: CONTAINER_PID });
  });

  it('given a created container and a failing backend, when started, then the intent and ContainerStartFailed', async () => {
    const spec = given({ sandboxes: pod, containers: { c1: createdContainer('c1', 'p1') } });
    spec.sandboxer.containerStatuses.set('c1', { state: 'created', pid: CONTAINER_PID });
    spec.sandboxer.failures.set('startContainer', new Error('exec format error'));
    await spec.when((engine) => engine.startContainer('c1', META));
    spec.thenError('any', /exec format error/, [[C1, 'ContainerStartRequested'], [C1, 'ContainerStartFailed']]);
  });

  it('given a running container, when started again, then FAILED_PRECONDITION', async () => {
    const spec = await givenRunning().when((engine) => engine.startContainer('c1', META));
    spec.thenError('failed_precondition', /is running; Start needs a created container/);
  });

  it.each([
    ['running', [], 'ContainerStarted'],
    ['created', ['startContainer'], 'ContainerStarted'],
    ['absent', [], 'ContainerStartFailed'],
  ] as const)('given a start in flight when the daemon died and the runtime says %s, when it restarts, then %j is run and %s recorded', async (state, effects, outcome) => {
    const spec = given({ sandboxes: pod, containers: { c1: [...createdContainer('c1', 'p1'), { type: 'ContainerStartRequested' }] } });
    spec.sandboxer.containerStatuses.set('c1', { state, ...(state !== 'absent' && { pid: CONTAINER_PID }) });
    await spec.whenRestarted();
    expect(spec.newEvents().filter(([stream]) => stream === C1)).toEqual([[C1, outcome]]);
    expect(spec.sandboxer.methodsCalled().filter((method) => method === 'startContainer')).toEqual(effects);
  });
});

describe('kill container', () => {
  it('given a running container, when killed, then ContainerKillRequested and the signal is sent', async () => {
    const spec = await givenRunning().when((engine) => engine.killContainer('c1', 15, false, META));
    spec.thenEvents([[C1, 'ContainerKillRequested']]);
    expect(spec.sandboxer.calls.at(-1)).toEqual({ method: 'killContainer', args: ['p1', 'c1', 15, false] });
  });

  it('given a stopped container, when killed, then ContainerKillRequested and no signal', async () => {
    const spec = await given({ sandboxes: pod, containers: { c1: [...runningContainer('c1', 'p1'), exited] } }).when((engine) => engine.killContainer('c1', 9, true, META));
    spec.thenEvents([[C1, 'ContainerKillRequested']]);
    expect(spec.sandboxer.methodsCalled()).not.toContain('killContainer');
  });

  it('given a running container, when signal 0 is asked, then INVALID_ARGUMENT', async () => {
    const spec = await givenRunning().when((engine) => engine.killContainer('c1', 0, false, META));
    spec.thenError('invalid_argument', /not a valid signal number/);
  });
});

describe('container exits', () => {
  it('given a running container, when its process ends, then ContainerExited with its status', async () => {
    const spec = givenRunning();
    await spec.when(async () => {
      spec.sandboxer.end(String(CONTAINER_PID), { exitStatus: 3, exitedAt: new Date('2026-01-01T00:00:09.000Z') });
      await settle();
    });
    spec.thenEvents([[C1, 'ContainerExited']]);
    expect(spec.payloadOf('ContainerExited')).toEqual({ exitStatus: 3, exitedAt: '2026-01-01T00:00:09.000Z' });
  });

  it('given a running container that ended while no daemon watched, when it restarts, then ContainerExited with the status the host kept', async () => {
    const spec = given({ sandboxes: pod, containers: { c1: runningContainer('c1', 'p1') } });
    spec.sandboxer.containerStatuses.set('c1', { state: 'stopped', exit: { exitStatus: 7, exitedAt: new Date('2026-01-01T00:00:08.000Z') } });
    await spec.whenRestarted();
    expect(spec.newEvents()).toContainEqual([C1, 'ContainerExited']);
    expect(spec.payloadOf('ContainerExited')).toEqual({ exitStatus: 7, exitedAt: '2026-01-01T00:00:08.000Z' });
  });
});

describe('delete container', () => {
  it('given a stopped container, when deleted, then the intent and ContainerDeleted, and its exit', async () => {
    const spec = await given({ sandboxes: pod, containers: { c1: [...runningContainer('c1', 'p1'), exited] } }).when((engine) => engine.deleteContainer('c1', META));
    spec.thenEvents([[C1, 'ContainerDeleteRequested'], [C1, 'ContainerDeleted']])
      .thenResult({ pid: CONTAINER_PID, exitStatus: 0, exitedAt: '2026-01-01T00:00:04.000Z' });
  });

  it('given a stopped container and a failing backend, when deleted, then the intent and ContainerDeleteFailed (it stays stopped)', async () => {
    const spec = given({ sandboxes: pod, containers: { c1: [...runningContainer('c1', 'p1'), exited] } });
    spec.sandboxer.failures.set('deleteContainer', new Error('umount: busy'));
    await spec.when((engine) => engine.deleteContainer('c1', META));
    spec.thenError('any', /umount: busy/, [[C1, 'ContainerDeleteRequested'], [C1, 'ContainerDeleteFailed']]);
    expect((await spec.engine()).container('c1').state).toBe('stopped');
  });

  it('given a running container, when deleted, then FAILED_PRECONDITION', async () => {
    const spec = await givenRunning().when((engine) => engine.deleteContainer('c1', META));
    spec.thenError('failed_precondition', /kill it before deleting it/);
  });

  it('given a delete in flight when the daemon died, when it restarts, then the delete is finished: ContainerDeleted', async () => {
    const spec = await given({ sandboxes: pod, containers: { c1: [...runningContainer('c1', 'p1'), exited, { type: 'ContainerDeleteRequested' }] } }).whenRestarted();
    expect(spec.newEvents()).toContainEqual([C1, 'ContainerDeleted']);
    expect(spec.sandboxer.methodsCalled()).toContain('deleteContainer');
  });
});

describe('update container', () => {
  it('given a running container, when updated, then ContainerUpdated', async () => {
    const spec = await givenRunning().when((engine) => engine.updateContainer('c1', { memoryLimitBytes: 1 }, META));
    spec.thenEvents([[C1, 'ContainerUpdated']]);
  });
});

describe('exec', () => {
  const createExec = (spec: EngineSpecification) => spec.engine().then((engine) => engine.createExec('c1', 'e1', { args: ['ls'] }, {}, META));

  it('given a running container, when an exec is created and started, then ExecCreated, then the intent and ExecStarted', async () => {
    const spec = givenRunning();
    await createExec(spec);
    await spec.when((engine) => engine.startExec('c1', 'e1', META));
    spec.thenEvents([[C1, 'ExecStartRequested'], [C1, 'ExecStarted']]).thenResult({ pid: EXEC_PID });
  });

  it('given a running container and a failing backend, when an exec is started, then the intent and ExecStartFailed', async () => {
    const spec = givenRunning();
    await createExec(spec);
    spec.sandboxer.failures.set('execProcess', new Error('no such file'));
    await spec.when((engine) => engine.startExec('c1', 'e1', META));
    spec.thenError('any', /no such file/, [[C1, 'ExecStartRequested'], [C1, 'ExecStartFailed']]);
  });

  it('given a stopped container, when an exec is created, then FAILED_PRECONDITION', async () => {
    const spec = await given({ sandboxes: pod, containers: { c1: [...runningContainer('c1', 'p1'), exited] } })
      .when((engine) => engine.createExec('c1', 'e1', { args: ['ls'] }, {}, META));
    spec.thenError('failed_precondition', /exec needs a running container/);
  });

  it('given a started exec, when its process ends, then ExecExited; when deleted, then ExecDeleted', async () => {
    const spec = givenRunning();
    await createExec(spec);
    await (await spec.engine()).startExec('c1', 'e1', META);
    await spec.when(async () => {
      spec.sandboxer.end(String(EXEC_PID), { exitStatus: 1, exitedAt: new Date('2026-01-01T00:00:09.000Z') });
      await settle();
    });
    spec.thenEvents([[C1, 'ExecExited']]);
    await spec.when((engine) => engine.deleteExec('c1', 'e1', META));
    spec.thenEvents([[C1, 'ExecDeleted']]).thenResult({ pid: EXEC_PID, exitStatus: 1, exitedAt: '2026-01-01T00:00:09.000Z' });
  });

  it.each([
    [EXEC_PID, 'ExecStarted'],
    [undefined, 'ExecStartFailed'],
  ] as const)('given an exec start in flight when the daemon died and its process is %s, when it restarts, then %s', async (pid, outcome) => {
    const spec = givenRunning([execCreated('e1'), { type: 'ExecStartRequested', execId: 'e1' }]);
    spec.sandboxer.startedExec = pid;
    await spec.whenRestarted();
    expect(spec.newEvents()).toEqual([[C1, 'ContainerReattached'], [C1, outcome], ['sandbox-p1', 'SandboxReattached']]);
  });
});
