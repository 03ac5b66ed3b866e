import path from 'node:path';
import { invalidArgument } from '../../core/errors.js';
import type { OciMount, OciSpec } from '../../oci/containerSpec.js';
import { isStringArray } from '../../oci/json.js';
import { WASM_PAGE_BYTES } from './moduleMemory.js';

/**
 * How an OCI container spec maps onto a WASI module: `process.args[0]` names the module file inside
 * the container's rootfs (an image's Entrypoint, e.g. `/hello.wasm`) and is also the module's argv[0];
 * `process.env` is its environment; directory bind mounts become preopened directories at their
 * destination; `linux.resources.memory.limit` caps its linear memory, in 64 KiB pages.
 */

export interface DirectoryMount {
  /** Where the module sees it, e.g. `/data`. */
  guestPath: string;
  hostPath: string;
  readonly: boolean;
}

export interface WasmContainerPlan {
  /** The container's root filesystem on the host; preopened as `/`. */
  rootfs: string;
  mounts: DirectoryMount[];
  memoryLimitPages: number;
}

export interface WasmProcessPlan {
  args: string[];
  env: Record<string, string>;
  /** The module's absolute path inside the rootfs. */
  modulePath: string;
}

export function containerPlan(spec: OciSpec, bundleDir: string, defaultMemoryLimitBytes: number): WasmContainerPlan {
  return {
    rootfs: path.resolve(bundleDir, spec.root.path),
    mounts: (spec.mounts ?? []).filter(isBindMount).map(directoryMount),
    memoryLimitPages: memoryLimitPages(spec, defaultMemoryLimitBytes),
  };
}

/** The module a process runs, from an OCI Process (the container's, or an exec's). */
export function processPlan(process: Record<string, unknown>): WasmProcessPlan {
  const { args, env, cwd } = process;
  if (!isStringArray(args) || args.length === 0) throw invalidArgument('process.args must name the module to run, e.g. ["/app.wasm"]');
  if (env !== undefined && !isStringArray(env)) throw invalidArgument('process.env must be an array of "KEY=value" strings');
  const base = typeof cwd === 'string' && cwd.startsWith('/') ? cwd : '/';
  return { args, env: envRecord(env ?? []), modulePath: path.posix.resolve(base, args[0]!) };
}

/** `KEY=value` strings as WASI's environment; a later KEY wins, as in execve. */
export function envRecord(env: readonly string[]): Record<string, string> {
  const record: Record<string, string> = {};
  for (const entry of env) {
    const equals = entry.indexOf('=');
    if (equals > 0) record[entry.slice(0, equals)] = entry.slice(equals + 1);
  }
  return record;
}

/** The memory limit in whole pages; no limit (absent, 0 or -1 as OCI allows) means the daemon's default. */
export function memoryLimitPages(spec: OciSpec, defaultBytes: number): number {
  const limit = spec.linux?.resources?.memory?.limit;
  const bytes = typeof limit === 'number' && limit > 0 ? limit : defaultBytes;
  return Math.floor(bytes / WASM_PAGE_BYTES);
}

function isBindMount(mount: OciMount): boolean {
  const options = mount.options ?? [];
  return mount.type === 'bind' || options.includes('bind') || options.includes('rbind');
}

function directoryMount(mount: OciMount): DirectoryMount {
  if (typeof mount.source !== 'string' || !path.isAbsolute(mount.source)) {
    throw invalidArgument(`mount ${mount.destination}: a bind mount needs an absolute source`);
  }
  return { guestPath: path.posix.normalize(mount.destination).replace(/(.)\/+$/, '$1'), hostPath: mount.source, readonly: (mount.options ?? []).includes('ro') };
}
