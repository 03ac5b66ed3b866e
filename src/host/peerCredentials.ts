import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage, failedPrecondition } from '../core/errors.js';
import type { PeerReader } from '../grpc/caller.js';

/** `<repo>/dist/native/kts-peercred.node`, found from this module's location in src/ or dist/src/. */
function addonPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, 'dist', 'native', 'kts-peercred.node');
}

type PeerCredentialsOfFd = (fd: number) => { uid: number; gid: number; pid: number };

/** The longest command name the kernel keeps (TASK_COMM_LEN - 1). */
const COMM_MAX_BYTES = 15;

/**
 * Loads the addon (src/host/peercred.c) once; the daemon calls it at start, so a build without it
 * refuses to start instead of recording callers it cannot name.
 */
export function peerCredentialReader(): PeerReader {
  const file = addonPath();
  let ofFd: PeerCredentialsOfFd;
  try {
    ofFd = (createRequire(import.meta.url)(file) as { peerCredentials: PeerCredentialsOfFd }).peerCredentials;
  } catch (error) {
    throw failedPrecondition(`cannot load ${file} (${errorMessage(error)}); "npm run build" makes it`);
  }
  return (socket) => {
    // The accepted connection's fd: node keeps it on the pipe handle, which it does not otherwise expose.
    const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) return undefined;
    try {
      const { uid, gid, pid } = ofFd(fd);
      return { uid, gid, pid, comm: commandName(pid) };
    } catch {
      return undefined;
    }
  };
}

/** /proc/<pid>/comm, read once at connect ('' if the process is gone); the process may set it, so it names, it does not prove. */
function commandName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`).subarray(0, COMM_MAX_BYTES).toString('utf8').trim();
  } catch {
    return '';
  }
}
