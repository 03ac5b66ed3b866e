import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { invalidArgument, notFound } from '../core/errors.js';
import { isObject } from './json.js';

/**
 * The pod and container config files `crictl runp pod.yaml` / `crictl create … container.yaml` take
 * (CRI PodSandboxConfig / ContainerConfig in YAML or JSON, snake_case), parsed into camelCase types.
 * Unknown fields are ignored, as crictl does; known fields of the wrong type are rejected.
 */

export interface PodSandboxMetadata {
  name: string;
  namespace: string;
  uid: string;
  attempt: number;
}

/** CRI NamespaceMode: 0 POD, 1 CONTAINER, 2 NODE, 3 TARGET. */
export type NamespaceMode = 0 | 1 | 2 | 3;

export interface PodLinuxConfig {
  cgroupParent?: string;
  privileged: boolean;
  namespaceOptions: { network: NamespaceMode; pid: NamespaceMode; ipc: NamespaceMode };
  sysctls: Record<string, string>;
}

export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname: string;
  logDirectory?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  linux: PodLinuxConfig;
}

export interface KeyValue {
  key: string;
  value: string;
}

export interface ContainerMount {
  containerPath: string;
  hostPath: string;
  readonly: boolean;
}

export interface ContainerResources {
  cpuPeriod?: number;
  cpuQuota?: number;
  cpuShares?: number;
  memoryLimitInBytes?: number;
}

export interface ContainerConfig {
  metadata: { name: string; attempt: number };
  image: { image: string };
  /** Replaces the image's Entrypoint when non-empty. */
  command: string[];
  /** Replaces the image's Cmd when non-empty. */
  args: string[];
  envs: KeyValue[];
  workingDir?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** Relative to the pod's log directory. */
  logPath?: string;
  mounts: ContainerMount[];
  linux: { resources: ContainerResources };
  stdin: boolean;
}

export async function readPodSandboxConfigFile(file: string): Promise<PodSandboxConfig> {
  return parsePodSandboxConfig(await readConfigFile(file), path.basename(file));
}

export async function readContainerConfigFile(file: string): Promise<ContainerConfig> {
  return parseContainerConfig(await readConfigFile(file), path.basename(file));
}

/** `fileName` prefixes every error message, e.g. `pod.yaml: metadata.name must be a non-empty string`. */
export function parsePodSandboxConfig(text: string, fileName = 'pod config'): PodSandboxConfig {
  const doc = new Fields(parseDocument(text, fileName), fileName, '');
  const metadata = doc.object('metadata');
  const name = metadata.nonEmptyString('name');
  const config: PodSandboxConfig = {
    metadata: {
      name,
      namespace: metadata.optionalNonEmptyString('namespace') ?? 'default',
      uid: metadata.optionalNonEmptyString('uid') ?? randomUUID(),
      attempt: metadata.optionalCount('attempt') ?? 0,
    },
    hostname: doc.optionalHostname('hostname') ?? name,
    labels: doc.stringMap('labels'),
    annotations: doc.stringMap('annotations'),
    linux: parsePodLinux(doc.optionalObject('linux')),
  };
  const logDirectory = doc.optionalNonEmptyString('log_directory');
  if (logDirectory !== undefined) config.logDirectory = logDirectory;
  return config;
}

export function parseContainerConfig(text: string, fileName = 'container config'): ContainerConfig {
  const doc = new Fields(parseDocument(text, fileName), fileName, '');
  if (doc.optionalBoolean('tty')) throw doc.error('tty', 'true is not supported (kts attaches no terminal); remove it or set it to false');
  const metadata = doc.object('metadata');
  const config: ContainerConfig = {
    metadata: { name: metadata.nonEmptyString('name'), attempt: metadata.optionalCount('attempt') ?? 0 },
    image: { image: doc.object('image').nonEmptyString('image') },
    command: doc.stringArray('command'),
    args: doc.stringArray('args'),
    envs: doc.objectArray('envs').map((env) => ({ key: env.nonEmptyString('key'), value: env.optionalString('value') ?? '' })),
    labels: doc.stringMap('labels'),
    annotations: doc.stringMap('annotations'),
    mounts: doc.objectArray('mounts').map(parseMount),
    linux: { resources: parseResources(doc.optionalObject('linux')?.optionalObject('resources')) },
    stdin: doc.optionalBoolean('stdin') ?? false,
  };
  const workingDir = doc.optionalAbsolutePath('working_dir');
  if (workingDir !== undefined) config.workingDir = workingDir;
  const logPath = doc.optionalNonEmptyString('log_path');
  if (logPath !== undefined) config.logPath = logPath;
  return config;
}

function parsePodLinux(linux: Fields | undefined): PodLinuxConfig {
  const security = linux?.optionalObject('security_context');
  const namespaces = security?.optionalObject('namespace_options');
  const config: PodLinuxConfig = {
    privileged: security?.optionalBoolean('privileged') ?? false,
    namespaceOptions: {
      network: namespaces?.optionalNamespaceMode('network') ?? 0,
      pid: namespaces?.optionalNamespaceMode('pid') ?? 0,
      ipc: namespaces?.optionalNamespaceMode('ipc') ?? 0,
    },
    sysctls: linux?.stringMap('sysctls') ?? {},
  };
  const cgroupParent = linux?.optionalNonEmptyString('cgroup_parent');
  if (cgroupParent !== undefined) config.cgroupParent = cgroupParent;
  return config;
}

