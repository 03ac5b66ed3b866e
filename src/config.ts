import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
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
  /** `maxConcurrentStarts`: runc start steps (sandbox init, create, start) let run at once; 0 = no limit. */
  runc: { binary: string; root: string; maxConcurrentStarts: number };
  /** `maxLayerBytes`/`maxLayerEntries`: uncompressed bytes and tar entries one image layer may hold. */
  images: { dir: string; maxLayerBytes: number; maxLayerEntries: number };
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

/** `[audit]`: what is kept out of the append-only event log. */
export interface AuditConfig {
  /** Annotation keys (exact, or `prefix*`) whose values are stored as "<redacted>". */
  redactAnnotations: string[];
  /** The same for labels. */
  redactLabels: string[];
}

/** `[network]`: how pods created without a netns get one (containerd always passes its own). */
export interface NetworkConfig {
  /** Run CNI for such pods; false (the default) gives them a fresh netns with loopback only. */
  cni: boolean;
  /** The first .conf/.conflist/.json here by name is the pod network; none means the bridge network below. */
  cniConfDir: string;
  /** Where the plugin binaries are, searched in order (CNI_PATH). */
  cniBinDirs: string[];
  /** The pod's interface (CNI_IFNAME). */
  interfaceName: string;
  pluginTimeoutSeconds: number;
  /** kts's own bridge network, used when cniConfDir has no config. */
  bridge: BridgeNetworkSettings;
}

export interface BridgeNetworkSettings {
  /** The CNI network name (host-local keeps its allocations under it). */
  name: string;
  /** The host bridge device, made by the bridge plugin on first use. */
  bridge: string;
  /** IPv4 CIDR the pods' addresses come from; the bridge (the pods' gateway) gets the first. */
  subnet: string;
  /** 0 lets the kernel choose. */
  mtu: number;
  /** Masquerade pod traffic leaving the subnet (needs iptables). */
  ipMasq: boolean;
  /** host-local's dataDir; empty for its default, /var/lib/cni/networks. */
  ipamDataDir: string;
}

/** `[metrics]`: the Prometheus scrape endpoint. */
export interface MetricsConfig {
  /** Where `/metrics` is served over HTTP; null (the default: `listen` absent or "") serves nothing. */
  listen: MetricsAddress | null;
}

export interface MetricsAddress {
  /** An IP literal (IPv6 without brackets) or `localhost`; never a name that needs DNS at start. */
  host: string;
  port: number;
}

/** `[hypervisor]`: how microVM (vmm) sandboxes are launched. */
export interface HypervisorConfig {
  /** The QEMU binary. */
  path: string;
  /** `microvm` (virtio-mmio, fastest boot) or `q35` (the fallback for QEMUs without microvm). */
  machine: 'microvm' | 'q35';
  /** `auto` tries KVM once per daemon start and falls back to TCG when KVM guests do not come up. */
  accelerator: 'auto' | 'kvm' | 'tcg';
  /** Directory scripts/build-guest.sh wrote the guest into; kernel and initrd default to files in it. */
  guestDir: string;
  kernel: string;
  initrd: string;
  /** Read-only guest root filesystem image (ext4) on virtio-blk; empty = the initrd is the whole guest. */
  image: string;
  /** Extra guest kernel command-line parameters, appended to the ones kts needs. */
  kernelParams: string;
  vcpus: number;
  memoryMb: number;
  /** TCG translation-cache size; bounds QEMU's memory under TCG. */
  tcgTbSizeMb: number;
  /** How long a guest may take from launch until its agent answers. */
  bootDeadlineSeconds: number;
  /** How long the one KVM trial boot of `accelerator = "auto"` may take before TCG is used. */
  kvmProbeDeadlineSeconds: number;
  /** Period of the agent + QMP health check of running VMs. */
  healthIntervalSeconds: number;
  /** Deadline of one agent call (WaitProcess excepted). */
  agentCallTimeoutSeconds: number;
  /** Verbose guest kernel console. */
  debug: boolean;
  /** The guest's console log is copied to console.log.1 and emptied when it grows past this. */
  consoleMaxBytes: number;
  /** A share stdout/stderr file pumped into a host FIFO frees the disk blocks of what was forwarded every this many bytes. */
  shareStdioMaxBytes: number;
}

