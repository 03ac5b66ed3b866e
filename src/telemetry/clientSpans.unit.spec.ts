import { SpanStatusCode } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { clientRootSpan, type ClientSpanRecord } from './clientSpans.js';

const now = 1_700_000_000_000;
const record: ClientSpanRecord = {
  traceparent: `00-${'ab'.repeat(16)}-${'cd'.repeat(8)}-01`, name: 'kts run', startUnixMs: now - 300.25, endUnixMs: now,
  error: '', grpcStatusCode: 0, clientVersion: '0.1.0',
};

describe('the root span of a kts command, as the daemon exports it for the CLI', () => {
  it('given a command that succeeded, then it is a root of the traceparent\'s trace and span ids, service kts-cli, status unset', () => {
    const span = clientRootSpan(record, now);
    expect(span.spanContext()).toMatchObject({ traceId: 'ab'.repeat(16), spanId: 'cd'.repeat(8) });
    expect(span.parentSpanContext).toBeUndefined();
    expect(span.resource.attributes).toMatchObject({ 'service.name': 'kts-cli', 'service.version': '0.1.0' });
    expect(span.startTime).toEqual([Math.floor((now - 300.25) / 1000), 699_750_000]);
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
  });

  it('given a command that failed, then the span is in error with the reason and the gRPC code', () => {
    const span = clientRootSpan({ ...record, error: 'image "x" not found', grpcStatusCode: 5 }, now);
    expect(span.status).toEqual({ code: SpanStatusCode.ERROR, message: 'image "x" not found' });
    expect(span.attributes['rpc.grpc.status_code']).toBe(5);
  });

  it.each([
    ['a malformed traceparent', { traceparent: 'not-one' }, /traceparent/],
    ['an all-zero trace id', { traceparent: `00-${'0'.repeat(32)}-${'cd'.repeat(8)}-01` }, /traceparent/],
    ['a name that is no kts command', { name: 'rm -rf /' }, /name/],
    ['an end before the start', { endUnixMs: now - 1000 }, /start/],
    ['a time a week away', { startUnixMs: now - 7 * 86_400_000 }, /start/],
    ['a NaN time', { endUnixMs: Number.NaN }, /start/],
    ['a status code that is none', { grpcStatusCode: 99 }, /status code/],
  ])('given %s, then it is refused with INVALID_ARGUMENT naming the field', (_, change, reason) => {
    expect(() => clientRootSpan({ ...record, ...change } as ClientSpanRecord, now)).toThrow(reason);
    try {
      clientRootSpan({ ...record, ...change } as ClientSpanRecord, now);
    } catch (error) {
      expect((error as { kind: string }).kind).toBe('invalid_argument');
    }
  });
});
