/**
 * Inside the guest: the pod's network as the host read it from the pod's netns, applied to the
 * guest's virtio-net NICs with busybox `ip`. A NIC is found by its MAC (the host gave it the
 * same one as the interface it mirrors), renamed, sized, addressed and brought up; then routes.
 */
import { readdir, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { deadlineExceeded, failedPrecondition, invalidArgument } from '../core/errors.js';
import { runCommand, type CommandResult } from '../host/command.js';
import type { ConfigureNetworkRequest } from '../agentProtocol/agentProto.js';

export interface GuestInterface {
  name: string;
  mac: string;
  mtu: number;
  addresses: string[];
}

export interface GuestRoute {
  destination: string;
  gateway?: string;
  device: string;
  family: 'inet' | 'inet6';
}

export interface GuestNetwork {
  interfaces: GuestInterface[];
  routes: GuestRoute[];
}

const MAX_INTERFACES = 8;
const MAX_ADDRESSES = 16;
const MAX_ROUTES = 64;
const NAME_PATTERN = /^[A-Za-z0-9_.-]{1,15}$/;
const MAC_PATTERN = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const SYS_CLASS_NET = '/sys/class/net';
const NIC_APPEAR_DEADLINE_MS = 10_000;

/** The host's request, checked field by field: every value ends up in an `ip` argument. */
export function validateGuestNetwork(request: ConfigureNetworkRequest): GuestNetwork {
  const interfaces = request.interfaces ?? [];
  const routes = request.routes ?? [];
  if (interfaces.length > MAX_INTERFACES) throw invalidArgument(`at most ${MAX_INTERFACES} interfaces, not ${interfaces.length}`);
  if (routes.length > MAX_ROUTES) throw invalidArgument(`at most ${MAX_ROUTES} routes, not ${routes.length}`);
  const checked = interfaces.map((nic): GuestInterface => {
    const name = checkName('interface name', nic.name);
    const mac = String(nic.mac).toLowerCase();
    if (!MAC_PATTERN.test(mac)) throw invalidArgument(`interface ${name}: mac ${JSON.stringify(String(nic.mac).slice(0, 40))} is not aa:bb:cc:dd:ee:ff`);
    if (!Number.isInteger(nic.mtu) || nic.mtu < 68 || nic.mtu > 65535) throw invalidArgument(`interface ${name}: mtu ${nic.mtu} must be 68-65535`);
    if ((nic.addresses ?? []).length > MAX_ADDRESSES) throw invalidArgument(`interface ${name}: at most ${MAX_ADDRESSES} addresses`);
    return { name, mac, mtu: nic.mtu, addresses: (nic.addresses ?? []).map((address) => checkCidr(`interface ${name} address`, address)) };
  });
  const names = new Set(checked.map((nic) => nic.name));
  if (names.size !== checked.length || new Set(checked.map((nic) => nic.mac)).size !== checked.length) throw invalidArgument('interface names and macs must be unique');
  return { interfaces: checked, routes: routes.map((route) => checkRoute(route, names)) };
}

function checkName(what: string, value: unknown): string {
  if (typeof value !== 'string' || !NAME_PATTERN.test(value)) throw invalidArgument(`${what} ${JSON.stringify(String(value).slice(0, 40))} must be 1-15 characters of [A-Za-z0-9_.-]`);
  return value;
}

function checkCidr(what: string, value: unknown): string {
  const [address = '', prefix = '', extra] = String(value).split('/');
  const family = isIP(address);
  const bits = Number(prefix);
  if (family === 0 || extra !== undefined || !/^\d{1,3}$/.test(prefix) || bits > (family === 4 ? 32 : 128)) {
    throw invalidArgument(`${what} ${JSON.stringify(String(value).slice(0, 60))} is not an address/prefix`);
  }
  return `${address}/${bits}`;
}

function checkRoute(route: ConfigureNetworkRequest['routes'][number], devices: ReadonlySet<string>): GuestRoute {
  const family = route.family === 'inet6' ? 'inet6' : route.family === 'inet' ? 'inet' : undefined;
  if (!family) throw invalidArgument(`route family ${JSON.stringify(String(route.family).slice(0, 20))} must be inet or inet6`);
  const destination = route.destination === 'default' || isIP(String(route.destination)) !== 0 ? String(route.destination) : checkCidr('route destination', route.destination);
  if (route.gateway && isIP(route.gateway) === 0) throw invalidArgument(`route gateway ${JSON.stringify(String(route.gateway).slice(0, 60))} is not an address`);
  if (!devices.has(route.device)) throw invalidArgument(`route to ${destination} names device ${JSON.stringify(String(route.device).slice(0, 20))}, which is none of the interfaces`);
  return { destination, device: route.device, family, ...(route.gateway && { gateway: route.gateway }) };
}

/**
 * The `ip` invocations that turn the guest's NICs (current name by MAC) into `network`. Every NIC
 * that changes name goes through a temporary one first, so two NICs can swap names.
 */
export function networkCommands(network: GuestNetwork, currentNameByMac: ReadonlyMap<string, string>): string[][] {
  const commands: string[][] = [];
  const renamed: Array<[string, string]> = [];
  network.interfaces.forEach((nic, index) => {
    const current = currentNameByMac.get(nic.mac);
    if (current === undefined) throw failedPrecondition(`the guest has no NIC with mac ${nic.mac}`);
    commands.push(['link', 'set', 'dev', current, 'down']);
    if (current === nic.name) return;
    const temporary = `ktsnic${index}`;
    commands.push(['link', 'set', 'dev', current, 'name', temporary]);
    renamed.push([temporary, nic.name]);
  });
  for (const [temporary, name] of renamed) commands.push(['link', 'set', 'dev', temporary, 'name', name]);
  for (const nic of network.interfaces) {
    commands.push(['link', 'set', 'dev', nic.name, 'mtu', String(nic.mtu)]);
    for (const address of nic.addresses) commands.push([...familyFlag(address), 'addr', 'add', address, 'dev', nic.name]);
    commands.push(['link', 'set', 'dev', nic.name, 'up']);
  }
  for (const route of network.routes) {
    const via = route.gateway ? ['via', route.gateway] : [];
    commands.push([route.family === 'inet6' ? '-6' : '-4', 'route', 'add', route.destination, ...via, 'dev', route.device]);
  }
  return commands;
}

function familyFlag(cidr: string): string[] {
  return isIP(cidr.split('/')[0] ?? '') === 6 ? ['-6'] : ['-4'];
}

export type CommandRunner = (file: string, args: string[]) => Promise<CommandResult>;

/** Loads virtio_net, waits for every NIC to appear, and runs the commands; the first failure is the error. */
export async function applyGuestNetwork(network: GuestNetwork, run: CommandRunner = runCommand): Promise<void> {
  if (network.interfaces.length === 0) return;
  // Not loaded at boot: a guest without NICs spends nothing on it. Built in on some kernels, so a failure is only a hint.
  const modprobe = await run('modprobe', ['virtio_net']);
  const nics = await waitForNics(network.interfaces.map((nic) => nic.mac), modprobe);
  for (const args of networkCommands(network, nics)) {
    const result = await run('ip', args);
    if (result.code !== 0) throw failedPrecondition(`ip ${args.join(' ')} failed: ${(result.stderr || result.stdout).trim()}`);
  }
}

async function waitForNics(macs: string[], modprobe: CommandResult): Promise<Map<string, string>> {
  const deadline = Date.now() + NIC_APPEAR_DEADLINE_MS;
  for (;;) {
    const nics = await nicsByMac();
    const missing = macs.filter((mac) => !nics.has(mac));
    if (missing.length === 0) return nics;
    if (Date.now() > deadline) {
      const hint = modprobe.code === 0 ? '' : ` (modprobe virtio_net: ${modprobe.stderr.trim()})`;
      throw deadlineExceeded(`no guest NIC with mac ${missing.join(', ')} after ${NIC_APPEAR_DEADLINE_MS} ms${hint}`);
    }
    await sleep(50);
  }
}

/** Guest NICs by MAC, from sysfs. */
async function nicsByMac(): Promise<Map<string, string>> {
  const nics = new Map<string, string>();
  for (const name of await readdir(SYS_CLASS_NET).catch(() => [] as string[])) {
    const mac = (await readFile(path.join(SYS_CLASS_NET, name, 'address'), 'utf8').catch(() => '')).trim().toLowerCase();
    if (mac) nics.set(mac, name);
  }
  return nics;
}