export const DEFAULT_SOCKET = '/run/kts/kts.sock';
export const DEFAULT_ROOT = '/var/lib/kts';
export const DEFAULT_CONFIG_PATH = '/etc/kts/config.toml';
export const SANDBOX_KINDS = ['runc', 'vmm', 'wasm'] as const;

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
    runc: { binary: 'runc', root: path.join(root, 'runc'), maxConcurrentStarts: 2 * availableParallelism() },
    images: { dir: path.join(root, 'images'), maxLayerBytes: 8 * 1024 ** 3, maxLayerEntries: 1_000_000 },
    stopTimeoutSeconds: 10,
    sweepIntervalSeconds: 60,
    hypervisor: defaultHypervisorConfig(path.join(root, 'guest')),
    // Off unless asked for: an unauthenticated HTTP port is the operator's choice, and two daemons on one host must not race for it.
    metrics: { listen: null },
    network: defaultNetworkConfig(),
    socketGroup: null,
    taskRelay: false,
    logs: { maxBytes: 10 * 1024 * 1024, rotateIntervalSeconds: 1 },
    audit: { redactAnnotations: [], redactLabels: [] },
  };
}

export function defaultNetworkConfig(): NetworkConfig {
  return {
    cni: false,
    cniConfDir: '/etc/cni/net.d',
    // Debian's containernetworking-plugins, then the upstream tarball's place.
    cniBinDirs: ['/usr/lib/cni', '/opt/cni/bin'],
    interfaceName: 'eth0',
    pluginTimeoutSeconds: 60,
    bridge: { name: 'kts', bridge: 'kts0', subnet: '10.88.0.0/16', mtu: 0, ipMasq: false, ipamDataDir: '' },
  };
}

