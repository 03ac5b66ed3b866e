// A raw ttrpc client for the fuzz (github.com/containerd/ttrpc, PROTOCOL.md): it writes any bytes at all,
// well-framed or not, and reads back every frame the server sends, checking that each is a well-formed
// ttrpc.Response. Written from the protocol, not from src/api/ttrpcServer.ts, so it sees what containerd sees.
import { connect, type Socket } from 'node:net';
import protobuf from 'protobufjs';

export const TTRPC_HEADER_BYTES = 10;
export const TTRPC_MAX_BODY_BYTES = 4 << 20;
export const TTRPC_REQUEST = 1;
export const TTRPC_RESPONSE = 2;

const wire = protobuf.Root.fromJSON({
  nested: {
    Request: { fields: { service: { type: 'string', id: 1 }, method: { type: 'string', id: 2 }, payload: { type: 'bytes', id: 3 }, timeoutNano: { type: 'int64', id: 4 }, metadata: { rule: 'repeated', type: 'KeyValue', id: 5 } } },
    KeyValue: { fields: { key: { type: 'string', id: 1 }, value: { type: 'string', id: 2 } } },
    Response: { fields: { status: { type: 'Status', id: 1 }, payload: { type: 'bytes', id: 2 } } },
    Status: { fields: { code: { type: 'int32', id: 1 }, message: { type: 'string', id: 2 } } },
  },
});
const RequestType = wire.lookupType('Request');
const ResponseType = wire.lookupType('Response');

export interface TtrpcRequest {
  service: string;
  method: string;
  payload: Uint8Array;
  timeoutNano?: number;
  metadata?: Array<{ key: string; value: string }>;
}

/** A ttrpc.Request's protobuf bytes. */
export function requestBody(request: TtrpcRequest): Buffer {
  return Buffer.from(RequestType.encode(RequestType.fromObject(request)).finish());
}

/** One frame: `declaredLength` (default: the body's) lets a header lie about its body. */
export function frame(streamId: number, type: number, body: Uint8Array, flags = 0, declaredLength = body.length): Buffer {
  const header = Buffer.alloc(TTRPC_HEADER_BYTES);
  header.writeUInt32BE(declaredLength >>> 0, 0);
  header.writeUInt32BE(streamId >>> 0, 4);
  header.writeUInt8(type & 0xff, 8);
  header.writeUInt8(flags & 0xff, 9);
  return Buffer.concat([header, body]);
}

/** A frame the server sent back, as decoded; `malformed` says why it is not a well-formed ttrpc.Response. */
export interface TtrpcReply {
  streamId: number;
  type: number;
  flags: number;
  /** 0 when the Response carries no status (ttrpc's OK). */
  code: number;
  message: string;
  payload: Buffer;
  malformed?: string;
}

function decodeReply(header: Buffer, body: Buffer): TtrpcReply {
  const reply: TtrpcReply = { streamId: header.readUInt32BE(4), type: header.readUInt8(8), flags: header.readUInt8(9), code: 0, message: '', payload: Buffer.alloc(0) };
  if (reply.type !== TTRPC_RESPONSE) return { ...reply, malformed: `frame type ${reply.type}, not a response` };
  try {
    const response = ResponseType.toObject(ResponseType.decode(body), { defaults: false }) as { status?: { code?: number; message?: string }; payload?: Uint8Array };
    return { ...reply, code: response.status?.code ?? 0, message: response.status?.message ?? '', payload: Buffer.from(response.payload ?? []) };
  } catch (error) {
    return { ...reply, malformed: `body is not a ttrpc.Response: ${(error as Error).message}` };
  }
}

/**
 * One connection to a ttrpc server. Every frame that comes back is kept in `replies`; `replyTo` waits for
 * the first reply on a stream id not yet taken by an earlier `replyTo` (a reused id may be answered twice).
 */
export class TtrpcConnection {
  readonly replies: TtrpcReply[] = [];
  /** Set when the server closed the connection (or it failed), with why. */
  closedBy?: string;
  /** Bytes the server sent that do not make up a whole frame when the connection closed. */
  leftover = 0;
  private pending: Buffer = Buffer.alloc(0);
  private readonly taken = new Set<TtrpcReply>();
  private readonly waiters = new Set<() => void>();
  readonly closed: Promise<void>;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.read(chunk));
    socket.on('error', (error) => (this.closedBy ??= error.message));
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.closedBy ??= 'closed';
      this.leftover = this.pending.length;
      this.wake();
      resolve();
    }));
  }

  static open(socketPath: string): Promise<TtrpcConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(socketPath);
      socket.once('connect', () => resolve(new TtrpcConnection(socket)));
      socket.once('error', reject);
    });
  }

  get isOpen(): boolean {
    return !this.socket.destroyed && this.closedBy === undefined;
  }

  /** Writes `bytes` at once, or in pieces of at most `chunkBytes` (one write each). */
  write(bytes: Buffer, chunkBytes = bytes.length): void {
    if (!this.isOpen) return;
    for (let at = 0; at < bytes.length; at += Math.max(1, chunkBytes)) this.socket.write(bytes.subarray(at, at + Math.max(1, chunkBytes)));
  }

  /** Half-closes: the server sees the end of what this client sends. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** The next reply on `streamId` not yet returned by replyTo; undefined if none comes within `timeoutMs` or the connection closes. */
  async replyTo(streamId: number, timeoutMs: number): Promise<TtrpcReply | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.replies.find((reply) => reply.streamId === streamId && !this.taken.has(reply));
      if (found) {
        this.taken.add(found);
        return found;
      }
      const left = deadline - Date.now();
      if (left <= 0 || !this.isOpen) return undefined;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.waiters.add(wake);
      });
    }
  }

  private read(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= TTRPC_HEADER_BYTES) {
      const length = this.pending.readUInt32BE(0);
      if (length > TTRPC_MAX_BODY_BYTES) {
        this.replies.push({ streamId: this.pending.readUInt32BE(4), type: this.pending.readUInt8(8), flags: 0, code: -1, message: '', payload: Buffer.alloc(0), malformed: `the server announced a ${length}-byte frame` });
        this.socket.destroy();
        break;
      }
      if (this.pending.length < TTRPC_HEADER_BYTES + length) break;
      this.replies.push(decodeReply(this.pending.subarray(0, TTRPC_HEADER_BYTES), this.pending.subarray(TTRPC_HEADER_BYTES, TTRPC_HEADER_BYTES + length)));
      this.pending = this.pending.subarray(TTRPC_HEADER_BYTES + length);
    }
    this.wake();
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}

/** One well-formed unary call on a fresh connection: the reply, or undefined if none came within `timeoutMs`. */
export async function ttrpcCall(socketPath: string, request: TtrpcRequest, timeoutMs = 10_000): Promise<TtrpcReply | undefined> {
  const connection = await TtrpcConnection.open(socketPath);
  try {
    connection.write(frame(1, TTRPC_REQUEST, requestBody(request)));
    return await connection.replyTo(1, timeoutMs);
  } finally {
    connection.destroy();
  }
}
