import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { invalidArgument } from './core/errors.js';

/** Daemon configuration, validated once at start. Defaults live here, beside the schema. */
export interface DaemonConfig {
  /** Unix socket the daemon serves gRPC on (Sandbox Controller, Task v2/v3, kts admin). */
  listen: string;
  /** State directory: sandboxes, images, the database. */
  root: string;
  /** SQLite event store. */
  db: string;
  /** Sandbox kind used when a Create names none. */
  defaultSandboxKind: string;
  /** containerd `sandboxer` plugin names → sandbox kinds. */
  sandboxerKinds: Record<string, string>;
  logLevel: string;
  runc: { binary: string; root: string };
  images: { dir: string };
  /** Seconds Stop waits for processes to exit after SIGTERM before SIGKILL. */
  stopTimeoutSeconds: number;
}

export const DEFAULT_SOCKET = '/run/kts/kts.sock';
export const DEFAULT_ROOT = '/var/lib/kts';
export const DEFAULT_CONFIG_PATH = '/etc/kts/config.toml';
export const SANDBOX_KINDS = ['runc'] as const;

export function defaultConfig(root = DEFAULT_ROOT): DaemonConfig {
  return {
    listen: DEFAULT_SOCKET,
    root,
    db: path.join(root, 'kts.db'),
    defaultSandboxKind: 'runc',
    sandboxerKinds: { runc: 'runc', 'kts-runc': 'runc', 'kuasar-runc': 'runc' },
    logLevel: 'info',
    runc: { binary: 'runc', root: '/run/kts-runc' },
    images: { dir: path.join(root, 'images') },
    stopTimeoutSeconds: 10,
  };
}

export interface ConfigOverrides {
  listen?: string;
  root?: string;
  db?: string;
}

/**
 * Loads a TOML file (missing file = all defaults unless it was named explicitly) and applies
 * command-line overrides. Unknown keys and wrong types are errors naming the key.
 */
export function loadConfig(file: string | undefined, overrides: ConfigOverrides = {}): DaemonConfig {
  const text = readConfigText(file);
  const toml = text === undefined ? {} : parseTomlText(file ?? DEFAULT_CONFIG_PATH, text);
  const root = overrides.root ?? optionalString(toml, 'root') ?? DEFAULT_ROOT;
  const config = defaultConfig(path.resolve(root));
  applyToml(config, toml);
  if (overrides.listen) config.listen = overrides.listen;
  if (overrides.db) config.db = overrides.db;
  config.listen = path.resolve(config.listen);
  config.db = path.resolve(config.db);
  validate(config);
  return config;
}

function readConfigText(file: string | undefined): string | undefined {
  try {
    return readFileSync(file ?? DEFAULT_CONFIG_PATH, 'utf8');
  } catch (error) {
    if (file === undefined && (error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw invalidArgument(`cannot read config ${file}: ${(error as Error).message}`);
  }
}

function parseTomlText(file: string, text: string): Record<string, unknown> {
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (error) {
    throw invalidArgument(`config ${file} is not valid TOML: ${(error as Error).message.split('\n')[0]}`);
  }
}

const TOP_KEYS = ['listen', 'root', 'db', 'default_sandbox_kind', 'log_level', 'stop_timeout_seconds', 'runc', 'images', 'sandboxers'];

function applyToml(config: DaemonConfig, toml: Record<string, unknown>): void {
  for (const key of Object.keys(toml)) if (!TOP_KEYS.includes(key)) throw invalidArgument(`config: unknown key "${key}" (known: ${TOP_KEYS.join(', ')})`);
  config.listen = optionalString(toml, 'listen') ?? config.listen;
  config.db = optionalString(toml, 'db') ?? config.db;
  config.defaultSandboxKind = optionalString(toml, 'default_sandbox_kind') ?? config.defaultSandboxKind;
  config.logLevel = optionalString(toml, 'log_level') ?? config.logLevel;
  const stopTimeout = toml.stop_timeout_seconds;
  if (stopTimeout !== undefined) {
    if (typeof stopTimeout !== 'number' || stopTimeout <= 0) throw invalidArgument('config: stop_timeout_seconds must be a positive number');
    config.stopTimeoutSeconds = stopTimeout;
  }
  const runc = optionalTable(toml, 'runc');
  config.runc.binary = optionalString(runc, 'binary', 'runc.') ?? config.runc.binary;
  config.runc.root = optionalString(runc, 'root', 'runc.') ?? config.runc.root;
  const images = optionalTable(toml, 'images');
  config.images.dir = optionalString(images, 'dir', 'images.') ?? config.images.dir;
  const sandboxers = optionalTable(toml, 'sandboxers');
  for (const [name, kind] of Object.entries(sandboxers)) {
    if (typeof kind !== 'string') throw invalidArgument(`config: sandboxers.${name} must be a sandbox kind string`);
    config.sandboxerKinds[name] = kind;
  }
}

function validate(config: DaemonConfig): void {
  const kinds: readonly string[] = SANDBOX_KINDS;
  if (!kinds.includes(config.defaultSandboxKind)) {
    throw invalidArgument(`config: default_sandbox_kind "${config.defaultSandboxKind}" is not one of ${kinds.join(', ')}`);
  }
  for (const [name, kind] of Object.entries(config.sandboxerKinds)) {
    if (!kinds.includes(kind)) throw invalidArgument(`config: sandboxers.${name} = "${kind}" is not one of ${kinds.join(', ')}`);
  }
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(config.logLevel)) {
    throw invalidArgument(`config: log_level "${config.logLevel}" must be one of trace, debug, info, warn, error, fatal, silent`);
  }
}

function optionalString(table: Record<string, unknown>, key: string, prefix = ''): string | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length === 0) throw invalidArgument(`config: ${prefix}${key} must be a non-empty string`);
  return value;
}

function optionalTable(table: Record<string, unknown>, key: string): Record<string, unknown> {
  const value = table[key];
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidArgument(`config: [${key}] must be a table`);
  return value as Record<string, unknown>;
}
