import type { StoredEvent } from '../core/store.js';

/**
 * Phases of a pod start, in order. Each runs from one logged event to the next (SandboxCreated →
 * SandboxStartRequested → SandboxStarted → the first container's CreateRequested → Created →
 * StartRequested → Started), so together they add up to the whole start. `await_*` phases are time
 * kts spent waiting for its caller's next request (containerd, kubelet or the kts CLI).
 */
export const POD_START_PHASES = [
  'await_sandbox_start', 'sandbox_start', 'await_container_create', 'container_create', 'await_container_start', 'container_start',
] as const;
export type PodStartPhase = (typeof POD_START_PHASES)[number];

/** The phases a start can fail in: those that run an effect, and `sandbox_create`, which only a refusal ends. */
export type FailedPhase = 'sandbox_create' | 'sandbox_start' | 'container_create' | 'container_start';
export const POD_START_FAILED_PHASES: readonly FailedPhase[] = ['sandbox_create', 'sandbox_start', 'container_create', 'container_start'];

/**
 * Why a start failed: `failed`, its effect failed (the log has the *Failed event); `refused`, the API
 * refused the call before the engine recorded anything (bad request, unknown sandbox or image…).
 */
export type FailureReason = 'failed' | 'refused';

/** The calls that take a pod through its start, and the phase a refusal of each ends (Task Start of an exec too). */
export const POD_START_CALLS: Readonly<Record<string, FailedPhase>> = {
  'containerd.services.sandbox.v1.Controller/Create': 'sandbox_create',
  'containerd.services.sandbox.v1.Controller/Start': 'sandbox_start',
  'containerd.task.v3.Task/Create': 'container_create',
  'containerd.task.v3.Task/Start': 'container_start',
  'containerd.task.v2.Task/Create': 'container_create',
  'containerd.task.v2.Task/Start': 'container_start',
  'kts.admin.v1.Admin/RunContainer': 'container_create',
};

export interface PodStarted {
  sandboxId: string;
  kind: string;
  totalSeconds: number;
  phaseSeconds: Record<PodStartPhase, number>;
}

/** A VM sandbox's own report of its start (the `backend` details of its SandboxStarted). */
export interface GuestStarted {
  accelerator: string;
  bootSeconds: number;
  podStartSeconds: number;
}

export interface PodStartObserver {
  podStarted(started: PodStarted): void;
  podStartFailed(failed: { sandboxId: string; kind: string; phase: FailedPhase }): void;
  guestStarted(guest: GuestStarted): void;
}

/** Position of each event's time among a start's marks; a mark counts only when it is the next one expected. */
const SANDBOX_MARKS: Record<string, number> = { SandboxCreated: 0, SandboxStartRequested: 1, SandboxStarted: 2 };
const CONTAINER_MARKS: Record<string, number> = { ContainerCreateRequested: 3, ContainerCreated: 4, ContainerStartRequested: 5, ContainerStarted: 6 };
const SANDBOX_STARTED_MARKS = 3;
const ALL_MARKS = POD_START_PHASES.length + 1;
const FAILED_PHASES: Record<string, FailedPhase> = {
  SandboxStartFailed: 'sandbox_start', ContainerCreateFailed: 'container_create', ContainerStartFailed: 'container_start',
};
/** States in which a start is still under way; any other ends it without a measurement. */
const STARTING_SANDBOX_STATES = new Set(['created', 'starting', 'ready']);
const STARTING_CONTAINER_STATES = new Set(['creating', 'created', 'starting']);

interface PendingStart {
  sandboxId: string;
  sandboxStream: string;
  kind: string;
  /** Epoch milliseconds of the marks reached so far. */
  marks: number[];
  /** Stream of the container whose start ends the pod's start: the first one asked for after the sandbox started. */
  containerStream?: string;
}

/**
 * Follows the event log and measures each pod's start, from SandboxCreated until its first container
 * runs. Only starts that begin while this process listens are measured: the onAppended hook it
 * relies on is lost on a crash, so a start that straddles a restart is simply not counted.
 * A failed container start is counted and the next container asked for becomes the one awaited, so a
 * retried pod's total includes its retries. At most `maxPending` starts are followed; beyond that
 * the oldest is forgotten, which bounds memory when sandboxes are created and never given a container.
 */
export class PodStartTracker {
  private readonly pending = new Map<string, PendingStart>();
  private readonly sandboxOfStream = new Map<string, string>();
  private readonly sandboxOfContainerStream = new Map<string, string>();

  constructor(
    private readonly observer: PodStartObserver,
    private readonly maxPending = 4096,
  ) {}

