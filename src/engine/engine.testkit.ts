import pino from 'pino';
import { afterEach, expect } from 'vitest';
import { containerMachine, type ContainerEvent } from '../../machines/containerMachine.js';
import { sandboxMachine, type SandboxEvent } from '../../machines/sandboxMachine.js';
import { isKtsError, type ErrorKind } from '../core/errors.js';
import type {
  ContainerSpec, ContainerStats, ContainerStatus, OciProcess, ProcessExit, SandboxSpec, Sandboxer, StartedSandbox, StdioPaths,
} from '../core/sandboxer.js';
import type { EventStore } from '../core/store.js';
import { openSqliteStore } from '../store/sqliteStore.js';
import { makeTempDir } from '../store/sqliteStore.fixtures.js';
import type { Engine } from './engine.js';
import { containerStream, sandboxStream } from './engineCore.js';
import { Entity, type CommandMeta } from './entity.js';
import { containerProjection, sandboxProjection } from './projections.js';
import { openDaemonEngine, type Recovery } from './recovery.js';

/**
 * Given/when/then over the engine, after emmett's DeciderSpecification: given the events already
 * in the log, when a command (or a daemon restart), then these new events, or this error. The
 * store is a real SQLite file in a temp dir; the backend is FakeSandboxer. No root needed.
 */

export const META: CommandMeta = { caller: 'spec' };
export const EXITED_AT = new Date('2026-01-01T00:00:09.000Z');
export const SANDBOX_PID = 4242;
export const CONTAINER_PID = 100;
export const EXEC_PID = 200;
const STDIO: StdioPaths = { stdout: '/run/fifo/out', stderr: '/run/fifo/err' };

type Call = { method: string; args: unknown[] };

/** A backend that records each call, fails a method on demand, and ends processes when a spec says so. */
export class FakeSandboxer implements Sandboxer {
  readonly kind = 'fake';
  readonly calls: Call[] = [];
  readonly failures = new Map<string, Error>();
  /** What sandboxStatus answers (recovery asks it). */
  sandboxAlive: { alive: boolean; pid?: number } = { alive: true, pid: SANDBOX_PID };
  /** What containerStatus answers, per container (recovery asks it); absent when unset. */
  readonly containerStatuses = new Map<string, ContainerStatus>();
  /** What startedExecPid answers (recovery asks it). */
  startedExec: number | undefined = undefined;
  private readonly exits = new Map<string, { promise: Promise<ProcessExit>; resolve: (exit: ProcessExit) => void }>();

  private async call(method: string, ...args: unknown[]): Promise<void> {
    this.calls.push({ method, args });
    await Promise.resolve();
    const failure = this.failures.get(method);
    if (failure) throw failure;
  }

  methodsCalled(): string[] {
    return this.calls.map((call) => call.method).filter((method) => !['waitSandboxExit', 'waitProcessExit'].includes(method));
  }

  /** Makes the watched process (`sandbox` or a pid) end with `exit`. */
  end(what: string, exit: ProcessExit = { exitStatus: 0, exitedAt: EXITED_AT }): void {
    this.exit(what).resolve(exit);
  }

  private exit(what: string) {
    let entry = this.exits.get(what);
    if (!entry) {
      let resolve!: (exit: ProcessExit) => void;
      const promise = new Promise<ProcessExit>((settle) => { resolve = settle; });
      entry = { promise, resolve };
      this.exits.set(what, entry);
    }
    return entry;
  }

