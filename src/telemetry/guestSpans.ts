import { SpanKind, SpanStatusCode, TraceFlags, type Attributes, type HrTime, type SpanContext } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';

/**
 * Spans made inside a VM travel back to the host in the trailer of the agent call that caused
 * them, and are exported with the host's spans under the same trace. The guest is untrusted: the
 * host takes only spans of the call's own trace, at most MAX_SPANS, each bounded in size.
 */
export const GUEST_SPANS_TRAILER = 'kts-guest-spans-bin';
const MAX_SPANS = 256;
const MAX_BUFFERED = 1024;
const MAX_TRAILER_BYTES = 64 * 1024;
const MAX_NAME = 200;
const MAX_ATTRIBUTES = 64;
const MAX_VALUE = 1000;

interface WireSpan {
  t: string; s: string; p: string; n: string; k: number;
  st: [number, number]; et: [number, number];
  a: Record<string, string | number | boolean>;
  c: number; m: string;
}

/** The agent's span processor: keeps finished spans until the call of their trace takes them. */
export class GuestSpanCollector implements SpanProcessor {
  private spans: ReadableSpan[] = [];

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    this.spans.push(span);
    if (this.spans.length > MAX_BUFFERED) this.spans.splice(0, this.spans.length - MAX_BUFFERED);
  }

  take(traceId: string): ReadableSpan[] {
    const taken = this.spans.filter((span) => span.spanContext().traceId === traceId);
    this.spans = this.spans.filter((span) => span.spanContext().traceId !== traceId);
    return taken;
  }

  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

export function encodeSpans(spans: ReadableSpan[]): Buffer {
  const wire: WireSpan[] = spans.slice(-MAX_SPANS).map((span) => ({
    t: span.spanContext().traceId, s: span.spanContext().spanId, p: span.parentSpanContext?.spanId ?? '',
    n: span.name.slice(0, MAX_NAME), k: span.kind, st: span.startTime, et: span.endTime,
    a: primitiveAttributes(span.attributes), c: span.status.code, m: (span.status.message ?? '').slice(0, MAX_VALUE),
  }));
  let encoded = Buffer.from(JSON.stringify(wire));
  while (encoded.length > MAX_TRAILER_BYTES && wire.length > 0) {
    wire.shift();
    encoded = Buffer.from(JSON.stringify(wire));
  }
  return encoded;
}

function primitiveAttributes(attributes: Attributes): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [key, value] of Object.entries(attributes).slice(0, MAX_ATTRIBUTES)) {
    if (typeof value === 'string') out[key] = value.slice(0, MAX_VALUE);
    else if (typeof value === 'number' || typeof value === 'boolean') out[key] = value;
  }
  return out;
}

const HEX = (length: number) => new RegExp(`^[0-9a-f]{${length}}$`);
const isHrTime = (value: unknown): value is HrTime =>
  Array.isArray(value) && value.length === 2 && value.every((part) => Number.isSafeInteger(part) && part >= 0);

/** Parses the trailer into exportable spans; anything malformed, oversized or of another trace is dropped. */
export function decodeGuestSpans(trailer: Buffer, traceId: string, serviceName = 'kts-agent'): ReadableSpan[] {
  if (trailer.length > MAX_TRAILER_BYTES || !HEX(32).test(traceId)) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(trailer.toString('utf8'));
  } catch {
    return [];
  }
  if (!Array.isArray(parsed)) return [];
  const resource = resourceFromAttributes({ 'service.name': serviceName });
  return parsed.slice(0, MAX_SPANS).flatMap((candidate: unknown) => {
    const span = validWireSpan(candidate, traceId);
    return span ? [toReadableSpan(span, resource)] : [];
  });
}

function validWireSpan(candidate: unknown, traceId: string): WireSpan | undefined {
  if (typeof candidate !== 'object' || candidate === null) return undefined;
  const span = candidate as Partial<WireSpan>;
  if (span.t !== traceId || typeof span.s !== 'string' || !HEX(16).test(span.s)) return undefined;
  if (typeof span.p !== 'string' || (span.p !== '' && !HEX(16).test(span.p))) return undefined;
  if (typeof span.n !== 'string' || span.n.length > MAX_NAME || !isHrTime(span.st) || !isHrTime(span.et)) return undefined;
  if (typeof span.k !== 'number' || !(span.k in SpanKind) || typeof span.c !== 'number' || !(span.c in SpanStatusCode)) return undefined;
  return { ...span, a: primitiveAttributes(typeof span.a === 'object' && span.a !== null ? span.a : {}), m: typeof span.m === 'string' ? span.m.slice(0, MAX_VALUE) : '' } as WireSpan;
}

function toReadableSpan(span: WireSpan, resource: ReadableSpan['resource']): ReadableSpan {
  const context = (spanId: string): SpanContext => ({ traceId: span.t, spanId, traceFlags: TraceFlags.SAMPLED, isRemote: true });
  const duration: HrTime = [span.et[0] - span.st[0], span.et[1] - span.st[1]];
  if (duration[1] < 0) duration.splice(0, 2, duration[0] - 1, duration[1] + 1e9);
  return {
    name: span.n, kind: span.k, spanContext: () => context(span.s), parentSpanContext: span.p ? context(span.p) : undefined,
    startTime: span.st, endTime: span.et, duration, ended: true, status: { code: span.c, message: span.m || undefined },
    attributes: span.a, links: [], events: [], resource, instrumentationScope: { name: 'kuasar-ts' },
    droppedAttributesCount: 0, droppedEventsCount: 0, droppedLinksCount: 0,
  };
}
