// The part of gRPC the kts CLI speaks, over node:http2 on the daemon's unix socket: a call with
// metadata and a deadline that sends one message and receives any number, and the status it ends
// with. grpc-js does the same and more, but loading it costs ~40 ms of every command's start-up
// (bench/README.md, "CLI start-up"); the daemon, which starts once, serves with grpc-js.
import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import { createRequire } from 'node:module';

/** node:http2 and node:net, loaded at the first call: a command that makes none (kts --help) does without them. */
let modules: { http2: typeof import('node:http2'); net: typeof import('node:net') } | undefined;
function nodeModules(): NonNullable<typeof modules> {
  if (modules) return modules;
  const require = createRequire(import.meta.url);
  modules = { http2: require('node:http2') as typeof import('node:http2'), net: require('node:net') as typeof import('node:net') };
  return modules;
}

/** The gRPC status codes this client produces or tells apart (the numbers are gRPC's). */
export const GrpcStatus = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, DEADLINE_EXCEEDED: 4, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, UNAUTHENTICATED: 16,
} as const;

/** grpc-js's default limit on a received message, kept so that a reply too big fails as it did. */
const MAX_RECEIVED_MESSAGE_BYTES = 4 * 1024 * 1024;
const FRAME_HEADER_BYTES = 5;

/** How a call ended: a gRPC status code, its message, and the trailers the server sent with them. */
interface CallStatus {
  code: number;
  details: string;
  trailers: IncomingHttpHeaders;
}

const callStatus = (code: number, details: string, trailers: IncomingHttpHeaders = {}): CallStatus => ({ code, details, trailers });

/** A call that ended with a status other than OK. */
export class GrpcCallError extends Error implements CallStatus {
  constructor(readonly code: number, readonly details: string, readonly trailers: IncomingHttpHeaders = {}) {
    super(`${code} ${details}`);
  }
}

export interface CallOptions {
  /** Sent as headers (ASCII values only: kts sends trace context). */
  metadata: Record<string, string>;
  /** How long the call may take; Infinity for none. */
  deadlineMs: number;
  /** Each message the server sends, as bytes; what it throws fails the call (INTERNAL). */
  onMessage: (bytes: Buffer) => void;
}

/** One HTTP/2 connection to the daemon, opened at the first call; close() lets open calls finish. */
export class GrpcConnection {
  #session: ClientHttp2Session | undefined;

  constructor(private readonly socket: string) {}

  /** Sends `request` to the method at `path`; resolves, with how it ended, when the server ends the call with OK. */
  call(path: string, request: Buffer, options: CallOptions): Promise<CallStatus> {
    return new Promise((resolve, reject) => {
      let stream: ClientHttp2Stream;
      try {
        stream = this.session().request({
          ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers',
          ...(Number.isFinite(options.deadlineMs) && { 'grpc-timeout': timeoutHeader(options.deadlineMs) }),
          ...options.metadata,
        });
      } catch (error) {
        // A session the server is closing (it sent GOAWAY) takes no new stream.
        return reject(new GrpcCallError(GrpcStatus.UNAVAILABLE, causeOf(error as Error)));
      }
      followCall(stream, options, (status) => (status.code === GrpcStatus.OK ? resolve(status) : reject(new GrpcCallError(status.code, status.details, status.trailers))));
      stream.end(frame(request));
    });
  }

  close(): void {
    this.#session?.close();
  }

  private session(): ClientHttp2Session {
    if (this.#session && !this.#session.closed && !this.#session.destroyed) return this.#session;
    const { http2, net } = nodeModules();
    const session = http2.connect('http://localhost', { createConnection: () => net.connect(this.socket) });
    // A failed connect reaches every call as its stream's error (with this as the cause).
    session.on('error', () => undefined);
    this.#session = session;
    return session;
  }
}

/** Hands the stream's messages to `options.onMessage` and, once it has closed, how the call ended to `settle`. */
function followCall(stream: ClientHttp2Stream, options: CallOptions, settle: (status: CallStatus) => void): void {
  let ended: CallStatus | undefined;
  const end = (status: CallStatus) => {
    ended ??= status;
    stream.close(nodeModules().http2.constants.NGHTTP2_CANCEL);
  };
  const timer = Number.isFinite(options.deadlineMs) ? setTimeout(() => end(callStatus(GrpcStatus.DEADLINE_EXCEEDED, 'Deadline exceeded')), options.deadlineMs) : undefined;
  stream.on('response', (headers) => {
    // A reply of headers only (an error before any message) carries its status here.
    if (headers['grpc-status'] !== undefined) ended ??= statusOf(headers);
    else if (headers[':status'] !== 200) end(callStatus(httpStatusCode(Number(headers[':status'])), `Received HTTP status code ${headers[':status']}`));
  });
  stream.on('data', messageReader(options.onMessage, end));
  stream.on('trailers', (trailers) => (ended ??= statusOf(trailers)));
  // A reset from the server is told apart by its code when the stream closes; anything else is the connection failing.
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'ERR_HTTP2_STREAM_ERROR') ended ??= callStatus(GrpcStatus.UNAVAILABLE, causeOf(error));
  });
  stream.on('close', () => {
    clearTimeout(timer);
    settle(ended ?? callStatus(resetCode(stream.rstCode), `Received RST_STREAM with code ${stream.rstCode}`));
  });
}

