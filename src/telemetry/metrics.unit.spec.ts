import { createServer } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { invalidArgument, isKtsError, notFound } from '../core/errors.js';
import type { EventStore, NewEvent } from '../core/store.js';
import { makeTempDir, newEvent, sandboxRow, containerRow } from '../store/sqliteStore.fixtures.js';
import { openSqliteStore } from '../store/sqliteStore.js';
import { silentLogger } from './logger.js';
import { KTS_VERSION } from '../version.js';
import { DaemonMetrics } from './metrics.js';
import { serveMetrics, type MetricsServer } from './metricsServer.js';
import { observed } from './rpcObserver.js';

type Values = Array<{ labels: Record<string, string | number>; value: number; metricName?: string }>;

async function values(metrics: DaemonMetrics, name: string): Promise<Values> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  return (await metric.get()).values as Values;
}

const valueOf = (all: Values, labels: Record<string, string>, metricName?: string) =>
  all.find((v) => (metricName === undefined || v.metricName === metricName) && Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;

describe('daemon metrics derived from the event log and read models', () => {
  let temp: ReturnType<typeof makeTempDir>;
  let metrics: DaemonMetrics;
  let store: EventStore;
  const append = (streamId: string, events: NewEvent[], expectedVersion: number, projection?: Parameters<EventStore['appendToStream']>[2]['projection']) =>
    store.appendToStream(streamId, events, { expectedVersion, projection });

  beforeEach(() => {
    temp = makeTempDir();
    metrics = new DaemonMetrics({ dbPath: temp.dbPath });
    store = metrics.instrument(openSqliteStore(temp.dbPath));
  });
  afterEach(() => {
    metrics.close();
    store.close();
    temp.remove();
  });

  function startRuncPod(): void {
    append('sandbox-p1', [newEvent('SandboxCreated', 'absent', 'created', { sandboxId: 'p1', kind: 'runc' })], 0, { table: 'sandboxes', row: sandboxRow('p1') });
    append('sandbox-p1', [newEvent('SandboxStartRequested', 'created', 'starting')], 1);
    append('sandbox-p1', [newEvent('SandboxStarted', 'starting', 'ready', { pid: 10 })], 2, { table: 'sandboxes', row: sandboxRow('p1', { state: 'ready', version: 3 }) });
    append('container-c1', [newEvent('ContainerCreateRequested', 'absent', 'creating', { containerId: 'c1', sandboxId: 'p1' })], 0);
    append('container-c1', [newEvent('ContainerCreated', 'creating', 'created', { pid: 11 })], 1);
    append('container-c1', [newEvent('ContainerStartRequested', 'created', 'starting')], 2);
    append('container-c1', [newEvent('ContainerStarted', 'starting', 'running', { pid: 11 })], 3, { table: 'containers', row: containerRow('c1', 'p1', { state: 'running', version: 4 }) });
  }

  it('given a runc pod started through the store, when scraped, then one pod start and one observation per phase are recorded for kind runc', async () => {
    startRuncPod();

    expect(valueOf(await values(metrics, 'kts_pod_start_duration_seconds'), { kind: 'runc' }, 'kts_pod_start_duration_seconds_count')).toBe(1);
    const phases = await values(metrics, 'kts_pod_start_phase_duration_seconds');
    for (const phase of ['await_sandbox_start', 'sandbox_start', 'await_container_create', 'container_create', 'await_container_start', 'container_start']) {
      expect(valueOf(phases, { kind: 'runc', phase }, 'kts_pod_start_phase_duration_seconds_count'), phase).toBe(1);
    }
  });

  it('given a pod started, when scraped, then every committed event is counted by entity and type', async () => {
    startRuncPod();

    const transitions = await values(metrics, 'kts_transitions_total');
    expect(valueOf(transitions, { entity: 'sandbox', type: 'SandboxCreated' })).toBe(1);
    expect(valueOf(transitions, { entity: 'container', type: 'ContainerStarted' })).toBe(1);
    expect(transitions.reduce((sum, v) => sum + v.value, 0)).toBe(7);
  });

  it('given a ready sandbox with a running container, when scraped, then the state gauges count them and show every other state as 0', async () => {
    startRuncPod();

    const sandboxes = await values(metrics, 'kts_sandboxes');
    expect(valueOf(sandboxes, { kind: 'runc', state: 'ready' })).toBe(1);
    expect(valueOf(sandboxes, { kind: 'runc', state: 'stopped' })).toBe(0);
    expect(valueOf(sandboxes, { kind: 'vmm', state: 'ready' })).toBe(0);
    expect(sandboxes.some((v) => v.labels.state === 'absent')).toBe(false);
    const containers = await values(metrics, 'kts_containers');
    expect(valueOf(containers, { kind: 'runc', state: 'running' })).toBe(1);
    expect(valueOf(containers, { kind: 'wasm', state: 'running' })).toBe(0);
  });

  it('given the sandbox later stops, when scraped again, then the gauge moves with the read model', async () => {
    startRuncPod();
    append('sandbox-p1', [newEvent('SandboxStopRequested', 'ready', 'stopping')], 3, { table: 'sandboxes', row: sandboxRow('p1', { state: 'stopping', version: 4 }) });

    const sandboxes = await values(metrics, 'kts_sandboxes');
    expect(valueOf(sandboxes, { kind: 'runc', state: 'ready' })).toBe(0);
    expect(valueOf(sandboxes, { kind: 'runc', state: 'stopping' })).toBe(1);
  });

  it('given one good and one stale append, when scraped, then the commit histogram has one ok and one conflict and the store gauges see the file', async () => {
    append('sandbox-p1', [newEvent('SandboxCreated', 'absent', 'created', { sandboxId: 'p1', kind: 'runc' })], 0);
    expect(() => append('sandbox-p1', [newEvent('SandboxStartRequested', 'created', 'starting')], 0)).toThrow();

    const commits = await values(metrics, 'kts_store_commit_duration_seconds');
    expect(valueOf(commits, { result: 'ok' }, 'kts_store_commit_duration_seconds_count')).toBe(1);
    expect(valueOf(commits, { result: 'conflict' }, 'kts_store_commit_duration_seconds_count')).toBe(1);
    expect(valueOf(commits, { result: 'ok' }, 'kts_store_commit_duration_seconds_sum')).toBeGreaterThan(0);
    expect(valueOf(await values(metrics, 'kts_store_head_sequence'), {})).toBe(1);
    expect(valueOf(await values(metrics, 'kts_store_file_size_bytes'), { file: 'db' })).toBeGreaterThan(0);
  });

  it('given a VM sandbox reporting its guest timings, when scraped, then guest boot and guest pod start are observed by accelerator', async () => {
    append('sandbox-vm', [newEvent('SandboxCreated', 'absent', 'created', { sandboxId: 'vm', kind: 'vmm' })], 0);
    append('sandbox-vm', [newEvent('SandboxStartRequested', 'created', 'starting')], 1);
    append('sandbox-vm', [newEvent('SandboxStarted', 'starting', 'ready', { pid: 7, backend: { 'hypervisor.accelerator': 'tcg', 'guest.boot_ms': 4600, 'guest.pod_start_ms': 300 } })], 2);

    expect(valueOf(await values(metrics, 'kts_guest_boot_duration_seconds'), { accelerator: 'tcg' }, 'kts_guest_boot_duration_seconds_sum')).toBe(4.6);
    expect(valueOf(await values(metrics, 'kts_guest_pod_start_duration_seconds'), { accelerator: 'tcg' }, 'kts_guest_pod_start_duration_seconds_sum')).toBe(0.3);
  });

  it('given recovery took 1.5 s with one failure, when scraped, then the recovery gauges say so', async () => {
    metrics.recordRecovery(1.5, { failures: ['sandbox x: boom'] });

    expect(valueOf(await values(metrics, 'kts_recovery_duration_seconds'), {})).toBe(1.5);
    expect(valueOf(await values(metrics, 'kts_recovery_failures'), {})).toBe(1);
  });

  it('given nothing has happened yet, when scraped, then every pod start, failure and guest series a dashboard reads is there at 0', async () => {
    const failures = await values(metrics, 'kts_pod_start_failures_total');
    expect(valueOf(failures, { kind: 'runc', phase: 'container_start', reason: 'failed' })).toBe(0);
    expect(valueOf(failures, { kind: 'unknown', phase: 'sandbox_create', reason: 'refused' })).toBe(0);
    expect(valueOf(await values(metrics, 'kts_pod_start_duration_seconds'), { kind: 'wasm' }, 'kts_pod_start_duration_seconds_count')).toBe(0);
    expect(valueOf(await values(metrics, 'kts_pod_start_phase_duration_seconds'), { kind: 'vmm', phase: 'sandbox_start' }, 'kts_pod_start_phase_duration_seconds_count')).toBe(0);
    expect(valueOf(await values(metrics, 'kts_guest_boot_duration_seconds'), { accelerator: 'kvm' }, 'kts_guest_boot_duration_seconds_count')).toBe(0);
  });

  it('given a runc sandbox whose start failed, then the failure counts for kind runc, phase sandbox_start, reason failed', async () => {
    append('sandbox-p2', [newEvent('SandboxCreated', 'absent', 'created', { sandboxId: 'p2', kind: 'runc' })], 0);
    append('sandbox-p2', [newEvent('SandboxStartRequested', 'created', 'starting')], 1);
    append('sandbox-p2', [newEvent('SandboxStartFailed', 'starting', 'failed', { reason: 'boom' })], 2);

    expect(valueOf(await values(metrics, 'kts_pod_start_failures_total'), { kind: 'runc', phase: 'sandbox_start', reason: 'failed' })).toBe(1);
  });

  it('given served calls, then each is counted by service, method and result and timed, and a method is at 0 from the moment it is served', async () => {
    const status = observed('containerd.services.sandbox.v1.Controller/Status', async (id: string) => (id === 'p1' ? 'ready' : Promise.reject(notFound(`no sandbox ${id}`))));
    const handled = () => values(metrics, 'kts_grpc_server_handled_total');
    const labels = { service: 'containerd.services.sandbox.v1.Controller', method: 'Status' };
    expect(valueOf(await handled(), { ...labels, result: 'ok' })).toBe(0);

    await status('p1');
    await status('p9').catch(() => undefined);

    expect(valueOf(await handled(), { ...labels, result: 'ok' })).toBe(1);
    expect(valueOf(await handled(), { ...labels, result: 'not_found' })).toBe(1);
    expect(valueOf(await values(metrics, 'kts_grpc_server_handling_seconds'), labels, 'kts_grpc_server_handling_seconds_count')).toBe(2);
  });

  it('given a pod-start call refused before any event, then it counts as a refused start; one that recorded events and failed does not count twice', async () => {
    const create = observed('containerd.services.sandbox.v1.Controller/Create', async (sandboxId: string) => {
      if (sandboxId === '') throw invalidArgument('sandbox id is empty');
      append(`sandbox-${sandboxId}`, [newEvent('SandboxCreated', 'absent', 'created', { sandboxId, kind: 'runc' })], 0);
      throw invalidArgument('recorded, then refused');
    });
    const refused = async () => valueOf(await values(metrics, 'kts_pod_start_failures_total'), { kind: 'unknown', phase: 'sandbox_create', reason: 'refused' });

    await create('').catch(() => undefined);
    expect(await refused()).toBe(1);
    await create('p1').catch(() => undefined);
    expect(await refused()).toBe(1);
  });

  it('says which version it is in kts_build_info', async () => {
    expect(valueOf(await values(metrics, 'kts_build_info'), { version: KTS_VERSION, node_version: process.versions.node })).toBe(1);
  });

  it('is unhealthy until recovery is done, and while the event store cannot be read', () => {
    expect(metrics.health()).toEqual({ healthy: false, reason: 'recovering from the event log' });
    metrics.recordRecovery(0.1, { failures: [] });
    expect(metrics.health()).toEqual({ healthy: true });
    store.close();
    expect(metrics.health().healthy).toBe(false);
    expect(metrics.health().reason).toMatch(/^the event store cannot be read: /);
    store = openSqliteStore(temp.dbPath);
  });

  it('names every metric with the kts_ prefix, process and Node.js metrics included', async () => {
    const names = (await metrics.registry.getMetricsAsJSON()).map((metric) => metric.name);

    expect(names).toContain('kts_process_resident_memory_bytes');
    expect(names.filter((name) => !name.startsWith('kts_'))).toEqual([]);
  });
});

describe('the metrics HTTP endpoint', () => {
  let server: MetricsServer | undefined;
  const source = { contentType: 'text/plain; version=0.0.4; charset=utf-8', metrics: async () => 'kts_up_example 1\n' };

  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('given an endpoint on a loopback port, when /metrics is fetched, then it answers 200 with the exposition text', async () => {
    server = await serveMetrics(source, { host: '127.0.0.1', port: 0 }, silentLogger());

    const response = await fetch(server.url);

    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe(source.contentType);
    expect(await response.text()).toBe('kts_up_example 1\n');
  });

  it('answers /healthz with 200 and {"status":"ok"}, or 503 and the reason the source gives', async () => {
    server = await serveMetrics({ ...source, health: () => ({ healthy: false, reason: 'recovering from the event log' }) }, { host: '127.0.0.1', port: 0 }, silentLogger());
    const unhealthy = await fetch(server.url.replace('/metrics', '/healthz'));
    expect(unhealthy.status).toBe(503);
    expect(await unhealthy.json()).toEqual({ status: 'unhealthy', reason: 'recovering from the event log' });
    await server.close();

    server = await serveMetrics(source, { host: '127.0.0.1', port: 0 }, silentLogger());
    const healthy = await fetch(server.url.replace('/metrics', '/healthz'));
    expect(healthy.status).toBe(200);
    expect(await healthy.json()).toEqual({ status: 'ok' });
  });

  it('answers 404 off /metrics and 405 to anything but GET', async () => {
    server = await serveMetrics(source, { host: '127.0.0.1', port: 0 }, silentLogger());

    expect((await fetch(server.url.replace('/metrics', '/'))).status).toBe(404);
    expect((await fetch(server.url, { method: 'POST' })).status).toBe(405);
  });

  it('given collecting fails, when scraped, then it answers 500 with the reason', async () => {
    server = await serveMetrics({ ...source, metrics: async () => { throw new Error('store closed'); } }, { host: '127.0.0.1', port: 0 }, silentLogger());

    const response = await fetch(server.url);

    expect(response.status).toBe(500);
    expect(await response.text()).toContain('store closed');
  });

  it('given the port is taken, when serving, then it fails with an unavailable error naming the address', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const port = (holder.address() as { port: number }).port;
    try {
      const failure = await serveMetrics(source, { host: '127.0.0.1', port }, silentLogger()).then(() => undefined, (error: unknown) => error);
      expect(isKtsError(failure, 'unavailable')).toBe(true);
      expect((failure as Error).message).toContain(`cannot serve metrics on 127.0.0.1:${port}`);
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  it('given a server with a kept-alive scraper connection, when closed, then close returns promptly', async () => {
    server = await serveMetrics(source, { host: '127.0.0.1', port: 0 }, silentLogger());
    await fetch(server.url, { keepalive: true });

    const started = Date.now();
    await server.close();
    server = undefined;

    expect(Date.now() - started).toBeLessThan(1000);
  });
});
