import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, TestDaemon, canRunContainers, until, writeYaml } from './helpers/daemon.js';
import { asPromQL, dashboardQueries } from './helpers/dashboards.js';
import { PEERS_BIN, freeLoopbackPort } from './helpers/peers.js';
import { startPrometheus, type Prometheus, type PromSample } from './helpers/prometheus.js';
import { controllerClient, taskClient } from './helpers/protoClient.js';

const skip = canRunContainers() ?? (existsSync(path.join(PEERS_BIN, 'prometheus')) ? undefined : `no ${PEERS_BIN}/prometheus (scripts/build-peers.sh builds it)`);
const VERSION = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
// With a 1 s scrape a minute holds plenty of samples for rate(); the dashboards' own default range is an hour.
const GRAFANA = { rateInterval: '1m', range: '1h' };

let pods = 0;
/** A pod of its own (kts, like CRI, refuses a second live pod with the same metadata) running `command`. */
function podFiles(dir: string, container: { image?: string; command?: string[] } = {}): [string, string] {
  pods += 1;
  const pod = writeYaml(dir, `pod-${pods}.yaml`, `metadata: { name: prom-${pods}, namespace: default, uid: prom-uid-${pods} }\nhostname: prom-${pods}\n`);
  const command = JSON.stringify(container.command ?? ['sleep', '3600']);
  const spec = writeYaml(dir, `container-${pods}.yaml`, `metadata: { name: c${pods} }\nimage: { image: ${container.image ?? 'busybox:latest'} }\ncommand: ${command}\n`);
  return [pod, spec];
}

const sum = (samples: PromSample[]) => samples.reduce((total, sample) => total + Number(sample.value[1]), 0);