  async startSandbox(spec: SandboxSpec): Promise<StartedSandbox> { await this.call('startSandbox', spec); return { pid: SANDBOX_PID }; }
  async stopSandbox(sandboxId: string, options: { timeoutMs: number }): Promise<ProcessExit> {
    await this.call('stopSandbox', sandboxId, options);
    return { exitStatus: 0, exitedAt: EXITED_AT };
  }
  async sandboxStatus(sandboxId: string) { await this.call('sandboxStatus', sandboxId); return this.sandboxAlive; }
  waitSandboxExit(sandboxId: string): Promise<ProcessExit> { this.calls.push({ method: 'waitSandboxExit', args: [sandboxId] }); return this.exit('sandbox').promise; }
  async removeSandbox(sandboxId: string) { await this.call('removeSandbox', sandboxId); }
  async createContainer(spec: ContainerSpec) { await this.call('createContainer', spec); return { pid: CONTAINER_PID }; }
  async startContainer(sandboxId: string, containerId: string) { await this.call('startContainer', sandboxId, containerId); return { pid: CONTAINER_PID }; }
  async killContainer(sandboxId: string, containerId: string, signal: number, all: boolean) { await this.call('killContainer', sandboxId, containerId, signal, all); }
  async deleteContainer(sandboxId: string, containerId: string) { await this.call('deleteContainer', sandboxId, containerId); }
  async containerStatus(sandboxId: string, containerId: string): Promise<ContainerStatus> {
    await this.call('containerStatus', sandboxId, containerId);
    return this.containerStatuses.get(containerId) ?? { state: 'absent' };
  }
  async execProcess(sandboxId: string, containerId: string, execId: string, process: OciProcess, stdio: StdioPaths) {
    await this.call('execProcess', sandboxId, containerId, execId, process, stdio);
    return { pid: EXEC_PID };
  }
  async startedExecPid(sandboxId: string, containerId: string, execId: string) { await this.call('startedExecPid', sandboxId, containerId, execId); return this.startedExec; }
  waitProcessExit(sandboxId: string, pid: number): Promise<ProcessExit> { this.calls.push({ method: 'waitProcessExit', args: [sandboxId, pid] }); return this.exit(String(pid)).promise; }
  async pids(sandboxId: string, containerId: string) { await this.call('pids', sandboxId, containerId); return [CONTAINER_PID]; }
  async stats(sandboxId: string, containerId: string): Promise<ContainerStats> {
    await this.call('stats', sandboxId, containerId);
    return { cpuUsageNanos: 1, cpuUserNanos: 1, cpuKernelNanos: 0, memoryUsageBytes: 1024, memoryLimitBytes: 0, pidsCurrent: 1, pidsLimit: 0 };
  }
  /** What sweepOrphans answers: what it removed, or the error it fails with. */
  orphans: string[] | Error = [];
  async sweepOrphans(): Promise<string[]> {
    if (this.orphans instanceof Error) throw this.orphans;
    return this.orphans;
  }
  async close() {}
}

// ---- events a spec is given ------------------------------------------------------------------

export const sandboxCreated = (sandboxId: string): SandboxEvent => ({
  type: 'SandboxCreated', sandboxId, kind: 'fake', name: `pod-${sandboxId}`, namespace: 'default', uid: `uid-${sandboxId}`,
  hostname: sandboxId, annotations: {}, labels: {}, createdAt: '2026-01-01T00:00:00.000Z',
});
export const sandboxStarted: SandboxEvent = { type: 'SandboxStarted', pid: SANDBOX_PID, taskAddress: 'ttrpc+unix:///run/kts/task.sock', startedAt: '2026-01-01T00:00:01.000Z' };
/** A created and started sandbox. */
export const readySandbox = (sandboxId: string): SandboxEvent[] => [sandboxCreated(sandboxId), { type: 'SandboxStartRequested' }, sandboxStarted];

export const containerCreateRequested = (containerId: string, sandboxId: string): ContainerEvent => ({
  type: 'ContainerCreateRequested', containerId, sandboxId, name: `ctr-${containerId}`, bundleDir: `/run/kts/bundles/${containerId}`,
  args: ['sleep', '60'], stdio: STDIO, createdAt: '2026-01-01T00:00:02.000Z',
});
export const createdContainer = (containerId: string, sandboxId: string): ContainerEvent[] =>
  [containerCreateRequested(containerId, sandboxId), { type: 'ContainerCreated', pid: CONTAINER_PID }];
export const runningContainer = (containerId: string, sandboxId: string): ContainerEvent[] => [
  ...createdContainer(containerId, sandboxId), { type: 'ContainerStartRequested' },
  { type: 'ContainerStarted', pid: CONTAINER_PID, startedAt: '2026-01-01T00:00:03.000Z' },
];
export const execCreated = (execId: string): ContainerEvent => ({ type: 'ExecCreated', execId, args: ['ls'], stdio: STDIO });

export interface Given {
  sandboxes?: Record<string, SandboxEvent[]>;
  containers?: Record<string, ContainerEvent[]>;
}

type NewEventType = [streamId: string, type: string];

