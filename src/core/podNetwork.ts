/** What the engine needs from whoever gives pods their network (CNI in src/network/). */
import type { PodNetworkStatus } from '../../machines/sandboxMachine.js';
import type { KnownIds } from './sweep.js';

export type { PodNetworkStatus };

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
