import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ServerUnaryCall, UntypedServiceImplementation, sendUnaryData } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../telemetry/logger.js';
import { loadGrpcDefinitions, protoTypes } from '../grpc/protos.js';
import { runTaskRelay } from './taskRelay.js';
import { serveTtrpc, type TtrpcServer } from './ttrpcServer.js';

const wire = protobuf.Root.fromJSON({
  nested: {
    Request: { fields: { service: { type: 'string', id: 1 }, method: { type: 'string', id: 2 }, payload: { type: 'bytes', id: 3 } } },
    Response: { fields: { status: { type: 'Status', id: 1 }, payload: { type: 'bytes', id: 2 } } },
    Status: { fields: { code: { type: 'int32', id: 1 }, message: { type: 'string', id: 2 } } },
  },
});

function waitRequest(streamId: number, id: string): Buffer {
  const WaitRequest = protoTypes().lookupType('containerd.task.v3.WaitRequest');
  const Request = wire.lookupType('Request');
  const body = Request.encode(Request.fromObject({ service: 'containerd.task.v3.Task', method: 'Wait', payload: WaitRequest.encode(WaitRequest.fromObject({ id })).finish() })).finish();
  const header = Buffer.alloc(10);
  header.writeUInt32BE(body.length, 0);
  header.writeUInt32BE(streamId, 4);
  header.writeUInt8(1, 8);
  return Buffer.concat([header, body]);
}

function exitStatusOf(frame: Buffer): number {
  const Response = wire.lookupType('Response');
  const WaitResponse = protoTypes().lookupType('containerd.task.v3.WaitResponse');
  const response = Response.decode(frame.subarray(10)) as unknown as { payload: Uint8Array };
  return (WaitResponse.toObject(WaitResponse.decode(response.payload), { defaults: true }) as { exitStatus: number }).exitStatus;
}

/** A stand-in daemon: Wait answers with `exitStatus` after `delayMs` (never, when null). */
function stubDaemon(socket: string, exitStatus: number, delayMs: number | null): Promise<TtrpcServer> {
  const implementation: UntypedServiceImplementation = {
    Wait: (_call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      if (delayMs !== null) setTimeout(() => callback(null, { exitStatus }), delayMs);
    },
  };
  return serveTtrpc(socket, [{ definition: loadGrpcDefinitions().taskV3, implementation }], silentLogger());
}

describe('the task relay', () => {
  let dir: string;
  let relayDone: Promise<void>;
  let stopRelay: AbortController;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kts-relay-'));
    stopRelay = new AbortController();
  });
  afterEach(async () => {
    stopRelay.abort();
    await relayDone;
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps containerd\'s connection open while the daemon restarts, and answers a Wait sent to the dead daemon from the new one', async () => {
    const listen = path.join(dir, 'task.sock');
    const upstream = path.join(dir, 'task.sock-direct');
    let daemon = await stubDaemon(upstream, 0, null); // this daemon dies without answering
    relayDone = runTaskRelay({ listen, upstream, logger: silentLogger(), stop: stopRelay.signal });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const containerd: Socket = connect(listen);
    let closed = false;
    containerd.once('close', () => (closed = true));
    const frames: Buffer[] = [];
    containerd.on('data', (chunk: Buffer) => frames.push(chunk));
    containerd.write(waitRequest(1, 'web'));
    await new Promise((resolve) => setTimeout(resolve, 200));
    await daemon.close();
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(closed).toBe(false);
    expect(frames).toEqual([]);
    daemon = await stubDaemon(upstream, 137, 10);
    const deadline = Date.now() + 5000;
    while (frames.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(frames).toHaveLength(1);
    expect(frames[0]!.readUInt32BE(4)).toBe(1);
    expect(exitStatusOf(frames[0]!)).toBe(137);
    containerd.destroy();
    await daemon.close();
  });
});
