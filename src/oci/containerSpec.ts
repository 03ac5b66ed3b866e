import path from 'node:path';
import { invalidArgument } from '../core/errors.js';
import type { MountSpec } from '../core/sandboxer.js';
import type { ImageConfig } from './imageConfig.js';
import { isObject, isStringArray, isStringRecord } from './json.js';
import type { ContainerConfig } from './podConfig.js';

/** The OCI runtime spec (config.json) fields kuasar-ts writes or reads; others pass through untouched. */

export interface OciUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}

export interface OciRlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface OciProcessSpec {
  terminal?: boolean;
  /** Absent means root (uid 0, gid 0). */
  user?: OciUser;
  args: string[];
  env?: string[];
  cwd: string;
  capabilities?: { bounding?: string[]; effective?: string[]; permitted?: string[]; inheritable?: string[]; ambient?: string[] };
  noNewPrivileges?: boolean;
  rlimits?: OciRlimit[];
  [field: string]: unknown;
}

export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface OciNamespace {
  type: 'pid' | 'network' | 'ipc' | 'uts' | 'mount' | 'user' | 'cgroup';
  path?: string;
}

export interface OciDeviceRule {
  allow: boolean;
  type?: 'a' | 'c' | 'b';
  major?: number;
  minor?: number;
  access?: string;
}

export interface OciResources {
  devices?: OciDeviceRule[];
  memory?: { limit?: number };
  cpu?: { shares?: number; quota?: number; period?: number };
  [field: string]: unknown;
}

export interface OciLinux {
  namespaces?: OciNamespace[];
  cgroupsPath?: string;
  resources?: OciResources;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  [field: string]: unknown;
}

export interface OciSpec {
  ociVersion: string;
  process: OciProcessSpec;
  root: { path: string; readonly?: boolean };
  hostname?: string;
  mounts?: OciMount[];
  linux?: OciLinux;
  annotations?: Record<string, string>;
  [field: string]: unknown;
}

/** What a container spec needs from a container's config; a parsed ContainerConfig fits. */
export interface ContainerSpecSource {
  metadata: { name: string };
  command: string[];
  args: string[];
  envs: ReadonlyArray<{ key: string; value: string }>;
  workingDir?: string | undefined;
  annotations?: Record<string, string>;
  mounts?: ContainerConfig['mounts'];
  linux?: ContainerConfig['linux'];
}

export interface BuildContainerSpecInput {
  containerId: string;
  sandboxId: string;
  container: ContainerSpecSource;
  image: ImageConfig;
  /** The sandbox's namespace holder: the container joins its pid, network, ipc and uts namespaces. */
  holderPid: number;
  hostname: string;
  cgroupsPath: string;
}

export const OCI_VERSION = '1.0.2';
export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const SANDBOX_ID_ANNOTATION = 'io.kubernetes.cri.sandbox-id';
export const CONTAINER_NAME_ANNOTATION = 'io.kubernetes.cri.container-name';
export const CONTAINER_TYPE_ANNOTATION = 'io.kubernetes.cri.container-type';

/** Docker's (and containerd's) default capability set. */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

/** runc's defaults (`runc spec`, containerd's oci.WithDefaultSpec). */
export const DEFAULT_MASKED_PATHS: readonly string[] = [
  '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
];
export const DEFAULT_READONLY_PATHS: readonly string[] = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

