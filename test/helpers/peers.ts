// The peers scripts/build-peers.sh builds (containerd, crictl, critest, Jaeger, Prometheus): where their
// binaries are, and how a test starts one on loopback, waits for it and stops it.
import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { until } from './daemon.js';

/** Where scripts/build-peers.sh puts the peers' binaries. */
export const PEERS_BIN = path.join(process.env.KTS_PEERS_DIR ?? '/var/cache/kts/peers', 'bin');

/** A loopback port nobody listens on now (another process may take it before it is used; tests run one file at a time). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Spawns a peer binary from PEERS_BIN, keeping what it prints for error messages. */
export function spawnPeer(binary: string, args: string[]): { child: ChildProcess; output: () => string } {
  let output = '';
  const child = spawn(path.join(PEERS_BIN, binary), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  child.on('error', (error) => (output += `\n${error.message}`));
  return { child, output: () => output };
}

/** Polls `probe` until it holds; fails at once with the peer's output if the peer exits first. */
export function untilPeerReady(name: string, peer: ReturnType<typeof spawnPeer>, probe: () => Promise<boolean>): Promise<boolean> {
  return until(`${name} to be ready`, async () => {
    if (peer.child.exitCode !== null || peer.child.signalCode !== null) {
      throw new Error(`${name} exited with ${peer.child.exitCode ?? peer.child.signalCode}:\n${peer.output()}`);
    }
    return probe().catch(() => false);
  }, 30_000);
}

/** SIGTERM, then SIGKILL after 5 s; then removes the peer's temp dir. */
export async function stopPeer(child: ChildProcess, dir: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
  await rm(dir, { recursive: true, force: true });
}
