import { isValidTraceId, SpanKind, SpanStatusCode, TraceFlags, type Attributes, type HrTime, type SpanContext } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { KTS_VERSION } from '../version.js';

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

/** A span as it travels between processes: ids in hex, times as HrTime, attributes of primitives. */
export interface WireSpan {
  t: string; s: string; p: string; n: string; k: number;
  st: [number, number]; et: [number, number];
  a: Record<string, SpanValue>;
  c: number; m: string;
}

type SpanValue = string | number | boolean | string[];

/** Where guest spans come from, for their resource, and the host span of the call that brought them. */
export interface GuestSpanOrigin {
  serviceName?: string;
  /** Extra resource attributes, e.g. service.instance.id: the VM's sandbox, so two VMs' agents differ. */
  resource?: Record<string, string>;
  /**
   * The client span of the agent call, with its start and end on the host's clock (ms since the epoch).
   * The guest's clock runs off the host's by tens of ms: its spans are moved so that the server span of
   * the call lies within that client span.
   */
  call?: { spanId: string; startMs: number; endMs: number };
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

function primitiveAttributes(attributes: Attributes): Record<string, SpanValue> {
  const out: Record<string, SpanValue> = {};
  for (const [key, value] of Object.entries(attributes).slice(0, MAX_ATTRIBUTES)) {
    // JSON.parse makes "__proto__" an own key of a guest's attributes; assigned here it would set out's prototype.
    if (key === '__proto__') continue;
    if (typeof value === 'string') out[key] = value.slice(0, MAX_VALUE);
    else if (typeof value === 'number' || typeof value === 'boolean') out[key] = value;
    else if (Array.isArray(value) && value.every((item) => typeof item === 'string')) out[key] = (value as string[]).slice(0, MAX_ATTRIBUTES).map((item) => item.slice(0, MAX_VALUE));
  }
  return out;
}

const toMs = (time: HrTime) => time[0] * 1e3 + time[1] / 1e6;
function fromMs(ms: number): HrTime {
  const seconds = Math.floor(ms / 1e3);
  return [seconds, Math.min(999_999_999, Math.round((ms - seconds * 1e3) * 1e6))];
}

/**
 * Moves the guest's spans by one offset so that the server span(s) of the call lie centred in its client
 * span (the request and the reply taken to be equally quick), as Jaeger's clock-skew adjuster would; spans
 * already inside are left alone. Returns the offset applied, in ms.
 */
function alignToCall(spans: WireSpan[], call: NonNullable<GuestSpanOrigin['call']>): number {
  const served = spans.filter((span) => span.p === call.spanId);
  if (served.length === 0) return 0;
  const start = Math.min(...served.map((span) => toMs(span.st)));
  const end = Math.max(...served.map((span) => toMs(span.et)));
  if (start >= call.startMs && end <= call.endMs) return 0;
  const offset = (call.startMs + call.endMs - start - end) / 2;
  // A span cannot start before the epoch: an absurd guest clock is not followed there.
  if (start + offset < 0) return 0;
  for (const span of spans) {
    span.st = fromMs(toMs(span.st) + offset);
    span.et = fromMs(toMs(span.et) + offset);
  }
  return offset;
}

const HEX = (length: number) => new RegExp(`^[0-9a-f]{${length}}$`);
const isHrTime = (value: unknown): value is HrTime =>
  Array.isArray(value) && value.length === 2 && value.every((part) => Number.isSafeInteger(part) && part >= 0);

/**
 * Parses the trailer into exportable spans; anything malformed, oversized or of another trace is dropped.
 * `clockOffsetMs`: how far they were moved onto the host's clock (see GuestSpanOrigin.call).
 */
export function decodeGuestSpans(trailer: Buffer, traceId: string, origin: GuestSpanOrigin = {}): { spans: ReadableSpan[]; clockOffsetMs: number } {
  const none = { spans: [], clockOffsetMs: 0 };
  // The all-zero id is no trace: that of a call made with tracing suppressed (waitForReady) or off.
  if (trailer.length > MAX_TRAILER_BYTES || !HEX(32).test(traceId) || !isValidTraceId(traceId)) return none;
  let parsed: unknown;
  try {
    parsed = JSON.parse(trailer.toString('utf8'));
  } catch {
    return none;
  }
  if (!Array.isArray(parsed)) return none;
  const resource = resourceFromAttributes({ 'service.name': origin.serviceName ?? 'kts-agent', ...origin.resource });
  const wire = parsed.slice(0, MAX_SPANS).flatMap((candidate: unknown) => validWireSpan(candidate, traceId) ?? []);
  const clockOffsetMs = origin.call ? alignToCall(wire, origin.call) : 0;
  return { spans: wire.map((span) => toReadableSpan(span, resource)), clockOffsetMs };
}

function validWireSpan(candidate: unknown, traceId: string): WireSpan | undefined {
  if (typeof candidate !== 'object' || candidate === null) return undefined;
  const span = candidate as Partial<WireSpan>;
  if (span.t !== traceId || typeof span.s !== 'string' || !HEX(16).test(span.s)) return undefined;
  if (typeof span.p !== 'string' || (span.p !== '' && !HEX(16).test(span.p))) return undefined;
  if (typeof span.n !== 'string' || span.n.length > MAX_NAME || !isHrTime(span.st) || !isHrTime(span.et)) return undefined;
  // A span that ends before it starts has a negative duration, which no backend can draw.
  if (toMs(span.et) < toMs(span.st)) return undefined;
  if (typeof span.k !== 'number' || !(span.k in SpanKind) || typeof span.c !== 'number' || !(span.c in SpanStatusCode)) return undefined;
  return { ...span, a: primitiveAttributes(typeof span.a === 'object' && span.a !== null ? span.a : {}), m: typeof span.m === 'string' ? span.m.slice(0, MAX_VALUE) : '' } as WireSpan;
}

/** A span made elsewhere as the SDK's exporters take it. */
export function toReadableSpan(span: WireSpan, resource: ReadableSpan['resource']): ReadableSpan {
  const context = (spanId: string): SpanContext => ({ traceId: span.t, spanId, traceFlags: TraceFlags.SAMPLED, isRemote: true });
  const duration: HrTime = [span.et[0] - span.st[0], span.et[1] - span.st[1]];
  if (duration[1] < 0) duration.splice(0, 2, duration[0] - 1, duration[1] + 1e9);
  return {
    name: span.n, kind: span.k, spanContext: () => context(span.s), parentSpanContext: span.p ? context(span.p) : undefined,
    startTime: span.st, endTime: span.et, duration, ended: true, status: { code: span.c, message: span.m || undefined },
    attributes: span.a, links: [], events: [], resource, instrumentationScope: { name: 'kuasar-ts', version: KTS_VERSION },
    droppedAttributesCount: 0, droppedEventsCount: 0, droppedLinksCount: 0,
  };
}
