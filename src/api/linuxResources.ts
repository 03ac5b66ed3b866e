import { invalidArgument } from '../core/errors.js';

/**
 * OCI runtime-spec LinuxResources (config-linux.md), validated before UpdateResources records it:
 * known fields only, the spec's types and ranges, bounded sizes. What is stored is what was checked.
 */
export interface LinuxResources {
  devices?: Array<{ allow: boolean; type?: string; major?: number; minor?: number; access?: string }>;
  memory?: Partial<Record<'limit' | 'reservation' | 'swap' | 'kernel' | 'kernelTCP' | 'swappiness', number>
    & Record<'disableOOMKiller' | 'useHierarchy' | 'checkBeforeUpdate', boolean>>;
  cpu?: Partial<Record<'shares' | 'quota' | 'burst' | 'period' | 'realtimeRuntime' | 'realtimePeriod' | 'idle', number> & Record<'cpus' | 'mems', string>>;
  pids?: { limit: number };
  blockIO?: Record<string, unknown>;
  hugepageLimits?: Array<{ pageSize: string; limit: number }>;
  network?: { classID?: number; priorities?: Array<{ name: string; priority: number }> };
  rdma?: Record<string, { hcaHandles?: number; hcaObjects?: number }>;
  unified?: Record<string, string>;
}

/** The most a resources_json may hold; a real LinuxResources is a few hundred bytes. */
export const MAX_RESOURCES_JSON_BYTES = 64 * 1024;
const MAX_ITEMS = 256;

type Rule =
  | { kind: 'int'; min: number; max: number }
  | { kind: 'bool' }
  | { kind: 'string'; pattern: RegExp; maxLength: number }
  | { kind: 'object'; fields: Record<string, Rule>; required?: string[] }
  | { kind: 'array'; of: Rule }
  | { kind: 'map'; key: RegExp; of: Rule };

// JSON numbers past 2^53 are not exact: the spec's int64/uint64 are held to safe integers.
const int64: Rule = { kind: 'int', min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER };
const uint64: Rule = { kind: 'int', min: 0, max: Number.MAX_SAFE_INTEGER };
const uint32: Rule = { kind: 'int', min: 0, max: 0xffffffff };
/** -1 means unlimited for memory and pids limits. */
const limit: Rule = { kind: 'int', min: -1, max: Number.MAX_SAFE_INTEGER };
const bool: Rule = { kind: 'bool' };
const cpuList: Rule = { kind: 'string', pattern: /^[0-9,-]*$/, maxLength: 1024 };
const blkioWeight: Rule = { kind: 'int', min: 10, max: 1000 };
const throttle: Rule = { kind: 'array', of: { kind: 'object', fields: { major: int64, minor: int64, rate: uint64 }, required: ['major', 'minor', 'rate'] } };

const LINUX_RESOURCES: Rule = {
  kind: 'object',
  fields: {
    devices: {
      kind: 'array',
      of: {
        kind: 'object', required: ['allow'],
        fields: { allow: bool, type: { kind: 'string', pattern: /^[abc]$/, maxLength: 1 }, major: int64, minor: int64, access: { kind: 'string', pattern: /^[rwm]{0,3}$/, maxLength: 3 } },
      },
    },
    memory: {
      kind: 'object',
      fields: {
        limit, reservation: limit, swap: limit, kernel: limit, kernelTCP: limit, swappiness: { kind: 'int', min: 0, max: 100 },
        disableOOMKiller: bool, useHierarchy: bool, checkBeforeUpdate: bool,
      },
    },
    cpu: {
      kind: 'object',
      fields: { shares: uint64, quota: int64, burst: uint64, period: uint64, realtimeRuntime: int64, realtimePeriod: uint64, cpus: cpuList, mems: cpuList, idle: { kind: 'int', min: 0, max: 1 } },
    },
    pids: { kind: 'object', fields: { limit }, required: ['limit'] },
    blockIO: {
      kind: 'object',
      fields: {
        weight: blkioWeight, leafWeight: blkioWeight,
        weightDevice: { kind: 'array', of: { kind: 'object', fields: { major: int64, minor: int64, weight: blkioWeight, leafWeight: blkioWeight }, required: ['major', 'minor'] } },
        throttleReadBpsDevice: throttle, throttleWriteBpsDevice: throttle, throttleReadIOPSDevice: throttle, throttleWriteIOPSDevice: throttle,
      },
    },
    hugepageLimits: { kind: 'array', of: { kind: 'object', fields: { pageSize: { kind: 'string', pattern: /^[0-9]+[KMG]B$/, maxLength: 16 }, limit: uint64 }, required: ['pageSize', 'limit'] } },
    network: {
      kind: 'object',
      fields: { classID: uint32, priorities: { kind: 'array', of: { kind: 'object', fields: { name: { kind: 'string', pattern: /^[A-Za-z0-9_.-]{1,15}$/, maxLength: 15 }, priority: uint32 }, required: ['name', 'priority'] } } },
    },
    rdma: { kind: 'map', key: /^[A-Za-z0-9_.-]{1,64}$/, of: { kind: 'object', fields: { hcaHandles: uint32, hcaObjects: uint32 } } },
    unified: { kind: 'map', key: /^[a-z0-9_]+\.[a-z0-9_.]+$/, of: { kind: 'string', pattern: /^[^\0]*$/, maxLength: 4096 } },
  },
};

