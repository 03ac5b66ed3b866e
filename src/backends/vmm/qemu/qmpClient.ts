import { connect, type Socket } from 'node:net';
import { SpanKind } from '@opentelemetry/api';
import { deadlineExceeded, internal, unavailable } from '../../../core/errors.js';
import { withSpan } from '../../../telemetry/tracing.js';

const MAX_LINE_BYTES = 1024 * 1024;

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

/**
 * A QMP (QEMU Machine Protocol) client on QEMU's unix socket: JSON lines, a greeting, then
 * `qmp_capabilities`, then commands answered in order by id. Events are ignored.
 * Owner: whoever connects closes it; one client per connection.
 */
export class QmpClient {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closedReason: string | undefined;

  private constructor(private readonly socket: Socket, private readonly path: string) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.receive(chunk));
    socket.on('close', () => this.failAll(`QMP connection ${path} closed`));
    socket.on('error', (error) => this.failAll(`QMP ${path}: ${error.message}`));
  }

  /** Connects, waits for the greeting and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    const socket = connect(path);
    const client = await new Promise<QmpClient>((resolve, reject) => {
      const timer = setTimeout(() => { socket.destroy(); reject(deadlineExceeded(`QMP ${path}: no greeting within ${timeoutMs} ms`)); }, timeoutMs);
      socket.once('error', (error) => { clearTimeout(timer); reject(unavailable(`QMP ${path}: ${error.message}`)); });
      socket.once('data', (greeting: Buffer | string) => {
        clearTimeout(timer);
        if (!String(greeting).includes('"QMP"')) return reject(internal(`QMP ${path}: unexpected greeting ${String(greeting).slice(0, 200)}`));
        resolve(new QmpClient(socket, path));
      });
    });
    await client.execute('qmp_capabilities', undefined, timeoutMs);
    return client;
  }

  /** Runs one command; resolves with its `return`, rejects with QEMU's `error.desc`. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
    return withSpan(`qmp.${command}`, { kind: SpanKind.CLIENT, attributes: { 'rpc.system': 'qmp', 'rpc.method': command } }, () => this.send(command, args, timeoutMs));
  }

  private send(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown> {
    if (this.closedReason) return Promise.reject(unavailable(this.closedReason));
    const id = `kts-${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(deadlineExceeded(`QMP ${command} on ${this.path}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.write(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + '\n');
    });
  }

  close(): void {
    this.failAll(`QMP connection ${this.path} closed`);
    this.socket.destroy();
  }

  private receive(chunk: string): void {
    this.buffer += chunk;
    if (this.buffer.length > MAX_LINE_BYTES) return this.close();
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line) this.answer(line);
    }
  }

  private answer(line: string): void {
    let message: { id?: unknown; return?: unknown; error?: { desc?: unknown } };
    try {
      message = JSON.parse(line) as typeof message;
    } catch {
      return;
    }
    const pending = typeof message.id === 'string' ? this.pending.get(message.id) : undefined;
    if (!pending) return;
    this.pending.delete(message.id as string);
    clearTimeout(pending.timer);
    if (message.error) pending.reject(internal(`QMP: ${String(message.error.desc ?? 'unknown error')}`));
    else pending.resolve(message.return);
  }

  private failAll(reason: string): void {
    this.closedReason ??= reason;
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(unavailable(reason));
      this.pending.delete(id);
    }
  }
}
