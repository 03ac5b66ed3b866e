/**
 * The entry of the worker thread that runs one WASI module for the daemon (see wasmSandboxer.ts):
 * on `setup` instantiate and say `ready`, run `_start` on `start`, report how it ended, and end with
 * it. The daemon owns everything that outlives the thread (stdio fds, exit records); terminate()
 * may end it anywhere.
 */
import { parentPort } from 'node:worker_threads';
import { WASI } from 'node:wasi';
import { guardedWasiImports, type WasiNamespace } from './wasiImports.js';
import { STATUS_MEMORY_PAGES, type DaemonMessage, type WorkerMessage, type WorkerSetup } from './workerProtocol.js';

const WASM_PAGE_BYTES = 65_536;

function post(message: WorkerMessage): void {
  parentPort!.postMessage(message);
}

function reason(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function exportedMemory(instance: WebAssembly.Instance): WebAssembly.Memory | undefined {
  const memory = instance.exports.memory;
  return memory instanceof WebAssembly.Memory ? memory : undefined;
}

function instantiate(setup: WorkerSetup, wasi: WASI, status: Int32Array): WebAssembly.Instance {
  let instance: WebAssembly.Instance | undefined;
  const memory = () => (instance ? exportedMemory(instance) : undefined);
  const sleepCell = new Int32Array(new SharedArrayBuffer(4));
  const raw = (wasi.getImportObject() as Record<string, WasiNamespace>).wasi_snapshot_preview1!;
  const imports = guardedWasiImports(raw, {
    memory,
    afterCall: () => Atomics.store(status, STATUS_MEMORY_PAGES, (memory()?.buffer.byteLength ?? 0) / WASM_PAGE_BYTES),
    sleep: (ms) => void Atomics.wait(sleepCell, 0, 0, ms),
  });
  instance = new WebAssembly.Instance(setup.module, { wasi_snapshot_preview1: imports });
  Atomics.store(status, STATUS_MEMORY_PAGES, (memory()?.buffer.byteLength ?? 0) / WASM_PAGE_BYTES);
  return instance;
}

function run(wasi: WASI, instance: WebAssembly.Instance): void {
  try {
    post({ type: 'exited', code: wasi.start(instance) });
  } catch (error) {
    const pages = (exportedMemory(instance)?.buffer.byteLength ?? 0) / WASM_PAGE_BYTES;
    post({ type: 'trapped', message: reason(error), memoryPages: pages });
  }
}

function prepare(setup: WorkerSetup): void {
  const status = new Int32Array(setup.status);
  let wasi: WASI;
  let instance: WebAssembly.Instance;
  try {
    wasi = new WASI({ version: 'preview1', args: setup.args, env: setup.env, preopens: setup.preopens, ...setup.stdio, returnOnExit: true });
    instance = instantiate(setup, wasi, status);
  } catch (error) {
    post({ type: 'instantiateFailed', reason: reason(error) });
    return;
  }
  // `once`: with no listener left after the run, nothing keeps the thread alive and it ends.
  parentPort!.once('message', (message: DaemonMessage) => {
    if (message.type === 'start') run(wasi, instance);
  });
  post({ type: 'ready' });
}

parentPort!.once('message', (message: DaemonMessage) => {
  if (message.type === 'setup') prepare(message.setup);
});
