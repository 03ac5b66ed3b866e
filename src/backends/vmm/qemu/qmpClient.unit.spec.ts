import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { QmpClient } from './qmpClient.js';

/** A QMP peer that greets, accepts capabilities and answers with `reply(command)`. */
function fakeQemu(socketPath: string, reply: (command: string, socket: Socket) => object | undefined): Promise<Server> {
  const server = createServer((socket) => {
    socket.write('{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}\r\n');
    let buffer = '';
    socket.on('data', (chunk) => {
      buffer += chunk;
      for (let i; (i = buffer.indexOf('\n')) >= 0; buffer = buffer.slice(i + 1)) {
        const request = JSON.parse(buffer.slice(0, i)) as { execute: string; id: string };
        socket.write('{"event": "SOMETHING", "timestamp": {}}\r\n');
        const answer = request.execute === 'qmp_capabilities' ? { return: {} } : reply(request.execute, socket);
        if (answer) socket.write(JSON.stringify({ ...answer, id: request.id }) + '\r\n');
      }
    });
  });
  return new Promise((resolve) => server.listen(socketPath, () => resolve(server)));
}

describe('QmpClient', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-qmp-'));
  const socketPath = path.join(dir, 'qmp.sock');
  let server: Server | undefined;
  afterEach(() => {
    server?.close();
    rmSync(socketPath, { force: true });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('negotiates capabilities and returns a command\'s answer, skipping events', async () => {
    server = await fakeQemu(socketPath, (command) => (command === 'query-status' ? { return: { running: true, status: 'running' } } : undefined));
    const qmp = await QmpClient.connect(socketPath);
    expect(await qmp.execute('query-status')).toEqual({ running: true, status: 'running' });
    qmp.close();
  });

  it('rejects with QEMU\'s error description', async () => {
    server = await fakeQemu(socketPath, () => ({ error: { class: 'CommandNotFound', desc: "The command nope has not been found" } }));
    const qmp = await QmpClient.connect(socketPath);
    await expect(qmp.execute('nope')).rejects.toMatchObject({ kind: 'internal', message: expect.stringContaining('nope has not been found') });
    qmp.close();
  });

  it('times out a command QEMU never answers, and fails pending commands when the socket closes', async () => {
    server = await fakeQemu(socketPath, (command, socket) => (command === 'quit' ? void socket.destroy() : undefined));
    const qmp = await QmpClient.connect(socketPath);
    await expect(qmp.execute('stop', undefined, 100)).rejects.toMatchObject({ kind: 'deadline_exceeded' });
    await expect(qmp.execute('quit')).rejects.toMatchObject({ kind: 'unavailable', message: expect.stringContaining('closed') });
    qmp.close();
  });

  it('fails to connect with unavailable when nothing listens', async () => {
    await expect(QmpClient.connect(path.join(dir, 'absent.sock'))).rejects.toMatchObject({ kind: 'unavailable' });
  });
});