/** One spec's world: the store, the fake backend, and the engine the daemon would run over them. */
export class EngineSpecification {
  readonly sandboxer = new FakeSandboxer();
  private readonly temp = makeTempDir();
  readonly store: EventStore = openSqliteStore(this.temp.dbPath);
  private running: { engine: Engine; recovery: Recovery } | undefined;
  private mark = 0;
  private outcome: { result?: unknown; error?: unknown } = {};

  /** The SQLite file under the store, for specs that open it as an attacker or an offline reader would. */
  get storePath(): string {
    return this.temp.dbPath;
  }

  /** Writes `given` to the log as earlier commands would have, without running any effect. */
  static given(given: Given = {}): EngineSpecification {
    const spec = new EngineSpecification();
    for (const [sandboxId, events] of Object.entries(given.sandboxes ?? {})) {
      const entity = new Entity(sandboxStream(sandboxId), sandboxMachine, spec.store, sandboxProjection);
      for (const event of events) entity.record(event, { caller: 'given' });
      entity.stop();
    }
    for (const [containerId, events] of Object.entries(given.containers ?? {})) {
      const entity = new Entity(containerStream(containerId), containerMachine, spec.store, containerProjection);
      for (const event of events) entity.record(event, { caller: 'given' });
      entity.stop();
    }
    return spec;
  }

  /** The engine, started as the daemon starts it (recovery first); what recovery records happens before `when`. */
  async engine(): Promise<Engine> {
    if (!this.running) {
      this.running = openDaemonEngine({
        store: this.store, sandboxers: { fake: this.sandboxer }, logger: pino({ level: 'silent' }),
        taskAddress: 'ttrpc+unix:///run/kts/task.sock', defaultStopTimeoutMs: 1000,
      });
      await this.running.recovery.recover();
    }
    return this.running.engine;
  }

  /** Runs a command against the engine; its result or error is kept for `then`. */
  async when(command: (engine: Engine) => Promise<unknown>): Promise<this> {
    const engine = await this.engine();
    this.mark = this.store.headSequence();
    this.outcome = await command(engine).then((result) => ({ result }), (error: unknown) => ({ error }));
    return this;
  }

  /** A daemon that died after the given events starts again: recovery is the command. */
  async whenRestarted(): Promise<this> {
    this.mark = this.store.headSequence();
    await this.engine();
    return this;
  }

  /** The events recorded since `when`, each as [stream, type], in order. */
  newEvents(): NewEventType[] {
    return this.store.readAll({ afterSequence: this.mark }).map((event) => [event.streamId, event.type]);
  }

  payloadOf(type: string): Record<string, unknown> {
    const event = this.store.readAll({ afterSequence: this.mark }).find((stored) => stored.type === type);
    if (!event) throw new Error(`no ${type} was recorded`);
    return event.payload;
  }

  thenEvents(expected: NewEventType[]): this {
    if (this.outcome.error) throw this.outcome.error;
    expect(this.newEvents()).toEqual(expected);
    return this;
  }

  thenResult(expected: unknown): this {
    if (this.outcome.error) throw this.outcome.error;
    expect(this.outcome.result).toEqual(expected);
    return this;
  }

  /** The command failed with this kind of error (and message); `events` are what it recorded on the way. */
  thenError(kind: ErrorKind | 'any', message: RegExp, events: NewEventType[] = []): this {
    const { error } = this.outcome;
    expect(error, 'the command should have failed').toBeInstanceOf(Error);
    if (kind !== 'any') expect(isKtsError(error, kind), `${String(error)} should be ${kind}`).toBe(true);
    expect((error as Error).message).toMatch(message);
    expect(this.newEvents()).toEqual(events);
    return this;
  }

  async close(): Promise<void> {
    await this.running?.engine.close();
    this.store.close();
    this.temp.remove();
  }
}

/** Lets the background watchers (observe) run to their record. */
export const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 20));

/** `given` for a spec file: every specification it makes is closed (engine, store, temp dir) after its test. */
export function givenClosedAfterEach(): (given?: Given) => EngineSpecification {
  const open: EngineSpecification[] = [];
  afterEach(async () => {
    for (const spec of open.splice(0)) await spec.close();
  });
  return (given) => {
    const spec = EngineSpecification.given(given);
    open.push(spec);
    return spec;
  };
}
