/**
 * A VM pod's network, mirrored from its netns (Kata's "tcfilter" model): for each interface the
 * netns has (a CNI veth, say), a tap device beside it in the same netns, joined to it both ways
 * by tc mirred redirects, and a virtio-net NIC on the tap with the interface's own MAC. Whatever
 * reaches the interface goes to the guest and back; the guest is told the interface's addresses,
 * MTU and routes, so the pod looks the same on the wire as a runc pod in that netns would.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ConfigureNetworkRequest } from '../../agentProtocol/agentProto.js';
import { writeFileAtomic } from '../../host/files.js';
import { readNetnsLinks, readNetnsRoutes, runInNetns, runInNetnsOk, type NetnsLink, type NetnsRoute } from '../../host/netns.js';
import type { VmNetwork } from './hypervisor.js';

export interface MirroredInterface {
  name: string;
  mac: string;
  mtu: number;
  addresses: string[];
  /** The tap beside it in the netns, and QEMU's id for its NIC. */
  tap: string;
  netdevId: string;
}

export interface VmNetworkPlan {
  netnsPath: string;
  interfaces: MirroredInterface[];
  routes: NetnsRoute[];
}

/** Taps kts makes are named so, and are never mirrored themselves. */
const TAP_SUFFIX = '_kts';
const TC = 'tc';
const IP = 'ip';

/** What the VM will mirror: the netns's Ethernet interfaces (not loopback, not taps) and the routes through them. */
export async function planVmNetwork(netnsPath: string): Promise<VmNetworkPlan> {
  return mirrorPlan(netnsPath, await readNetnsLinks(netnsPath), await readNetnsRoutes(netnsPath));
}

/** The pure half of planVmNetwork: which links and routes of the netns the VM gets. */
export function mirrorPlan(netnsPath: string, links: NetnsLink[], routes: NetnsRoute[]): VmNetworkPlan {
  const interfaces = links.filter(isMirrorable).map((link, index): MirroredInterface => ({
    name: link.name, mac: link.mac.toLowerCase(), mtu: link.mtu, addresses: link.addresses, tap: `tap${index}${TAP_SUFFIX}`, netdevId: `net${index}`,
  }));
  const names = new Set(interfaces.map((nic) => nic.name));
  return { netnsPath, interfaces, routes: routes.filter((route) => names.has(route.device) && isMirroredRoute(route)) };
}

function isMirrorable(link: NetnsLink): boolean {
  return link.linkType === 'ether' && link.kind !== 'tun' && !link.name.endsWith(TAP_SUFFIX) && /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(link.mac);
}

/** The kernel makes the connected route of each address (and IPv6's link-local ones) in the guest too. */
function isMirroredRoute(route: NetnsRoute): boolean {
  if (route.protocol === 'kernel') return false;
  return !(route.family === 'inet6' && /^(fe80:|ff[0-9a-f]{2}:)/i.test(route.destination));
}

/** The plan is written before any tap is made, so a discard after a crash knows what to undo. */
export async function savePlan(file: string, plan: VmNetworkPlan): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(plan));
}

export async function loadPlan(file: string): Promise<VmNetworkPlan | undefined> {
  const text = await readFile(file, 'utf8').catch(() => undefined);
  return text === undefined ? undefined : (JSON.parse(text) as VmNetworkPlan);
}

/** Makes each tap and the two redirects between it and its interface. */
export async function connectTaps(plan: VmNetworkPlan): Promise<void> {
  const inNetns = (file: string, args: string[]) => runInNetnsOk(plan.netnsPath, file, args);
  for (const nic of plan.interfaces) {
    await inNetns(IP, ['tuntap', 'add', 'dev', nic.tap, 'mode', 'tap']);
    await inNetns(IP, ['link', 'set', 'dev', nic.tap, 'mtu', String(nic.mtu), 'up']);
    for (const [from, to] of [[nic.name, nic.tap], [nic.tap, nic.name]] as const) {
      await inNetns(TC, ['qdisc', 'add', 'dev', from, 'ingress']);
      // u32 matching everything: the matchall classifier is not in every kernel.
      await inNetns(TC, ['filter', 'add', 'dev', from, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u8', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', to]);
    }
  }
}

/**
 * Removes the taps and the interfaces' ingress redirects; idempotent. A netns kts made goes
 * away with them anyway; one containerd made outlives the pod and must be left as it was.
 */
export async function disconnectTaps(plan: VmNetworkPlan): Promise<void> {
  if (!existsSync(plan.netnsPath)) return;
  for (const nic of plan.interfaces) {
    await runInNetns(plan.netnsPath, IP, ['link', 'del', 'dev', nic.tap]);
    await runInNetns(plan.netnsPath, TC, ['qdisc', 'del', 'dev', nic.name, 'ingress']);
  }
}

/** The hypervisor's view: one NIC per tap, in the plan's netns. */
export function vmNetworkOf(plan: VmNetworkPlan): VmNetwork {
  return { netnsPath: plan.netnsPath, nics: plan.interfaces.map((nic) => ({ id: nic.netdevId, tap: nic.tap, mac: nic.mac })) };
}

/** The agent's view: interfaces by MAC with their addresses and MTU, and the routes. */
export function guestNetworkOf(plan: VmNetworkPlan): ConfigureNetworkRequest {
  return {
    interfaces: plan.interfaces.map((nic) => ({ name: nic.name, mac: nic.mac, mtu: nic.mtu, addresses: nic.addresses })),
    routes: plan.routes.map((route) => ({ destination: route.destination, gateway: route.gateway ?? '', device: route.device, family: route.family })),
  };
}

/** One line per interface for the record, e.g. `eth0 0a:58:… 10.88.0.5/16 mtu 1500 via tap0_kts`. */
export function describePlan(plan: VmNetworkPlan): string {
  return plan.interfaces.map((nic) => `${nic.name} ${nic.mac} ${nic.addresses.join(',') || '-'} mtu ${nic.mtu} via ${nic.tap}`).join('; ');
}
