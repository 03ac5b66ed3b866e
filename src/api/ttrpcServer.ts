/**
 * containerd's ttrpc (github.com/containerd/ttrpc, PROTOCOL.md) for unary calls, serving the same
 * grpc-js service implementations as the gRPC server. Why: containerd 2.4 watches a `grpc+` task
 * connection from its IDLE state, so a task connection that has not sent its first call yet is taken
 * for a dead shim and its bundle removed mid-Create; a ttrpc connection is established when dialled.
 * Frames are a 10-byte header (length, stream id: big-endian u32; type, flags: u8) and a protobuf
 * body of at most 4 MiB; a request's body is a ttrpc.Request, the reply a ttrpc.Response.
 */
import { rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { Metadata, type ServerUnaryCall, type ServiceDefinition, type ServiceError, type UntypedServiceImplementation, type sendUnaryData } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import protobuf from 'protobufjs';
import { tagConnection, type PeerReader } from '../grpc/caller.js';
import { capMessage } from '../grpc/grpcErrors.js';

const HEADER_BYTES = 10;
export const TTRPC_MAX_MESSAGE_BYTES = 4 << 20;
export const TTRPC_TYPE_REQUEST = 1;
export const TTRPC_TYPE_RESPONSE = 2;
/** gRPC status codes used for what the ttrpc layer itself refuses. */
const RESOURCE_EXHAUSTED = 8;
const UNIMPLEMENTED = 12;
const INTERNAL = 13;

const wire = protobuf.Root.fromJSON({
  nested: {
    ttrpc: {
      nested: {
        Request: { fields: { service: { type: 'string', id: 1 }, method: { type: 'string', id: 2 }, payload: { type: 'bytes', id: 3 }, timeoutNano: { type: 'int64', id: 4 }, metadata: { rule: 'repeated', type: 'KeyValue', id: 5 } } },
        KeyValue: { fields: { key: { type: 'string', id: 1 }, value: { type: 'string', id: 2 } } },
        Response: { fields: { status: { type: 'Status', id: 1 }, payload: { type: 'bytes', id: 2 } } },
        Status: { fields: { code: { type: 'int32', id: 1 }, message: { type: 'string', id: 2 } } },
      },
    },
  },
});
const RequestType = wire.lookupType('ttrpc.Request');
const ResponseType = wire.lookupType('ttrpc.Response');

interface TtrpcRequest { service: string; method: string; payload: Uint8Array; metadata: Array<{ key: string; value: string }> }

/** containerd sends its namespace under this ttrpc metadata key; our handlers read gRPC's. */
const METADATA_ALIASES: Record<string, string> = { 'containerd-namespace-ttrpc': 'containerd-namespace' };

export interface TtrpcService {
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

type Method = { deserialize: (bytes: Buffer) => unknown; serialize: (value: unknown) => Buffer; handler: (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void };

/** Where the daemon serves the Task API over ttrpc: beside its gRPC socket, as containerd names its own. */
export function taskTtrpcSocket(grpcSocket: string): string {
  return `${grpcSocket}.ttrpc`;
}

export interface TtrpcServer {
  close(): Promise<void>;
}

/**
 * Serves `services` on a unix socket at `socketPath` (a stale file there is replaced). Each connection
 * is tagged with its peer's credentials (`readPeer`), which its calls record as the gRPC server's do.
 */
export async function serveTtrpc(socketPath: string, services: TtrpcService[], logger: Logger, readPeer: PeerReader = () => undefined): Promise<TtrpcServer> {
  const methods = methodTable(services);
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    tagConnection(socket, readPeer(socket));
    socket.on('error', (error) => logger.debug({ err: error }, 'ttrpc connection failed'));
    readFrames(socket, (streamId, type, body) => {
      if (type !== TTRPC_TYPE_REQUEST) return; // data frames only belong to streaming calls, which nothing here serves
      handleRequest(socket, streamId, body, methods, logger);
    }, (reason) => {
      logger.warn({ reason }, 'ttrpc connection closed: bad frame');
      socket.destroy();
    });
  });
  await rm(socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return {
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
      await rm(socketPath, { force: true });
    },
  };
}

function methodTable(services: TtrpcService[]): Map<string, Method> {
  const methods = new Map<string, Method>();
  for (const { definition, implementation } of services) {
    for (const [name, method] of Object.entries(definition)) {
      const handler = implementation[name];
      if (method.requestStream || method.responseStream || typeof handler !== 'function') continue;
      // `/pkg.Service/Method` → `pkg.Service/Method`, as a ttrpc Request names them.
      methods.set(method.path.slice(1), {
        deserialize: method.requestDeserialize as Method['deserialize'],
        serialize: method.responseSerialize as Method['serialize'],
        handler: handler as Method['handler'],
      });
    }
  }
  return methods;
}

/** Calls `onFrame` for each complete frame (`frame` is its header and body); `onBad` once for a frame longer than ttrpc allows. */
export function readFrames(socket: Socket, onFrame: (streamId: number, type: number, body: Buffer, frame: Buffer) => void, onBad: (reason: string) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= HEADER_BYTES) {
      const length = pending.readUInt32BE(0);
      if (length > TTRPC_MAX_MESSAGE_BYTES) return onBad(`frame of ${length} bytes exceeds ${TTRPC_MAX_MESSAGE_BYTES}`);
      if (pending.length < HEADER_BYTES + length) return;
      const streamId = pending.readUInt32BE(4);
      const type = pending.readUInt8(8);
      const frame = pending.subarray(0, HEADER_BYTES + length);
      pending = pending.subarray(HEADER_BYTES + length);
      onFrame(streamId, type, frame.subarray(HEADER_BYTES), frame);
    }
  });
}

