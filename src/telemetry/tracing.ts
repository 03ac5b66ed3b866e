import { context, propagation, trace, SpanKind, SpanStatusCode, type Context, type Span, type TextMapGetter } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider, type SpanProcessor } from '@opentelemetry/sdk-trace-node';

export const TRACER_NAME = 'kuasar-ts';

let provider: NodeTracerProvider | undefined;

/**
 * Registers a tracer provider so every request gets a trace id that events and logs can carry.
 * Spans are exported over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is
 * set; otherwise no processor is attached and a finished span is simply dropped.
 */
export function initTracing(serviceName = 'kts-daemon'): void {
  if (provider) return;
  const exporting = Boolean(process.env.OTEL_EXPORTER_OTLP_ENDPOINT || process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  const spanProcessors: SpanProcessor[] = exporting ? [new BatchSpanProcessor(new OTLPTraceExporter())] : [];
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': process.env.OTEL_SERVICE_NAME ?? serviceName }),
    spanProcessors,
  });
  provider.register({ propagator: new W3CTraceContextPropagator() });
}

/** Flushes spans still buffered for export; bounded so a dead collector never blocks shutdown. */
export async function shutdownTracing(): Promise<void> {
  if (!provider) return;
  const current = provider;
  provider = undefined;
  await Promise.race([current.shutdown(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
}

export function tracer() {
  return trace.getTracer(TRACER_NAME);
}

/** Reads W3C trace context from any string-keyed carrier (gRPC metadata flattened to a record). */
const recordGetter: TextMapGetter<Record<string, string | undefined>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

export function extractContext(headers: Record<string, string | undefined>): Context {
  return propagation.extract(context.active(), headers, recordGetter);
}

export function injectContext(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier;
}

/** Runs `work` inside a span; the span records the error and ends when the work settles. */
export async function withSpan<T>(
  name: string,
  options: { kind?: SpanKind; attributes?: Record<string, string | number | boolean>; parent?: Context },
  work: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = options.parent ?? context.active();
  const span = tracer().startSpan(name, { kind: options.kind ?? SpanKind.INTERNAL, attributes: options.attributes }, parent);
  try {
    return await context.with(trace.setSpan(parent, span), () => work(span));
  } catch (error) {
    span.recordException(error as Error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
    throw error;
  } finally {
    span.end();
  }
}

/** Trace and span id of the active span, if it is a real (sampled or recorded) one. */
export function activeTraceIds(): { traceId?: string; spanId?: string } {
  const spanContext = trace.getActiveSpan()?.spanContext();
  if (!spanContext || !trace.isSpanContextValid(spanContext)) return {};
  return { traceId: spanContext.traceId, spanId: spanContext.spanId };
}
