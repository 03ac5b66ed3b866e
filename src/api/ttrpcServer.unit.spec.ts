import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ServerUnaryCall, UntypedServiceImplementation, sendUnaryData } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { notFound } from '../core/errors.js';
import { peerCredentialReader } from '../host/peerCredentials.js';
import { formatCaller } from '../grpc/caller.js';
import { silentLogger } from '../telemetry/logger.js';
import { toServiceError } from '../grpc/grpcErrors.js';
import { loadGrpcDefinitions, protoTypes } from '../grpc/protos.js';
import { TTRPC_MAX_MESSAGE_BYTES, serveTtrpc, type TtrpcServer } from './ttrpcServer.js';

// The client side of ttrpc, written from PROTOCOL.md: what containerd's Go client puts on the wire.
const wire = protobuf.Root.fromJSON({
  nested: {
    Request: { fields: { service: { type: 'string', id: 1 }, method: { type: 'string', id: 2 }, payload: { type: 'bytes', id: 3 }, metadata: { rule: 'repeated', type: 'KeyValue', id: 5 } } },
    KeyValue: { fields: { key: { type: 'string', id: 1 }, value: { type: 'string', id: 2 } } },
    Response: { fields: { status: { type: 'Status', id: 1 }, payload: { type: 'bytes', id: 2 } } },
    Status: { fields: { code: { type: 'int32', id: 1 }, message: { type: 'string', id: 2 } } },
  },
});
const Request = wire.lookupType('Request');
const Response = wire.lookupType('Response');
const PidsRequest = () => protoTypes().lookupType('containerd.task.v3.PidsRequest');
const PidsResponse = () => protoTypes().lookupType('containerd.task.v3.PidsResponse');

function frame(streamId: number, type: number, body: Uint8Array): Buffer {
  const header = Buffer.alloc(10);
  header.writeUInt32BE(body.length, 0);
  header.writeUInt32BE(streamId, 4);
  header.writeUInt8(type, 8);
  return Buffer.concat([header, body]);
}

interface Reply { streamId: number; type: number; code: number; message: string; payload: Buffer }

/** Reads `count` response frames from the socket. */
function replies(socket: Socket, count: number): Promise<Reply[]> {
  return new Promise((resolve, reject) => {
    let pending = Buffer.alloc(0);
    const got: Reply[] = [];
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 10 && pending.length >= 10 + pending.readUInt32BE(0)) {
        const length = pending.readUInt32BE(0);
        const response = Response.toObject(Response.decode(pending.subarray(10, 10 + length)), { defaults: true }) as { status?: { code: number; message: string }; payload: Uint8Array };
        got.push({ streamId: pending.readUInt32BE(4), type: pending.readUInt8(8), code: response.status?.code ?? 0, message: response.status?.message ?? '', payload: Buffer.from(response.payload) });
        pending = pending.subarray(10 + length);
      }
      if (got.length >= count) resolve(got);
    });
    socket.once('error', reject);
    socket.once('close', () => resolve(got));
  });
}

function pidsRequest(streamId: number, id: string, metadata: Array<{ key: string; value: string }> = []): Buffer {
  const payload = PidsRequest().encode(PidsRequest().fromObject({ id })).finish();
  return frame(streamId, 1, Request.encode(Request.fromObject({ service: 'containerd.task.v3.Task', method: 'Pids', payload, metadata })).finish());
}