function handleRequest(socket: Socket, streamId: number, body: Buffer, methods: Map<string, Method>, logger: Logger): void {
  let request: TtrpcRequest;
  try {
    request = RequestType.toObject(RequestType.decode(body), { defaults: true }) as TtrpcRequest;
  } catch (error) {
    return reply(socket, streamId, { code: INTERNAL, message: `malformed ttrpc request: ${(error as Error).message}` });
  }
  const method = methods.get(`${request.service}/${request.method}`);
  if (!method) return reply(socket, streamId, { code: UNIMPLEMENTED, message: `${request.service}/${request.method} is not served over ttrpc` });
  let decoded: unknown;
  try {
    decoded = method.deserialize(Buffer.from(request.payload));
  } catch (error) {
    return reply(socket, streamId, { code: INTERNAL, message: `malformed ${request.service}/${request.method} request: ${(error as Error).message}` });
  }
  const metadata = new Metadata();
  for (const { key, value } of request.metadata) {
    try {
      metadata.add(METADATA_ALIASES[key] ?? key, value);
    } catch {
      logger.debug({ key }, 'ttrpc metadata key refused');
    }
  }
  const call = { request: decoded, metadata, getPeer: () => socket.remoteAddress ?? 'ttrpc' } as unknown as ServerUnaryCall<unknown, unknown>;
  method.handler(call, (error: ServiceError | Partial<ServiceError> | null, value?: unknown) => {
    if (error) return reply(socket, streamId, { code: error.code ?? INTERNAL, message: error.details ?? error.message ?? 'error' });
    let payload: Buffer;
    try {
      payload = method.serialize(value ?? {});
    } catch (serializeError) {
      return reply(socket, streamId, { code: INTERNAL, message: `reply could not be encoded: ${(serializeError as Error).message}` });
    }
    reply(socket, streamId, { code: 0, message: '' }, payload);
  });
}

function reply(socket: Socket, streamId: number, status: { code: number; message: string }, payload?: Buffer): void {
  if (socket.destroyed) return;
  // A refusal may quote the request (a service name of megabytes): cut as over gRPC, so that it fits in a frame.
  let body = Buffer.from(ResponseType.encode(ResponseType.fromObject({ status: status.code === 0 ? undefined : { code: status.code, message: capMessage(status.message) }, payload: payload ?? Buffer.alloc(0) })).finish());
  // A frame beyond ttrpc's limit makes the client drop the connection and every call on it: refuse the one call, as ttrpc's Go server does.
  if (body.length > TTRPC_MAX_MESSAGE_BYTES) body = Buffer.from(ResponseType.encode(ResponseType.fromObject({ status: { code: RESOURCE_EXHAUSTED, message: `reply of ${body.length} bytes exceeds ttrpc's ${TTRPC_MAX_MESSAGE_BYTES}` } })).finish());
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(body.length, 0);
  header.writeUInt32BE(streamId, 4);
  header.writeUInt8(TTRPC_TYPE_RESPONSE, 8);
  socket.write(Buffer.concat([header, body]));
}
