import { context, trace, SpanKind, SpanStatusCode, type Context, type Span } from '@opentelemetry/api';
import { hrTime, W3CTraceContextPropagator } from '@opentelemetry/core';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider, type ReadableSpan, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace-node';
import { KTS_VERSION } from '../version.js';
import { tracingExports } from './propagation.js';

export const TRACER_NAME = 'kuasar-ts';

let provider: NodeTracerProvider | undefined;
let exportProcessors: SpanProcessor[] = [];

const requireExporter = createRequire(import.meta.url);
type ExporterModule = { OTLPTraceExporter: new () => SpanExporter };

/**
 * The exporter OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL asks for: grpc (default), http/protobuf or
 * http/json. Loaded only when exporting: they are most of the start-up cost of every `kts` command.
 */
function otlpExporter(env: NodeJS.ProcessEnv): SpanExporter {
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'grpc';
  const name = protocol === 'http/protobuf' ? 'proto' : protocol === 'http/json' ? 'http' : 'grpc';
  const { OTLPTraceExporter } = requireExporter(`@opentelemetry/exporter-trace-otlp-${name}`) as ExporterModule;
  return new OTLPTraceExporter();
}

/**
 * Registers a tracer provider so every request gets a trace id that events and logs can carry.
 * Spans are exported over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is
 * set; otherwise no exporter is attached and a finished span is simply dropped. `extraProcessors`
 * see every span too (the guest agent's collector sends its spans back to the host).
 */
export function initTracing(serviceName = 'kts-daemon', extraProcessors: SpanProcessor[] = []): void {
  // The standard switch: no provider, no spans, no trace ids on events.
  if (provider || process.env.OTEL_SDK_DISABLED === 'true') return;
  exportProcessors = tracingExports(process.env) ? [new BatchSpanProcessor(otlpExporter(process.env))] : [];
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
      'service.name': process.env.OTEL_SERVICE_NAME ?? serviceName, 'service.version': KTS_VERSION,
      'service.instance.id': randomUUID(), 'host.name': hostname(), 'process.pid': process.pid,
    }),
    spanProcessors: [...exportProcessors, ...extraProcessors],
  });
  provider.register({ propagator: new W3CTraceContextPropagator() });
}

/** Exports spans made elsewhere (inside a VM) with this process's own; a no-op when nothing exports. */
export function exportForeignSpans(spans: ReadableSpan[]): void {
  for (const processor of exportProcessors) for (const span of spans) processor.onEnd(span);
}

/** Flushes spans still buffered for export; bounded so a dead collector never blocks shutdown. */
export async function shutdownTracing(): Promise<void> {
  if (!provider) return;
  const current = provider;
  provider = undefined;
  exportProcessors = [];
  await Promise.race([current.shutdown(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
}

export function tracer() {
  return trace.getTracer(TRACER_NAME, KTS_VERSION);
}

export { extractContext, injectContext } from './propagation.js';

export type SpanAttributes = Record<string, string | number | boolean | string[]>;

/**
 * Runs `work` inside a span; the span records the error and ends when the work settles. `isFailure`
 * decides which errors mark the span failed (default: all); the others leave its status unset, as
 * OpenTelemetry's RPC conventions ask of a server that refuses a request it was right to refuse.
 * Start and end are both read from one monotonic clock (hrTime): the SDK's default start, Date.now(),
 * is whole milliseconds while its end is not, so a child could seem to end after its parent, and
 * Jaeger would flag the trace for clock skew.
 */
export async function withSpan<T>(
  name: string,
  options: { kind?: SpanKind; attributes?: SpanAttributes; parent?: Context; isFailure?: (error: unknown) => boolean },
  work: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = options.parent ?? context.active();
  const span = tracer().startSpan(name, { kind: options.kind ?? SpanKind.INTERNAL, attributes: options.attributes, startTime: hrTime() }, parent);
  try {
    return await context.with(trace.setSpan(parent, span), () => work(span));
  } catch (error) {
    if (options.isFailure?.(error) === false) throw error;
    throw failed(span, error);
  } finally {
    span.end(hrTime());
  }
}

/** Marks the span failed with the error, and hands the error back to be rethrown. */
function failed(span: Span, error: unknown): unknown {
  span.recordException(error as Error);
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
  return error;
}

/** The synchronous twin of withSpan, for work that must not yield (a store commit). */
export function withSpanSync<T>(name: string, attributes: SpanAttributes, work: () => T): T {
  const parent = context.active();
  const span = tracer().startSpan(name, { attributes, startTime: hrTime() }, parent);
  try {
    return context.with(trace.setSpan(parent, span), work);
  } catch (error) {
    throw failed(span, error);
  } finally {
    span.end(hrTime());
  }
}

/** Trace and span id of the active span, if it is a real (sampled or recorded) one. */
export function activeTraceIds(): { traceId?: string; spanId?: string } {
  const spanContext = trace.getActiveSpan()?.spanContext();
  if (!spanContext || !trace.isSpanContextValid(spanContext)) return {};
  return { traceId: spanContext.traceId, spanId: spanContext.spanId };
}
