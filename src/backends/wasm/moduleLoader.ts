import { readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, failedPrecondition, isKtsError } from '../../core/errors.js';
import { capModuleMemory, type MemoryLimits, type ModuleBytes } from './moduleMemory.js';
import { hostPathIn } from './wasmProgram.js';

const MAX_MODULE_BYTES = 256 * 1024 * 1024;
export const WASI_IMPORT_MODULE = 'wasi_snapshot_preview1';

export interface LoadedModule {
  module: WebAssembly.Module;
  memories: MemoryLimits[];
}

/**
 * Reads the module `modulePath` names inside the container's rootfs, caps its memory and compiles
 * it, refusing (with the reason) anything that could not run as a WASI preview 1 command here.
 */
export async function loadModule(rootfs: string, modulePath: string, memoryLimitPages: number): Promise<LoadedModule> {
  try {
    const bytes = await readModuleFile(rootfs, modulePath);
    const capped = capModuleMemory(bytes, memoryLimitPages);
    const module = await compile(capped.bytes);
    checkWasiCommand(module);
    return { module, memories: capped.memories };
  } catch (error) {
    if (isKtsError(error)) throw failedPrecondition(`module ${modulePath}: ${error.message}`);
    throw error;
  }
}

async function readModuleFile(rootfs: string, modulePath: string): Promise<ModuleBytes> {
  const file = await realpath(hostPathIn(rootfs, modulePath)).catch(() => {
    throw failedPrecondition('no such file in the container\'s rootfs (args[0], usually the image\'s Entrypoint, names the module)');
  });
  // Resolved on the host, a symlink in the image could point anywhere: the module must stay inside the rootfs.
  const root = await realpath(rootfs);
  if (file !== root && !file.startsWith(root + path.sep)) throw failedPrecondition('its path leads out of the container\'s rootfs (through a symlink)');
  const stats = await stat(file);
  if (!stats.isFile()) throw failedPrecondition('not a regular file');
  if (stats.size > MAX_MODULE_BYTES) throw failedPrecondition(`${stats.size} bytes is more than the ${MAX_MODULE_BYTES} a module may have`);
  const buffer = await readFile(file);
  // readFile never returns a view of a SharedArrayBuffer.
  return new Uint8Array(buffer.buffer as ArrayBuffer, buffer.byteOffset, buffer.byteLength);
}

async function compile(bytes: ModuleBytes): Promise<WebAssembly.Module> {
  try {
    return await WebAssembly.compile(bytes);
  } catch (error) {
    throw failedPrecondition(`not a valid WebAssembly module: ${errorMessage(error)}`);
  }
}

/** A WASI command imports only WASI functions and exports `_start` and its `memory`. */
function checkWasiCommand(module: WebAssembly.Module): void {
  const foreign = WebAssembly.Module.imports(module).filter((i) => i.module !== WASI_IMPORT_MODULE || i.kind !== 'function');
  if (foreign.length > 0) {
    const names = foreign.slice(0, 5).map((i) => `${i.module}.${i.name} (${i.kind})`).join(', ');
    throw failedPrecondition(`it imports ${names}${foreign.length > 5 ? ', …' : ''}; only ${WASI_IMPORT_MODULE} functions are provided`);
  }
  const exports = WebAssembly.Module.exports(module);
  const has = (name: string, kind: string) => exports.some((e) => e.name === name && e.kind === kind);
  if (!has('_start', 'function') || !has('memory', 'memory')) {
    throw failedPrecondition('it is not a WASI command: it must export a "_start" function and its "memory" (reactor modules are not run)');
  }
}
