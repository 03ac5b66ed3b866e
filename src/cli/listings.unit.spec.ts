import { describe, expect, it } from 'vitest';
import { containerFilter, cpuPercent, formatBytes, parseLabels, podFilter, UsageError, type ContainerRow, type PodRow } from './listings.js';

const pod = (fields: Partial<PodRow>): PodRow => ({
  id: 'p1', name: 'web', namespace: 'default', kind: 'runc', state: 'ready', pid: 1, createdAt: '', ips: [], netnsPath: '', labels: {}, ...fields,
});
const container = (fields: Partial<ContainerRow>): ContainerRow => ({
  id: 'c1', name: 'app', podId: 'p1', state: 'running', pid: 1, exitCode: null, image: 'busybox', createdAt: '', labels: {}, ...fields,
});

describe('podFilter', () => {
  it('given pods, when filtered by namespace, state, name and labels, then only the pods matching all are kept', () => {
    const pods = [pod({ id: 'a' }), pod({ id: 'b', namespace: 'kube-system' }), pod({ id: 'c', state: 'stopped' }), pod({ id: 'd', labels: { app: 'web', tier: 'db' } })];
    expect(pods.filter(podFilter({ namespace: 'default', state: 'ready' })).map((p) => p.id)).toEqual(['a', 'd']);
    expect(pods.filter(podFilter({ label: ['app=web', 'tier=db'] })).map((p) => p.id)).toEqual(['d']);
    expect(pods.filter(podFilter({ name: '^we' })).map((p) => p.id)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('takes crictl\'s state names: notready is every state but ready', () => {
    const pods = [pod({ id: 'a' }), pod({ id: 'b', state: 'stopped' }), pod({ id: 'c', state: 'failed' })];
    expect(pods.filter(podFilter({ state: 'NotReady' })).map((p) => p.id)).toEqual(['b', 'c']);
    expect(pods.filter(podFilter({ state: 'SANDBOX_READY' })).map((p) => p.id)).toEqual(['a']);
  });

  it.each([
    [{ state: 'sleeping' }, '--state must be one of'],
    [{ label: ['app'] }, '--label must be key=value'],
    [{ label: ['=web'] }, '--label must be key=value'],
    [{ name: '(' }, '--name must be a regular expression'],
  ])('refuses a bad filter %j as a usage error', (filter, message) => {
    expect(() => podFilter(filter)).toThrow(UsageError);
    expect(() => podFilter(filter)).toThrow(message);
  });
});

describe('containerFilter', () => {
  const containers = [container({ id: 'run' }), container({ id: 'made', state: 'created' }), container({ id: 'done', state: 'stopped', exitCode: 0 }), container({ id: 'bad', state: 'failed', name: 'other' })];

  it('given exited and live containers, then by default only the live ones are listed, as crictl ps does', () => {
    expect(containers.filter(containerFilter({})).map((c) => c.id)).toEqual(['run', 'made']);
  });

  it('given labelled containers, when filtered by --label, then only those with every label asked for are kept', () => {
    const labelled = [container({ id: 'web', labels: { app: 'web', tier: 'front' } }), container({ id: 'db', labels: { app: 'db' } }), container({ id: 'none' })];
    expect(labelled.filter(containerFilter({ label: ['app=web'] })).map((c) => c.id)).toEqual(['web']);
    expect(labelled.filter(containerFilter({ label: ['app=web', 'tier=back'] })).map((c) => c.id)).toEqual([]);
    expect(() => containerFilter({ label: ['app'] })).toThrow('--label must be key=value');
  });

  it('lists exited ones too with --all, and --state exited picks stopped and failed ones', () => {
    expect(containers.filter(containerFilter({ all: true })).map((c) => c.id)).toEqual(['run', 'made', 'done', 'bad']);
    expect(containers.filter(containerFilter({ state: 'exited' })).map((c) => c.id)).toEqual(['done', 'bad']);
    expect(containers.filter(containerFilter({ state: 'CONTAINER_RUNNING' })).map((c) => c.id)).toEqual(['run']);
    expect(containers.filter(containerFilter({ all: true, name: 'oth' })).map((c) => c.id)).toEqual(['bad']);
  });
});

describe('parseLabels', () => {
  it('keeps everything after the first = as the value', () => {
    expect(parseLabels(['a=b=c', 'empty='])).toEqual({ a: 'b=c', empty: '' });
  });
});

describe('formatBytes', () => {
  it.each([[0, '0B'], [1023, '1023B'], [1536, '1.5KiB'], [64 * 1024 * 1024, '64.0MiB'], [3 * 1024 ** 3, '3.0GiB']])('%d bytes is %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe('cpuPercent', () => {
  it('is the CPU time used between two samples over the wall time between them', () => {
    const before = { id: 'c', cpuUsageNanos: 1e9, time: '2026-01-01T00:00:00.000Z' };
    expect(cpuPercent(before, { id: 'c', cpuUsageNanos: 1.5e9, time: '2026-01-01T00:00:01.000Z' })).toBeCloseTo(50);
    expect(cpuPercent(undefined, before)).toBeNull();
    expect(cpuPercent(before, before)).toBeNull();
  });
});
