import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { applyRuncToml, defaultRuncConfig, type RuncConfig } from './backends/runc/config.js';
import { applyHypervisorToml, defaultHypervisorConfig, type HypervisorConfig } from './backends/vmm/config.js';
import { optionalPositiveInteger, optionalString, optionalTable, rejectUnknownKeys } from './core/configTable.js';
import { invalidArgument } from './core/errors.js';
import { SANDBOX_KINDS } from './core/sandboxer.js';
import { applyAuditToml, defaultAuditConfig, type AuditConfig } from './audit/config.js';
import { applyImagesToml, defaultImagesConfig, type ImagesConfig } from './images/config.js';
import { applyNetworkToml, defaultNetworkConfig, type NetworkConfig } from './network/config.js';
import { applyMetricsToml, type MetricsConfig } from './telemetry/metricsConfig.js';

/**
 * Daemon configuration, validated once at start: the top-level keys and the small tables here; each
 * component's own table (its type, defaults and validation) beside the component: `[hypervisor]` in
 * backends/vmm/config.ts, `[runc]` in backends/runc/config.ts, `[images]` in images/config.ts, `[network]` in
 * network/config.ts, `[metrics]` in telemetry/metricsConfig.ts, `[audit]` in audit/config.ts.
 */
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
  runc: RuncConfig;
  images: ImagesConfig;
  /** Seconds Stop waits for processes to exit after SIGTERM before SIGKILL. */
  stopTimeoutSeconds: number;
  /** Seconds between orphan sweeps after recovery's (processes still starting then, resources that could not be removed). */
  sweepIntervalSeconds: number;
  hypervisor: HypervisorConfig;
  metrics: MetricsConfig;
  network: NetworkConfig;
  /** Group given access to the socket (0660); null: the socket is 0600, root only. A name or a numeric gid. */
  socketGroup: string | null;
  /** Serve containerd's task connections through a relay process that outlives the daemon (api/taskRelay.ts). */
  taskRelay: boolean;
  logs: LogsConfig;
  audit: AuditConfig;
}

/** `[logs]`: container log files of runc and wasm containers made by `kts run`. */
export interface LogsConfig {
  /** A log past this size is copied to `<log>.1` (its last max_bytes) and truncated. */
  maxBytes: number;
  /** How often the logs' sizes are checked; a log can exceed max_bytes by what is written in one period. */
  rotateIntervalSeconds: number;
}

export const DEFAULT_SOCKET = '/run/kts/kts.sock';
export const DEFAULT_ROOT = '/var/lib/kts';
export const DEFAULT_CONFIG_PATH = '/etc/kts/config.toml';

export function defaultConfig(root = DEFAULT_ROOT): DaemonConfig {
  return {
    listen: DEFAULT_SOCKET,
    root,
    db: path.join(root, 'kts.db'),
    defaultSandboxKind: 'runc',
    sandboxerKinds: {
      runc: 'runc', 'kts-runc': 'runc', 'kuasar-runc': 'runc', vmm: 'vmm', 'kts-vmm': 'vmm', 'kuasar-vmm': 'vmm', wasm: 'wasm', 'kts-wasm': 'wasm', 'kuasar-wasm': 'wasm',
    },
    logLevel: 'info',
    // Under the daemon's root: a second daemon with another root never sees (or sweeps) this one's containers.
    runc: defaultRuncConfig(root),
    images: defaultImagesConfig(root),
    stopTimeoutSeconds: 10,
    sweepIntervalSeconds: 60,
    hypervisor: defaultHypervisorConfig(path.join(root, 'guest')),
    // Off unless asked for: an unauthenticated HTTP port is the operator's choice, and two daemons on one host must not race for it.
    metrics: { listen: null },
    network: defaultNetworkConfig(),
    socketGroup: null,
    taskRelay: false,
    logs: { maxBytes: 10 * 1024 * 1024, rotateIntervalSeconds: 1 },
    audit: defaultAuditConfig(root),
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

const TOP_KEYS = ['listen', 'root', 'db', 'default_sandbox_kind', 'log_level', 'stop_timeout_seconds', 'sweep_interval_seconds', 'runc', 'images', 'sandboxers', 'hypervisor', 'metrics', 'network', 'socket_group', 'task_relay', 'logs', 'audit'];

function applyToml(config: DaemonConfig, toml: Record<string, unknown>): void {
  rejectUnknownKeys(toml, '', TOP_KEYS);
  config.listen = optionalString(toml, 'listen') ?? config.listen;
  config.db = optionalString(toml, 'db') ?? config.db;
  config.defaultSandboxKind = optionalString(toml, 'default_sandbox_kind') ?? config.defaultSandboxKind;
  config.logLevel = optionalString(toml, 'log_level') ?? config.logLevel;
  if (toml.task_relay !== undefined) {
    if (typeof toml.task_relay !== 'boolean') throw invalidArgument('config: task_relay must be true or false');
    config.taskRelay = toml.task_relay;
  }
  const stopTimeout = toml.stop_timeout_seconds;
  if (stopTimeout !== undefined) {
    if (typeof stopTimeout !== 'number' || stopTimeout <= 0) throw invalidArgument('config: stop_timeout_seconds must be a positive number');
    config.stopTimeoutSeconds = stopTimeout;
  }
  const sweepInterval = toml.sweep_interval_seconds;
  if (sweepInterval !== undefined) {
    if (typeof sweepInterval !== 'number' || sweepInterval <= 0) throw invalidArgument('config: sweep_interval_seconds must be a positive number');
    config.sweepIntervalSeconds = sweepInterval;
  }
  applyRuncToml(config.runc, optionalTable(toml, 'runc'));
  applyImagesToml(config.images, optionalTable(toml, 'images'));
  config.hypervisor = applyHypervisorToml(config.hypervisor, optionalTable(toml, 'hypervisor'));
  applyMetricsToml(config.metrics, optionalTable(toml, 'metrics'));
  applyNetworkToml(config.network, optionalTable(toml, 'network'));
  applySocketGroupToml(config, toml.socket_group);
  applyLogsToml(config.logs, optionalTable(toml, 'logs'));
  applyAuditToml(config.audit, optionalTable(toml, 'audit'));
  const sandboxers = optionalTable(toml, 'sandboxers');
  for (const [name, kind] of Object.entries(sandboxers)) {
    if (typeof kind !== 'string') throw invalidArgument(`config: sandboxers.${name} must be a sandbox kind string`);
    config.sandboxerKinds[name] = kind;
  }
}

function applySocketGroupToml(config: DaemonConfig, value: unknown): void {
  if (value === undefined) return;
  if (typeof value !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/.test(value)) throw invalidArgument('config: socket_group must be a group name or a numeric gid');
  config.socketGroup = value;
}

function applyLogsToml(logs: LogsConfig, table: Record<string, unknown>): void {
  rejectUnknownKeys(table, 'logs', ['max_bytes', 'rotate_interval_seconds']);
  logs.maxBytes = optionalPositiveInteger(table, 'max_bytes', 'logs.') ?? logs.maxBytes;
  logs.rotateIntervalSeconds = optionalPositiveInteger(table, 'rotate_interval_seconds', 'logs.') ?? logs.rotateIntervalSeconds;
  if (logs.maxBytes < 4096) throw invalidArgument('config: logs.max_bytes must be at least 4096');
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