export function defaultHypervisorConfig(guestDir: string): HypervisorConfig {
  return {
    path: 'qemu-system-x86_64',
    machine: 'microvm',
    accelerator: 'auto',
    guestDir,
    // The uncompressed kernel boots 2.3 s faster under TCG; build-guest.sh writes both.
    kernel: path.join(guestDir, existsSync(path.join(guestDir, 'vmlinux')) ? 'vmlinux' : 'vmlinuz'),
    initrd: path.join(guestDir, 'initrd.img'),
    image: path.join(guestDir, 'rootfs.img'),
    kernelParams: '',
    vcpus: 1,
    memoryMb: 256,
    tcgTbSizeMb: 64,
    bootDeadlineSeconds: 90,
    kvmProbeDeadlineSeconds: 15,
    healthIntervalSeconds: 10,
    agentCallTimeoutSeconds: 30,
    debug: false,
    consoleMaxBytes: 1024 * 1024,
    shareStdioMaxBytes: 1024 * 1024,
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

const RUNC_KEYS = ['binary', 'root', 'max_concurrent_starts'];
const IMAGES_KEYS = ['dir', 'max_layer_bytes', 'max_layer_entries'];
const TOP_KEYS = ['listen', 'root', 'db', 'default_sandbox_kind', 'log_level', 'stop_timeout_seconds', 'sweep_interval_seconds', 'runc', 'images', 'sandboxers', 'hypervisor', 'metrics', 'network', 'socket_group', 'task_relay', 'logs', 'audit'];

function applyToml(config: DaemonConfig, toml: Record<string, unknown>): void {
  for (const key of Object.keys(toml)) if (!TOP_KEYS.includes(key)) throw invalidArgument(`config: unknown key "${key}" (known: ${TOP_KEYS.join(', ')})`);
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
  const runc = optionalTable(toml, 'runc');
  config.runc.binary = optionalString(runc, 'binary', 'runc.') ?? config.runc.binary;
  config.runc.root = optionalString(runc, 'root', 'runc.') ?? config.runc.root;
  for (const key of Object.keys(runc)) if (!RUNC_KEYS.includes(key)) throw invalidArgument(`config: unknown key "runc.${key}" (known: ${RUNC_KEYS.join(', ')})`);
  const starts = runc.max_concurrent_starts;
  if (starts !== undefined) {
    if (typeof starts !== 'number' || !Number.isInteger(starts) || starts < 0) throw invalidArgument('config: runc.max_concurrent_starts must be a whole number (0: no limit)');
    config.runc.maxConcurrentStarts = starts;
  }
  const images = optionalTable(toml, 'images');
  for (const key of Object.keys(images)) if (!IMAGES_KEYS.includes(key)) throw invalidArgument(`config: unknown key "images.${key}" (known: ${IMAGES_KEYS.join(', ')})`);
  config.images.dir = optionalString(images, 'dir', 'images.') ?? config.images.dir;
  config.images.maxLayerBytes = optionalPositiveInteger(images, 'max_layer_bytes', 'images.') ?? config.images.maxLayerBytes;
  config.images.maxLayerEntries = optionalPositiveInteger(images, 'max_layer_entries', 'images.') ?? config.images.maxLayerEntries;
  applyHypervisorToml(config, optionalTable(toml, 'hypervisor'));
  applyMetricsToml(config, optionalTable(toml, 'metrics'));
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

const HYPERVISOR_NUMBERS = {
  vcpus: 'vcpus', memory_mb: 'memoryMb', tcg_tb_size_mb: 'tcgTbSizeMb', boot_deadline_seconds: 'bootDeadlineSeconds',
  kvm_probe_deadline_seconds: 'kvmProbeDeadlineSeconds', health_interval_seconds: 'healthIntervalSeconds', agent_call_timeout_seconds: 'agentCallTimeoutSeconds',
  console_max_bytes: 'consoleMaxBytes', share_stdio_max_bytes: 'shareStdioMaxBytes',
} as const;
const HYPERVISOR_STRINGS = { path: 'path', guest_dir: 'guestDir', kernel: 'kernel', initrd: 'initrd', image: 'image' } as const;
const HYPERVISOR_CHOICES = { machine: ['microvm', 'q35'], accelerator: ['auto', 'kvm', 'tcg'] } as const;

function applyHypervisorToml(config: DaemonConfig, table: Record<string, unknown>): void {
  const known = [...Object.keys(HYPERVISOR_NUMBERS), ...Object.keys(HYPERVISOR_STRINGS), ...Object.keys(HYPERVISOR_CHOICES), 'kernel_params', 'debug'];
  for (const key of Object.keys(table)) if (!known.includes(key)) throw invalidArgument(`config: unknown key "hypervisor.${key}" (known: ${known.join(', ')})`);
  const guestDir = optionalString(table, 'guest_dir', 'hypervisor.');
  const hypervisor = guestDir ? defaultHypervisorConfig(path.resolve(guestDir)) : config.hypervisor;
  for (const [key, field] of Object.entries(HYPERVISOR_STRINGS)) hypervisor[field] = optionalString(table, key, 'hypervisor.') ?? hypervisor[field];
  for (const [key, field] of Object.entries(HYPERVISOR_NUMBERS)) {
    const value = table[key];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) throw invalidArgument(`config: hypervisor.${key} must be a positive integer`);
    hypervisor[field] = value;
  }
  for (const [key, choices] of Object.entries(HYPERVISOR_CHOICES)) {
    const value = table[key];
    if (value === undefined) continue;
    if (!(choices as readonly unknown[]).includes(value)) throw invalidArgument(`config: hypervisor.${key} must be one of ${choices.join(', ')}`);
    (hypervisor as unknown as Record<string, unknown>)[key] = value;
  }
  if (table.kernel_params !== undefined) {
    if (typeof table.kernel_params !== 'string') throw invalidArgument('config: hypervisor.kernel_params must be a string');
    hypervisor.kernelParams = table.kernel_params;
  }
  if (table.debug !== undefined) {
    if (typeof table.debug !== 'boolean') throw invalidArgument('config: hypervisor.debug must be true or false');
    hypervisor.debug = table.debug;
  }
  if (hypervisor.memoryMb < 128) throw invalidArgument('config: hypervisor.memory_mb must be at least 128 (the guest runs Node)');
  config.hypervisor = hypervisor;
}

function applyMetricsToml(config: DaemonConfig, table: Record<string, unknown>): void {
  for (const key of Object.keys(table)) if (key !== 'listen') throw invalidArgument(`config: unknown key "metrics.${key}" (known: listen)`);
  if (table.listen === undefined) return;
  if (typeof table.listen !== 'string') throw invalidArgument('config: metrics.listen must be a string such as "127.0.0.1:9464" (or "" for off)');
  config.metrics.listen = table.listen === '' ? null : parseMetricsAddress(table.listen);
}

const NETWORK_KEYS = [
  'cni', 'cni_conf_dir', 'cni_bin_dir', 'interface', 'plugin_timeout_seconds', 'network_name', 'bridge', 'subnet', 'mtu', 'ip_masq', 'ipam_data_dir',
];
const INTERFACE_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,15}$/;

function applyNetworkToml(network: NetworkConfig, table: Record<string, unknown>): void {
  for (const key of Object.keys(table)) if (!NETWORK_KEYS.includes(key)) throw invalidArgument(`config: unknown key "network.${key}" (known: ${NETWORK_KEYS.join(', ')})`);
  network.cni = optionalBoolean(table, 'cni', 'network.') ?? network.cni;
  const confDir = optionalString(table, 'cni_conf_dir', 'network.');
  if (confDir) network.cniConfDir = path.resolve(confDir);
  const binDir = optionalString(table, 'cni_bin_dir', 'network.');
  if (binDir) network.cniBinDirs = binDir.split(':').filter(Boolean).map((dir) => path.resolve(dir));
  network.interfaceName = optionalString(table, 'interface', 'network.') ?? network.interfaceName;
  network.pluginTimeoutSeconds = optionalPositiveInteger(table, 'plugin_timeout_seconds', 'network.') ?? network.pluginTimeoutSeconds;
  const bridge = network.bridge;
  bridge.name = optionalString(table, 'network_name', 'network.') ?? bridge.name;
  bridge.bridge = optionalString(table, 'bridge', 'network.') ?? bridge.bridge;
  bridge.subnet = optionalString(table, 'subnet', 'network.') ?? bridge.subnet;
  if (table.mtu !== undefined) {
    if (typeof table.mtu !== 'number' || !Number.isInteger(table.mtu)) throw invalidArgument('config: network.mtu must be an integer (0: the kernel\'s choice)');
    bridge.mtu = table.mtu;
  }
  bridge.ipMasq = optionalBoolean(table, 'ip_masq', 'network.') ?? bridge.ipMasq;
  const dataDir = optionalString(table, 'ipam_data_dir', 'network.');
  if (dataDir) bridge.ipamDataDir = path.resolve(dataDir);
  validateNetwork(network);
}

function validateNetwork(network: NetworkConfig): void {
  for (const [key, name] of [['interface', network.interfaceName], ['bridge', network.bridge.bridge]] as const) {
    if (!INTERFACE_NAME_PATTERN.test(name)) throw invalidArgument(`config: network.${key} "${name}" must be a device name of 1-15 characters of [A-Za-z0-9_.-]`);
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(network.bridge.name)) throw invalidArgument(`config: network.network_name "${network.bridge.name}" must be 1-128 characters of [A-Za-z0-9_.-]`);
  const [address = '', prefix = ''] = network.bridge.subnet.split('/');
  const prefixLength = Number(prefix);
  if (isIP(address) !== 4 || !/^\d{1,2}$/.test(prefix) || prefixLength < 8 || prefixLength > 30) {
    throw invalidArgument(`config: network.subnet "${network.bridge.subnet}" must be an IPv4 CIDR with a prefix from /8 to /30, e.g. "10.88.0.0/16"`);
  }
  if (network.bridge.mtu !== 0 && (network.bridge.mtu < 576 || network.bridge.mtu > 65535)) throw invalidArgument('config: network.mtu must be 0 (the kernel\'s choice) or from 576 to 65535');
  if (network.cniBinDirs.length === 0) throw invalidArgument('config: network.cni_bin_dir must name at least one directory');
}

function applySocketGroupToml(config: DaemonConfig, value: unknown): void {
  if (value === undefined) return;
  if (typeof value !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/.test(value)) throw invalidArgument('config: socket_group must be a group name or a numeric gid');
  config.socketGroup = value;
}

function applyLogsToml(logs: LogsConfig, table: Record<string, unknown>): void {
  for (const key of Object.keys(table)) if (!['max_bytes', 'rotate_interval_seconds'].includes(key)) throw invalidArgument(`config: unknown key "logs.${key}" (known: max_bytes, rotate_interval_seconds)`);
  logs.maxBytes = optionalPositiveInteger(table, 'max_bytes', 'logs.') ?? logs.maxBytes;
  logs.rotateIntervalSeconds = optionalPositiveInteger(table, 'rotate_interval_seconds', 'logs.') ?? logs.rotateIntervalSeconds;
  if (logs.maxBytes < 4096) throw invalidArgument('config: logs.max_bytes must be at least 4096');
}

function applyAuditToml(audit: AuditConfig, table: Record<string, unknown>): void {
  for (const key of Object.keys(table)) if (!['redact_annotations', 'redact_labels'].includes(key)) throw invalidArgument(`config: unknown key "audit.${key}" (known: redact_annotations, redact_labels)`);
  audit.redactAnnotations = optionalKeyPatterns(table, 'redact_annotations') ?? audit.redactAnnotations;
  audit.redactLabels = optionalKeyPatterns(table, 'redact_labels') ?? audit.redactLabels;
}

/** Keys or `prefix*` patterns; a `*` anywhere else would suggest a glob we do not implement. */
function optionalKeyPatterns(table: Record<string, unknown>, key: string): string[] | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  const valid = Array.isArray(value) && value.every((item) => typeof item === 'string' && item.length > 0 && !item.slice(0, -1).includes('*'));
  if (!valid) throw invalidArgument(`config: audit.${key} must be an array of keys or "prefix*" patterns`);
  return value as string[];
}