describe.skipIf(skip)(`a real Prometheus scraping a real daemon${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let daemon: TestDaemon;
  let prometheus: Prometheus;
  let metricsAddress = '';
  let goodPodId = '';
  /** Waits for Prometheus to have scraped a value of `expr` (summed over its series) that `accept` takes. */
  const untilScraped = (expr: string, accept: (value: number) => boolean) =>
    until(`prometheus: ${expr}`, async () => {
      const samples = await prometheus.query(expr);
      return samples.length > 0 && accept(sum(samples)) ? samples : undefined;
    }, 15_000);

  beforeAll(async () => {
    metricsAddress = `127.0.0.1:${await freeLoopbackPort()}`;
    daemon = new TestDaemon(`[metrics]\nlisten = "${metricsAddress}"`);
    await daemon.start();
    prometheus = await startPrometheus({ scrapeTargets: [metricsAddress], scrapeIntervalSeconds: 1 });
    await prometheus.waitForTarget();
    goodPodId = (JSON.parse(daemon.ktsOk('run', '--json', ...podFiles(daemon.root))) as { podId: string }).podId;
    await untilScraped('kts_pod_start_duration_seconds_count{kind="runc"}', (starts) => starts === 1);
    // Series born with the pod (transitions by type, commits) need two samples before rate() sees them, as on any dashboard.
    await untilScraped('count_over_time(kts_transitions_total{type="ContainerStarted"}[1m])', (samples) => samples >= 2);
  }, 60_000);
  afterAll(async () => {
    await prometheus?.stop();
    await daemon?.cleanup();
  });

  it('given one pod started and none failed, then every query of every dashboard returns at least one series, the failure counters at 0', async () => {
    const queries = dashboardQueries();
    const empty: string[] = [];
    const seriesCounts: number[] = [];
    for (const query of queries) {
      const { promql, label } = asPromQL(query.expr, GRAFANA);
      const samples = await prometheus.query(promql);
      const usable = label ? samples.filter((sample) => sample.metric[label] !== undefined) : samples;
      seriesCounts.push(usable.length);
      if (usable.length === 0) empty.push(`${query.dashboard} ${query.where}: ${promql}`);
    }

    expect(empty).toEqual([]);
    expect(queries.length).toBeGreaterThan(40);
    console.log(`prometheus: ${queries.length} dashboard queries, ${seriesCounts.reduce((a, b) => a + b, 0)} series, fewest ${Math.min(...seriesCounts)}`);
    const failures = await prometheus.query('kts_pod_start_failures_total');
    expect(failures.length).toBeGreaterThanOrEqual(13);
    expect(sum(failures)).toBe(0);
  });

  it('answers /healthz with 200 once recovered', async () => {
    const response = await fetch(`http://${metricsAddress}/healthz`);

    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'ok' });
  });

  it('exports kts_build_info with the package version', async () => {
    const [info] = await prometheus.query('kts_build_info');

    expect(info?.metric).toMatchObject({ version: VERSION, node_version: process.versions.node, job: 'kts' });
    expect(info?.value[1]).toBe('1');
  });

  it('keys the phases of kts timeline --json as the phase label of the phase histogram', async () => {
    const timeline = JSON.parse(daemon.ktsOk('timeline', '--json', goodPodId)) as { phases: Array<{ phase: string }> };
    const observed = await prometheus.query('sum by (phase) (kts_pod_start_phase_duration_seconds_count{kind="runc"}) > 0');

    expect(new Set(timeline.phases.map((p) => p.phase))).toEqual(new Set(observed.map((sample) => sample.metric.phase)));
    expect(observed).toHaveLength(6);
  });

  it('given a command that does not exist, a missing image and requests refused before any event, then each counts once as a failed or refused start, and RED shows the errors', async () => {
    const failed = 'sum(kts_pod_start_failures_total{reason="failed"})';
    const refused = (phase: string) => `sum(kts_pod_start_failures_total{reason="refused", kind="unknown", phase="${phase}"})`;

    // The effect fails in runc: counted from its *Failed event, by kind, and not again as refused.
    expect(daemon.kts('run', ...podFiles(daemon.root, { command: ['/no/such/command'] })).code).not.toBe(0);
    await untilScraped(failed, (count) => count === 1);
    await untilScraped('sum(kts_grpc_server_handled_total{method="RunContainer", result!="ok"})', (count) => count === 1);
    expect(sum(await prometheus.query('kts_pod_start_failures_total{reason="failed", kind="runc"}'))).toBe(1);
    expect(sum(await prometheus.query('kts_pod_start_failures_total{reason="refused"}'))).toBe(0);

    // Refused before any event: the image is resolved before the container is recorded.
    const noImage = daemon.kts('run', ...podFiles(daemon.root, { image: 'no-such-image:latest' }));
    expect(noImage.code).not.toBe(0);
    await untilScraped(refused('container_create'), (count) => count === 1);

    // Refused by the API's validation, straight through the containerd APIs.
    const controller = controllerClient(daemon.socket);
    const task = taskClient(daemon.socket);
    try {
      await expect(controller.Create!({ sandboxId: '../escape', sandboxer: 'runc' })).rejects.toMatchObject({ code: 3 });
      await expect(task.Start!({ id: 'no-such-container' })).rejects.toMatchObject({ code: 5 });
    } finally {
      controller.close();
      task.close();
    }
    await untilScraped(refused('sandbox_create'), (count) => count === 1);
    await untilScraped(refused('container_start'), (count) => count === 1);
    expect(sum(await prometheus.query(failed))).toBe(1);

    const errors = await prometheus.query('sum by (service, method, result) (kts_grpc_server_handled_total{result!="ok"})');
    const byCall = Object.fromEntries(errors.map((sample) => [`${sample.metric.method} ${sample.metric.result}`, Number(sample.value[1])]));
    expect(byCall).toMatchObject({ 'Create invalid_argument': 1, 'Start not_found': 1 });
    expect(Object.keys(byCall).some((call) => call.startsWith('RunContainer '))).toBe(true);
    // The dashboards' error panel now shows the methods rather than its 0 fallback.
    const panel = await prometheus.query(asPromQL('sum by (service, method, result) (rate(kts_grpc_server_handled_total{instance=~"$instance", result!="ok"}[$__rate_interval])) or on() vector(0)', GRAFANA).promql);
    expect(panel.every((sample) => sample.metric.method !== undefined)).toBe(true);
    const latency = await prometheus.query('sum(kts_grpc_server_handling_seconds_count{service="containerd.services.sandbox.v1.Controller", method="Create"})');
    expect(sum(latency)).toBeGreaterThanOrEqual(4);
  });
});
