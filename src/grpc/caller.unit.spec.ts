import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { callerSummary, formatCaller, parseCaller, tagConnection, type PeerCredentials } from './caller.js';

const ROOT_CLI: PeerCredentials = { uid: 0, gid: 0, pid: 1234, comm: 'node' };

/** A connection as the daemon accepts it, tagged with `peer`; returns the token grpc-js would give as its peer. */
function connection(peer: PeerCredentials | undefined): { token: string; close(): void } {
  const socket = new EventEmitter() as unknown as Socket;
  tagConnection(socket, peer);
  return { token: socket.remoteAddress!, close: () => void socket.emit('close') };
}

describe('the caller string of a gRPC call', () => {
  it('puts the kernel\'s credentials first, then what the client claims', () => {
    const { token } = connection(ROOT_CLI);
    const caller = formatCaller('kts.admin.v1.Admin/RunContainer', token, { 'user-agent': 'kts/0.1.0 grpc-node-js/1.14.7', 'kts-os-user': 'root', 'containerd-namespace': 'k8s.io' });
    expect(caller).toBe('grpc kts.admin.v1.Admin/RunContainer uid=0 gid=0 pid=1234 comm=node agent=kts/0.1.0 user=root ns=k8s.io');
  });

  it('says uid=? pid=? for a connection whose credentials could not be read, and for one that has closed', () => {
    const unread = connection(undefined);
    expect(formatCaller('m/M', unread.token, {})).toBe('grpc m/M uid=? pid=? agent=unknown');
    const closed = connection(ROOT_CLI);
    closed.close();
    expect(formatCaller('m/M', closed.token, {})).toBe('grpc m/M uid=? pid=? agent=unknown');
    expect(formatCaller('m/M', 'unknown', {})).toBe('grpc m/M uid=? pid=? agent=unknown');
  });

  it('gives each connection its own token, so two clients are never confused', () => {
    const first = connection(ROOT_CLI);
    const second = connection({ uid: 65534, gid: 65534, pid: 99, comm: 'node' });
    expect(first.token).not.toBe(second.token);
    expect(parseCaller(formatCaller('m/M', second.token, {})).fields).toMatchObject({ uid: '65534', pid: '99' });
    expect(parseCaller(formatCaller('m/M', first.token, {})).fields).toMatchObject({ uid: '0', pid: '1234' });
  });

  it('escapes what a client sends (or a process names itself) so it cannot add a field: the uid read back is the kernel\'s', () => {
    const { token } = connection({ uid: 65534, gid: 65534, pid: 77, comm: 'evil uid=0' });
    const caller = formatCaller('m/M', token, { 'user-agent': 'kts/0.1.0', 'kts-os-user': 'root uid=0 pid=1', 'containerd-namespace': 'ns\nuid=0' });
    expect(caller).toBe('grpc m/M uid=65534 gid=65534 pid=77 comm=evil%20uid%3D0 agent=kts/0.1.0 user=root%20uid%3D0%20pid%3D1 ns=ns%0Auid%3D0');
    expect(caller.match(/ uid=/g)).toHaveLength(1);
    expect(parseCaller(caller).fields).toMatchObject({ uid: '65534', pid: '77', user: 'root%20uid%3D0%20pid%3D1' });
  });

  it('caps a claim\'s length', () => {
    const { token } = connection(ROOT_CLI);
    expect(parseCaller(formatCaller('m/M', token, { 'kts-os-user': 'x'.repeat(500) })).fields.user).toHaveLength(64);
  });
});

describe('reading a caller string back (kts history)', () => {
  it('splits the cause from the fields; the first of a repeated field counts', () => {
    expect(parseCaller('grpc a.B/C uid=0 gid=0 pid=5 comm=node agent=kts/0.1.0 uid=9')).toEqual({
      cause: 'grpc a.B/C', fields: { uid: '0', gid: '0', pid: '5', comm: 'node', agent: 'kts/0.1.0' },
    });
  });

  it('keeps a cause inside the daemon whole, with no fields', () => {
    expect(parseCaller('recovery: reattached: the sandbox process 12 still runs')).toEqual({ cause: 'recovery: reattached: the sandbox process 12 still runs', fields: {} });
    expect(callerSummary('health-check')).toBe('-');
  });

  it('summarises who called: uid, pid, command name and agent', () => {
    expect(callerSummary('grpc a.B/C uid=0 gid=0 pid=1234 comm=node agent=kts/0.1.0 user=root')).toBe('uid=0 pid=1234 node kts/0.1.0');
    expect(callerSummary('grpc a.B/C uid=? pid=? agent=grpc-go/1.72.0 ns=k8s.io')).toBe('uid=? pid=? grpc-go/1.72.0');
  });

  it('reads events recorded before credentials were, which named no uid', () => {
    const old = 'grpc containerd.services.sandbox.v1.Controller/Create peer=unknown agent=grpc-go/1.72.0 ns=k8s.io';
    expect(parseCaller(old).cause).toBe('grpc containerd.services.sandbox.v1.Controller/Create');
    expect(callerSummary(old)).toBe('uid=? pid=? grpc-go/1.72.0');
  });
});
