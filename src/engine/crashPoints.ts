import type { PodNetworks } from '../core/podNetwork.js';
import { aroundMethods } from '../core/aroundMethods.js';
import { crashPoint } from '../core/crashPoints.js';
import type { Sandboxer } from '../core/sandboxer.js';

export { armCrashPointsFromEnv, CRASH_POINTS, crashPoint, crashPointsArmed, parseCrashSpec, type CrashPoint } from '../core/crashPoints.js';

const SANDBOXER_EFFECTS = ['startSandbox', 'stopSandbox', 'removeSandbox', 'createContainer', 'startContainer', 'killContainer', 'deleteContainer', 'execProcess'] as const;
const NETWORK_EFFECTS = ['setUp', 'tearDown'] as const;

/** The same sandboxer with `effect.before`/`effect.after` around every call that changes the host. */
export function withEffectCrashPoints(sandboxer: Sandboxer): Sandboxer {
  return aroundEffects(sandboxer, sandboxer.kind, SANDBOXER_EFFECTS);
}

/** The same pod networks with `effect.before`/`effect.after` around CNI ADD (with its netns) and DEL. */
export function withNetworkCrashPoints(networks: PodNetworks): PodNetworks {
  return aroundEffects(networks, 'network', NETWORK_EFFECTS);
}

function aroundEffects<T extends object>(subject: T, label: string, effects: readonly string[]): T {
  return aroundMethods(subject, effects, async (method, call) => {
    crashPoint('effect.before', `${label}.${method}`);
    const result = await call();
    crashPoint('effect.after', `${label}.${method}`);
    return result;
  });
}
