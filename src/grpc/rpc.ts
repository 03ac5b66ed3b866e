import { Metadata, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from '@grpc/grpc-js';
import { ROOT_CONTEXT, SpanKind } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';
import type { Logger } from 'pino';
import { observed } from '../telemetry/rpcObserver.js';
import { DAEMON_EXPORTS_TRACES_TRAILER, tracingExports } from '../telemetry/traceparent.js';
import { extractContext, withSpan } from '../telemetry/tracing.js';
import { formatCaller } from './caller.js';
import { toServiceError } from './grpcErrors.js';

export interface CallInfo {
  /** Who asked, as the engine records it with each event (its CommandMeta). */
  meta: { caller: string };
  /** containerd's namespace (metadata `containerd-namespace`), empty for other clients. */
  namespace: string;
}

function metadataRecord(metadata: Metadata): Record<string, string> {
  const record: Record<string, string> = {};
  for (const [key, value] of Object.entries(metadata.getMap())) record[key] = typeof value === 'string' ? value : value.toString('utf8');
  return record;
}

/** `peer` is grpc-js's getPeer(): the token the daemon gave the call's connection (caller.ts). */
function callInfo(fullMethod: string, headers: Record<string, string>, peer: string): CallInfo {
  return { namespace: headers['containerd-namespace'] ?? '', meta: { caller: formatCaller(fullMethod, peer, headers) } };
}

/**
 * The status codes that mark a server span failed, by OpenTelemetry's RPC conventions: what the server
 * got wrong (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS). A refusal
 * the server was right to make (NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT…) leaves it unset.
 */
const SERVER_FAILURE_CODES = new Set([2, 4, 12, 13, 14, 15]);
const isServerFailure = (error: unknown) => SERVER_FAILURE_CODES.has(toServiceError(error).code);

/** OpenTelemetry's rpc.* attributes of a gRPC call named `package.Service/Method`. */
export function rpcAttributes(fullMethod: string): Record<string, string> {
  const [service = '', method = ''] = fullMethod.split('/');
  return { 'rpc.system': 'grpc', 'rpc.service': service, 'rpc.method': method };
}

/**
 * Runs just before each unary reply is sent. The daemon sets it to its `reply.before` crash point; the
 * guest agent, which shares these wrappers, leaves it empty, so the engine's crash points stay out of it.
 */
let beforeReply: (fullMethod: string) => void = () => {};

export function setBeforeReply(hook: (fullMethod: string) => void): void {
  beforeReply = hook;
}

export interface UnaryOptions {
  /** Trailing metadata for the reply (or the error) of a call of trace `traceId`: the agent returns its spans so. */
  trailer?: (traceId: string) => Metadata | undefined;
  /** No span of its own, nor for what it does: a call about tracing itself (Admin.RecordClientSpan). */
  untraced?: boolean;
}

/**
 * Wraps a unary handler: a SERVER span named after the gRPC method, parented on the W3C trace
 * context in the request metadata; errors become gRPC statuses; unexpected ones are logged.
 */
export function unary<Req, Res>(fullMethod: string, logger: Logger, handler: (request: Req, call: CallInfo) => Promise<Res>, options: UnaryOptions = {}) {
  handler = observed(fullMethod, handler); // the daemon's RED metrics: each call counted by result and timed
  // A client tells by it that the spans it sends the daemon (Admin.RecordClientSpan) are exported.
  const exportsTraces = tracingExports(process.env);
  const replyTrailer = (traceId: string): Metadata => {
    const trailer = options.trailer?.(traceId) ?? new Metadata();
    if (exportsTraces) trailer.set(DAEMON_EXPORTS_TRACES_TRAILER, '1');
    return trailer;
  };
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    const headers = metadataRecord(call.metadata);
    const info = callInfo(fullMethod, headers, call.getPeer());
    let traceId = '';
    const parent = options.untraced ? suppressTracing(ROOT_CONTEXT) : extractContext(headers);
    withSpan(fullMethod, { kind: SpanKind.SERVER, parent, attributes: rpcAttributes(fullMethod), isFailure: isServerFailure }, (span) => {
      traceId = span.spanContext().traceId;
      return handler(call.request, info).then(
        (response) => { span.setAttribute('rpc.grpc.status_code', 0); return response; },
        (error: unknown) => { span.setAttribute('rpc.grpc.status_code', toServiceError(error).code); throw error; },
      );
    }).then(
      (response) => {
        beforeReply(fullMethod);
        callback(null, response, replyTrailer(traceId));
      },
      (error) => {
        const serviceError = toServiceError(error);
        if (serviceError.code === 13) logger.error({ err: error, method: fullMethod }, 'request failed unexpectedly');
        else logger.debug({ method: fullMethod, code: serviceError.code, message: serviceError.message }, 'request rejected');
        serviceError.metadata.merge(replyTrailer(traceId));
        callback(serviceError);
      },
    );
  };
}

/** Wraps a server-streaming handler the same way; the handler writes and resolves when done. */
export function serverStream<Req, Res>(fullMethod: string, logger: Logger, handler: (call: ServerWritableStream<Req, Res>, info: CallInfo) => Promise<void>) {
  handler = observed(fullMethod, handler); // the daemon's RED metrics: each call counted by result and timed
  return (call: ServerWritableStream<Req, Res>) => {
    const headers = metadataRecord(call.metadata);
    const info = callInfo(fullMethod, headers, call.getPeer());
    const span = { kind: SpanKind.SERVER, parent: extractContext(headers), attributes: rpcAttributes(fullMethod), isFailure: isServerFailure };
    withSpan(fullMethod, span, (active) => handler(call, info).then(
      () => { active.setAttribute('rpc.grpc.status_code', 0); },
      (error: unknown) => { active.setAttribute('rpc.grpc.status_code', toServiceError(error).code); throw error; },
    )).then(
      () => call.end(),
      (error) => {
        logger.debug({ err: error, method: fullMethod }, 'stream ended with error');
        // grpc-js sends a server stream's status on 'error'; destroy() would leave the client waiting.
        call.emit('error', toServiceError(error));
      },
    );
  };
}

/** Resolves when a server stream's client goes away or `closing` (the daemon's stop) aborts, whichever comes first. */
export function streamEnded(call: ServerWritableStream<unknown, object>, closing: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    if (closing?.aborted) return resolve();
    // The daemon's signal outlives the call: its listener goes with the call.
    const ended = () => { closing?.removeEventListener('abort', ended); resolve(); };
    for (const event of ['cancelled', 'close', 'finish']) call.once(event, ended);
    closing?.addEventListener('abort', ended, { once: true });
  });
}