const DEFAULT_MOUNTS: readonly OciMount[] = [
  { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
  { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
  { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
  { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
];

/** Deny every device, then allow the ones every container gets (null, zero, full, random, urandom, tty, console, ptmx, pts). */
const DEFAULT_DEVICE_RULES: readonly OciDeviceRule[] = [
  { allow: false, access: 'rwm' },
  ...([[1, 3], [1, 5], [1, 7], [1, 8], [1, 9], [5, 0], [5, 1], [5, 2]] as const).map(
    ([major, minor]): OciDeviceRule => ({ allow: true, type: 'c', major, minor, access: 'rwm' }),
  ),
  { allow: true, type: 'c', major: 136, access: 'rwm' },
];

const JOINED_NAMESPACES = [
  ['pid', 'pid'],
  ['network', 'net'],
  ['ipc', 'ipc'],
  ['uts', 'uts'],
] as const;

/** A container of a pod joins the holder's pid, network, ipc and uts namespaces, with a mount namespace of its own. */
export function holderNamespaces(holderPid: number): OciNamespace[] {
  return [...JOINED_NAMESPACES.map(([type, nsFile]): OciNamespace => ({ type, path: `/proc/${holderPid}/ns/${nsFile}` })), { type: 'mount' }];
}

/** The config.json for one container of a runc sandbox: it joins the holder's namespaces, with a fresh mount namespace. */
export function buildContainerSpec(input: BuildContainerSpecInput): OciSpec {
  const { container, image } = input;
  if (!Number.isSafeInteger(input.holderPid) || input.holderPid <= 0) throw invalidArgument(`holder pid ${input.holderPid} is not a process id`);
  const capabilities = [...DEFAULT_CAPABILITIES];
  return {
    ociVersion: OCI_VERSION,
    process: {
      terminal: false,
      user: imageUser(image.user),
      args: containerArgs(container, image),
      env: mergeEnv(image.env, container.envs),
      cwd: container.workingDir || image.workingDir || '/',
      capabilities: { bounding: capabilities, effective: [...capabilities], permitted: [...capabilities] },
      noNewPrivileges: true,
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
    },
    root: { path: 'rootfs', readonly: false },
    hostname: input.hostname,
    mounts: [...DEFAULT_MOUNTS.map((mount) => ({ ...mount, options: [...(mount.options ?? [])] })), ...(container.mounts ?? []).map(bindMount)],
    linux: {
      namespaces: holderNamespaces(input.holderPid),
      cgroupsPath: input.cgroupsPath,
      resources: containerResources(container),
      maskedPaths: [...DEFAULT_MASKED_PATHS],
      readonlyPaths: [...DEFAULT_READONLY_PATHS],
    },
    annotations: {
      ...container.annotations,
      [SANDBOX_ID_ANNOTATION]: input.sandboxId,
      [CONTAINER_NAME_ANNOTATION]: container.metadata.name,
      [CONTAINER_TYPE_ANNOTATION]: 'container',
    },
  };
}

/**
 * Kubernetes semantics: `command` replaces the image's Entrypoint (and then drops its Cmd),
 * `args` replaces the image's Cmd.
 */
export function containerArgs(container: Pick<ContainerSpecSource, 'command' | 'args' | 'metadata'>, image: Pick<ImageConfig, 'entrypoint' | 'cmd'>): string[] {
  const hasCommand = container.command.length > 0;
  const entrypoint = hasCommand ? container.command : image.entrypoint;
  const args = container.args.length > 0 ? container.args : hasCommand ? [] : image.cmd;
  const argv = [...entrypoint, ...args];
  if (argv.length === 0) {
    throw invalidArgument(`container "${container.metadata.name}": nothing to run: the image has no Entrypoint or Cmd and the container sets no command or args`);
  }
  return argv;
}

/** Image env first; a container env with the same key replaces the image's value in place. PATH defaults as in Docker. */
export function mergeEnv(imageEnv: readonly string[], envs: ReadonlyArray<{ key: string; value: string }>): string[] {
  const merged = new Map<string, string>();
  for (const entry of imageEnv) {
    const equals = entry.indexOf('=');
    merged.set(equals < 0 ? entry : entry.slice(0, equals), entry);
  }
  for (const { key, value } of envs) merged.set(key, `${key}=${value}`);
  if (!merged.has('PATH')) return [DEFAULT_PATH, ...merged.values()];
  return [...merged.values()];
}

function imageUser(user: string | undefined): OciUser {
  if (user === undefined || user === '' || user === 'root' || user === 'root:root') return { uid: 0, gid: 0 };
  const match = /^(\d+)(?::(\d+))?$/.exec(user);
  // Names need the image's /etc/passwd; refusing beats silently running as root.
  if (!match) throw invalidArgument(`image user "${user}" is not supported: only numeric uid[:gid] or root`);
  return { uid: Number(match[1]), gid: Number(match[2] ?? 0) };
}

function bindMount(mount: ContainerConfig['mounts'][number]): OciMount {
  return { destination: mount.containerPath, type: 'bind', source: mount.hostPath, options: ['rbind', 'rprivate', mount.readonly ? 'ro' : 'rw'] };
}

function containerResources(container: ContainerSpecSource): OciResources {
  const { cpuPeriod, cpuQuota, cpuShares, memoryLimitInBytes } = container.linux?.resources ?? {};
  const resources: OciResources = { devices: DEFAULT_DEVICE_RULES.map((rule) => ({ ...rule })) };
  if (memoryLimitInBytes !== undefined) resources.memory = { limit: memoryLimitInBytes };
  const cpu = { shares: cpuShares, quota: cpuQuota, period: cpuPeriod };
  const setCpu = Object.fromEntries(Object.entries(cpu).filter(([, value]) => value !== undefined));
  if (Object.keys(setCpu).length > 0) resources.cpu = setCpu;
  return resources;
}

/** The rootfs of a container: the image's unpacked rootfs under a per-container writable layer. */
export function overlayRootfsMount(lowerDir: string | readonly string[], upperDir: string, workDir: string): MountSpec {
  const lowerDirs = typeof lowerDir === 'string' ? [lowerDir] : [...lowerDir];
  if (lowerDirs.length === 0) throw invalidArgument('overlay: at least one lowerdir is required');
  for (const dir of [...lowerDirs, upperDir, workDir]) {
    if (!path.isAbsolute(dir)) throw invalidArgument(`overlay: "${dir}" must be an absolute path`);
    // The kernel splits options at "," and lowerdir at ":".
    if (/[,:\n]/.test(dir)) throw invalidArgument(`overlay: "${dir}" must not contain ",", ":" or a newline`);
  }
  return { type: 'overlay', source: 'overlay', options: [`lowerdir=${lowerDirs.join(':')}`, `upperdir=${upperDir}`, `workdir=${workDir}`] };
}

/** Checks a config.json handed to us (by containerd) before anything acts on it. */
export function validateOciSpec(json: unknown, fileName = 'config.json'): OciSpec {
  const bad = (field: string, problem: string) => invalidArgument(`${fileName}: ${field} ${problem}`);
  if (!isObject(json)) throw invalidArgument(`${fileName}: must be a JSON object`);
  if (typeof json.ociVersion !== 'string' || json.ociVersion === '') throw bad('ociVersion', 'must be a non-empty string');
  const process = json.process;
  if (!isObject(process)) throw bad('process', 'must be an object');
  const args = process.args;
  if (!Array.isArray(args) || args.length === 0 || !args.every((arg) => typeof arg === 'string')) throw bad('process.args', 'must be a non-empty array of strings');
  if (typeof process.cwd !== 'string' || !path.posix.isAbsolute(process.cwd)) throw bad('process.cwd', 'must be an absolute path');
  if (process.env !== undefined && !isStringArray(process.env)) throw bad('process.env', 'must be an array of strings');
  const user = process.user;
  if (user !== undefined && (!isObject(user) || !isId(user.uid) || !isId(user.gid))) throw bad('process.user', 'must have numeric uid and gid');
  const root = json.root;
  if (!isObject(root) || typeof root.path !== 'string' || root.path === '') throw bad('root.path', 'must be a non-empty string');
  if (json.hostname !== undefined && typeof json.hostname !== 'string') throw bad('hostname', 'must be a string');
  validateMounts(json.mounts, bad);
  if (json.linux !== undefined && !isObject(json.linux)) throw bad('linux', 'must be an object');
  if (json.annotations !== undefined && !isStringRecord(json.annotations)) throw bad('annotations', 'must map strings to strings');
  return json as OciSpec;
}

function validateMounts(mounts: unknown, bad: (field: string, problem: string) => Error): void {
  if (mounts === undefined) return;
  if (!Array.isArray(mounts)) throw bad('mounts', 'must be an array');
  mounts.forEach((mount: unknown, i) => {
    if (!isObject(mount) || typeof mount.destination !== 'string' || !path.posix.isAbsolute(mount.destination)) {
      throw bad(`mounts[${i}].destination`, 'must be an absolute path');
    }
    if (mount.options !== undefined && !isStringArray(mount.options)) throw bad(`mounts[${i}].options`, 'must be an array of strings');
  });
}

function isId(value: unknown): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0xffffffff;
}
