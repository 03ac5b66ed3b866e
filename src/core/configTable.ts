// Reading one table of the daemon's TOML config: each reader checks a key's type and names the key,
// with its section, in the error. Each component's config module (src/config.ts composes them) uses these.
import { invalidArgument } from './errors.js';

export type ConfigTable = Record<string, unknown>;

/** Refuses any key of `table` (section `section`, e.g. "hypervisor") that is not in `known`. */
export function rejectUnknownKeys(table: ConfigTable, section: string, known: readonly string[]): void {
  for (const key of Object.keys(table)) if (!known.includes(key)) throw invalidArgument(`config: unknown key "${section}${section ? '.' : ''}${key}" (known: ${known.join(', ')})`);
}

export function optionalString(table: ConfigTable, key: string, prefix = ''): string | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length === 0) throw invalidArgument(`config: ${prefix}${key} must be a non-empty string`);
  return value;
}

export function optionalBoolean(table: ConfigTable, key: string, prefix = ''): boolean | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') throw invalidArgument(`config: ${prefix}${key} must be true or false`);
  return value;
}

export function optionalPositiveInteger(table: ConfigTable, key: string, prefix = ''): number | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) throw invalidArgument(`config: ${prefix}${key} must be a positive integer`);
  return value;
}

export function optionalTable(table: ConfigTable, key: string): ConfigTable {
  const value = table[key];
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidArgument(`config: [${key}] must be a table`);
  return value as ConfigTable;
}
