import { invalidArgument } from './errors.js';

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Sandbox, container and exec ids become directory names: reject anything that could escape one. */
export function validateId(what: string, id: unknown): string {
  if (typeof id !== 'string' || id.length === 0) throw invalidArgument(`${what} must not be empty`);
  if (id.includes('/') || id.includes('..')) throw invalidArgument(`${what} "${id.slice(0, 64)}" must not contain "/" or ".."`);
  if (!ID_PATTERN.test(id)) {
    throw invalidArgument(`${what} "${id.slice(0, 64)}" must be 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit`);
  }
  return id;
}
