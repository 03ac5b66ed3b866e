/** What the engine needs from whoever gives pods their network (CNI in src/network/). */
import type { KnownIds } from './sweep.js';

/** What CNI reported for a pod's network (the CNI result, in the spec's own field names). */
export interface PodNetworkStatus {
  /** Interfaces the plugins made; `sandbox` is the netns path for the pod's own ones, absent for host-side ones (the bridge, veth peer). */
  interfaces: Array<{ name: string; mac: string; sandbox?: string }>;
  /** `address` is CIDR (10.88.0.5/16); `interface` indexes `interfaces`. */
  ips: Array<{ address: string; gateway?: string; interface?: number }>;
  routes: Array<{ dst: string; gw?: string }>;
  dns?: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
}


/**
 * A pod's say in whether kts runs CNI for it: `none` opts out (a netns with loopback only), `cni`
 * insists (an error on a daemon that does not run CNI). Absent: the daemon's `[network] cni`.
 */
export const NETWORK_ANNOTATION = 'io.kts.network';
export const NETWORK_CHOICES = ['cni', 'none'] as const;

/** Where a pod's network will be, decided before anything is made (so the intent can name it). */
export interface PodNetworkPlan {
  netnsPath: string;
  /** The network's name, e.g. the CNI config's `name`. */
  network: string;
  /** The pod's interface name inside the netns (CNI_IFNAME). */
  interfaceName: string;
}

export interface PodNetworks {
  /** Pure: where sandboxId's netns and interface will be; the same answer every time. */
  plan(sandboxId: string): PodNetworkPlan;
  /** Makes the netns and attaches it (CNI ADD); on failure leaves nothing behind and throws. */
  setUp(sandboxId: string): Promise<PodNetworkStatus>;
  /** Detaches (CNI DEL) and removes the netns; idempotent, also for a set-up that never finished. */
  tearDown(sandboxId: string): Promise<void>;
  /** Tears down what belongs to no known sandbox; one line per thing removed, for the record. */
  sweepOrphans(knownSandboxIds: KnownIds): Promise<string[]>;
}
