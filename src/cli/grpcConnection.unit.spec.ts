// The CLI's gRPC transport against a grpc-js server, as the daemon serves: what a call sends and gets
// back, and how each way of failing reaches the caller.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcCallError, GrpcConnection } from './grpcConnection.js';

const bytes = (value: Buffer) => value;
const method = (name: string, responseStream = false): grpc.MethodDefinition<Buffer, Buffer> => ({
  path: `/test.Echo/${name}`, requestStream: false, responseStream,
  requestSerialize: bytes, requestDeserialize: bytes, responseSerialize: bytes, responseDeserialize: bytes,
});
const SERVICE = {
  Echo: method('Echo'), Fail: method('Fail'), Silent: method('Silent'), Huge: method('Huge'), Count: method('Count', true), Cancelled: method('Cancelled', true),
};

/** Replies with what it got: the request's bytes, then its traceparent header and whether it had a deadline. */
const handlers: grpc.UntypedServiceImplementation = {
  Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
    const deadline = call.getDeadline();
    const hasDeadline = Number.isFinite(deadline instanceof Date ? deadline.getTime() : deadline);
    callback(null, Buffer.from(`${call.request.toString()}|${String(call.metadata.get('traceparent')[0] ?? '')}|${hasDeadline ? 'deadline' : 'none'}`));
  },
  Fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
    const metadata = new grpc.Metadata();
    metadata.set('kts-error-kind', 'not_found');
    callback({ code: grpc.status.NOT_FOUND, details: 'no pod or container "web%1"', metadata });
  },
  Silent: () => undefined,
  Huge: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, Buffer.alloc(5 * 1024 * 1024)),
  Count: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
    for (const word of ['one', 'two', 'three']) call.write(Buffer.from(word));
    call.end();
  },
  Cancelled: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
    call.write(Buffer.from('first'));
    call.emit('error', { code: grpc.status.CANCELLED, details: 'stopping' });
  },
};

describe('GrpcConnection', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-grpc-connection-'));
  const socket = path.join(dir, 'test.sock');
  const server = new grpc.Server();
  let connection: GrpcConnection;

  beforeAll(async () => {
    server.addService(SERVICE, handlers);
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())));
    connection = new GrpcConnection(socket);
  });

  afterAll(() => {
    connection.close();
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The messages of a call, as text; or the error it failed with. */
  const call = async (name: string, options: { metadata?: Record<string, string>; deadlineMs?: number } = {}) => {
    const received: string[] = [];
    await connection.call(`/test.Echo/${name}`, Buffer.from('ping'), {
      metadata: options.metadata ?? {}, deadlineMs: options.deadlineMs ?? 5_000, onMessage: (message) => received.push(message.toString()),
    });
    return received;
  };
  const failure = (promise: Promise<unknown>) => promise.then(() => expect.unreachable('the call succeeded'), (error: unknown) => error as GrpcCallError);

  it('sends the request with its metadata and deadline, and receives the reply', async () => {
    expect(await call('Echo', { metadata: { traceparent: '00-abc-def-01' } })).toEqual(['ping|00-abc-def-01|deadline']);
  });

  it('sends no deadline for a call that may last as long as it takes', async () => {
    expect(await call('Echo', { deadlineMs: Infinity })).toEqual(['ping||none']);
  });

  it('receives each message of a stream, in order, until the server ends it', async () => {
    expect(await call('Count', { deadlineMs: Infinity })).toEqual(['one', 'two', 'three']);
  });

  it('fails with the server\'s status, its details decoded and its trailers', async () => {
    const error = await failure(call('Fail'));
    expect(error).toBeInstanceOf(GrpcCallError);
    expect({ code: error.code, details: error.details, kind: error.trailers['kts-error-kind'] }).toEqual({ code: grpc.status.NOT_FOUND, details: 'no pod or container "web%1"', kind: 'not_found' });
  });

  it('fails with DEADLINE_EXCEEDED when the server does not answer in time', async () => {
    expect(await failure(call('Silent', { deadlineMs: 100 }))).toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
  });

  it('refuses a reply larger than 4 MiB, as grpc-js does', async () => {
    expect(await failure(call('Huge'))).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringContaining('larger than max') });
  });

  it('ends a stream the server cancels with CANCELLED, after what it sent', async () => {
    const received: string[] = [];
    const error = await failure(connection.call('/test.Echo/Cancelled', Buffer.alloc(0), { metadata: {}, deadlineMs: Infinity, onMessage: (message) => received.push(message.toString()) }));
    expect({ code: error.code, received }).toEqual({ code: grpc.status.CANCELLED, received: ['first'] });
  });

  it('fails with UNAVAILABLE naming the socket error when nothing listens', async () => {
    const missing = path.join(dir, 'missing.sock');
    const unreachable = new GrpcConnection(missing);
    const error = await failure(unreachable.call('/test.Echo/Echo', Buffer.alloc(0), { metadata: {}, deadlineMs: 5_000, onMessage: () => undefined }));
    unreachable.close();
    expect({ code: error.code, details: error.details }).toEqual({ code: grpc.status.UNAVAILABLE, details: `connect ENOENT ${missing}` });
  });
});
