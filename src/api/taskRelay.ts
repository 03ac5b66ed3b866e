/**
 * The task relay: one small process per node that holds containerd's ttrpc task connections across
 * restarts of the daemon. containerd 2.4 takes the end of a task connection for the death of the shim
 * and reports every container on it exited (255), although kts reattaches them; so the connection
 * containerd holds must not end with the daemon. The relay forwards whole ttrpc frames between each
 * containerd connection and one connection of its own to the daemon's private ttrpc socket; when the
 * daemon goes away it keeps containerd's side open, redials every RELAY_REDIAL_MS and sends again every
 * request not yet answered (a Wait held open, or a call the dead daemon never replied to).
 * Guarantee: a request is answered at most once; one in flight when the daemon died is run again by
 * the next daemon (its write-ahead intents make a repeated Create/Start/Delete an error, never a double
 * effect). The relay exits once it has no containerd connection and no daemon for RELAY_IDLE_EXIT_MS.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { unavailable } from '../core/errors.js';
import { TTRPC_TYPE_REQUEST, TTRPC_TYPE_RESPONSE, readFrames } from './ttrpcServer.js';

export const RELAY_REDIAL_MS = 200;
export const RELAY_IDLE_EXIT_MS = 30_000;

/** One containerd connection and its connection to the daemon, redialled while containerd's stays open. */
class RelayedConnection {
  /** Requests sent on to the daemon (or waiting to be) and not answered yet, by ttrpc stream id. */
  private readonly inFlight = new Map<number, Buffer>();
  private upstream: Socket | undefined;
  private connected = false;
  private closed = false;
  private redial: NodeJS.Timeout | undefined;

  constructor(private readonly downstream: Socket, private readonly upstreamPath: string, private readonly logger: Logger) {
    downstream.on('error', () => undefined);
    downstream.once('close', () => this.close());
    readFrames(downstream, (streamId, type, _body, frame) => {
      if (type === TTRPC_TYPE_REQUEST) this.inFlight.set(streamId, Buffer.from(frame));
      if (this.connected) this.upstream!.write(frame);
    }, (reason) => {
      this.logger.warn({ reason }, 'task relay: closing a containerd connection that sent a bad frame');
      downstream.destroy();
    });
    this.dial();
  }

  private dial(): void {
    this.redial = undefined;
    if (this.closed) return;
    const upstream = connect(this.upstreamPath);
    this.upstream = upstream;
    upstream.on('error', () => undefined);
    upstream.once('connect', () => {
      this.connected = true;
      for (const frame of this.inFlight.values()) upstream.write(frame);
    });
    readFrames(upstream, (streamId, type, _body, frame) => {
      if (type === TTRPC_TYPE_RESPONSE) this.inFlight.delete(streamId);
      this.downstream.write(frame);
    }, () => upstream.destroy());
    upstream.once('close', () => {
      this.connected = false;
      if (!this.closed) this.redial = setTimeout(() => this.dial(), RELAY_REDIAL_MS);
    });
  }

  close(): void {
    this.closed = true;
    if (this.redial) clearTimeout(this.redial);
    this.upstream?.destroy();
    this.downstream.destroy();
  }
}

function reachable(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(socketPath);
    probe.once('connect', () => { probe.destroy(); resolve(true); });
    probe.once('error', () => resolve(false));
  });
}

/** Runs the relay (the `kts task-relay` command) until `stop` aborts or it has been idle for RELAY_IDLE_EXIT_MS. */
export async function runTaskRelay(options: { listen: string; upstream: string; logger: Logger; stop: AbortSignal }): Promise<void> {
  const { listen, upstream, logger } = options;
  if (await reachable(listen)) throw unavailable(`a task relay already serves ${listen}`);
  await rm(listen, { force: true });
  const connections = new Set<RelayedConnection>();
  const server = createServer((socket) => {
    const relayed = new RelayedConnection(socket, upstream, logger);
    connections.add(relayed);
    socket.once('close', () => connections.delete(relayed));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen, () => resolve());
  });
  logger.info({ listen, upstream }, 'task relay serving');
  let idleSince = Date.now();
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      void reachable(upstream).then((daemonUp) => {
        if (connections.size > 0 || daemonUp) idleSince = Date.now();
        else if (Date.now() - idleSince >= RELAY_IDLE_EXIT_MS) {
          clearInterval(check);
          resolve();
        }
      });
    }, 5000);
    const stop = () => { clearInterval(check); resolve(); };
    if (options.stop.aborted) stop();
    options.stop.addEventListener('abort', stop, { once: true });
  });
  logger.info({ listen }, 'task relay exiting');
  for (const relayed of connections) relayed.close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(listen, { force: true });
}

/**
 * Makes sure a relay serves `listen` for the daemon's private ttrpc socket `upstream`: one left by an
 * earlier daemon is kept (it holds containerd's connections), else one is started detached, with its
 * pid in `pidFile` and its log in `logFile`. `ktsCli` is the kts entry script.
 */
export async function ensureTaskRelay(options: { listen: string; upstream: string; ktsCli: string; pidFile: string; logFile: string; logger: Logger }): Promise<'kept' | 'started'> {
  const { listen, upstream, logger } = options;
  if (await reachable(listen)) return 'kept';
  const log = openSync(options.logFile, 'a', 0o600);
  try {
    const relay = spawn(process.execPath, [options.ktsCli, 'task-relay', '--listen', listen, '--upstream', upstream], { detached: true, stdio: ['ignore', log, log] });
    relay.unref();
    if (relay.pid !== undefined) writeFileSync(options.pidFile, `${relay.pid}\n`, { mode: 0o600 });
  } finally {
    closeSync(log);
  }
  const deadline = Date.now() + 10_000;
  while (!(await reachable(listen))) {
    if (Date.now() > deadline) throw unavailable(`the task relay did not serve ${listen} within 10 s (log: ${options.logFile})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  logger.info({ listen, upstream }, 'task relay started');
  return 'started';
}
