import { invalidArgument } from '../core/errors.js';

/**
 * A reader of tar headers (ustar, pax, GNU long names) that lists a layer's entries before GNU tar
 * extracts it, so that path traversal is rejected up front. Anything this reader and GNU tar might
 * read differently (bad checksums, data on header-only entries, exotic GNU types) is rejected too.
 */

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'directory' | 'fifo';

export interface TarEntry {
  /** Normalised: relative, no leading "./", no trailing "/"; "" is the archive's root directory. */
  path: string;
  type: TarEntryType;
  /** Target of a symlink (as stored) or hardlink (normalised like path); "" otherwise. */
  linkPath: string;
  size: number;
}

const BLOCK = 512;
const ENTRY_TYPES: Record<string, TarEntryType> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink',
  '3': 'char', '4': 'block', '5': 'directory', '6': 'fifo',
};
const HEADER_ONLY_TYPES = new Set<TarEntryType>(['hardlink', 'symlink', 'char', 'block', 'directory', 'fifo']);
const MAX_META_BODY = 1 << 20;

interface PendingMeta { path?: string; linkPath?: string; size?: number }
interface MetaBody { flag: string; size: number }

/** Reads the whole stream (so hashes over it complete) and returns its entries in archive order. */
export async function listTarEntries(source: AsyncIterable<Buffer>): Promise<TarEntry[]> {
  const scanner = new TarScanner();
  for await (const chunk of source) scanner.feed(chunk);
  if (!scanner.ended) throw invalidArgument('tar: archive is truncated (no end-of-archive block)');
  return scanner.entries;
}

class TarScanner {
  readonly entries: TarEntry[] = [];
  ended = false;
  private buffer: Buffer = Buffer.alloc(0);
  private skip = 0;
  private metaBody: MetaBody | undefined;
  private meta: PendingMeta = {};

  feed(chunk: Buffer): void {
    if (this.ended) return;
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    while (!this.ended && this.step()) {
      // each step consumes skipped data, one metadata body or one header
    }
  }

  /** Consumes what it can; false when more input is needed. */
  private step(): boolean {
    if (this.skip > 0) {
      const n = Math.min(this.skip, this.buffer.length);
      this.buffer = this.buffer.subarray(n);
      this.skip -= n;
      return this.skip === 0;
    }
    if (this.metaBody) return this.readMetaBody(this.metaBody);
    if (this.buffer.length < BLOCK) return false;
    const header = this.buffer.subarray(0, BLOCK);
    this.buffer = this.buffer.subarray(BLOCK);
    if (header.every((byte) => byte === 0)) {
      this.ended = true;
      return false;
    }
    this.applyHeader(readHeader(header, this.meta));
    return true;
  }

  private readMetaBody(body: MetaBody): boolean {
    const padded = paddedSize(body.size);
    if (this.buffer.length < padded) return false;
    this.meta = applyMetaBody(this.meta, body.flag, this.buffer.subarray(0, body.size));
    this.buffer = this.buffer.subarray(padded);
    this.metaBody = undefined;
    return true;
  }

  private applyHeader(step: HeaderStep): void {
    if (step.kind === 'meta') {
      if (step.size > MAX_META_BODY) throw invalidArgument(`tar: metadata entry of ${step.size} bytes is too large`);
      this.metaBody = { flag: step.flag, size: step.size };
    } else if (step.kind === 'skip') {
      this.skip = paddedSize(step.size);
    } else {
      this.entries.push(step.entry);
      this.skip = paddedSize(step.entry.size);
      this.meta = {};
    }
  }
}

type HeaderStep =
  | { kind: 'meta'; flag: string; size: number }
  | { kind: 'skip'; size: number }
  | { kind: 'entry'; entry: TarEntry };