function parseMount(mount: Fields): ContainerMount {
  return {
    containerPath: mount.absolutePath('container_path'),
    hostPath: mount.absolutePath('host_path'),
    readonly: mount.optionalBoolean('readonly') ?? false,
  };
}

function parseResources(resources: Fields | undefined): ContainerResources {
  const result: ContainerResources = {};
  if (!resources) return result;
  const fields = { cpuPeriod: 'cpu_period', cpuQuota: 'cpu_quota', cpuShares: 'cpu_shares', memoryLimitInBytes: 'memory_limit_in_bytes' } as const;
  for (const [key, field] of Object.entries(fields) as Array<[keyof ContainerResources, string]>) {
    const value = resources.optionalCount(field);
    // CRI uses 0 for "not set".
    if (value !== undefined && value !== 0) result[key] = value;
  }
  return result;
}

async function readConfigFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw notFound(`config file ${file} does not exist`);
    throw invalidArgument(`cannot read config file ${file}: ${(error as Error).message}`);
  }
}

function parseDocument(text: string, fileName: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (error) {
    throw invalidArgument(`${fileName}: not valid YAML or JSON: ${(error as Error).message.split('\n')[0]}`);
  }
  if (!isObject(value)) throw invalidArgument(`${fileName}: must be a mapping (YAML) or an object (JSON)`);
  return value;
}

/** Typed access to one mapping of a config file; errors name the file and the dotted field. */
class Fields {
  constructor(
    private readonly values: Record<string, unknown>,
    private readonly fileName: string,
    private readonly prefix: string,
  ) {}

  error(key: string, problem: string) {
    return invalidArgument(`${this.fileName}: ${this.prefix}${key} ${problem}`);
  }

  object(key: string): Fields {
    const fields = this.optionalObject(key);
    if (!fields) throw this.error(key, 'is required');
    return fields;
  }

  optionalObject(key: string): Fields | undefined {
    const value = this.values[key];
    if (value === undefined || value === null) return undefined;
    if (!isObject(value)) throw this.error(key, 'must be a mapping');
    return new Fields(value, this.fileName, `${this.prefix}${key}.`);
  }

  objectArray(key: string): Fields[] {
    const value = this.values[key];
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) throw this.error(key, 'must be a list');
    return value.map((item, i) => {
      if (!isObject(item)) throw this.error(`${key}[${i}]`, 'must be a mapping');
      return new Fields(item, this.fileName, `${this.prefix}${key}[${i}].`);
    });
  }

  nonEmptyString(key: string): string {
    const value = this.optionalNonEmptyString(key);
    if (value === undefined) throw this.error(key, 'must be a non-empty string');
    return value;
  }

  optionalNonEmptyString(key: string): string | undefined {
    const value = this.optionalString(key);
    if (value === '') throw this.error(key, 'must be a non-empty string');
    return value;
  }

  optionalString(key: string): string | undefined {
    const value = this.values[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string') throw this.error(key, `must be a string (got ${describe(value)})`);
    return value;
  }

  absolutePath(key: string): string {
    const value = this.optionalAbsolutePath(key);
    if (value === undefined) throw this.error(key, 'must be an absolute path');
    return value;
  }

  optionalAbsolutePath(key: string): string | undefined {
    const value = this.optionalString(key);
    if (value === undefined || value === '') return undefined;
    if (!path.posix.isAbsolute(value)) throw this.error(key, `must be an absolute path (got "${value}")`);
    return value;
  }

  optionalHostname(key: string): string | undefined {
    const value = this.optionalString(key);
    if (value === undefined || value === '') return undefined;
    if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$/.test(value)) {
      throw this.error(key, `"${value.slice(0, 80)}" is not a valid hostname (letters, digits, "-", ".", at most 64)`);
    }
    return value;
  }

  optionalBoolean(key: string): boolean | undefined {
    const value = this.values[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'boolean') throw this.error(key, `must be true or false (got ${describe(value)})`);
    return value;
  }

  optionalCount(key: string): number | undefined {
    const value = this.values[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw this.error(key, `must be a non-negative integer (got ${describe(value)})`);
    return value;
  }

  optionalNamespaceMode(key: string): NamespaceMode | undefined {
    const value = this.optionalCount(key);
    if (value === undefined) return undefined;
    if (value > 3) throw this.error(key, `must be 0 (POD), 1 (CONTAINER), 2 (NODE) or 3 (TARGET) (got ${value})`);
    return value as NamespaceMode;
  }

  stringArray(key: string): string[] {
    const value = this.values[key];
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) throw this.error(key, 'must be a list of strings');
    value.forEach((item, i) => {
      if (typeof item !== 'string') throw this.error(`${key}[${i}]`, `must be a string (got ${describe(item)})`);
    });
    return value as string[];
  }

  stringMap(key: string): Record<string, string> {
    const fields = this.optionalObject(key);
    if (!fields) return {};
    const map: Record<string, string> = {};
    for (const name of Object.keys(fields.values)) map[name] = fields.requiredString(name);
    return map;
  }

  private requiredString(key: string): string {
    const value = this.optionalString(key);
    if (value === undefined) throw this.error(key, 'must be a string');
    return value;
  }
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (value === null) return 'null';
  return typeof value === 'object' ? 'a mapping' : `${typeof value} ${JSON.stringify(value).slice(0, 40)}`;
}