/** Parses and checks UpdateResources' body; every problem is an INVALID_ARGUMENT that names the field. */
export function parseLinuxResources(text: string): LinuxResources {
  const bytes = Buffer.byteLength(text);
  if (bytes > MAX_RESOURCES_JSON_BYTES) throw invalidArgument(`resources_json is ${bytes} bytes; the limit is ${MAX_RESOURCES_JSON_BYTES}`);
  let value: unknown;
  try {
    value = JSON.parse(text || '{}');
  } catch (error) {
    throw invalidArgument(`resources_json is not valid JSON: ${(error as Error).message}`);
  }
  check(LINUX_RESOURCES, value, 'resources_json');
  return value as LinuxResources;
}

function check(rule: Rule, value: unknown, where: string): void {
  switch (rule.kind) {
    case 'int':
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < rule.min || value > rule.max) {
        throw invalidArgument(`${where} must be a whole number from ${rule.min} to ${rule.max}, not ${JSON.stringify(value)?.slice(0, 40)}`);
      }
      return;
    case 'bool':
      if (typeof value !== 'boolean') throw invalidArgument(`${where} must be true or false`);
      return;
    case 'string':
      if (typeof value !== 'string' || value.length > rule.maxLength || !rule.pattern.test(value)) throw invalidArgument(`${where} must be a string matching ${rule.pattern} (at most ${rule.maxLength} characters)`);
      return;
    case 'array':
      if (!Array.isArray(value)) throw invalidArgument(`${where} must be an array`);
      if (value.length > MAX_ITEMS) throw invalidArgument(`${where} has ${value.length} items; the limit is ${MAX_ITEMS}`);
      value.forEach((item, index) => check(rule.of, item, `${where}[${index}]`));
      return;
    case 'object':
      return checkObject(rule, value, where);
    case 'map':
      return checkMap(rule, value, where);
  }
}

function checkObject(rule: Extract<Rule, { kind: 'object' }>, value: unknown, where: string): void {
  if (!isPlainObject(value)) throw invalidArgument(`${where} must be a JSON object`);
  for (const [key, item] of Object.entries(value)) {
    const field = rule.fields[key];
    if (!field) throw invalidArgument(`${where} has an unknown field "${key.slice(0, 64)}" (known: ${Object.keys(rule.fields).join(', ')})`);
    check(field, item, `${where}.${key}`);
  }
  for (const key of rule.required ?? []) if (!(key in value)) throw invalidArgument(`${where}.${key} is required`);
}

function checkMap(rule: Extract<Rule, { kind: 'map' }>, value: unknown, where: string): void {
  if (!isPlainObject(value)) throw invalidArgument(`${where} must be a JSON object`);
  const entries = Object.entries(value);
  if (entries.length > MAX_ITEMS) throw invalidArgument(`${where} has ${entries.length} keys; the limit is ${MAX_ITEMS}`);
  for (const [key, item] of entries) {
    if (!rule.key.test(key)) throw invalidArgument(`${where} key "${key.slice(0, 64)}" must match ${rule.key}`);
    check(rule.of, item, `${where}["${key}"]`);
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