function readHeader(header: Buffer, meta: PendingMeta): HeaderStep {
  verifyChecksum(header);
  const flag = String.fromCharCode(header[156]!);
  const headerSize = readNumber(header.subarray(124, 136), 'size');
  if (flag === 'x' || flag === 'L' || flag === 'K') return { kind: 'meta', flag, size: headerSize };
  if (flag === 'g') return { kind: 'skip', size: headerSize };
  const type = ENTRY_TYPES[flag];
  if (type === undefined) throw invalidArgument(`tar: unsupported entry type "${flag}"`);
  const rawPath = meta.path ?? ustarPath(header);
  const size = meta.size ?? headerSize;
  const path = normaliseEntryPath(rawPath);
  if (HEADER_ONLY_TYPES.has(type) && size !== 0) throw invalidArgument(`tar: ${type} "${rawPath}" carries ${size} data bytes`);
  const rawLink = meta.linkPath ?? cString(header.subarray(157, 257));
  const linkPath = type === 'hardlink' ? normaliseEntryPath(rawLink) : type === 'symlink' ? rawLink : '';
  if (type === 'hardlink' && linkPath === '') throw invalidArgument(`tar: hardlink "${rawPath}" has no target`);
  return { kind: 'entry', entry: { path, type, linkPath, size } };
}

function applyMetaBody(meta: PendingMeta, flag: string, body: Buffer): PendingMeta {
  if (flag === 'L') return { ...meta, path: cString(body) };
  if (flag === 'K') return { ...meta, linkPath: cString(body) };
  const next = { ...meta };
  for (const [key, value] of parsePaxRecords(body)) {
    if (key === 'path') next.path = value;
    else if (key === 'linkpath') next.linkPath = value;
    else if (key === 'size') {
      if (!/^\d{1,15}$/.test(value)) throw invalidArgument(`tar: bad pax size "${value.slice(0, 32)}"`);
      next.size = Number(value);
    }
  }
  return next;
}

function parsePaxRecords(body: Buffer): Array<[string, string]> {
  const records: Array<[string, string]> = [];
  let offset = 0;
  while (offset < body.length) {
    const space = body.indexOf(0x20, offset);
    const length = space < 0 ? NaN : Number(body.subarray(offset, space).toString('ascii'));
    if (!Number.isInteger(length) || length <= 0 || offset + length > body.length) throw invalidArgument('tar: malformed pax header');
    const record = body.subarray(space + 1, offset + length - 1).toString('utf8');
    const equals = record.indexOf('=');
    if (equals <= 0) throw invalidArgument('tar: malformed pax record');
    records.push([record.slice(0, equals), record.slice(equals + 1)]);
    offset += length;
  }
  return records;
}

/** Rejects absolute paths and ".." components: a layer may only write inside the rootfs. */
export function normaliseEntryPath(raw: string): string {
  if (raw.includes('\0')) throw invalidArgument('tar: entry name contains a NUL byte');
  if (raw.startsWith('/')) throw invalidArgument(`tar: absolute entry name "${raw.slice(0, 200)}"`);
  const parts = raw.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw invalidArgument(`tar: entry name "${raw.slice(0, 200)}" escapes the rootfs ("..")`);
  return parts.join('/');
}

function ustarPath(header: Buffer): string {
  const name = cString(header.subarray(0, 100));
  // Only POSIX ustar ("ustar\0") has a prefix field; GNU ("ustar  ") keeps times there.
  const isPosixUstar = header.subarray(257, 263).toString('latin1') === 'ustar\0';
  const prefix = isPosixUstar ? cString(header.subarray(345, 500)) : '';
  return prefix ? `${prefix}/${name}` : name;
}

function verifyChecksum(header: Buffer): void {
  const stored = readNumber(header.subarray(148, 156), 'checksum');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  if (sum !== stored) throw invalidArgument('tar: header checksum mismatch');
}

function readNumber(field: Buffer, what: string): number {
  if (field[0]! & 0x80) {
    // GNU base-256: big-endian binary after the marker bit.
    let value = field[0]! & 0x7f;
    for (const byte of field.subarray(1)) value = value * 256 + byte;
    if (!Number.isSafeInteger(value)) throw invalidArgument(`tar: ${what} field is out of range`);
    return value;
  }
  const text = field.toString('latin1').replace(/[\0 ]+$/, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw invalidArgument(`tar: ${what} field "${text.slice(0, 16)}" is not octal`);
  return parseInt(text, 8);
}

function cString(field: Buffer): string {
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? field.length : end).toString('utf8');
}

function paddedSize(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}
