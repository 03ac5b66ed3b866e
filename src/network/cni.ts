/**
 * The CNI protocol as a runtime speaks it (CNI spec 1.0): network configuration lists, plugin
 * execution (config on stdin, parameters in CNI_* variables, a result or an error on stdout) and
 * the result, validated into a PodNetworkStatus. No netns or state handling here.
 */
import { access, readdir, readFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import path from 'node:path';
import type { BridgeNetworkSettings } from './config.js';
import { invalidArgument, unavailable } from '../core/errors.js';
import type { PodNetworkStatus } from '../core/podNetwork.js';
import { runCommand } from '../host/command.js';
import { isObject, isStringArray } from '../oci/json.js';

/** A network configuration list (`.conflist`); a single `.conf` is read as a list of one. */
export interface CniConfigList {
  cniVersion: string;
  name: string;
  plugins: CniPluginConfig[];
}

export type CniPluginConfig = Record<string, unknown> & { type: string };

/** What a runtime tells every plugin about the attachment. */
export interface CniAttachment {
  /** CNI_CONTAINERID: kts passes the sandbox id. */
  containerId: string;
  /** CNI_NETNS; empty on a DEL whose netns is already gone (the spec allows it). */
  netnsPath: string;
  /** CNI_IFNAME. */
  interfaceName: string;
}

export interface CniPluginRunner {
  /** Directories searched for plugin binaries, in order (CNI_PATH). */
  binDirs: string[];
  timeoutMs: number;
}

const CONFIG_EXTENSIONS = ['.conf', '.conflist', '.json'];
const MAX_PLUGIN_OUTPUT_CHARS = 2000;

/** A bridge with the gateway on it and host-local addresses: what containerd's default network is, without iptables unless asked. */
export function bridgeNetworkConfig(settings: BridgeNetworkSettings): CniConfigList {
  const ipam: Record<string, unknown> = { type: 'host-local', ranges: [[{ subnet: settings.subnet }]], routes: [{ dst: '0.0.0.0/0' }] };
  if (settings.ipamDataDir) ipam.dataDir = settings.ipamDataDir;
  const bridge: CniPluginConfig = { type: 'bridge', bridge: settings.bridge, isGateway: true, ipMasq: settings.ipMasq, hairpinMode: true, ipam };
  if (settings.mtu > 0) bridge.mtu = settings.mtu;
  return { cniVersion: '1.0.0', name: settings.name, plugins: [bridge] };
}

/** libcni's choice: the first file by name ending in .conf, .conflist or .json; undefined when there is none. */
export async function loadCniConfigDir(confDir: string): Promise<{ file: string; config: CniConfigList } | undefined> {
  const names = await readdir(confDir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return [] as string[];
    throw error;
  });
  const file = names.filter((name) => CONFIG_EXTENSIONS.includes(path.extname(name))).sort()[0];
  if (file === undefined) return undefined;
  const full = path.join(confDir, file);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(full, 'utf8'));
  } catch (error) {
    throw invalidArgument(`CNI config ${full} is not JSON: ${(error as Error).message}`);
  }
  return { file: full, config: parseCniConfig(json, full) };
}

/** Validates a `.conflist` or a single-plugin `.conf` into a list. */
export function parseCniConfig(json: unknown, what: string): CniConfigList {
  if (!isObject(json)) throw invalidArgument(`CNI config ${what} must be a JSON object`);
  const name = json.name;
  if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(name)) throw invalidArgument(`CNI config ${what}: name must be 1-128 characters of [A-Za-z0-9_.-]`);
  const cniVersion = typeof json.cniVersion === 'string' ? json.cniVersion : '0.2.0';
  const plugins = Array.isArray(json.plugins) ? json.plugins : [json];
  if (plugins.length === 0) throw invalidArgument(`CNI config ${what} has no plugins`);
  return { cniVersion, name, plugins: plugins.map((plugin, index) => pluginConfig(plugin, `${what} plugin ${index}`)) };
}

function pluginConfig(plugin: unknown, what: string): CniPluginConfig {
  if (!isObject(plugin) || typeof plugin.type !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(plugin.type)) {
    throw invalidArgument(`CNI config ${what}: "type" must name a plugin binary`);
  }
  return plugin as CniPluginConfig;
}

/** CNI ADD of every plugin of the list in order, each given the one before's result; returns the last result. */
export async function cniAdd(list: CniConfigList, attachment: CniAttachment, runner: CniPluginRunner): Promise<unknown> {
  let prevResult: unknown;
  for (const plugin of list.plugins) {
    prevResult = await execPlugin('ADD', pluginStdin(list, plugin, prevResult), attachment, runner);
  }
  return prevResult;
}

/** CNI DEL of every plugin in reverse order, with the ADD result when kts has it; a DEL of nothing succeeds. */
export async function cniDel(list: CniConfigList, attachment: CniAttachment, runner: CniPluginRunner, prevResult?: unknown): Promise<void> {
  for (const plugin of [...list.plugins].reverse()) {
    await execPlugin('DEL', pluginStdin(list, plugin, prevResult), attachment, runner);
  }
}

