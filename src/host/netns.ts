/**
 * Network namespaces on the host: the ones kts makes for pods (a fresh netns bind-mounted on a
 * file of its own, like `ip netns add` but in kts's state directory, so two daemons never share
 * a name), commands run inside any netns by path, and what a netns holds as read over netlink
 * (`ip -j`), which is what a VM's interfaces are mirrored from.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { internal } from '../core/errors.js';
import { runCommand, type CommandResult } from './command.js';
import { mountPointsUnder, unmountUnder } from './mounts.js';
import { isObject } from '../oci/json.js';

const NSENTER = 'nsenter';
const UNSHARE = 'unshare';
const IP = 'ip';

/** Runs `file args…` with its network namespace switched to the one at netnsPath (nothing else changes). */
export function runInNetns(netnsPath: string, file: string, args: string[], timeoutMs = 30_000): Promise<CommandResult> {
  return runCommand(NSENTER, [`--net=${netnsPath}`, '--', file, ...args], timeoutMs);
}

/** Like runInNetns, but a non-zero exit is an error naming the command and what it printed. */
export async function runInNetnsOk(netnsPath: string, file: string, args: string[]): Promise<string> {
  const result = await runInNetns(netnsPath, file, args);
  if (result.code !== 0) throw internal(`${file} ${args.join(' ')} in netns ${netnsPath} failed (exit ${result.code}): ${result.stderr.trim() || result.stdout.trim()}`);
  return result.stdout;
}

/** Makes a fresh netns pinned by a bind mount on `file`, with loopback up; a netns already there is kept. */
export async function createNetns(file: string): Promise<void> {
  if (await isNetnsMounted(file)) return;
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, '');
  const made = await runCommand(UNSHARE, [`--net=${file}`, 'true']);
  if (made.code !== 0) throw internal(`cannot make a network namespace on ${file}: ${made.stderr.trim()}`);
  await runInNetnsOk(file, IP, ['link', 'set', 'lo', 'up']);
}

/** Unpins the netns on `file` (the kernel frees it once no process is in it) and deletes the file; idempotent. */
export async function removeNetns(file: string): Promise<void> {
  await unmountUnder(file);
  await rm(file, { force: true });
}

/** Whether a netns is pinned on `file` (a bind mount there). */
export async function isNetnsMounted(file: string): Promise<boolean> {
  return (await mountPointsUnder(file)).includes(file);
}

/** One link of a netns, as `ip -j addr` reports it. */
export interface NetnsLink {
  name: string;
  mac: string;
  mtu: number;
  /** `ether` for veth, tap, bridge…; `loopback`, `none` (tun) otherwise. */
  linkType: string;
  /** The link's kind from `ip -d` (veth, tun, bridge…), empty for a physical one. */
  kind: string;
  /** Global-scope addresses as CIDR, e.g. 10.88.0.5/16. */
  addresses: string[];
}

export interface NetnsRoute {
  /** `default` or a CIDR / address. */
  destination: string;
  gateway?: string;
  device: string;
  /** Who made it: `kernel` for the connected route of an address, `boot`/`static` for ones added by hand or by CNI. */
  protocol: string;
  family: 'inet' | 'inet6';
}

/** Every link of the netns with its global addresses. */
export async function readNetnsLinks(netnsPath: string): Promise<NetnsLink[]> {
  const parsed: unknown = JSON.parse(await runInNetnsOk(netnsPath, IP, ['-j', '-d', 'addr', 'show']));
  if (!Array.isArray(parsed)) throw internal(`ip -j addr in ${netnsPath} printed no array`);
  return parsed.filter(isObject).map((link) => ({
    name: String(link.ifname ?? ''),
    mac: String(link.address ?? ''),
    mtu: Number(link.mtu ?? 0),
    linkType: String(link.link_type ?? ''),
    kind: isObject(link.linkinfo) ? String(link.linkinfo.info_kind ?? '') : '',
    addresses: (Array.isArray(link.addr_info) ? link.addr_info : [])
      .filter((address): address is Record<string, unknown> => isObject(address) && address.scope === 'global')
      .map((address) => `${String(address.local)}/${Number(address.prefixlen)}`),
  }));
}

/** The routes of the main table, IPv4 then IPv6. */
export async function readNetnsRoutes(netnsPath: string): Promise<NetnsRoute[]> {
  const routes: NetnsRoute[] = [];
  for (const family of ['inet', 'inet6'] as const) {
    const parsed: unknown = JSON.parse(await runInNetnsOk(netnsPath, IP, ['-j', family === 'inet' ? '-4' : '-6', 'route', 'show', 'table', 'main']) || '[]');
    if (!Array.isArray(parsed)) throw internal(`ip -j route in ${netnsPath} printed no array`);
    for (const route of parsed.filter(isObject)) {
      routes.push({
        destination: String(route.dst ?? ''),
        ...(typeof route.gateway === 'string' && { gateway: route.gateway }),
        device: String(route.dev ?? ''),
        protocol: String(route.protocol ?? ''),
        family,
      });
    }
  }
  return routes;
}
