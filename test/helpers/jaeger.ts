// A real Jaeger (v1.75, the OTel-collector based binary built by scripts/build-peers.sh) with in-memory
// storage, on free loopback ports, for tests that export traces and read them back through Jaeger's query API.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { until } from './daemon.js';
import { freeLoopbackPort, spawnPeer, stopPeer, untilPeerReady } from './peers.js';

export interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  processID: string;
  tags: Array<{ key: string; type: string; value: unknown }>;
  references: Array<{ refType: string; traceID: string; spanID: string }>;
}

/** One entry of `data` in Jaeger's /api/traces answers. */
export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string; tags: Array<{ key: string; value: unknown }> }>;
  warnings: string[] | null;
}

export interface Jaeger {
  /** OTLP/HTTP base URL; traces go to `${otlpHttpUrl}/v1/traces`. */
  otlpHttpUrl: string;
  /** OTLP/gRPC endpoint, in the form OTEL_EXPORTER_OTLP_ENDPOINT takes. */
  otlpGrpcEndpoint: string;
  queryUrl: string;
  /** Polls until the trace is stored with at least `minSpans` spans (export and storage are asynchronous). */
  getTrace(traceId: string, options?: { minSpans?: number; timeoutMs?: number }): Promise<JaegerTrace>;
  findTraces(service: string, options?: { operation?: string; limit?: number; lookback?: string }): Promise<JaegerTrace[]>;
  stop(): Promise<void>;
}

function configYaml(ports: { otlpGrpc: number; otlpHttp: number; queryHttp: number; queryGrpc: number }): string {
  return `
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    # On by default in v2: it would export Jaeger's own spans to localhost:4317.
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:${ports.queryHttp}
    grpc:
      endpoint: 127.0.0.1:${ports.queryGrpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${ports.otlpGrpc}
      http:
        endpoint: 127.0.0.1:${ports.otlpHttp}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`;
}

async function getJson<T>(url: string): Promise<{ status: number; body: T }> {
  const response = await fetch(url);
  return { status: response.status, body: (await response.json()) as T };
}

export async function startJaeger(): Promise<Jaeger> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-jaeger-'));
  const ports = { otlpGrpc: await freeLoopbackPort(), otlpHttp: await freeLoopbackPort(), queryHttp: await freeLoopbackPort(), queryGrpc: await freeLoopbackPort() };
  const config = path.join(dir, 'config.yaml');
  writeFileSync(config, configYaml(ports));
  const peer = spawnPeer('jaeger', ['--config', config]);
  const otlpHttpUrl = `http://127.0.0.1:${ports.otlpHttp}`;
  const queryUrl = `http://127.0.0.1:${ports.queryHttp}`;
  try {
    await untilPeerReady('jaeger', peer, async () => {
      const query = await fetch(`${queryUrl}/api/services`);
      const otlp = await fetch(`${otlpHttpUrl}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"resourceSpans":[]}' });
      return query.ok && otlp.ok;
    });
  } catch (error) {
    await stopPeer(peer.child, dir);
    throw error;
  }
  return {
    otlpHttpUrl,
    otlpGrpcEndpoint: `http://127.0.0.1:${ports.otlpGrpc}`,
    queryUrl,
    getTrace: (traceId, { minSpans = 1, timeoutMs = 10_000 } = {}) => until(`trace ${traceId} in jaeger`, async () => {
      const { status, body } = await getJson<{ data: JaegerTrace[] | null }>(`${queryUrl}/api/traces/${traceId}`);
      const trace = status === 200 ? body.data?.[0] : undefined;
      return trace && trace.spans.length >= minSpans ? trace : undefined;
    }, timeoutMs),
    findTraces: async (service, options = {}) => {
      const params = new URLSearchParams({ service, limit: String(options.limit ?? 20), lookback: options.lookback ?? '1h' });
      if (options.operation) params.set('operation', options.operation);
      const { status, body } = await getJson<{ data: JaegerTrace[] | null }>(`${queryUrl}/api/traces?${params}`);
      if (status !== 200) throw new Error(`jaeger: GET /api/traces?${params} answered ${status}`);
      return body.data ?? [];
    },
    stop: () => stopPeer(peer.child, dir),
  };
}
