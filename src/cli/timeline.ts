/**
 * `kts timeline`: a pod's start as consecutive phases between the milestones of its event log, so
 * the phases add up to the whole start. VM starts are split further with what the vmm backend
 * measured (QEMU + guest boot, then the pod's start inside the guest). Each phase carries the key the
 * daemon's metrics use for it (the `phase` label of kts_pod_start_phase_duration_seconds).
 */
import type { PodStartPhase } from '../telemetry/podStarts.js';

export interface TimelineEvent {
  streamId: string;
  type: string;
  time: string;
  payload: Record<string, unknown>;
}

export interface Phase {
  /** The metrics' `phase` label; the three parts of a VM's sandbox start all say `sandbox_start`. */
  phase: PodStartPhase;
  name: string;
  /** Milliseconds from the first milestone. */
  startMs: number;
  durationMs: number;
  slowest: boolean;
}

export interface Timeline {
  containerId: string | null;
  totalMs: number;
  phases: Phase[];
}

/** Each milestone (but the first) ends the phase beside it: its metrics key and how a person reads it. */
type Milestone = [type: string, phase: PodStartPhase | undefined, name: string];
const SANDBOX_MILESTONES: Milestone[] = [
  ['SandboxCreated', undefined, ''],
  ['SandboxStartRequested', 'await_sandbox_start', 'waiting for Start (client)'],
  ['SandboxStarted', 'sandbox_start', 'sandbox start'],
];
const CONTAINER_MILESTONES: Milestone[] = [
  ['ContainerCreateRequested', 'await_container_create', 'preparing the container (client: image, bundle)'],
  ['ContainerCreated', 'container_create', 'container create'],
  ['ContainerStartRequested', 'await_container_start', 'waiting for Start (client)'],
  ['ContainerStarted', 'container_start', 'container start'],
];

/** `containerId` picks the container; by default the pod's first. */
export function buildTimeline(events: TimelineEvent[], containerId?: string): Timeline {
  const sandboxEvents = events.filter((event) => event.streamId.startsWith('sandbox-'));
  const firstContainer = containerId ?? events.find((event) => event.type === 'ContainerCreateRequested')?.streamId.slice('container-'.length);
  const containerEvents = firstContainer ? events.filter((event) => event.streamId === `container-${firstContainer}`) : [];
  const marks = [...milestones(sandboxEvents, SANDBOX_MILESTONES), ...milestones(containerEvents, CONTAINER_MILESTONES)];
  if (marks.length === 0) return { containerId: firstContainer ?? null, totalMs: 0, phases: [] };
  const origin = marks[0]!.at;
  const phases: Phase[] = [];
  for (let i = 1; i < marks.length; i++) {
    const from = marks[i - 1]!.at;
    const to = marks[i]!.at;
    const split = marks[i]!.type === 'SandboxStarted' ? vmSplit(marks[i]!.payload, from, to) : undefined;
    for (const part of split ?? [{ name: marks[i]!.name, from, to }]) {
      phases.push({ phase: marks[i]!.phase!, name: part.name, startMs: part.from - origin, durationMs: part.to - part.from, slowest: false });
    }
  }
  const slowest = phases.reduce((max, phase) => (phase.durationMs > max.durationMs ? phase : max), phases[0] ?? { durationMs: -1 });
  for (const phase of phases) phase.slowest = phase === slowest;
  return { containerId: firstContainer ?? null, totalMs: marks[marks.length - 1]!.at - origin, phases };
}

function milestones(events: TimelineEvent[], wanted: Milestone[]) {
  return wanted.flatMap(([type, phase, name]) => {
    const event = events.find((candidate) => candidate.type === type);
    return event ? [{ type, phase, name, at: Date.parse(event.time), payload: event.payload }] : [];
  });
}

/** A VM sandbox's start: kts before the launch, QEMU + guest boot, the pod inside the guest. */
function vmSplit(payload: Record<string, unknown>, from: number, to: number) {
  const backend = payload.backend as Record<string, unknown> | undefined;
  const bootMs = Number(backend?.['guest.boot_ms']);
  const podMs = Number(backend?.['guest.pod_start_ms']);
  if (!Number.isFinite(bootMs) || !Number.isFinite(podMs) || bootMs + podMs > to - from) return undefined;
  const podStart = to - podMs;
  const bootStart = podStart - bootMs;
  return [
    { name: 'sandbox start: kts (before the launch)', from, to: bootStart },
    { name: `sandbox start: QEMU + guest boot (${String(backend?.['hypervisor.accelerator'] ?? '?')})`, from: bootStart, to: podStart },
    { name: 'sandbox start: pod start inside the guest', from: podStart, to },
  ];
}

/** The waterfall for a terminal: one line per phase, a bar scaled to `width`, the slowest marked. */
export function renderTimeline(timeline: Timeline, width = 40): string {
  const nameWidth = Math.max(5, ...timeline.phases.map((phase) => phase.name.length));
  const scale = timeline.totalMs > 0 ? width / timeline.totalMs : 0;
  const lines = timeline.phases.map((phase) => {
    const offset = Math.round(phase.startMs * scale);
    const bar = '█'.repeat(Math.max(1, Math.round(phase.durationMs * scale)));
    const ms = `${phase.durationMs.toFixed(0)} ms`.padStart(9);
    return `${phase.name.padEnd(nameWidth)}  ${ms}  ${' '.repeat(offset)}${bar}${phase.slowest ? '  ◀ slowest' : ''}`;
  });
  return [`${'PHASE'.padEnd(nameWidth)}  ${'DURATION'.padStart(9)}`, ...lines, `${'total'.padEnd(nameWidth)}  ${`${timeline.totalMs.toFixed(0)} ms`.padStart(9)}`].join('\n') + '\n';
}
