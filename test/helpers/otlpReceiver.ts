// A real OTLP/gRPC trace receiver (the collector's TraceService, from proto/opentelemetry/…), for
// tests that check what kts exports: every span received, flattened.
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PROTO } from './protoClient.js';

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: string;
  service: string;
  attributes: Record<string, unknown>;
  /** The span's resource: service.name, service.version, service.instance.id, host.name… */
  resource: Record<string, unknown>;
  scope: { name: string; version: string };
  /** STATUS_CODE_UNSET, STATUS_CODE_OK or STATUS_CODE_ERROR, and its message. */
  status: { code: string; message: string };
  startMs: number;
  endMs: number;
}

interface KeyValue { key: string; value: Record<string, unknown> | null }
const hex = (bytes: Buffer | undefined) => (bytes ? Buffer.from(bytes).toString('hex') : '');
const attributeValue = (value: Record<string, unknown> | null) => (value ? value[value.value as string] : undefined);
const attributesOf = (list: KeyValue[] | undefined) => Object.fromEntries((list ?? []).map((kv) => [kv.key, attributeValue(kv.value)]));

export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  private readonly server = new grpc.Server();
  port = 0;

  async start(): Promise<void> {
    const definition = protoLoader.loadSync(path.join(PROTO, 'opentelemetry/proto/collector/trace/v1/trace_service.proto'), {
      keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO],
    });
    const pkg = grpc.loadPackageDefinition(definition) as any;
    this.server.addService(pkg.opentelemetry.proto.collector.trace.v1.TraceService.service, {
      Export: (call: grpc.ServerUnaryCall<any, any>, callback: grpc.sendUnaryData<object>) => {
        for (const resourceSpans of call.request.resource_spans) {
          const resource = attributesOf(resourceSpans.resource?.attributes);
          const service = String(resource['service.name'] ?? '');
          for (const scope of resourceSpans.scope_spans) {
            for (const span of scope.spans) {
              this.spans.push({
                traceId: hex(span.trace_id), spanId: hex(span.span_id), parentSpanId: hex(span.parent_span_id), name: span.name,
                kind: span.kind, service, attributes: attributesOf(span.attributes), resource,
                scope: { name: scope.scope?.name ?? '', version: scope.scope?.version ?? '' },
                status: { code: span.status?.code ?? 'STATUS_CODE_UNSET', message: span.status?.message ?? '' },
                startMs: Number(span.start_time_unix_nano) / 1e6, endMs: Number(span.end_time_unix_nano) / 1e6,
              });
            }
          }
        }
        callback(null, {});
      },
    });
    this.port = await new Promise((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))));
  }

  /** What a process must be given to export here. */
  get env(): Record<string, string> {
    return { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${this.port}`, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_BSP_SCHEDULE_DELAY: '100' };
  }

  trace(traceId: string): ReceivedSpan[] {
    return this.spans.filter((span) => span.traceId === traceId);
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.tryShutdown(() => resolve()));
  }
}
