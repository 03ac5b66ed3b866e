import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, TestDaemon, canRunContainers } from './helpers/daemon.js';
import { freeLoopbackPort } from './helpers/peers.js';
import { dashboardQueries } from './helpers/dashboards.js';

const skip = canRunContainers();
const POD = path.join(REPO, 'examples/pod.yaml');
const BUSYBOX = path.join(REPO, 'examples/busybox.yaml');
const PHASES = ['await_sandbox_start', 'sandbox_start', 'await_container_create', 'container_create', 'await_container_start', 'container_start'];

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Scrape {
  samples: Sample[];
  /** `# TYPE` lines: every metric the daemon declares, observed yet or not. */
  types: Map<string, string>;
}

function parseExposition(text: string): Scrape {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample) continue;
    const labels = Object.fromEntries([...(sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!]));
    samples.push({ name: sample[1]!, labels, value: Number(sample[3]) });
  }
  return { samples, types };
}

function value(scrape: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  return scrape.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

function total(scrape: Scrape, name: string, labels: Record<string, string> = {}): number {
  return scrape.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0);
}

/** The series names a query may use: a histogram is only queryable as _bucket, _sum and _count. */
function queryableNames(types: Map<string, string>): Set<string> {
  const suffixes: Record<string, string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['', '_sum', '_count'] };
  return new Set([...types].flatMap(([name, type]) => (suffixes[type] ?? ['']).map((suffix) => name + suffix)));
}

/** Metric names in a PromQL expression: identifiers left once strings, matchers, ranges and label lists are gone, that are not functions or operators. */
function metricNamesIn(expr: string): string[] {
  const labelValues = /^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(expr.trim());
  if (labelValues) return [labelValues[1]!];
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const operators = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan']);
  return [...stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)]
    .filter((m) => !stripped.slice(m.index + m[0].length).trimStart().startsWith('('))
    .map((m) => m[0])
    .filter((name) => !operators.has(name.toLowerCase()));
}