describe('the Task API over ttrpc', () => {
  let dir: string;
  let server: TtrpcServer;
  const seen: Array<{ id: string; namespace: string }> = [];
  const callers: string[] = [];

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kts-ttrpc-'));
    seen.length = 0;
    callers.length = 0;
    const implementation: UntypedServiceImplementation = {
      Pids: (call: ServerUnaryCall<{ id: string }, unknown>, callback: sendUnaryData<unknown>) => {
        seen.push({ id: call.request.id, namespace: String(call.metadata.get('containerd-namespace')[0] ?? '') });
        callers.push(formatCaller('containerd.task.v3.Task/Pids', call.getPeer(), {}));
        if (call.request.id === 'missing') return callback(toServiceError(notFound('container missing not found')));
        if (call.request.id === 'crowded') return callback(null, { processes: Array.from({ length: 800_000 }, (_, i) => ({ pid: 4_000_000 + i })) });
        callback(null, { processes: [{ pid: 41 }, { pid: 42 }] });
      },
    };
    server = await serveTtrpc(path.join(dir, 'task.sock'), [{ definition: loadGrpcDefinitions().taskV3, implementation }], silentLogger(), peerCredentialReader());
  });
  afterEach(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers each request on its own stream, with containerd\'s namespace metadata under the gRPC key', async () => {
    const socket = connect(path.join(dir, 'task.sock'));
    const answered = replies(socket, 2);
    // Both requests in one write, the second split from the first mid-header: framing must not care.
    const both = Buffer.concat([pidsRequest(1, 'web', [{ key: 'containerd-namespace-ttrpc', value: 'k8s.io' }]), pidsRequest(3, 'db')]);
    socket.write(both.subarray(0, 7));
    socket.write(both.subarray(7));
    const [first, second] = (await answered).sort((a, b) => a.streamId - b.streamId);
    socket.destroy();
    expect(first).toMatchObject({ streamId: 1, type: 2, code: 0 });
    expect(PidsResponse().toObject(PidsResponse().decode(first!.payload))).toEqual({ processes: [{ pid: 41 }, { pid: 42 }] });
    expect(second).toMatchObject({ streamId: 3, type: 2, code: 0 });
    expect(seen).toEqual([{ id: 'web', namespace: 'k8s.io' }, { id: 'db', namespace: '' }]);
  });

  it('names the caller of each call by its connection\'s credentials from the kernel (here: this process)', async () => {
    const socket = connect(path.join(dir, 'task.sock'));
    const answered = replies(socket, 1);
    socket.write(pidsRequest(1, 'web'));
    await answered;
    socket.destroy();
    expect(callers).toEqual([`grpc containerd.task.v3.Task/Pids uid=${process.getuid!()} gid=${process.getgid!()} pid=${process.pid} comm=node agent=unknown`]);
  });

  it('turns an error into a status with the gRPC code, and an unknown method into UNIMPLEMENTED', async () => {
    const socket = connect(path.join(dir, 'task.sock'));
    const answered = replies(socket, 2);
    const unknown = frame(3, 1, Request.encode(Request.fromObject({ service: 'containerd.task.v3.Task', method: 'Teleport', payload: Buffer.alloc(0) })).finish());
    socket.write(Buffer.concat([pidsRequest(1, 'missing'), unknown]));
    const [missing, teleport] = (await answered).sort((a, b) => a.streamId - b.streamId);
    socket.destroy();
    expect(missing).toMatchObject({ code: 5, message: 'container missing not found' });
    expect(teleport).toMatchObject({ code: 12, message: expect.stringMatching(/Teleport is not served/) });
  });

  it('refuses a reply longer than a ttrpc frame with RESOURCE_EXHAUSTED on its stream, and keeps the connection (found by fuzzing)', async () => {
    const socket = connect(path.join(dir, 'task.sock'));
    const answered = replies(socket, 2);
    socket.write(Buffer.concat([pidsRequest(1, 'crowded'), pidsRequest(3, 'web')]));
    const [crowded, web] = (await answered).sort((a, b) => a.streamId - b.streamId);
    socket.destroy();
    expect(crowded).toMatchObject({ streamId: 1, type: 2, code: 8, message: expect.stringMatching(/^reply of \d+ bytes exceeds ttrpc's 4194304$/) });
    expect(web).toMatchObject({ streamId: 3, code: 0 });
  });

  it('closes a connection that announces a frame longer than ttrpc allows, and keeps serving others', async () => {
    const hostile = connect(path.join(dir, 'task.sock'));
    const closed = new Promise((resolve) => hostile.once('close', resolve));
    const header = Buffer.alloc(10);
    header.writeUInt32BE(TTRPC_MAX_MESSAGE_BYTES + 1, 0);
    hostile.write(header);
    await closed;
    const socket = connect(path.join(dir, 'task.sock'));
    const answered = replies(socket, 1);
    socket.write(pidsRequest(1, 'web'));
    expect((await answered)[0]).toMatchObject({ streamId: 1, code: 0 });
    socket.destroy();
  });
});
