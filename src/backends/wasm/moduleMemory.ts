import { failedPrecondition } from '../../core/errors.js';

/**
 * Caps the memories a WebAssembly module defines by rewriting their declared maximum in the binary,
 * so the engine itself refuses every `memory.grow` past the cap (no polling, no signals). Only the
 * memory section is decoded; every other section is copied byte for byte and the whole result is
 * validated later by WebAssembly.compile.
 */

export const WASM_PAGE_BYTES = 65_536;
const MAGIC = [0x00, 0x61, 0x73, 0x6d];
const CORE_VERSION = [0x01, 0x00, 0x00, 0x00];
const MEMORY_SECTION = 5;
const LIMITS_HAS_MAXIMUM = 0x01;
const LIMITS_MEMORY64 = 0x04;

export interface MemoryLimits {
  initialPages: number;
  maximumPages?: number;
}

/** Bytes over a plain (not shared) ArrayBuffer, as WebAssembly.compile takes them. */
export type ModuleBytes = Uint8Array<ArrayBuffer>;

export interface CappedModule {
  bytes: ModuleBytes;
  /** The memories the module defines, with the maximum each has after capping. */
  memories: MemoryLimits[];
}

/** Bytes of a section: `id`, and where its content starts and ends in the module. */
interface Section {
  id: number;
  start: number;
  contentStart: number;
  end: number;
}

class ByteReader {
  constructor(
    private readonly bytes: Uint8Array,
    public offset: number,
    private readonly end: number,
  ) {}

  byte(): number {
    if (this.offset >= this.end) throw malformed(`it ends early at byte ${this.offset}`);
    return this.bytes[this.offset++]!;
  }

  /** An unsigned LEB128 number of at most `maxBytes` bytes (5 for u32, 10 for u64). */
  leb(maxBytes: number): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < maxBytes; i++) {
      const byte = this.byte();
      value += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) return value;
      scale *= 128;
    }
    throw malformed(`a number at byte ${this.offset} is longer than ${maxBytes} bytes`);
  }
}

function malformed(why: string) {
  return failedPrecondition(`not a valid WebAssembly module: ${why}`);
}

export function encodeLeb(value: number): number[] {
  const out: number[] = [];
  let rest = value;
  do {
    const low = rest % 128;
    rest = Math.floor(rest / 128);
    out.push(rest > 0 ? low | 0x80 : low);
  } while (rest > 0);
  return out;
}

export function pagesText(pages: number): string {
  const mib = (pages * WASM_PAGE_BYTES) / (1024 * 1024);
  return `${pages} ${pages === 1 ? 'page' : 'pages'} (${Number.isInteger(mib) ? mib : mib.toFixed(2)} MiB)`;
}

/** Refuses what is not a core module of the version WASI preview 1 uses, with the reason. */
function checkHeader(bytes: Uint8Array): void {
  if (bytes.length < 8 || MAGIC.some((b, i) => bytes[i] !== b)) throw malformed('it does not start with the "\\0asm" magic number');
  if (CORE_VERSION.some((b, i) => bytes[4 + i] !== b)) {
    // Components (the component model, WASI preview 2) share the magic number but not the version.
    throw failedPrecondition('the module is not a core WebAssembly module of version 1 (a component?); only WASI preview 1 core modules run here');
  }
}

function readSections(bytes: Uint8Array): Section[] {
  const sections: Section[] = [];
  const reader = new ByteReader(bytes, 8, bytes.length);
  while (reader.offset < bytes.length) {
    const start = reader.offset;
    const id = reader.byte();
    const size = reader.leb(5);
    const contentStart = reader.offset;
    const end = contentStart + size;
    if (end > bytes.length) throw malformed(`section ${id} at byte ${start} runs past the end of the module`);
    sections.push({ id, start, contentStart, end });
    reader.offset = end;
  }
  return sections;
}

function readMemories(bytes: Uint8Array, section: Section): Array<MemoryLimits & { flags: number }> {
  const reader = new ByteReader(bytes, section.contentStart, section.end);
  const count = reader.leb(5);
  const memories: Array<MemoryLimits & { flags: number }> = [];
  for (let i = 0; i < count; i++) {
    const flags = reader.byte();
    const numberBytes = flags & LIMITS_MEMORY64 ? 10 : 5;
    const initialPages = reader.leb(numberBytes);
    const maximumPages = flags & LIMITS_HAS_MAXIMUM ? reader.leb(numberBytes) : undefined;
    memories.push(maximumPages === undefined ? { flags, initialPages } : { flags, initialPages, maximumPages });
  }
  if (reader.offset !== section.end) throw malformed('its memory section has bytes after its last memory');
  return memories;
}

function encodeMemorySection(memories: Array<MemoryLimits & { flags: number }>): number[] {
  const content = [...encodeLeb(memories.length)];
  for (const memory of memories) {
    content.push(memory.flags | LIMITS_HAS_MAXIMUM, ...encodeLeb(memory.initialPages), ...encodeLeb(memory.maximumPages!));
  }
  return [MEMORY_SECTION, ...encodeLeb(content.length), ...content];
}

/**
 * The module with every memory's maximum lowered to `capPages` (kept if already lower). A memory
 * that needs more than the cap at start is refused: it could never run within it.
 */
export function capModuleMemory(bytes: ModuleBytes, capPages: number): CappedModule {
  checkHeader(bytes);
  const sections = readSections(bytes);
  const memorySection = sections.find((section) => section.id === MEMORY_SECTION);
  if (!memorySection) return { bytes, memories: [] };
  const memories = readMemories(bytes, memorySection).map((memory) => {
    if (memory.initialPages > capPages) {
      throw failedPrecondition(`the module needs ${pagesText(memory.initialPages)} of memory at start, more than the container's memory limit of ${pagesText(capPages)}`);
    }
    return { ...memory, maximumPages: Math.min(memory.maximumPages ?? Number.POSITIVE_INFINITY, capPages) };
  });
  const replaced = encodeMemorySection(memories);
  const out = new Uint8Array(bytes.length - (memorySection.end - memorySection.start) + replaced.length);
  out.set(bytes.subarray(0, memorySection.start), 0);
  out.set(replaced, memorySection.start);
  out.set(bytes.subarray(memorySection.end), memorySection.start + replaced.length);
  return { bytes: out, memories: memories.map(({ initialPages, maximumPages }) => ({ initialPages, maximumPages })) };
}
