// An OTLP/gRPC trace receiver in the bench process: point a daemon at `endpoint` (with
// OTEL_EXPORTER_OTLP_ENDPOINT) and every span it exports lands in `spans`.
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { REPO } from './daemon.mjs';

const loaderOptions = { keepCase: true, longs: Number, enums: String, defaults: true, includeDirs: [path.join(REPO, 'proto')] };
const TraceService = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(REPO, 'proto/opentelemetry/proto/collector/trace/v1/trace_service.proto'), loaderOptions))
  .opentelemetry.proto.collector.trace.v1.TraceService;

const hex = (bytes) => Buffer.from(bytes).toString('hex');

/** An OTLP AnyValue's scalar. */
const scalar = (value) => value.string_value || value.int_value || value.double_value || value.bool_value;

/** A span as the benches use it: ids in hex, times in ms, attributes as an object. */
function normalize(span) {
  return {
    name: span.name, traceId: hex(span.trace_id), spanId: hex(span.span_id), parentSpanId: hex(span.parent_span_id),
    startMs: span.start_time_unix_nano / 1e6, durationMs: (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
    attributes: Object.fromEntries(span.attributes.map((kv) => [kv.key, scalar(kv.value ?? {})])),
  };
}

export async function startSpanReceiver() {
  const spans = [];
  const server = new grpc.Server();
  server.addService(TraceService.service, {
    Export: (call, callback) => {
      for (const resourceSpans of call.request.resource_spans) for (const scopeSpans of resourceSpans.scope_spans) spans.push(...scopeSpans.spans.map(normalize));
      callback(null, {});
    },
  });
  const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return {
    spans,
    /** Environment for a daemon that exports every span here. */
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_TRACES_SAMPLER: 'always_on' },
    stop: () => server.forceShutdown(),
  };
}
