import { close as closeFd, constants, open as openFd, read as readFd, write as writeFd } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage, notFound, unavailable } from '../core/errors.js';

/**
 * One open virtio-serial port as the guest sees it. read() resolves with 0 at once while no host
 * is connected to QEMU's chardev socket (and when the host goes away); with a host connected it
 * waits for data.
 */
export interface PortDevice {
  read(buffer: Buffer): Promise<number>;
  /** Writes all of data (the kernel may take it in parts). */
  write(data: Buffer): Promise<void>;
  close(): Promise<void>;
}

export interface BridgeLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

export interface PortBridgeOptions {
  portPath: string;
  /** The agent's gRPC server socket. */
  agentSocket: string;
  logger: BridgeLogger;
  /** How the port is opened; tests pass a simulated port. */
  openPort?: (path: string) => Promise<PortDevice>;
  /** Pause between reads while no host is connected (they return EOF at once). */
  disconnectedPollMs?: number;
  /** Pause before reopening a port whose open or read failed. */
  reopenDelayMs?: number;
}

const READ_CHUNK_BYTES = 64 * 1024;
const VIRTIO_PORTS_DIR = '/sys/class/virtio-ports';

/** The /dev node of the virtio-serial port the host named `name` (its vportNpM number follows device order). */
export async function findVirtioPort(name: string, sysDir = VIRTIO_PORTS_DIR): Promise<string> {
  for (const port of await readdir(sysDir).catch(() => [])) {
    const portName = await readFile(join(sysDir, port, 'name'), 'utf8').catch(() => '');
    if (portName.trim() === name) return join('/dev', port);
  }
  throw notFound(`no virtio-serial port named ${name} in ${sysDir}`);
}

/** A character device read and written through the fd in libuv's thread pool (a read stream would end at the first EOF). */
export async function openCharDevice(path: string): Promise<PortDevice> {
  const fd = await new Promise<number>((resolve, reject) =>
    openFd(path, constants.O_RDWR | constants.O_NOCTTY, (error, opened) => (error ? reject(error) : resolve(opened))),
  );
  return new CharDevice(fd, path);
}

class CharDevice implements PortDevice {
  private closed = false;
  private inFlight = 0;
  private fdClosing = false;

  constructor(
    private readonly fd: number,
    private readonly path: string,
  ) {}

  read(buffer: Buffer): Promise<number> {
    return this.operation((done) => readFd(this.fd, buffer, 0, buffer.length, null, done));
  }

  async write(data: Buffer): Promise<void> {
    for (let offset = 0; offset < data.length; ) {
      offset += await this.operation((done) => writeFd(this.fd, data, offset, data.length - offset, null, done));
    }
  }

  /**
   * The fd is closed once no read or write uses it, so its number is never reused under one of
   * them; a read blocked in the kernel ends at the next byte or host disconnect, and is dropped.
   */
  close(): Promise<void> {
    this.closed = true;
    if (this.inFlight === 0) this.closeFd();
    return Promise.resolve();
  }

  private operation(start: (done: (error: NodeJS.ErrnoException | null, bytes: number) => void) => void): Promise<number> {
    if (this.closed) return Promise.reject(unavailable(`${this.path} is closed`));
    this.inFlight++;
    return new Promise((resolve, reject) =>
      start((error, bytes) => {
        this.inFlight--;
        if (this.closed && this.inFlight === 0) this.closeFd();
        if (error) reject(error);
        else resolve(bytes);
      }),
    );
  }

  private closeFd(): void {
    if (this.fdClosing) return;
    this.fdClosing = true;
    closeFd(this.fd, () => undefined);
  }
}

/**
 * Copies bytes between the guest's virtio-serial port and the agent's gRPC unix socket. Each host
 * connection (first bytes after an EOF) gets a fresh connection to the agent, so a reconnecting
 * daemon always starts a clean HTTP/2 session; when the host goes away (EOF) that connection is
 * destroyed and the port reopened. Owner of the port fd, the connection and its timers.
 */
export class PortBridge {
  private readonly openPort: (path: string) => Promise<PortDevice>;
  private readonly stopping = new AbortController();
  private port: PortDevice | undefined;
  private connection: Socket | undefined;
  /** Settles when the loop has ended; a read blocked in the kernel delays it (see CharDevice.close). */
  readonly stopped: Promise<void>;

  constructor(private readonly options: PortBridgeOptions) {
    this.openPort = options.openPort ?? openCharDevice;
    this.stopped = this.run();
  }

  /** True while a host session is being relayed to the agent. */
  get relaying(): boolean {
    return this.connection !== undefined;
  }

  async close(): Promise<void> {
    if (this.stopping.signal.aborted) return;
    this.stopping.abort();
    this.dropConnection();
    await this.port?.close();
  }

  private async run(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      try {
        this.port = await this.openPort(this.options.portPath);
        await this.relayOneHostSession(this.port);
      } catch (error) {
        if (this.stopping.signal.aborted) break;
        this.options.logger.warn({ port: this.options.portPath, error: errorMessage(error) }, 'agent port failed; reopening it');
        await this.pause(this.options.reopenDelayMs ?? 500);
      } finally {
        this.dropConnection();
        await this.port?.close().catch(() => undefined);
        this.port = undefined;
      }
    }
  }

  /** Waits out EOFs until a host sends bytes, relays until the host goes away (the next EOF). */
  private async relayOneHostSession(port: PortDevice): Promise<void> {
    const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
    let hostSeen = false;
    while (!this.stopping.signal.aborted) {
      const bytesRead = await port.read(buffer);
      if (this.stopping.signal.aborted) return;
      if (bytesRead > 0) {
        hostSeen = true;
        await this.toAgent(port, Buffer.from(buffer.subarray(0, bytesRead)));
      } else if (hostSeen) {
        this.options.logger.info({ port: this.options.portPath }, 'host disconnected from the agent port');
        return;
      } else {
        await this.pause(this.options.disconnectedPollMs ?? 50);
      }
    }
  }

  private async toAgent(port: PortDevice, chunk: Buffer): Promise<void> {
    const connection = this.connection ?? this.connectAgent(port);
    if (connection.write(chunk)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        connection.off('drain', done);
        connection.off('close', done);
        resolve();
      };
      connection.on('drain', done);
      connection.on('close', done);
    });
  }

  private connectAgent(port: PortDevice): Socket {
    this.options.logger.info({ port: this.options.portPath, agentSocket: this.options.agentSocket }, 'host connected to the agent port');
    const connection = connect(this.options.agentSocket);
    connection.on('data', (chunk: Buffer) => {
      // Paused while the port takes the chunk: bytes reach the host in order and the agent feels backpressure.
      connection.pause();
      port.write(chunk).then(
        () => connection.resume(),
        (error: unknown) => {
          this.options.logger.warn({ port: this.options.portPath, error: errorMessage(error) }, 'writing to the agent port failed');
          connection.destroy();
        },
      );
    });
    connection.on('error', (error) => this.options.logger.warn({ agentSocket: this.options.agentSocket, error: error.message }, 'agent connection failed'));
    // The agent ended the session (or never took it): the next host bytes get a fresh connection.
    connection.on('close', () => {
      if (this.connection === connection) this.connection = undefined;
    });
    this.connection = connection;
    return connection;
  }

  private dropConnection(): void {
    this.connection?.destroy();
    this.connection = undefined;
  }

  private async pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: this.stopping.signal }).catch(() => undefined);
  }
}
