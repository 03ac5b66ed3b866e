import { invalidArgument } from '../core/errors.js';
import type { MountSpec } from '../core/sandboxer.js';

const MAX_KEY_BYTES = 256;
const MAX_VALUE_BYTES = 16 * 1024;
const MAX_TOTAL_BYTES = 256 * 1024;

/** Annotations and labels are stored on events; bound them so one request can't bloat the log. */
export function validateStringMap(what: string, map: Record<string, string> | undefined): Record<string, string> {
  const result: Record<string, string> = {};
  let total = 0;
  for (const [key, value] of Object.entries(map ?? {})) {
    const keyBytes = Buffer.byteLength(key);
    const valueBytes = Buffer.byteLength(value);
    if (keyBytes === 0 || keyBytes > MAX_KEY_BYTES) throw invalidArgument(`${what} key "${key.slice(0, 40)}" must be 1-${MAX_KEY_BYTES} bytes`);
    if (valueBytes > MAX_VALUE_BYTES) throw invalidArgument(`${what} "${key}" is ${valueBytes} bytes; the limit is ${MAX_VALUE_BYTES}`);
    total += keyBytes + valueBytes;
    if (total > MAX_TOTAL_BYTES) throw invalidArgument(`${what} total more than ${MAX_TOTAL_BYTES} bytes`);
    result[key] = value;
  }
  return result;
}

export function requireString(what: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw invalidArgument(`${what} must not be empty`);
  return value;
}

export function requireAbsolutePath(what: string, value: unknown): string {
  const path = requireString(what, value);
  if (!path.startsWith('/') || path.split('/').includes('..')) throw invalidArgument(`${what} "${path}" must be an absolute path without ".."`);
  return path;
}

/** A rootfs mount's strings become mount(8)'s arguments, and no argument can hold a NUL byte (fuzzing sent some). */
export function validateMountSpec(what: string, mount: MountSpec): MountSpec {
  const fields: Array<[string, string]> = [['type', mount.type], ['source', mount.source], ['target', mount.target ?? ''], ...mount.options.map((option, i): [string, string] => [`options[${i}]`, option])];
  for (const [field, value] of fields) if (value.includes('\0')) throw invalidArgument(`${what}.${field} must not contain a NUL byte`);
  return mount;
}
