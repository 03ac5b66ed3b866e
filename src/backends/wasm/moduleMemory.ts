/**
 * WebAssembly memory sizes as the wasm backend states them. A module's memory is capped by the
 * runner (wasmtime's StoreLimits): a `memory.grow` past the container's limit returns -1.
 */

export const WASM_PAGE_BYTES = 65_536;

export function pagesText(pages: number): string {
  const mib = (pages * WASM_PAGE_BYTES) / (1024 * 1024);
  return `${pages} ${pages === 1 ? 'page' : 'pages'} (${Number.isInteger(mib) ? mib : mib.toFixed(2)} MiB)`;
}
