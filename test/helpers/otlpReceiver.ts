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
          const service = String(attributesOf(resourceSpans.resource?.attributes)['service.name'] ?? '');
          for (const scope of resourceSpans.scope_spans) {
            for (const span of scope.spans) {
              this.spans.push({
                traceId: hex(span.trace_id), spanId: hex(span.span_id), parentSpanId: hex(span.parent_span_id), name: span.name,
                kind: span.kind, service, attributes: attributesOf(span.attributes),
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
