import { join } from 'node:path';

/**
 * What a wasm sandbox keeps on disk: `<rootDir>/wasm/sandboxes/<sandboxId>/`. The modules' runners
 * die with the daemon, so these files are what is left of a sandbox after a daemon restart: which
 * containers had which pid and rootfs (to unmount it), and every exit recorded before the restart.
 */
export interface WasmSandboxPaths {
  dir: string;
  containersDir: string;
  /** `<pid>`: the exit of one container or exec process, as JSON. */
  exitsDir: string;
  exitFile(pid: number): string;
}

export interface WasmContainerPaths {
  dir: string;
  /** JSON: pid, bundle directory and rootfs of the container. */
  record: string;
  /** Private bind mounts of the container's directory mounts, one per preopened directory. */
  mountsDir: string;
  /** Stays empty: each runner mounts its private tree's tmpfs here, in its own mount namespace. */
  runnerRoot: string;
}

export function wasmRootDir(rootDir: string): string {
  return join(rootDir, 'wasm');
}

/** The highest pid reserved so far, so pids stay unique across daemon restarts. */
export function pidReservationFile(rootDir: string): string {
  return join(wasmRootDir(rootDir), 'pids-reserved');
}

export function wasmSandboxPaths(rootDir: string, sandboxId: string): WasmSandboxPaths {
  const dir = join(wasmRootDir(rootDir), 'sandboxes', sandboxId);
  const exitsDir = join(dir, 'exits');
  return { dir, containersDir: join(dir, 'containers'), exitsDir, exitFile: (pid) => join(exitsDir, String(pid)) };
}

export function wasmContainerPaths(sandbox: WasmSandboxPaths, containerId: string): WasmContainerPaths {
  const dir = join(sandbox.containersDir, containerId);
  return { dir, record: join(dir, 'container.json'), mountsDir: join(dir, 'mounts'), runnerRoot: join(dir, 'runner-root') };
}
