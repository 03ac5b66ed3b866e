import { SpanStatusCode } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { decodeGuestSpans } from './guestSpans.js';

const TRACE = 'a'.repeat(32);
const CLIENT = 'c'.repeat(16);
const hr = (ms: number): [number, number] => [Math.floor(ms / 1000), Math.round((ms % 1000) * 1e6)];
const ms = (time: [number, number]) => time[0] * 1000 + time[1] / 1e6;

/** A trailer of a guest server span (child of the host's client span) and one child of it. */
function trailer(serverStartMs: number, serverEndMs: number): Buffer {
  const span = (s: string, p: string, n: string, st: number, et: number) => ({ t: TRACE, s, p, n, k: 1, st: hr(st), et: hr(et), a: { 'process.command_args': ['runc', 'create'] }, c: SpanStatusCode.UNSET, m: '' });
  return Buffer.from(JSON.stringify([span('1'.repeat(16), CLIENT, 'server', serverStartMs, serverEndMs), span('2'.repeat(16), '1'.repeat(16), 'runc.create', serverStartMs + 2, serverEndMs - 2)]));
}

describe('guest spans on the host\'s clock', () => {
  const call = { spanId: CLIENT, startMs: 1_700_000_000_000, endMs: 1_700_000_000_100 };

  it('given a guest clock 30 ms behind, when its spans come back, then all move by one offset so the server span lies centred in the client span', () => {
    const { spans, clockOffsetMs } = decodeGuestSpans(trailer(call.startMs - 30, call.startMs + 50), TRACE, { call });
    expect(clockOffsetMs).toBeCloseTo(40, 3);
    const [server, child] = spans;
    expect(ms(server!.startTime as [number, number])).toBeCloseTo(call.startMs + 10, 3);
    expect(ms(server!.endTime as [number, number])).toBeCloseTo(call.endMs - 10, 3);
    expect(ms(child!.startTime as [number, number]) - ms(server!.startTime as [number, number])).toBeCloseTo(2, 3);
    expect(child!.attributes['process.command_args']).toEqual(['runc', 'create']);
  });

  it('given guest spans already within the client span, then they are left where they are', () => {
    const { spans, clockOffsetMs } = decodeGuestSpans(trailer(call.startMs + 5, call.endMs - 5), TRACE, { call });
    expect(clockOffsetMs).toBe(0);
    expect(ms(spans[0]!.startTime as [number, number])).toBeCloseTo(call.startMs + 5, 3);
  });

  it('given a guest whose clock says 1970, then its spans are not followed before the epoch, and the resource names the VM', () => {
    const { spans, clockOffsetMs } = decodeGuestSpans(trailer(0, 80), TRACE, { call, resource: { 'service.instance.id': 'pod-1' } });
    expect(clockOffsetMs).toBeGreaterThan(0);
    expect(spans[0]!.resource.attributes).toMatchObject({ 'service.name': 'kts-agent', 'service.instance.id': 'pod-1' });
  });

  it('given hostile attributes (a list of numbers, a huge list), then only string lists are kept, bounded', () => {
    const hostile = [{ t: TRACE, s: '3'.repeat(16), p: CLIENT, n: 'x', k: 1, st: hr(call.startMs + 1), et: hr(call.startMs + 2), a: { numbers: [1, 2], many: Array(10_000).fill('y'.repeat(5000)) }, c: 0, m: '' }];
    const { spans } = decodeGuestSpans(Buffer.from(JSON.stringify(hostile)), TRACE, { call });
    // 10,000 × 5,000 bytes is far past the trailer's bound: nothing is taken.
    expect(spans).toEqual([]);
    const bounded = [{ ...hostile[0], a: { numbers: [1, 2], many: Array(100).fill('y'), long: ['z'.repeat(1500)] } }];
    const [span] = decodeGuestSpans(Buffer.from(JSON.stringify(bounded)), TRACE, { call }).spans;
    expect(span!.attributes.numbers).toBeUndefined();
    expect((span!.attributes.many as string[]).length).toBe(64);
    expect((span!.attributes.long as string[])[0]).toHaveLength(1000);
  });

  it('given a span that ends before it starts, then it is dropped (a negative duration no backend can draw)', () => {
    const backwards = [{ t: TRACE, s: '4'.repeat(16), p: CLIENT, n: 'x', k: 1, st: hr(call.startMs + 5), et: hr(call.startMs + 1), a: {}, c: 0, m: '' }];
    expect(decodeGuestSpans(Buffer.from(JSON.stringify(backwards)), TRACE, { call }).spans).toEqual([]);
  });
});
