import { invalidArgument } from '../core/errors.js';

/**
 * JSON with object keys sorted at every depth, so equal values always give the same text (and hash).
 * Follows JSON.stringify otherwise: `toJSON` is honoured, undefined/functions/symbols are dropped from
 * objects and become null in arrays. Parsing the result and stringifying again gives the same text.
 */
export function stableStringify(value: unknown): string {
  return stringifyValue(value, new Set()) ?? 'null';
}

function stringifyValue(value: unknown, ancestors: Set<object>): string | undefined {
  if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    value = (value as { toJSON: () => unknown }).toJSON();
  }
  if (typeof value === 'bigint') throw invalidArgument('a bigint cannot be stored as JSON');
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (ancestors.has(value)) throw invalidArgument('a circular structure cannot be stored as JSON');
  ancestors.add(value);
  try {
    return Array.isArray(value) ? stringifyArray(value, ancestors) : stringifyObject(value as Record<string, unknown>, ancestors);
  } finally {
    ancestors.delete(value);
  }
}

function stringifyArray(items: unknown[], ancestors: Set<object>): string {
  return `[${items.map((item) => stringifyValue(item, ancestors) ?? 'null').join(',')}]`;
}

function stringifyObject(object: Record<string, unknown>, ancestors: Set<object>): string {
  const members: string[] = [];
  for (const key of Object.keys(object).sort()) {
    const text = stringifyValue(object[key], ancestors);
    if (text !== undefined) members.push(`${JSON.stringify(key)}:${text}`);
  }
  return `{${members.join(',')}}`;
}