/** grpc-timeout: at most 8 digits, in milliseconds while they suffice, else seconds. */
function timeoutHeader(deadlineMs: number): string {
  const ms = Math.max(1, Math.ceil(deadlineMs));
  return ms < 1e8 ? `${ms}m` : `${Math.min(99_999_999, Math.ceil(ms / 1000))}S`;
}

/** A gRPC length-prefixed message: no compression flag, 4-byte length, the bytes. */
function frame(message: Buffer): Buffer {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

/** A data listener that cuts the stream into messages and hands each to `onMessage`. */
function messageReader(onMessage: (bytes: Buffer) => void, fail: (status: CallStatus) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  let failed = false;
  return (chunk) => {
    if (failed) return;
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= FRAME_HEADER_BYTES) {
      const length = pending.readUInt32BE(1);
      if (pending[0] !== 0) return void ((failed = true), fail(callStatus(GrpcStatus.INTERNAL, 'Received a compressed message, but no compression was asked for')));
      if (length > MAX_RECEIVED_MESSAGE_BYTES) return void ((failed = true), fail(callStatus(GrpcStatus.RESOURCE_EXHAUSTED, `Received message larger than max (${length} vs ${MAX_RECEIVED_MESSAGE_BYTES})`)));
      if (pending.length < FRAME_HEADER_BYTES + length) return;
      const message = pending.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length);
      pending = pending.subarray(FRAME_HEADER_BYTES + length);
      try {
        onMessage(message);
      } catch (error) {
        failed = true;
        return fail(callStatus(GrpcStatus.INTERNAL, `Response message parsing error: ${error instanceof Error ? error.message : String(error)}`));
      }
    }
  };
}

function statusOf(headers: IncomingHttpHeaders): CallStatus {
  const code = Number(headers['grpc-status']);
  const message = headers['grpc-message'];
  return callStatus(Number.isInteger(code) ? code : GrpcStatus.UNKNOWN, typeof message === 'string' ? decodeMessage(message) : '', headers);
}

/** grpc-message is percent-encoded as grpc-js's server writes it (encodeURI). */
function decodeMessage(message: string): string {
  try {
    return decodeURI(message);
  } catch {
    return message;
  }
}

/** The socket's own error when the connection failed ("connect ENOENT /run/kts/kts.sock"), else the stream's. */
function causeOf(error: Error): string {
  return error.cause instanceof Error ? error.cause.message : error.message;
}

/** gRPC's mapping of an HTTP status that came without a gRPC status. */
function httpStatusCode(httpStatus: number): number {
  if (httpStatus === 400) return GrpcStatus.INTERNAL;
  if (httpStatus === 401) return GrpcStatus.UNAUTHENTICATED;
  if (httpStatus === 403) return GrpcStatus.PERMISSION_DENIED;
  if (httpStatus === 404) return GrpcStatus.UNIMPLEMENTED;
  if ([429, 502, 503, 504].includes(httpStatus)) return GrpcStatus.UNAVAILABLE;
  return GrpcStatus.UNKNOWN;
}

/** grpc-js's mapping of an HTTP/2 RST_STREAM that ended a call before its status. */
function resetCode(rstCode: number): number {
  const { constants } = nodeModules().http2;
  if (rstCode === constants.NGHTTP2_REFUSED_STREAM) return GrpcStatus.UNAVAILABLE;
  if (rstCode === constants.NGHTTP2_CANCEL) return GrpcStatus.CANCELLED;
  if (rstCode === constants.NGHTTP2_ENHANCE_YOUR_CALM) return GrpcStatus.RESOURCE_EXHAUSTED;
  if (rstCode === constants.NGHTTP2_INADEQUATE_SECURITY) return GrpcStatus.PERMISSION_DENIED;
  return GrpcStatus.INTERNAL;
}
