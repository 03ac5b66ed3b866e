// The root span of a `kts` command. Its calls to the daemon carry its W3C traceparent; once the command
// ends, its span is exported either by `kts` itself (when OTEL_EXPORTER_OTLP_* asks it to) or, the usual
// case, by the daemon on its behalf (Admin.RecordClientSpan), so that the daemon's server spans always have
// their parent in the same trace and a failed command still shows as one failed trace.
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { hostname } from 'node:os';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { invalidArgument } from '../core/errors.js';
import { toReadableSpan } from './guestSpans.js';

export interface ClientSpanRecord {
  traceparent: string;
  /** `kts run`, `kts container stop`… */
  name: string;
  startUnixMs: number;
  endUnixMs: number;
  /** Empty: the command succeeded. */
  error: string;
  /** The gRPC status of the call that failed it, 0 when none did. */
  grpcStatusCode: number;
  clientVersion: string;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/;
const NAME = /^kts( [a-z][a-z-]{0,30}){1,3}$/;
const DAY_MS = 86_400_000;

function hrTime(ms: number): [number, number] {
  const seconds = Math.floor(ms / 1000);
  return [seconds, Math.min(999_999_999, Math.round((ms - seconds * 1000) * 1e6))];
}

/** The command's span, checked field by field (the daemon takes it from any client of its socket). */
export function clientRootSpan(record: ClientSpanRecord, now = Date.now()): ReadableSpan {
  const ids = TRACEPARENT.exec(record.traceparent);
  if (!ids || /^0+$/.test(ids[1]!) || /^0+$/.test(ids[2]!)) throw invalidArgument(`client span: traceparent "${String(record.traceparent).slice(0, 80)}" is not a W3C traceparent of a sampled span`);
  if (!NAME.test(record.name)) throw invalidArgument(`client span: name "${String(record.name).slice(0, 80)}" is not a kts command`);
  const { startUnixMs: start, endUnixMs: end } = record;
  if (!Number.isFinite(start) || !Number.isFinite(end) || start > end || end - start > DAY_MS || Math.abs(start - now) > DAY_MS) {
    throw invalidArgument('client span: start and end must be times within a day of now, the start first');
  }
  if (!Number.isInteger(record.grpcStatusCode) || record.grpcStatusCode < 0 || record.grpcStatusCode > 16) throw invalidArgument(`client span: gRPC status code ${record.grpcStatusCode} is not one`);
  const resource = resourceFromAttributes({ 'service.name': 'kts-cli', 'service.version': String(record.clientVersion).slice(0, 64), 'host.name': hostname() });
  const error = String(record.error).slice(0, 1000);
  return toReadableSpan({
    t: ids[1]!, s: ids[2]!, p: '', n: record.name, k: SpanKind.INTERNAL, st: hrTime(start), et: hrTime(end),
    a: record.grpcStatusCode ? { 'rpc.grpc.status_code': record.grpcStatusCode } : {},
    c: error ? SpanStatusCode.ERROR : SpanStatusCode.UNSET, m: error,
  }, resource);
}
