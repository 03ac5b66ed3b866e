import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AgentClient, AGENT_PROTO_FILE } from '../backends/vmm/agentClient.js';
import { loadAgentDefinition, type CheckResponse } from '../agentProtocol/agentProto.js';
import { findVirtioPort, PortBridge, type PortDevice } from './portBridge.js';

const quiet = { info: () => undefined, warn: () => undefined };

/**
 * QEMU's side of a virtio-serial port on a unix-socket chardev, plus the guest's view of the port
 * with the kernel's semantics: a read returns 0 at once while no host is connected, waits for data
 * while one is, and a write waits while none is. Host bytes wait in the socket until the guest reads.
 */
class SimulatedVirtioPort {
  opens = 0;
  private readonly server: NetServer;
  private host: Socket | undefined;
  private pending: Buffer[] = [];
  private waiters: Array<() => void> = [];

  constructor(readonly hostSocket: string) {
    this.server = createServer((socket) => this.hostConnected(socket));
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.hostSocket, resolve));
  }

  close(): void {
    this.host?.destroy();
    this.server.close();
    this.wake();
  }

  device(): PortDevice {
    this.opens++;
    let closed = false;
    return {
      read: async (buffer) => {
        for (;;) {
          if (closed) throw new Error('EBADF');
          const chunk = this.pending.shift();
          if (chunk) {
            const taken = chunk.copy(buffer);
            if (taken < chunk.length) this.pending.unshift(chunk.subarray(taken));
            return taken;
          }
          if (!this.host) return 0;
          await new Promise<void>((resolve) => this.waiters.push(resolve));
        }
      },
      write: async (data) => {
        while (!this.host && !closed) await new Promise<void>((resolve) => this.waiters.push(resolve));
        this.host?.write(data);
      },
      close: async () => {
        closed = true;
        this.wake();
      },
    };
  }

  private hostConnected(socket: Socket): void {
    // A chardev server serves one client at a time.
    if (this.host) return void socket.destroy();
    this.host = socket;
    socket.on('data', (chunk: Buffer) => {
      this.pending.push(chunk);
      this.wake();
    });
    socket.on('close', () => {
      if (this.host === socket) this.host = undefined;
      this.wake();
    });
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }
}