describe.skipIf(skip)(`Prometheus metrics of a real daemon${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let daemon: TestDaemon;
  let port = 0;
  let scrape: Scrape;

  beforeAll(async () => {
    port = await freeLoopbackPort();
    daemon = new TestDaemon(`[metrics]\nlisten = "127.0.0.1:${port}"`);
    await daemon.start();
    daemon.ktsOk('run', '--json', POD, BUSYBOX);
    const response = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    scrape = parseExposition(await response.text());
  });
  afterAll(() => daemon?.cleanup());

  it('given one runc pod started, when scraped, then the pod start histogram counts it for kind runc, once per phase, and the phases add up to the whole', () => {
    expect(value(scrape, 'kts_pod_start_duration_seconds_count', { kind: 'runc' })).toBeGreaterThanOrEqual(1);
    const wholeSeconds = value(scrape, 'kts_pod_start_duration_seconds_sum', { kind: 'runc' })!;
    expect(wholeSeconds).toBeGreaterThan(0);
    for (const phase of PHASES) expect(value(scrape, 'kts_pod_start_phase_duration_seconds_count', { kind: 'runc', phase }), phase).toBe(1);
    const phaseSeconds = total(scrape, 'kts_pod_start_phase_duration_seconds_sum', { kind: 'runc' });
    expect(phaseSeconds).toBeCloseTo(wholeSeconds, 6);
  });

  it('shows the ready sandbox and the running container in the by-state gauges, with zeros for the rest', () => {
    expect(value(scrape, 'kts_sandboxes', { kind: 'runc', state: 'ready' })).toBe(1);
    expect(value(scrape, 'kts_sandboxes', { kind: 'runc', state: 'failed' })).toBe(0);
    expect(value(scrape, 'kts_containers', { kind: 'runc', state: 'running' })).toBe(1);
  });

  it('counts the transitions of the start by event type', () => {
    expect(total(scrape, 'kts_transitions_total')).toBeGreaterThan(0);
    expect(value(scrape, 'kts_transitions_total', { entity: 'sandbox', type: 'SandboxStarted' })).toBe(1);
    expect(value(scrape, 'kts_transitions_total', { entity: 'container', type: 'ContainerStarted' })).toBe(1);
  });

  it('times every store commit, and the log head agrees with the number of transitions', () => {
    const commits = value(scrape, 'kts_store_commit_duration_seconds_count', { result: 'ok' })!;
    expect(commits).toBeGreaterThan(0);
    expect(value(scrape, 'kts_store_commit_duration_seconds_bucket', { result: 'ok', le: '+Inf' })).toBe(commits);
    expect(value(scrape, 'kts_store_head_sequence')).toBe(total(scrape, 'kts_transitions_total'));
    expect(value(scrape, 'kts_store_file_size_bytes', { file: 'db' })).toBeGreaterThan(0);
  });

  it('reports how long recovery took at start, and that nothing failed', () => {
    expect(scrape.types.get('kts_recovery_duration_seconds')).toBe('gauge');
    expect(value(scrape, 'kts_recovery_duration_seconds')).toBeGreaterThan(0);
    expect(value(scrape, 'kts_recovery_failures')).toBe(0);
  });

  it('names every metric with the kts_ prefix', () => {
    expect([...scrape.types.keys()].filter((name) => !name.startsWith('kts_'))).toEqual([]);
  });

  it('given the dashboards, then every query in every panel and variable names only metrics this daemon exports', () => {
    const exported = queryableNames(scrape.types);
    const queries = dashboardQueries();
    expect(new Set(queries.map((q) => q.dashboard))).toEqual(new Set(['node-overview.json', 'pod-start-breakdown.json', 'store-health.json']));
    expect(queries.length).toBeGreaterThan(30);

    const unknown = queries.flatMap((q) => metricNamesIn(q.expr).filter((name) => !exported.has(name)).map((name) => `${q.dashboard} ${q.where}: ${name} in ${q.expr}`));
    const nameless = queries.filter((q) => metricNamesIn(q.expr).length === 0).map((q) => `${q.dashboard} ${q.where}: ${q.expr}`);

    expect(unknown).toEqual([]);
    expect(nameless).toEqual([]);
  });

  it('given a daemon whose metrics port is taken, when it starts, then it refuses with the address in the message', async () => {
    const second = new TestDaemon(`[metrics]\nlisten = "127.0.0.1:${port}"`);
    try {
      const { code, output } = await second.startExpectingFailure();
      expect(code).toBe(1);
      expect(output).toContain(`cannot serve metrics on 127.0.0.1:${port}`);
    } finally {
      await second.cleanup();
    }
  });

  it('given a config with a bad metrics address, when the daemon starts, then it refuses with a config error', async () => {
    const bad = new TestDaemon('[metrics]\nlisten = "9464"');
    try {
      const { code, output } = await bad.startExpectingFailure();
      expect(code).toBe(1);
      expect(output).toContain('metrics.listen "9464" must be');
    } finally {
      await bad.cleanup();
    }
  });
});

describe('the PromQL name check itself', () => {
  it('finds metric names and skips functions, label lists, matchers and ranges', () => {
    expect(metricNamesIn('histogram_quantile(0.9, sum by (le, kind) (rate(kts_a_bucket{kind=~"$kind"}[5m]))) / on(instance) kts_b')).toEqual(['kts_a_bucket', 'kts_b']);
    expect(metricNamesIn('label_values(kts_sandboxes, kind)')).toEqual(['kts_sandboxes']);
    expect(metricNamesIn('up')).toEqual(['up']);
  });

  it('lets a histogram be queried only through its series', () => {
    const names = queryableNames(new Map([['kts_h', 'histogram'], ['kts_c_total', 'counter']]));
    expect([...names].sort()).toEqual(['kts_c_total', 'kts_h_bucket', 'kts_h_count', 'kts_h_sum']);
  });
});