/** `host:port` or `[ipv6]:port`; the host must be an IP literal or localhost, so the address means one thing at every start. */
export function parseMetricsAddress(text: string): MetricsAddress {
  const [, bracketed, bare, portText] = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text) ?? [];
  const host = bracketed ?? bare ?? '';
  const hostOk = bracketed !== undefined ? isIP(host) === 6 : host === 'localhost' || isIP(host) === 4;
  const port = Number(portText);
  if (!hostOk || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalidArgument(`config: metrics.listen "${text}" must be <IPv4 or localhost>:<port> or [<IPv6>]:<port> with a port from 1 to 65535, e.g. "127.0.0.1:9464"`);
  }
  return { host, port };
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

function optionalBoolean(table: Record<string, unknown>, key: string, prefix = ''): boolean | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') throw invalidArgument(`config: ${prefix}${key} must be true or false`);
  return value;
}

function optionalPositiveInteger(table: Record<string, unknown>, key: string, prefix = ''): number | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) throw invalidArgument(`config: ${prefix}${key} must be a positive integer`);
  return value;
}

function optionalTable(table: Record<string, unknown>, key: string): Record<string, unknown> {
  const value = table[key];
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidArgument(`config: [${key}] must be a table`);
  return value as Record<string, unknown>;
}