/** An agent that only answers Check. */
async function checkOnlyAgent(socket: string): Promise<Server> {
  const server = new Server();
  server.addService(loadAgentDefinition(AGENT_PROTO_FILE), {
    Check: (_call: ServerUnaryCall<unknown, CheckResponse>, callback: sendUnaryData<CheckResponse>) =>
      callback(null, { uptimeSeconds: 1, agentVersion: 'bridged', podPid: 0, sandboxId: '', podAlive: false }),
  });
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socket}`, ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())));
  return server;
}

async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(10);
  }
}

describe('PortBridge', () => {
  let dir: string;
  let agentSocket: string;
  let agent: Server;
  let bridge: PortBridge | undefined;
  const clients: AgentClient[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kts-bridge-'));
    agentSocket = path.join(dir, 'agent.sock');
    agent = await checkOnlyAgent(agentSocket);
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) client.close();
    await bridge?.close();
    bridge = undefined;
    agent.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  });

  function hostClient(socket: string): AgentClient {
    const client = new AgentClient(socket, { callTimeoutMs: 5000 });
    clients.push(client);
    return client;
  }

  describe('over a simulated virtio-serial port', () => {
    let port: SimulatedVirtioPort;

    beforeEach(async () => {
      port = new SimulatedVirtioPort(path.join(dir, 'host.sock'));
      await port.listen();
    });

    afterEach(() => port.close());

    function startBridge(): PortBridge {
      bridge = new PortBridge({ portPath: '/dev/vport-sim', agentSocket, logger: quiet, openPort: async () => port.device(), disconnectedPollMs: 10 });
      return bridge;
    }

    it('carries gRPC calls, and again after the host reconnects with a fresh session', async () => {
      const started = startBridge();
      const first = hostClient(port.hostSocket);
      for (let i = 0; i < 3; i++) expect((await first.check()).agentVersion).toBe('bridged');
      expect(started.relaying).toBe(true);
      expect(port.opens).toBe(1);

      first.close();
      await until(() => !started.relaying && port.opens === 2, 'the bridge dropped the session and reopened the port');

      const second = hostClient(port.hostSocket);
      expect((await second.check()).agentVersion).toBe('bridged');
      expect(started.relaying).toBe(true);
    });

    it('serves a host that connected before the guest opened the port (boot order)', async () => {
      const early = hostClient(port.hostSocket);
      const health = early.waitForReady(5000);
      await sleep(300);
      startBridge();
      expect((await health).agentVersion).toBe('bridged');
    });

    it('stops on close() and leaves the port closed', async () => {
      const started = startBridge();
      expect((await hostClient(port.hostSocket).check()).agentVersion).toBe('bridged');
      await started.close();
      await started.stopped;
      expect(started.relaying).toBe(false);
    });
  });

  // A pty is a real character device read through the fd as the guest reads its port. It differs
  // from virtio-serial in one way: after the host (socat's master) goes, the slave fails (EIO) for
  // good, so a reconnect is a new pty at the same path, which the bridge reaches by reopening.
  const socat = spawnSync('socat', ['-V']).status === 0;
  describe.skipIf(!socat)('over a real character device (a pty from socat standing in for QEMU)', () => {
    const children: ChildProcess[] = [];

    afterEach(() => {
      for (const child of children.splice(0)) child.kill('SIGKILL');
    });

    async function qemuStandIn(portLink: string, hostSocket: string): Promise<ChildProcess> {
      await rm(hostSocket, { force: true });
      const child = spawn('socat', [`PTY,link=${portLink},raw,echo=0`, `UNIX-LISTEN:${hostSocket}`], { stdio: 'ignore' });
      children.push(child);
      await until(() => existsSync(portLink) && existsSync(hostSocket), 'socat made the pty and the socket');
      return child;
    }

    it('carries gRPC calls, sees the hangup, and reopens the port for the next host', async () => {
      const portLink = path.join(dir, 'vport0p1');
      const hostSocket = path.join(dir, 'host.sock');
      const firstHost = await qemuStandIn(portLink, hostSocket);
      const started = new PortBridge({ portPath: portLink, agentSocket, logger: quiet, disconnectedPollMs: 10, reopenDelayMs: 50 });
      bridge = started;

      const first = hostClient(hostSocket);
      expect((await first.check()).agentVersion).toBe('bridged');
      expect((await first.check()).agentVersion).toBe('bridged');
      first.close();
      await until(() => !started.relaying, 'the bridge saw the hangup');
      // socat lingers briefly after its host leaves, then unlinks the pty link: only then may the next one make it.
      if (firstHost.exitCode === null) await once(firstHost, 'exit');

      await qemuStandIn(portLink, hostSocket);
      const second = hostClient(hostSocket);
      expect((await second.waitForReady(5000)).agentVersion).toBe('bridged');
      second.close();
      // socat exits once its host leaves, so the blocked read of the pty ends and the loop can stop.
      await started.close();
      await started.stopped;
    });
  });
});

describe('findVirtioPort', () => {
  it('finds the /dev node of the port by the name the host gave it', async () => {
    const sys = await mkdtemp(path.join(tmpdir(), 'kts-vports-'));
    try {
      for (const [port, name] of [['vport1p1', 'org.qemu.guest_agent.0'], ['vport2p1', 'kts.agent']]) {
        await mkdir(path.join(sys, port));
        await writeFile(path.join(sys, port, 'name'), `${name}\n`);
      }
      expect(await findVirtioPort('kts.agent', sys)).toBe('/dev/vport2p1');
      await expect(findVirtioPort('kts.other', sys)).rejects.toThrow(/no virtio-serial port named kts.other/);
    } finally {
      await rm(sys, { recursive: true, force: true });
    }
  });
});
