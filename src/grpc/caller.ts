// Who caused an event, as a request's events record it in `caller`:
//   grpc <fullMethod> uid=0 gid=0 pid=1234 comm=node agent=kts/0.1.0 user=root ns=k8s.io
// uid, gid, pid and comm are the kernel's (SO_PEERCRED at connect, /proc/<pid>/comm); agent, user and
// ns are what the client sent. `uid=? pid=?` says the credentials could not be read.
import type { Socket } from 'node:net';

/** The process at the other end of a unix socket, as the kernel recorded it at connect (SO_PEERCRED). */
export interface PeerCredentials {
  uid: number;
  gid: number;
  pid: number;
  /** /proc/<pid>/comm read at connect; '' when it could not be read. */
  comm: string;
}

/** Reads the credentials of an accepted connection's peer (host/peerCredentials.ts); undefined when it cannot. */
export type PeerReader = (socket: Socket) => PeerCredentials | undefined;

/** Metadata with the OS user the kts CLI runs as: a claim, recorded as `user=`; the uid beside it is the fact. */
export const OS_USER_METADATA = 'kts-os-user';

const connectionPeers = new Map<string, PeerCredentials>();
let connectionCount = 0;

/**
 * grpc-js names a call's peer by its connection's `remoteAddress` (getPeer()), which a unix socket
 * leaves empty: each accepted connection gets an opaque token there, which names the connection's
 * credentials until it closes.
 */
export function tagConnection(socket: Socket, peer: PeerCredentials | undefined): void {
  const token = `kts-connection-${++connectionCount}`;
  Object.defineProperty(socket, 'remoteAddress', { value: token, configurable: true });
  if (!peer) return;
  connectionPeers.set(token, peer);
  socket.once('close', () => connectionPeers.delete(token));
}

/** The caller string of a call of `fullMethod` on the connection named `peerToken`, with the request's headers. */
export function formatCaller(fullMethod: string, peerToken: string, headers: Record<string, string>): string {
  const peer = connectionPeers.get(peerToken);
  const fields = [
    peer ? `uid=${peer.uid} gid=${peer.gid} pid=${peer.pid} comm=${fieldValue(peer.comm || '?')}` : 'uid=? pid=?',
    `agent=${fieldValue(headers['user-agent']?.split(' ')[0] || 'unknown')}`,
  ];
  const user = headers[OS_USER_METADATA];
  if (user) fields.push(`user=${fieldValue(user)}`);
  const namespace = headers['containerd-namespace'];
  if (namespace) fields.push(`ns=${fieldValue(namespace)}`);
  return `grpc ${fullMethod} ${fields.join(' ')}`;
}

const FIELD_MAX_CHARS = 64;

/** A value that cannot break the string into more fields: bytes outside printable ASCII, '=' and '%' are %-escaped. */
function fieldValue(text: string): string {
  let value = '';
  for (const char of text.slice(0, FIELD_MAX_CHARS)) {
    value += /^[\x21-\x24\x26-\x3c\x3e-\x7e]$/.test(char) ? char : [...Buffer.from(char)].map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`).join('');
  }
  return value;
}

/** A caller string read back: what caused the event (`grpc <method>`, or the whole string of an internal cause) and its fields. */
export function parseCaller(caller: string): { cause: string; fields: Record<string, string> } {
  if (!caller.startsWith('grpc ')) return { cause: caller, fields: {} };
  const [, method = '', ...rest] = caller.split(' ');
  const fields: Record<string, string> = {};
  for (const field of rest) {
    const at = field.indexOf('=');
    if (at > 0) fields[field.slice(0, at)] ??= field.slice(at + 1);
  }
  return { cause: `grpc ${method}`, fields };
}

/** `uid=0 pid=1234 node kts/0.1.0` (the kernel's facts, then the client's agent), or '-' for a cause inside the daemon. */
export function callerSummary(caller: string): string {
  const { fields } = parseCaller(caller);
  if (Object.keys(fields).length === 0) return '-';
  return [`uid=${fields.uid ?? '?'}`, `pid=${fields.pid ?? '?'}`, fields.comm, fields.agent].filter(Boolean).join(' ');
}