function pluginStdin(list: CniConfigList, plugin: CniPluginConfig, prevResult: unknown): Record<string, unknown> {
  return { ...plugin, cniVersion: list.cniVersion, name: list.name, ...(prevResult !== undefined && { prevResult }) };
}

async function execPlugin(command: 'ADD' | 'DEL', stdin: Record<string, unknown>, attachment: CniAttachment, runner: CniPluginRunner): Promise<unknown> {
  const type = String(stdin.type);
  const binary = await findPlugin(type, runner.binDirs);
  const env = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command, CNI_CONTAINERID: attachment.containerId, CNI_NETNS: attachment.netnsPath,
    CNI_IFNAME: attachment.interfaceName, CNI_PATH: runner.binDirs.join(':'),
  };
  const result = await runCommand(binary, [], runner.timeoutMs, { input: JSON.stringify(stdin), env });
  if (result.code !== 0) throw unavailable(`CNI ${command} of plugin ${type} for ${attachment.containerId} failed: ${pluginError(result.stdout, result.stderr, result.code)}`);
  if (command === 'DEL' || result.stdout.trim() === '') return undefined;
  try {
    return JSON.parse(result.stdout) as unknown;
  } catch {
    throw unavailable(`CNI ADD of plugin ${type} printed no JSON result: ${result.stdout.slice(0, MAX_PLUGIN_OUTPUT_CHARS)}`);
  }
}

async function findPlugin(type: string, binDirs: string[]): Promise<string> {
  for (const dir of binDirs) {
    const candidate = path.join(dir, type);
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
  }
  throw unavailable(`CNI plugin "${type}" is not in ${binDirs.join(':')} (Debian: apt-get install containernetworking-plugins; or set [network] cni_bin_dir)`);
}

/** The spec's error object `{code, msg, details}` as one line, else whatever the plugin printed. */
export function pluginError(stdout: string, stderr: string, exitCode: number): string {
  try {
    const error: unknown = JSON.parse(stdout);
    if (isObject(error) && typeof error.msg === 'string') {
      const details = typeof error.details === 'string' && error.details ? `: ${error.details}` : '';
      return `${error.msg}${details} (CNI error code ${String(error.code)})`.slice(0, MAX_PLUGIN_OUTPUT_CHARS);
    }
  } catch {
    // not the spec's error object: show the raw output
  }
  return (stderr.trim() || stdout.trim() || `exit status ${exitCode}`).slice(0, MAX_PLUGIN_OUTPUT_CHARS);
}

/** A CNI result (0.3.0 and later; 0.1/0.2's ip4/ip6 too) as the fields kts records. */
export function parseCniResult(raw: unknown): PodNetworkStatus {
  if (!isObject(raw)) throw unavailable('the CNI result is not a JSON object');
  if (isObject(raw.ip4) || isObject(raw.ip6)) return legacyResult(raw);
  const interfaces = arrayOf(raw.interfaces).map((entry) => ({
    name: text(entry.name), mac: text(entry.mac), ...(typeof entry.sandbox === 'string' && entry.sandbox && { sandbox: entry.sandbox }),
  }));
  const ips = arrayOf(raw.ips).map((entry) => ({
    address: text(entry.address),
    ...(typeof entry.gateway === 'string' && { gateway: entry.gateway }),
    ...(typeof entry.interface === 'number' && { interface: entry.interface }),
  }));
  return { interfaces, ips, routes: routesOf(raw.routes), ...dnsOf(raw.dns) };
}

function legacyResult(raw: Record<string, unknown>): PodNetworkStatus {
  const families = [raw.ip4, raw.ip6].filter(isObject);
  return {
    interfaces: [],
    ips: families.map((family) => ({ address: text(family.ip), ...(typeof family.gateway === 'string' && { gateway: family.gateway }) })),
    routes: families.flatMap((family) => routesOf(family.routes)),
    ...dnsOf(raw.dns),
  };
}

function routesOf(value: unknown): PodNetworkStatus['routes'] {
  return arrayOf(value).map((entry) => ({ dst: text(entry.dst), ...(typeof entry.gw === 'string' && { gw: entry.gw }) }));
}

function dnsOf(value: unknown): Pick<PodNetworkStatus, 'dns'> {
  if (!isObject(value)) return {};
  const dns: NonNullable<PodNetworkStatus['dns']> = {};
  for (const key of ['nameservers', 'search', 'options'] as const) if (isStringArray(value[key]) && value[key].length > 0) dns[key] = value[key];
  if (typeof value.domain === 'string' && value.domain) dns.domain = value.domain;
  return Object.keys(dns).length > 0 ? { dns } : {};
}

function arrayOf(value: unknown): Array<Record<string, unknown>> {
  return Array.isArray(value) ? value.filter(isObject) : [];
}

function text(value: unknown): string {
  return typeof value === 'string' ? value.slice(0, 256) : '';
}