  observe(events: readonly StoredEvent[]): void {
    for (const event of events) {
      if (event.type === 'SandboxStarted') this.reportGuest(event.payload);
      if (event.type === 'SandboxCreated') this.begin(event);
      else if (this.sandboxOfStream.has(event.streamId)) this.onSandboxEvent(event, this.sandboxOfStream.get(event.streamId)!);
      else if (event.type === 'ContainerCreateRequested') this.adoptContainer(event);
      else if (this.sandboxOfContainerStream.has(event.streamId)) this.onContainerEvent(event, this.sandboxOfContainerStream.get(event.streamId)!);
    }
  }

  /** Starts being followed; exposed for tests of the bound. */
  get pendingCount(): number {
    return this.pending.size;
  }

  private begin(event: StoredEvent): void {
    const sandboxId = stringField(event.payload, 'sandboxId');
    if (!sandboxId) return;
    if (this.pending.size >= this.maxPending) this.forget(this.pending.keys().next().value!);
    this.pending.set(sandboxId, { sandboxId, sandboxStream: event.streamId, kind: stringField(event.payload, 'kind') ?? 'unknown', marks: [eventMs(event)] });
    this.sandboxOfStream.set(event.streamId, sandboxId);
  }

  private onSandboxEvent(event: StoredEvent, sandboxId: string): void {
    const start = this.pending.get(sandboxId)!;
    const failed = FAILED_PHASES[event.type];
    if (failed) this.observer.podStartFailed({ sandboxId, kind: start.kind, phase: failed });
    if (failed || !STARTING_SANDBOX_STATES.has(event.stateAfter)) return this.forget(sandboxId);
    mark(start, SANDBOX_MARKS[event.type], event);
  }

  private adoptContainer(event: StoredEvent): void {
    const sandboxId = stringField(event.payload, 'sandboxId');
    const start = sandboxId === undefined ? undefined : this.pending.get(sandboxId);
    if (!start || start.containerStream !== undefined || start.marks.length !== SANDBOX_STARTED_MARKS) return;
    start.containerStream = event.streamId;
    this.sandboxOfContainerStream.set(event.streamId, start.sandboxId);
    mark(start, CONTAINER_MARKS[event.type], event);
  }

  private onContainerEvent(event: StoredEvent, sandboxId: string): void {
    const start = this.pending.get(sandboxId)!;
    const failed = FAILED_PHASES[event.type];
    if (failed) this.observer.podStartFailed({ sandboxId, kind: start.kind, phase: failed });
    if (failed || (event.type !== 'ContainerStarted' && !STARTING_CONTAINER_STATES.has(event.stateAfter))) return this.awaitAnotherContainer(start);
    mark(start, CONTAINER_MARKS[event.type], event);
    if (start.marks.length === ALL_MARKS) this.finish(start);
  }

  private finish(start: PendingStart): void {
    const phaseSeconds = Object.fromEntries(POD_START_PHASES.map((phase, index) => [phase, seconds(start.marks[index]!, start.marks[index + 1]!)]));
    this.observer.podStarted({
      sandboxId: start.sandboxId,
      kind: start.kind,
      totalSeconds: seconds(start.marks[0]!, start.marks[start.marks.length - 1]!),
      phaseSeconds: phaseSeconds as Record<PodStartPhase, number>,
    });
    this.forget(start.sandboxId);
  }

  private awaitAnotherContainer(start: PendingStart): void {
    if (start.containerStream !== undefined) this.sandboxOfContainerStream.delete(start.containerStream);
    start.containerStream = undefined;
    start.marks.length = SANDBOX_STARTED_MARKS;
  }

  private forget(sandboxId: string): void {
    const start = this.pending.get(sandboxId);
    if (!start) return;
    this.pending.delete(sandboxId);
    this.sandboxOfStream.delete(start.sandboxStream);
    if (start.containerStream !== undefined) this.sandboxOfContainerStream.delete(start.containerStream);
  }

  private reportGuest(payload: Record<string, unknown>): void {
    const backend = payload.backend;
    if (typeof backend !== 'object' || backend === null) return;
    const details = backend as Record<string, unknown>;
    const bootMs = details['guest.boot_ms'];
    const podStartMs = details['guest.pod_start_ms'];
    if (!isDuration(bootMs) || !isDuration(podStartMs)) return;
    this.observer.guestStarted({ accelerator: stringField(details, 'hypervisor.accelerator') ?? 'unknown', bootSeconds: bootMs / 1000, podStartSeconds: podStartMs / 1000 });
  }
}

function mark(start: PendingStart, position: number | undefined, event: StoredEvent): void {
  if (position === start.marks.length) start.marks.push(eventMs(event));
}

function eventMs(event: StoredEvent): number {
  return Date.parse(event.time);
}

/** Never negative: a wall clock stepped back mid-start makes a phase 0, not a negative duration. */
function seconds(fromMs: number, toMs: number): number {
  return Math.max(0, toMs - fromMs) / 1000;
}

function isDuration(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

function stringField(record: Record<string, unknown>, key: string): string | undefined {
  const value = record[key];
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}
