import { describe, expect, it } from 'vitest';
import { POD_START_PHASES } from '../telemetry/podStarts.js';
import { buildTimeline, renderTimeline, type TimelineEvent } from './timeline.js';

const at = (ms: number) => new Date(Date.UTC(2026, 10, 23, 12, 0, 0, ms)).toISOString();
const sandbox = (type: string, ms: number, payload: Record<string, unknown> = {}): TimelineEvent => ({ streamId: 'sandbox-p1', type, time: at(ms), payload });
const container = (type: string, ms: number): TimelineEvent => ({ streamId: 'container-c1', type, time: at(ms), payload: {} });

const runcStart = [
  sandbox('SandboxCreated', 0), sandbox('SandboxStartRequested', 10), sandbox('SandboxStarted', 40),
  container('ContainerCreateRequested', 140), container('ContainerCreated', 190), container('ContainerStartRequested', 192), container('ContainerStarted', 200),
  container('ContainerExited', 900),
];

describe('kts timeline', () => {
  it('given a pod\'s events, then its phases are consecutive and add up to the whole start', () => {
    const timeline = buildTimeline(runcStart);
    expect(timeline.totalMs).toBe(200);
    expect(timeline.phases.map((p) => [p.name, p.durationMs])).toEqual([
      ['waiting for Start (client)', 10], ['sandbox start', 30], ['preparing the container (client: image, bundle)', 100],
      ['container create', 50], ['waiting for Start (client)', 2], ['container start', 8],
    ]);
    expect(timeline.phases.reduce((sum, p) => sum + p.durationMs, 0)).toBe(timeline.totalMs);
    expect(timeline.phases.filter((p) => p.slowest).map((p) => p.name)).toEqual(['preparing the container (client: image, bundle)']);
  });

  it('keys each phase as the metrics label it: POD_START_PHASES, in order', () => {
    expect(buildTimeline(runcStart).phases.map((p) => p.phase)).toEqual([...POD_START_PHASES]);
  });

  it('given a VM pod, then the sandbox start is split into kts, QEMU + guest boot and the guest\'s pod start', () => {
    const events = [...runcStart];
    events[2] = sandbox('SandboxStarted', 6040, { backend: { 'guest.boot_ms': 5400, 'guest.pod_start_ms': 600, 'hypervisor.accelerator': 'tcg' } });
    for (let i = 3; i < events.length; i++) events[i] = { ...events[i]!, time: at(Date.parse(events[i]!.time) - Date.parse(at(0)) + 6000) };
    const timeline = buildTimeline(events);
    expect(timeline.phases.slice(1, 4).map((p) => [p.name, p.durationMs])).toEqual([
      ['sandbox start: kts (before the launch)', 30], ['sandbox start: QEMU + guest boot (tcg)', 5400], ['sandbox start: pod start inside the guest', 600],
    ]);
    expect(timeline.phases.reduce((sum, p) => sum + p.durationMs, 0)).toBe(timeline.totalMs);
    expect(timeline.phases.find((p) => p.slowest)?.name).toBe('sandbox start: QEMU + guest boot (tcg)');
    expect(new Set(timeline.phases.map((p) => p.phase))).toEqual(new Set(POD_START_PHASES));
  });

  it('renders a waterfall with the slowest phase marked and the total', () => {
    const text = renderTimeline(buildTimeline(runcStart));
    expect(text).toMatch(/preparing the container \(client: image, bundle\)\s+100 ms\s+█+ {2}◀ slowest/);
    expect(text.trim().split('\n').at(-1)).toMatch(/^total\s+200 ms$/);
  });

  it('given a pod with no container yet, then only the sandbox phases are shown', () => {
    expect(buildTimeline(runcStart.slice(0, 3)).phases.map((p) => p.name)).toEqual(['waiting for Start (client)', 'sandbox start']);
  });
});
